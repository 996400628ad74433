"""Chat across server processes over Redis: two real server processes (subprocesses sharing one data
directory and one redis-server), real WebSocket clients on each, one room."""
from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest
import redis

from tests.chat_client import Client, connect, guest_session
from tests.redis_fixture import free_port, redis_server, wait_for_port
from tests.server_fixture import ADMIN_TOKEN

ROOT = Path(__file__).resolve().parent.parent
# The server's own start and stop (what `mediaserver serve` runs), in a process of its own.
SERVE = """
import asyncio, logging, signal, sys
from mediaserver.config import load_config
from mediaserver.server import start_server

async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = await start_server(load_config(sys.argv[1]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop()

asyncio.run(main())
"""


LEASE_SECONDS = 3.0  # shorter than the default 5 s: the failover test waits for it to run out


@dataclass
class ServerProcess:
    """`mediaserver serve` in a subprocess of its own (it can be killed like a real one)."""
    process: subprocess.Popen[bytes]
    http_port: int
    process_id: str
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(self.http + path, data=json.dumps(body).encode() if body else None,
                                         method=method, headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                                                 "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_process(workdir: Path, data_dir: Path, redis_url: str, process_id: str) -> ServerProcess:
    http_port, rtmp_port = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.toml"
    config.write_text(f"""
[server]
host = "127.0.0.1"
http_port = {http_port}
rtmp_port = {rtmp_port}
data_dir = "{data_dir}"
admin_token = "{ADMIN_TOKEN}"

[srt]
enabled = false

[cluster]
redis_url = "{redis_url}"
process_id = "{process_id}"
lease_seconds = {LEASE_SECONDS}
""")
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-c", SERVE, str(config)],
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(http_port, process, f"server {process_id}", timeout=60)
    except RuntimeError:
        raise RuntimeError(log.read_text()[-3000:])
    return ServerProcess(process, http_port, process_id, log)


@contextmanager
def two_servers(base: Path) -> Iterator[tuple[ServerProcess, ServerProcess, str]]:
    with redis_server(base / "redis") as url:
        data = base / "data"
        a = start_process(base / "a", data, url, "proc-a")
        try:
            b = start_process(base / "b", data, url, "proc-b")
            try:
                yield a, b, url
            finally:
                b.stop()
        finally:
            a.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess, str]]:
    with two_servers(tmp_path_factory.mktemp("cluster")) as servers:
        yield servers


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 90))


def texts(frames: list[dict[str, Any]]) -> list[str]:
    return [f["data"]["text"] for f in frames if f["event"] == "chat:message"]


async def until_text(client: Client, text: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every frame up to and including the chat:message with `text`."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        while client.frames:
            f = client.frames.pop(0)
            seen.append(f)
            if f["event"] == "chat:message" and f["data"]["text"] == text:
                return seen
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no chat:message {text!r}; got {[f['event'] for f in seen]}")
        msg = await client.ws.receive(timeout=remaining)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"socket closed waiting for {text!r}: {msg.type}")
        client.frames.append(json.loads(msg.data))


async def next_frame(client: Client, timeout: float = 10.0) -> dict[str, Any]:
    if client.frames:
        return client.frames.pop(0)
    msg = await client.ws.receive(timeout=timeout)
    if msg.type != aiohttp.WSMsgType.TEXT:
        raise AssertionError(f"socket closed: {msg.type}")
    frame: dict[str, Any] = json.loads(msg.data)
    return frame


async def guest(session: aiohttp.ClientSession, server: ServerProcess, stream_id: str, name: str,
                **query: str) -> Client:
    return await connect(session, server, stream_id, name=name, **query)  # type: ignore[arg-type]


def test_messages_cross_processes_in_one_order(cluster: tuple[ServerProcess, ServerProcess, str]) -> None:
    a, b, _ = cluster
    stream = a.api("POST", "/api/streams", {"title": "Cluster order"})

    async def scenario() -> None:
        sessions = [guest_session() for _ in range(4)]
        try:
            a1 = await guest(sessions[0], a, stream["id"], "Anna")
            a2 = await guest(sessions[1], a, stream["id"], "Abel")
            b1 = await guest(sessions[2], b, stream["id"], "Ben")
            b2 = await guest(sessions[3], b, stream["id"], "Beth")
            everyone = [a1, a2, b1, b2]
            await a1.send("chat:message", {"text": "hello from A"})
            for client in (b1, b2):
                await until_text(client, "hello from A")
            await b1.send("chat:message", {"text": "hello from B"})
            for client in (a1, a2):
                await until_text(client, "hello from B")
            # Two senders on different processes at once: one order for everyone.
            sent = [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(4)]
            await asyncio.gather(*(a2.send("chat:message", {"text": f"a{i}"}) for i in range(4)),
                                 *(b2.send("chat:message", {"text": f"b{i}"}) for i in range(4)))
            # Each sender sees its last message published (a socket's frames keep their order), then "end".
            seen = {id(a2): await until_text(a2, "a3"), id(b2): await until_text(b2, "b3")}
            await b1.send("chat:message", {"text": "end"})
            orders = []
            for client in everyone:
                frames = seen.get(id(client), []) + await until_text(client, "end")
                got = [t for t in texts(frames) if t in sent]
                assert sorted(got) == sorted(sent), got
                orders.append(got)
            assert all(order == orders[0] for order in orders), orders
        finally:
            for session in sessions:
                await session.close()

    run(scenario())


def test_viewer_count_sums_both_processes(cluster: tuple[ServerProcess, ServerProcess, str]) -> None:
    a, b, _ = cluster
    stream = a.api("POST", "/api/streams", {"title": "Cluster count"})

    async def scenario() -> None:
        sessions = [guest_session() for _ in range(5)]
        try:
            clients = [await guest(session, a if i < 3 else b, stream["id"], f"Guest{i}")
                       for i, session in enumerate(sessions)]
            for client in clients:
                counted = await client.expect("stream:viewers", lambda d: d["count"] == 5, timeout=10)
                assert counted["peak"] >= 5
        finally:
            for session in sessions:
                await session.close()

    run(scenario())


def test_bans_and_rate_limits_hold_across_processes(cluster: tuple[ServerProcess, ServerProcess, str]) -> None:
    a, b, _ = cluster
    stream = a.api("POST", "/api/streams", {"title": "Cluster moderation"})

    async def scenario() -> None:
        sessions = [guest_session() for _ in range(7)]
        try:
            mod = await connect(sessions[0], a, stream["id"], token=ADMIN_TOKEN, name="Pastor")  # type: ignore[arg-type]
            watch_a = await guest(sessions[1], a, stream["id"], "WatcherA")
            watch_b = await guest(sessions[2], b, stream["id"], "WatcherB")
            mallory = await guest(sessions[3], b, stream["id"], "Mallory")
            trudy = await guest(sessions[4], b, stream["id"], "Trudy")
            await mallory.send("chat:message", {"text": "before the ban"})
            for client in (watch_a, watch_b, mod):
                await until_text(client, "before the ban")

            await mod.send("chat:ban", {"name": "Mallory"})
            await mod.expect("chat:banned", lambda d: d["name"] == "Mallory" and d["viewers"] == 1)
            await mod.send("chat:timeout", {"name": "Trudy", "seconds": 600})
            await mod.expect("chat:timed_out", lambda d: d["name"] == "Trudy" and d["viewers"] == 1)
            await mallory.send("chat:message", {"text": "after the ban"})
            refused = await mallory.expect("chat:error", lambda d: d["code"] == "muted")
            assert "banned" in refused["message"]
            await trudy.send("chat:message", {"text": "during the time-out"})
            refused = await trudy.expect("chat:error", lambda d: d["code"] == "muted")
            assert "timed out" in refused["message"]
            await watch_b.send("chat:message", {"text": "sentinel 1"})
            for client in (watch_a, watch_b, mod, mallory, trudy):
                got = texts(await until_text(client, "sentinel 1"))
                assert "after the ban" not in got and "during the time-out" not in got, got

            # One browser (one viewer token) with a socket on each process floods: the room's limit
            # (5 messages per 10 s per viewer) holds for both sockets together.
            flood_a = await guest(sessions[5], a, stream["id"], "Flood")
            token = flood_a.joined()["viewer_token"]
            flood_b = await guest(sessions[6], b, stream["id"], "Flood", viewer=token)
            assert flood_b.joined()["viewer_token"] == token
            flood = [f"flood {i}" for i in range(12)]
            await asyncio.gather(*(flood_a.send("chat:message", {"text": t}) for t in flood[0::2]),
                                 *(flood_b.send("chat:message", {"text": t}) for t in flood[1::2]))
            # Each flood socket hears back about each of its own messages: refused, or published to the room.
            refusals = 0
            for client, mine in ((flood_a, flood[0::2]), (flood_b, flood[1::2])):
                answered = 0
                while answered < len(mine):
                    f = await next_frame(client)
                    if f["event"] == "chat:error":
                        assert f["data"]["code"] == "rate_limited", f
                        refusals += 1
                        answered += 1
                    elif f["event"] == "chat:message" and f["data"]["text"] in mine:
                        answered += 1
            assert refusals == 7
            await watch_b.send("chat:message", {"text": "sentinel 2"})
            for client in (watch_a, watch_b):
                published = [t for t in texts(await until_text(client, "sentinel 2")) if t in flood]
                assert len(published) == 5, published
        finally:
            for session in sessions:
                await session.close()

    run(scenario())


def stored_texts(data_dir: Path, stream_id: str) -> list[str]:
    with sqlite3.connect(data_dir / "mediaserver.db", timeout=10) as db:
        return [row[0] for row in db.execute("SELECT text FROM chat_messages WHERE stream_id = ?", (stream_id,))]


def test_owner_killed_mid_chat_another_process_takes_over(tmp_path: Path) -> None:
    with two_servers(tmp_path) as (a, b, url):
        stream = a.api("POST", "/api/streams", {"title": "Cluster failover"})
        lease = f"ms:chat:{stream['id']}:owner"
        probe = redis.Redis.from_url(url)

        async def scenario() -> None:
            sessions = [guest_session() for _ in range(4)]
            try:
                a1 = await guest(sessions[0], a, stream["id"], "Anna")  # first in: A opens and owns the room
                assert probe.get(lease) == b"proc-a"
                assert 0 < probe.pttl(lease) <= LEASE_SECONDS * 1000  # [cluster] lease_seconds: the lease's life
                b1 = await guest(sessions[1], b, stream["id"], "Ben")
                b2 = await guest(sessions[2], b, stream["id"], "Beth")
                await b1.send("chat:message", {"text": "before the kill"})
                for client in (a1, b1, b2):
                    await until_text(client, "before the kill")
                deadline = time.monotonic() + 10
                while "before the kill" not in stored_texts(tmp_path / "data", stream["id"]):
                    assert time.monotonic() < deadline, "the owner never stored the message"
                    await asyncio.sleep(0.05)

                a.process.send_signal(signal.SIGKILL)
                a.process.wait(10)
                # B takes the room over when A's lease lapses; its viewers are welcomed again, sockets kept.
                for client in (b1, b2):
                    await client.expect("stream:join", timeout=20)
                assert probe.get(lease) == b"proc-b"
                await b2.send("chat:message", {"text": "after the kill"})
                for client in (b1, b2):
                    await until_text(client, "after the kill")
                newcomer = await guest(sessions[3], b, stream["id"], "Newcomer")
                history = [m["text"] for m in newcomer.history["messages"]]
                assert "before the kill" in history and "after the kill" in history, history
            finally:
                for session in sessions:
                    await session.close()

        run(scenario())
        probe.close()


def test_chat_switch_changed_on_one_process_reaches_the_owner(cluster: tuple[ServerProcess, ServerProcess, str]) -> None:
    a, b, url = cluster
    stream = a.api("POST", "/api/streams", {"title": "Cluster switches"})

    async def scenario() -> None:
        sessions = [guest_session() for _ in range(2)]
        try:
            on_a = await guest(sessions[0], a, stream["id"], "Anna")  # A owns the room (first in)
            on_b = await guest(sessions[1], b, stream["id"], "Ben")
            assert redis.Redis.from_url(url).get(f"ms:chat:{stream['id']}:owner") == b"proc-a"
            # Chat turned off through B's API: A's Room must follow.
            assert b.api("PATCH", f"/api/streams/{stream['id']}", {"chat_enabled": False})["chat_enabled"] is False
            refused = None
            for attempt in range(50):  # the switch travels over Redis; each try is answered either way
                await on_a.send("chat:message", {"text": f"try {attempt}"})
                f = await next_frame(on_a)
                while not (f["event"] == "chat:error" or f["event"] == "chat:message"
                           and f["data"]["text"] == f"try {attempt}"):
                    f = await next_frame(on_a)
                if f["event"] == "chat:error":
                    refused = f["data"]
                    break
                await asyncio.sleep(0.1)
            assert refused is not None and refused["code"] == "chat_off", refused
            await on_b.send("chat:message", {"text": "from B while off"})
            assert (await on_b.expect("chat:error"))["code"] == "chat_off"
        finally:
            for session in sessions:
                await session.close()

    run(scenario())


def test_relay_messages_round_trip_and_refuse_garbage() -> None:
    from mediaserver.access import Caller, Role
    from mediaserver.cluster import messages as m

    frame = b'{"event":"chat:message","data":{"text":"line\\none"}}\n'
    decoded = m.decode(m.encode("one", frame, proc="p1", id="v1"))
    assert (decoded.op, decoded.header, decoded.body) == ("one", {"proc": "p1", "id": "v1"}, frame)
    caller = Caller(Role.MEMBER, org_id="o1", name="Ruth")
    assert m.caller_from_dict(m.caller_to_dict(caller)) == caller
    for garbage in (b"", b"no header line", b"[1]\n", b'{"proc": "p1"}\n', b"\xff\xfe\n"):
        with pytest.raises(m.MessageError):
            m.decode(garbage)
    with pytest.raises(m.MessageError):
        m.caller_from_dict({"role": "pope"})
    with pytest.raises(m.MessageError):
        m.check_viewer({"viewer": {"id": 3}})
