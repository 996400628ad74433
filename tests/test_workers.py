"""`mediaserver serve --workers 2`: an origin and a web worker share the HTTP port (the kernel spreads connections
over both), chat rooms and events cross them through a real redis-server, and everything the worker doesn't answer
itself reaches the origin. Which process holds a connection is read from /proc, not asked of the server."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import av
import pytest

from tests.chat_client import Client
from tests.media_source import publish
from tests.redis_fixture import free_port, wait_for_port

pytestmark = pytest.mark.media

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "workers-admin-token-0123456789"
CONNECTIONS = 16  # all on one process by chance: 2 ** -15


class Deployment:
    def __init__(self, process: subprocess.Popen[bytes], http_port: int, rtmp_port: int, log: Path) -> None:
        self.process, self.http_port, self.rtmp_port, self.log = process, http_port, rtmp_port, log

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(self.http + path, data=json.dumps(body).encode() if body else None,
                                         method=method, headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                                                 "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def workers(self) -> list[int]:
        """pids of the origin's web-worker children (from /proc)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid and b"web-worker" in cmdline:
                found.append(int(entry))
        return found


def owner_pids(server_port: int, client_ports: set[int], pids: list[int]) -> dict[int, int]:
    """client port -> pid holding the server side of that TCP connection (via /proc/net/tcp socket inodes)."""
    inode_of: dict[str, int] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if local_port == server_port and remote_port in client_ports:
            inode_of[fields[9]] = remote_port
    holders: dict[int, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inode_of:
                holders[inode_of[target[8:-1]]] = pid
    return holders


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("workers")
    redis_port, http_port, rtmp_port = free_port(), free_port(), free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(base),
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(redis_port, redis, "redis-server")
    config = base / "config.toml"
    config.write_text(f"""
[server]
host = "127.0.0.1"
http_port = {http_port}
rtmp_port = {rtmp_port}
data_dir = "{base / 'data'}"
admin_token = "{ADMIN_TOKEN}"

[srt]
enabled = false

[stream]
reconnect_window = 1.0

[hls]
segment_duration = 1.0

[transcode]
preset = "ultrafast"

[[transcode.renditions]]
name = "180p"
height = 180
video_bitrate = 300000

[cluster]
redis_url = "redis://127.0.0.1:{redis_port}/0"
""")
    log = base / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "mediaserver.cli", "serve", "--config", str(config),
                                    "--workers", "2"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deployment = Deployment(process, http_port, rtmp_port, log)
    try:
        wait_for_port(http_port, process, "mediaserver serve --workers 2", timeout=60)
        deadline = time.monotonic() + 60
        while b"web worker 1 (cluster process" not in log.read_bytes():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        yield deployment
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        redis.terminate()
        redis.wait(10)


async def open_guests(deployment: Deployment, stream_id: str, count: int
                      ) -> tuple[list[aiohttp.ClientSession], list[Client]]:
    sessions = [aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) for _ in range(count)]
    clients = []
    for i, session in enumerate(sessions):
        ws = await session.ws_connect(f"{deployment.http}/ws/streams/{stream_id}", params={"name": f"Guest {i}"})
        client = Client(ws)
        client.history = await client.expect("chat:history", timeout=15)
        clients.append(client)
    return sessions, clients


def client_port(client: Client) -> int:
    transport = client.ws._response.connection.transport  # type: ignore[union-attr]
    assert transport is not None
    return int(transport.get_extra_info("sockname")[1])


def test_chat_spreads_over_both_processes_and_reaches_everyone(deployment: Deployment) -> None:
    stream = deployment.api("POST", "/api/streams", {"title": "Two processes"})
    worker_pids = deployment.workers()
    assert len(worker_pids) == 1

    async def scenario() -> None:
        sessions, clients = await open_guests(deployment, stream["id"], CONNECTIONS)
        try:
            holders = owner_pids(deployment.http_port, {client_port(c) for c in clients},
                                 [deployment.process.pid, *worker_pids])
            assert len(holders) == CONNECTIONS
            assert set(holders.values()) == {deployment.process.pid, worker_pids[0]}, holders
            # Every viewer counts once, whichever process holds it.
            for c in clients:
                await c.expect("stream:viewers", lambda d: d.get("count") == CONNECTIONS, timeout=15)
            # The origin owns the room while it runs, so its metrics (and analytics) count every viewer, those
            # whose sockets the worker holds too.
            async with aiohttp.ClientSession() as admin:
                async with admin.get(f"{deployment.http}/metrics",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
                    text = await response.text()
            lines = [x for x in text.splitlines() if x.startswith(f'mediaserver_viewers{{stream="{stream["id"]}"}}')]
            assert [float(x.split()[-1]) for x in lines] == [CONNECTIONS], (
                lines, [x for x in text.splitlines() if "viewers" in x])
            # A message from a viewer of each process reaches all viewers, in the same order.
            on_origin = next(c for c in clients if holders[client_port(c)] == deployment.process.pid)
            on_worker = next(c for c in clients if holders[client_port(c)] == worker_pids[0])
            await on_origin.send("chat:message", {"text": "from the origin"})
            await on_worker.send("chat:message", {"text": "from the worker"})
            orders = []
            for c in clients:
                seen: list[str] = []
                while len(seen) < 2:
                    data = await c.expect("chat:message", timeout=15)
                    seen.append(data["text"])
                orders.append(tuple(seen))
            assert len(set(orders)) == 1 and set(orders[0]) == {"from the origin", "from the worker"}, orders
        finally:
            for c in clients:
                await c.ws.close()
            for s in sessions:
                await s.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_media_and_api_answer_through_either_process(deployment: Deployment) -> None:
    stream = deployment.api("POST", "/api/streams", {"title": "Video through workers"})
    publish(f"rtmp://127.0.0.1:{deployment.rtmp_port}/live/{stream['stream_key']}", seconds=4, width=320, height=180)
    master = f"{deployment.http}/hls/{stream['id']}/master.m3u8"
    deadline = time.monotonic() + 60
    while deployment.api("GET", f"/api/streams/{stream['id']}")["status"] != "ENDED":
        assert time.monotonic() < deadline
        time.sleep(0.5)

    async def fetch_all() -> tuple[list[int], set[int]]:
        # Separate connections, kept open while /proc is read, so the kernel spreads them over both processes.
        sessions = [aiohttp.ClientSession() for _ in range(CONNECTIONS)]
        try:
            statuses, ports = [], set()
            for s in sessions:
                async with s.get(master) as response:
                    statuses.append(response.status)
                    await response.read()
                    assert response.connection is None or True
                for conn in s.connector._conns.values():  # type: ignore[union-attr]
                    for proto, _ in conn:
                        if proto.transport is not None:
                            ports.add(int(proto.transport.get_extra_info("sockname")[1]))
            holders = owner_pids(deployment.http_port, ports, [deployment.process.pid, *deployment.workers()])
            return statuses, set(holders.values())
        finally:
            for s in sessions:
                await s.close()

    statuses, holders = asyncio.run(fetch_all())
    assert statuses == [200] * CONNECTIONS
    assert len(holders) == 2, "the kernel gave every connection to one process"
    # The recording decodes through the shared port (PyAV reads playlist and segments over fresh connections).
    with av.open(master) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 4 * 30 - 60, frames


def test_a_killed_worker_is_replaced_and_chat_goes_on(deployment: Deployment) -> None:
    stream = deployment.api("POST", "/api/streams", {"title": "Worker dies"})
    worker_pid = deployment.workers()[0]

    async def scenario() -> None:
        sessions, clients = await open_guests(deployment, stream["id"], CONNECTIONS)
        try:
            holders = owner_pids(deployment.http_port, {client_port(c) for c in clients},
                                 [deployment.process.pid, worker_pid])
            survivors = [c for c in clients if holders.get(client_port(c)) == deployment.process.pid]
            assert survivors
            os.kill(worker_pid, signal.SIGKILL)
            # Viewers on the origin keep chatting with each other.
            deadline = time.monotonic() + 20
            text = "still here"
            while True:
                await survivors[0].send("chat:message", {"text": text})
                try:
                    await survivors[-1].expect("chat:message", lambda d: d["text"] == text, timeout=3)
                    break
                except AssertionError:
                    assert time.monotonic() < deadline, "chat stopped on the surviving process"
                    text += "!"
        finally:
            for c in clients:
                await c.ws.close()
            for s in sessions:
                await s.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))
    deadline = time.monotonic() + 30
    while not (replaced := [p for p in deployment.workers() if p != worker_pid]):
        assert time.monotonic() < deadline, "the worker was not started again"
        time.sleep(0.2)
    deadline = time.monotonic() + 30
    while b"web worker 1 (cluster process" not in deployment.log.read_bytes().split(b"exited with")[-1]:
        assert time.monotonic() < deadline, deployment.log.read_text()[-2000:]
        time.sleep(0.2)
    # And new viewers are served again by both processes.
    async def again() -> None:
        sessions, clients = await open_guests(deployment, stream["id"], CONNECTIONS)
        try:
            holders = owner_pids(deployment.http_port, {client_port(c) for c in clients},
                                 [deployment.process.pid, *replaced])
            assert set(holders.values()) == {deployment.process.pid, replaced[0]}
        finally:
            for c in clients:
                await c.ws.close()
            for s in sessions:
                await s.close()

    asyncio.run(asyncio.wait_for(again(), 120))
