"""A web worker on another host (`mediaserver web-worker --origin-url`): its own empty data folder, no database,
the rooms shared with the origin through a real redis-server, admission decided by the origin over its internal
endpoint, everything else forwarded over TCP with the worker secret. The origin and the worker are real
subprocesses; clients are real sockets (some from 127.0.0.2, a second loopback address, to tell clients apart)."""
from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest

from tests.chat_client import Client
from tests.media_source import publish
from tests.redis_fixture import free_port, wait_for_port
from web.worker_secret import HEADER as SECRET_HEADER

pytestmark = pytest.mark.media

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "remote-worker-admin-token-0123456789"
SECRET = "remote-worker-secret-abcdefghijklmnop"
OTHER_CLIENT = "127.0.0.2"


class Deployment:
    def __init__(self, origin_port: int, worker_port: int, rtmp_port: int, worker_data: Path,
                 origin_config: Path) -> None:
        self.origin_port, self.worker_port, self.rtmp_port = origin_port, worker_port, rtmp_port
        self.worker_data, self.origin_config = worker_data, origin_config

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.origin_port}"

    @property
    def worker(self) -> str:
        return f"http://127.0.0.1:{self.worker_port}"

    def api(self, method: str, path: str, body: Any = None, base: str | None = None) -> Any:
        request = urllib.request.Request((base or self.origin) + path,
                                         data=json.dumps(body).encode() if body else None, method=method,
                                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("remote-worker")
    redis_port, origin_port, rtmp_port, worker_port = free_port(), free_port(), free_port(), free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(base),
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(redis_port, redis, "redis-server")
    secret_file = base / "worker.secret"
    secret_file.write_text(SECRET + "\n")
    origin_config = base / "origin.toml"
    origin_config.write_text(f"""
[server]
host = "127.0.0.1"
http_port = {origin_port}
rtmp_port = {rtmp_port}
data_dir = "{base / 'origin-data'}"
admin_token = "{ADMIN_TOKEN}"

[srt]
enabled = false

[stream]
reconnect_window = 0.5

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
worker_secret_file = "{secret_file}"
""")
    # The worker's host: its own config and an empty data folder; only the Redis URL is shared.
    worker_data = base / "worker-data"
    worker_data.mkdir()
    worker_config = base / "worker.toml"
    worker_config.write_text(f"""
[server]
host = "127.0.0.1"
data_dir = "{worker_data}"

[cluster]
redis_url = "redis://127.0.0.1:{redis_port}/0"
""")
    origin_log, worker_log = base / "origin.log", base / "worker.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with origin_log.open("wb") as out:
            processes.append(subprocess.Popen([sys.executable, "-m", "mediaserver.cli", "serve", "--config",
                                               str(origin_config)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
        wait_for_port(origin_port, processes[0], "mediaserver serve", timeout=60)
        with worker_log.open("wb") as out:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "mediaserver.cli", "web-worker", "--config", str(worker_config),
                 "--origin-url", f"http://127.0.0.1:{origin_port}", "--worker-secret-file", str(secret_file),
                 "--http-port", str(worker_port)], cwd=base, stdout=out, stderr=subprocess.STDOUT))
        wait_for_port(worker_port, processes[1], "mediaserver web-worker", timeout=60)
        yield Deployment(origin_port, worker_port, rtmp_port, worker_data, origin_config)
    finally:
        for process in reversed(processes):
            _stop(process)
        redis.terminate()
        redis.wait(10)
        for log in (origin_log, worker_log):
            if log.exists():
                print(f"--- {log.name}\n{log.read_text()[-3000:]}")


def session_from(address: str = "127.0.0.1") -> aiohttp.ClientSession:
    """A browser of its own (keeps its cookies), connecting from `address`."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def join(session: aiohttp.ClientSession, base: str, stream_id: str, headers: dict[str, str] | None = None,
               **query: str) -> Client:
    ws = await session.ws_connect(f"{base}/ws/streams/{stream_id}", params=query, headers=headers)
    client = Client(ws)
    client.history = await client.expect("chat:history", timeout=15)
    return client


def create_stream(deployment: Deployment, title: str, visibility: str = "PUBLIC") -> dict[str, Any]:
    return dict(deployment.api("POST", "/api/streams", {"title": title, "visibility": visibility}))


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 90))


def test_viewers_on_the_remote_worker_and_the_origin_chat_both_ways(deployment: Deployment) -> None:
    stream = create_stream(deployment, "Sunday service")

    async def scenario() -> None:
        async with session_from() as a, session_from() as b:
            remote = await join(a, deployment.worker, stream["id"], name="Anna")
            local = await join(b, deployment.origin, stream["id"], name="Ben")
            # The worker set the browser's viewer cookie the origin signed (the origin accepts it as its own).
            cookie = {c.key: c.value for c in a.cookie_jar}.get("ms_viewer")
            assert cookie, "the remote worker set no ms_viewer cookie"
            await remote.send("chat:message", {"text": "hello from the other host"})
            got = await local.expect("chat:message", lambda d: d["text"] == "hello from the other host", timeout=10)
            assert got["author"] == "Anna"
            await local.send("chat:message", {"text": "hello from the origin"})
            got = await remote.expect("chat:message", lambda d: d["text"] == "hello from the origin", timeout=10)
            assert got["author"] == "Ben"
            # The same browser comes back through the worker as the same guest identity.
            again = await join(a, deployment.worker, stream["id"], name="Anna")
            me = next(f["data"] for f in again.frames if f["event"] == "stream:join")
            assert me["role"] == "guest"
            for c in (remote, local, again):
                await c.ws.close()

    run(scenario())
    # The origin's database holds both messages (read from its SQLite file, not asked of either server).
    deadline = time.monotonic() + 15
    while True:
        with sqlite3.connect(deployment.origin_config.parent / "origin-data" / "mediaserver.db") as db:
            rows = set(db.execute("select author, text from chat_messages where stream_id = ?", [stream["id"]]))
        if len(rows) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {("Anna", "hello from the other host"), ("Ben", "hello from the origin")} <= rows
    assert not list(deployment.worker_data.rglob("*")), list(deployment.worker_data.rglob("*"))


def test_private_room_admission_is_the_origins(deployment: Deployment) -> None:
    stream = create_stream(deployment, "Prayer night", "PRIVATE")
    grant = deployment.api("POST", f"/api/streams/{stream['id']}/playback-tokens", {})["token"]
    org_token = subprocess.run(
        [sys.executable, "-m", "mediaserver.cli", "tokens", "create", "--org", "default", "--config",
         str(deployment.origin_config)], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    async def refused(base: str, auth: dict[str, Any] | None, **query: str) -> tuple[Any, Any, list[Any]]:
        async with session_from() as s:
            try:
                ws = await s.ws_connect(f"{base}/ws/streams/{stream['id']}", params=query)
            except aiohttp.WSServerHandshakeError as exc:
                return "http", exc.status, []
            client = Client(ws)
            if auth is not None:
                await client.send("auth", auth)
            code, frames = await client.closed(timeout=20)
            return "ws", code, [(f["event"], f["data"].get("code")) for f in frames]

    async def scenario() -> None:
        # A guest without a token, a wrong token in the auth frame, a wrong token in the URL: the worker's answer
        # is the origin's, whatever it is.
        cases = ((({}, {}), ("ws", 4401, [("chat:error", "auth_required")])),
                 (({"token": "not-a-token"}, {}), ("ws", 4403, [("chat:error", "forbidden")])),
                 ((None, {"token": "not-a-token"}), ("http", 403, [])))
        for (auth, query), expected in cases:
            on_worker = await refused(deployment.worker, auth, **query)
            on_origin = await refused(deployment.origin, auth, **query)
            assert on_worker == on_origin == expected, (auth, query, on_worker, on_origin)
        # Server-sent events: refused without a token as the origin refuses; opened with one.
        async with session_from() as s:
            answers = []
            for base in (deployment.worker, deployment.origin):
                async with s.get(f"{base}/sse/streams/{stream['id']}") as r:
                    answers.append((r.status, (await r.json())["error"]))
            assert answers[0] == answers[1] and answers[0][0] == 401, answers
            async with s.get(f"{deployment.worker}/sse/streams/{stream['id']}", params={"token": grant}) as r:
                assert r.status == 200
                first = await r.content.readuntil(b"stream:state")
                r.close()  # an event stream never ends by itself
                assert b"event: stream:state" in first, first
        async with session_from() as g, session_from() as m, session_from() as o:
            # A playback token in the URL admits a guest; the auth frame does too.
            guest = await join(g, deployment.worker, stream["id"], token=grant, name="Grace")
            ws = await o.ws_connect(f"{deployment.worker}/ws/streams/{stream['id']}", params={"name": "Otto"})
            late = Client(ws)
            await late.send("auth", {"token": grant})
            late.history = await late.expect("chat:history", timeout=15)
            # The church's API token seats its holder as moderator, through the worker.
            mod = await join(m, deployment.worker, stream["id"], headers={"Authorization": f"Bearer {org_token}"},
                             name="Pastor")
            me = next(f["data"] for f in mod.frames if f["event"] == "stream:join")
            assert me["role"] == "moderator", me
            await guest.send("chat:message", {"text": "please pray for my mother"})
            posted = await mod.expect("chat:message", lambda d: d["text"] == "please pray for my mother", timeout=10)
            # A guest may not remove it; the moderator may.
            await late.send("chat:remove", {"id": posted["id"]})
            error = await late.expect("chat:error", timeout=10)
            assert error["code"] == "forbidden", error
            await mod.send("chat:remove", {"id": posted["id"]})
            assert (await guest.expect("chat:removed", timeout=10))["id"] == posted["id"]
            for c in (guest, late, mod):
                await c.ws.close()

    run(scenario())


def test_api_and_media_are_forwarded_to_the_origin(deployment: Deployment) -> None:
    stream = create_stream(deployment, "Evening service")
    publish(f"rtmp://127.0.0.1:{deployment.rtmp_port}/live/{stream['stream_key']}", seconds=3, width=320,
            height=180, realtime=False)
    deadline = time.monotonic() + 60
    while deployment.api("GET", f"/api/streams/{stream['id']}")["status"] != "ENDED":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    through_worker = deployment.api("GET", f"/api/streams/{stream['id']}", base=deployment.worker)
    assert through_worker["id"] == stream["id"] and through_worker["status"] == "ENDED"

    def get(url: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()

    path = f"/hls/{stream['id']}/master.m3u8"
    status, master = get(deployment.worker + path)
    assert status == 200 and master == get(deployment.origin + path)[1]
    variant = next(line for line in master.decode().splitlines() if line and not line.startswith("#"))
    variant_path = f"/hls/{stream['id']}/{variant}"
    status, playlist = get(deployment.worker + variant_path)
    assert status == 200 and playlist == get(deployment.origin + variant_path)[1]
    segment = next(line for line in playlist.decode().splitlines() if line and not line.startswith("#"))
    segment_path = variant_path.rsplit("/", 1)[0] + "/" + segment
    status, body = get(deployment.worker + segment_path)
    assert status == 200 and len(body) > 1000 and body == get(deployment.origin + segment_path)[1]


def test_forged_forwarded_for_is_not_the_origins_idea_of_the_client(deployment: Deployment) -> None:
    stream = create_stream(deployment, "Throttled", "PRIVATE")

    async def bad_token(session: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> int:
        try:
            ws = await session.ws_connect(f"{base}/ws/streams/{stream['id']}", params={"token": "wrong"},
                                          headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101

    async def scenario() -> None:
        async with session_from(OTHER_CLIENT) as other, session_from() as me:
            # Bad tokens from 127.0.0.2 through the worker, each claiming another address: the origin counts them
            # all against 127.0.0.2 and blocks it (the throttle blocks after 30 failures within 10 minutes).
            statuses = [await bad_token(other, deployment.worker, {"X-Forwarded-For": f"10.9.8.{i}"})
                        for i in range(31)]
            assert statuses[0] == 403 and statuses[-1] == 429, statuses
            # Forwarded requests (not the chat): blocked 127.0.0.2 still is, whatever address it claims; a wrong
            # API token from 127.0.0.1 claiming to be 127.0.0.2 is not.
            for session, claimed, expected in ((other, "10.1.1.1", 429), (me, OTHER_CLIENT, 401)):
                async with session.get(f"{deployment.worker}/api/streams",
                                       headers={"Authorization": "Bearer wrong", "X-Forwarded-For": claimed}) as r:
                    assert r.status == expected, (claimed, r.status, await r.text())
            # Straight to the origin: a wrong worker secret makes X-Forwarded-For a client's claim like any other;
            # the right one makes the origin take the worker's word (which proves the check above could fail).
            for secret, expected in (("not-the-secret-0000000000", 401), (SECRET, 429)):
                async with me.get(f"{deployment.origin}/api/streams",
                                  headers={"Authorization": "Bearer wrong", "X-Forwarded-For": OTHER_CLIENT,
                                           SECRET_HEADER: secret}) as r:
                    assert r.status == expected, (secret, r.status)

    run(scenario())


def test_internal_endpoint_needs_the_secret(deployment: Deployment) -> None:
    stream = create_stream(deployment, "Internal")
    body = {"op": "open", "stream_id": stream["id"], "gate": True, "address": "127.0.0.1", "query": {},
            "headers": {}}

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            url = f"{deployment.origin}/internal/chat/admit"
            for headers in ({}, {SECRET_HEADER: "wrong-secret-000000000000"}, {SECRET_HEADER: SECRET[:-1]}):
                async with s.post(url, json=body, headers=headers) as r:
                    assert r.status == 404, (headers, r.status)
            # Through the worker (which holds the secret) a client can't reach it either.
            async with s.post(f"{deployment.worker}/internal/chat/admit", json=body,
                              headers={SECRET_HEADER: SECRET}) as r:
                assert r.status == 404
            async with s.post(url, json=body, headers={SECRET_HEADER: SECRET}) as r:
                assert r.status == 200
                answer = await r.json()
            assert answer["found"] and answer["decision"]["allowed"] and answer["stream"]["id"] == stream["id"]
            assert answer["state"]["seat"][0] == "guest"
        openapi = deployment.api("GET", "/api/openapi.json")
        assert not [p for p in openapi["paths"] if p.startswith("/internal")]

    run(scenario())
