"""HLS behind a caching proxy: Debian's nginx running docs/cdn/nginx.conf (ports and paths substituted) in
front of a real server. nginx's own log of what it passed upstream is the origin-side measurement: every
segment reaches the origin once however many viewers, playlists about once per max-age, blocking LL-HLS
reloads collapse into one origin request each, and nothing of a private stream is ever served from cache."""
from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest

from tests.hls_reader import parse_attributes, parse_master
from tests.media_source import start_publisher
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config

pytestmark = pytest.mark.media

DOC = Path(__file__).resolve().parent.parent / "docs" / "cdn" / "nginx.conf"
VIEWERS = 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def substituted(doc: str, folder: Path, port: int, origin: int) -> str:
    """The documented config with this machine's ports and the test's folder; every line replaced must be
    in the document, so the doc and the test can't drift apart."""
    temp = " ".join(f"{kind}_temp_path {folder}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    for old, new in [
        ("worker_processes auto;", "daemon off;\nmaster_process off;"),  # one process: no switch to user nobody
        ("pid /run/nginx-mediaserver.pid;", f"pid {folder}/nginx.pid;"),
        ("worker_connections 4096;", "worker_connections 1024;"),
        ("\nhttp {\n", "\nhttp {\n    " + temp + "\n"),
        ("access_log /var/log/nginx/mediaserver-cache.log cache;", f"access_log {folder}/access.log cache;"),
        ("proxy_cache_path /var/cache/nginx/mediaserver", f"proxy_cache_path {folder}/cache"),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{origin};"),
        ("listen 80;", f"listen 127.0.0.1:{port};"),
    ]:
        assert doc.count(old) == 1, old
        doc = doc.replace(old, new)
    return doc


class CachingProxy:
    """nginx with proxy_cache on loopback in front of the origin."""

    def __init__(self, folder: Path, origin: int) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (folder / "nginx.conf").write_text(substituted(DOC.read_text(), folder, self.port, origin))
        self.process = subprocess.Popen(["nginx", "-p", str(folder), "-e", str(folder / "error.log"),
                                         "-c", str(folder / "nginx.conf")])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                assert self.process.poll() is None and time.monotonic() < deadline, (folder / "error.log").read_text()
                time.sleep(0.05)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> list["LogLine"]:
        """Every request nginx answered, as its log has it (written as each request ends)."""
        lines = []
        for raw in (self.folder / "access.log").read_text().splitlines():
            msec, status, cache_status, upstream, rest = raw.split(" ", 4)
            uri, _size = rest.rsplit(" ", 1)
            origin_requests = 0 if upstream == "-" else len(upstream.split(","))
            lines.append(LogLine(float(msec), int(status), cache_status, origin_requests, uri.strip('"')))
        return lines

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class LogLine:
    at: float
    status: int
    cache_status: str
    origin_requests: int  # how many requests nginx sent upstream for it ("-": none, answered from cache)
    uri: str


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, CachingProxy]]:
    folder = tmp_path_factory.mktemp("cdn")
    server = run_server(small_config(folder / "data"))
    proxy = CachingProxy(folder / "nginx", server.server.http_port)
    try:
        yield server, proxy
    finally:
        proxy.stop()
        server.stop()


# -- many viewers through the proxy ----------------------------------------------------------------
@dataclass
class Viewer:
    master_url: str
    rendition_url: str
    blocking: bool  # LL-HLS blocking reloads (_HLS_msn) instead of plain reloads
    received: dict[str, bytes] = field(default_factory=dict)  # path -> bytes, init and segments
    blocking_requests: int = 0
    ended: bool = False

    async def run(self, session: aiohttp.ClientSession, give_up: float) -> None:
        next_msn: int | None = None
        async with session.get(self.master_url) as response:  # as a player starts
            assert response.status == 200
        while time.monotonic() < give_up:
            url = self.rendition_url
            if self.blocking and next_msn is not None:
                url += f"?_HLS_msn={next_msn}"
                self.blocking_requests += 1
            async with session.get(url) as response:
                text = await response.text() if response.status == 200 else None
            if text is None:  # a reload refused (503: did not arrive in time): plain reload next
                next_msn = None
                await asyncio.sleep(0.2)
                continue
            sequence, uris = 0, []
            for line in text.splitlines():
                if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                    sequence = int(line.split(":", 1)[1])
                elif line.startswith("#EXT-X-MAP:"):
                    uris.append(parse_attributes(line.split(":", 1)[1])["URI"])
                elif line and not line.startswith("#"):
                    uris.append(line)
            for uri in uris:
                path = urlsplit(urljoin(url, uri)).path
                if path not in self.received:
                    async with session.get(urljoin(url, uri)) as response:
                        assert response.status == 200, (uri, response.status)
                        self.received[path] = await response.read()
            if "#EXT-X-ENDLIST" in text:
                self.ended = True
                return
            segments = sum(1 for line in text.splitlines() if line.startswith("#EXTINF:"))
            next_msn = sequence + segments
            if not self.blocking:
                await asyncio.sleep(0.25)


async def watch(viewers: list[Viewer], seconds: float) -> None:
    give_up = time.monotonic() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(viewer.run(session, give_up) for viewer in viewers))


def test_segments_reach_the_origin_once_however_many_viewers(setup: tuple[ServerHandle, CachingProxy]) -> None:
    server, proxy = setup
    status, stream = server.api("POST", "/api/streams", {"title": "Behind a CDN", "low_latency": True})
    assert status == 201, stream
    sid = stream["id"]
    publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=6.0)
    try:
        wait_for(lambda: get(f"{server.http}/hls/{sid}/master.m3u8")[0] == 200, 30, "the master playlist")
        master_url = f"{proxy.http}/hls/{sid}/master.m3u8"
        status, headers, body = get(master_url)
        assert status == 200 and headers["Cache-Control"] == "public, max-age=1", headers
        variants = [urljoin(master_url, uri) for _, uri in parse_master(body.decode())]
        assert len(variants) >= 2, variants
        # The origin lets a CDN keep a blocking reload's answer for six target durations (its URL names one
        # moment of the playlist), a plain reload's for one second.
        origin_media = server.http + urlsplit(variants[0]).path
        _, headers, text = get(origin_media)
        assert headers["Cache-Control"] == "public, max-age=1", headers
        lines = text.decode().splitlines()
        target = int(next(x for x in lines if x.startswith("#EXT-X-TARGETDURATION:")).split(":")[1])
        sequence = int(next(x for x in lines if x.startswith("#EXT-X-MEDIA-SEQUENCE:")).split(":")[1])
        next_msn = sequence + sum(1 for x in lines if x.startswith("#EXTINF:"))
        status, headers, _ = get(f"{origin_media}?_HLS_msn={next_msn}")
        assert status == 200 and headers["Cache-Control"] == f"public, max-age={6 * target}", (status, headers)
        viewers = [Viewer(master_url, variants[i % len(variants)], blocking=(i // len(variants)) % 2 == 1) for i in range(VIEWERS)]
        started = time.time()
        asyncio.run(watch(viewers, 60))
        finished = time.time()
    finally:
        publisher.join(30)
    assert publisher.error is None, publisher.error
    assert all(viewer.ended for viewer in viewers), "a viewer never saw the end of the broadcast"
    assert any(viewer.blocking_requests for viewer in viewers)

    # Every viewer of a rendition got every segment of it, byte for byte what the origin serves.
    served: dict[str, bytes] = {}
    for viewer in viewers:
        peers = [v for v in viewers if v.rendition_url == viewer.rendition_url]
        assert set(viewer.received) == set(peers[0].received), "viewers of one rendition saw different files"
        for path, data in viewer.received.items():
            if path not in served:
                status, _, served[path] = get(server.http + path)
                assert status == 200, path
            assert data == served[path], path
    segments = [p for p in served if p.endswith(".m4s")]
    inits = [p for p in served if p.endswith(".mp4")]
    assert len(segments) >= len(variants) * 4 and len(inits) >= len(variants), served.keys()

    log = [line for line in proxy.log() if started - 1 <= line.at <= finished + 1]
    from_origin: Counter[str] = Counter()
    asked: Counter[str] = Counter()
    refused: set[str] = set()
    for line in log:
        from_origin[line.uri] += line.origin_requests
        asked[line.uri] += 1
        if line.status != 200:
            refused.add(line.uri)
    # Init and media segments: one origin request each, however many viewers asked.
    for path in segments + inits:
        assert asked[path] >= VIEWERS // len(variants), (path, asked[path])
        assert from_origin[path] == 1, (path, from_origin[path], [vars(x) for x in log if x.uri == path])
    # Blocking reloads: each distinct _HLS_msn URL (the same moment for everyone) reached the origin once.
    # (One asked while the encoder is gone gets 503 no-store after three target durations: not cached.)
    blocking = [uri for uri in asked if "_HLS_msn=" in uri and uri not in refused]
    assert blocking and sum(asked[u] for u in blocking) > len(blocking), "no blocking reload was shared"
    for uri in blocking:
        assert from_origin[uri] == 1, (uri, from_origin[uri], asked[uri])
    # Plain reloads of a live playlist (max-age=1): at most one origin request per second of watching
    # (plus the recorded playlist once the broadcast ends).
    span = finished - started
    for url in variants + [master_url]:
        path = urlsplit(url).path
        print(f"{path}: {asked[path]} requests by viewers, {from_origin[path]} reached the origin in {span:.1f} s")
        assert from_origin[path] <= span + 2, (path, from_origin[path], span)
    print(f"segments+inits: {sum(asked[p] for p in segments + inits)} requests, "
          f"{sum(from_origin[p] for p in segments + inits)} at the origin; blocking reloads: "
          f"{sum(asked[u] for u in blocking)} requests, {sum(from_origin[u] for u in blocking)} at the origin")


# -- private media -----------------------------------------------------------------------------------
def test_private_media_is_never_served_from_the_cache(setup: tuple[ServerHandle, CachingProxy]) -> None:
    server, proxy = setup
    status, stream = server.api("POST", "/api/streams", {"title": "Elders Meeting", "visibility": "PRIVATE"})
    assert status == 201, stream
    sid = stream["id"]
    status, grant = server.api("POST", f"/api/streams/{sid}/playback-tokens", {"ttl": 600})
    assert status == 201, grant
    token = grant["token"]
    publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=4.0)
    try:
        master = f"/hls/{sid}/master.m3u8?token={token}"
        wait_for(lambda: get(server.http + master)[0] == 200, 30, "the private master playlist")
        status, headers, body = get(proxy.http + master)
        assert status == 200 and headers["Cache-Control"].startswith("private"), headers
        media_url = urljoin(proxy.http + master, parse_master(body.decode())[0][1])

        def first_segment() -> tuple[str, str] | None:
            _, _, text = get(media_url)
            lines = text.decode().splitlines()
            maps = [parse_attributes(x.split(":", 1)[1])["URI"] for x in lines if x.startswith("#EXT-X-MAP:")]
            segs = [x for x in lines if x and not x.startswith("#")]
            return (maps[0], segs[0]) if maps and segs else None

        init_uri, segment_uri = wait_for(first_segment, 30, "a segment in the private playlist")
    finally:
        publisher.join(30)
    for uri in (init_uri, segment_uri, urlsplit(media_url).path + "?" + urlsplit(media_url).query):
        with_token = urljoin(media_url, uri)
        assert "token=" in with_token
        bare = with_token.split("?", 1)[0]
        fetched = [get(with_token) for _ in range(2)]  # the viewer with the token, twice
        for status, headers, data in fetched:
            assert status == 200 and len(data) > 100 and headers["Cache-Control"].startswith("private"), uri
        # The church's staff, by API token in a header the proxy does not key on: allowed, and not stored.
        status, headers, staff_copy = get(bare, {"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 200 and headers["Cache-Control"].startswith("private"), (uri, headers)
        # Whoever comes next without the token is refused by the origin, not handed a cached copy.
        status, _, body = get(bare)
        assert status == 401 and fetched[0][2] not in body and staff_copy not in body, (uri, status)
        status, _, _ = get(bare + "?token=forged.token")
        assert status == 403, uri
    time.sleep(0.2)
    log = [line for line in proxy.log() if f"/hls/{sid}/" in line.uri and "/master.m3u8" not in line.uri]
    assert log and all(line.origin_requests == 1 and line.cache_status != "HIT" for line in log), \
        [vars(x) for x in log if x.origin_requests != 1 or x.cache_status == "HIT"]
