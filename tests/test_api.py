"""The admin API and HTTP edge cases against a real server (no media needed)."""
from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.server_fixture import ServerHandle, run_server, small_config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    handle = run_server(small_config(tmp_path_factory.mktemp("api") / "data"))
    yield handle
    handle.stop()


def test_token_required(server: ServerHandle) -> None:
    status, body = server.api("GET", "/api/streams", token=None)
    assert status == 401 and "error" in body
    status, body = server.api("GET", "/api/streams", token="wrong")
    assert status == 401


def test_create_list_get(server: ServerHandle) -> None:
    created = server.create_stream("Sunday Service")
    assert created["status"] == "SCHEDULED"
    assert created["rtmp_url"] == f"rtmp://127.0.0.1:{server.rtmp_port}/live"
    assert created["stream_key"].startswith("sk_") and len(created["stream_key"]) >= 25
    assert created["playback_url"].endswith(f"/hls/{created['id']}/master.m3u8")
    assert created["watch_url"].endswith(f"/watch/{created['id']}")
    status, listing = server.api("GET", "/api/streams")
    assert status == 200 and created["id"] in [s["id"] for s in listing["streams"]]
    # The key is shown once: never again in reads.
    assert all("stream_key" not in s for s in listing["streams"])
    status, one = server.api("GET", f"/api/streams/{created['id']}")
    assert status == 200 and one["title"] == "Sunday Service" and one["recording"] is None


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1,2]", json.dumps({"title": 5}).encode(), json.dumps({"title": ""}).encode(),
     json.dumps({"title": "x", "colour": "red"}).encode()],
)
def test_bad_bodies_get_400(server: ServerHandle, body: bytes) -> None:
    request = urllib.request.Request(server.http + "/api/streams", data=body, method="POST")
    request.add_header("Authorization", "Bearer test-admin-token")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400
    assert "error" in json.loads(info.value.read())


def test_oversized_body_refused(server: ServerHandle) -> None:
    request = urllib.request.Request(
        server.http + "/api/streams", data=json.dumps({"title": "x" * 200_000}).encode(), method="POST"
    )
    request.add_header("Authorization", "Bearer test-admin-token")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code in (400, 413)


def test_unknown_stream_and_end(server: ServerHandle) -> None:
    assert server.api("GET", "/api/streams/nope")[0] == 404
    assert server.api("POST", "/api/streams/nope/end")[0] == 404
    created = server.create_stream()
    assert server.api("POST", f"/api/streams/{created['id']}/end")[0] == 409


def test_media_paths(server: ServerHandle) -> None:
    created = server.create_stream()
    status, headers, body = server.get(f"/hls/{created['id']}/master.m3u8")
    assert status == 404  # offline, nothing recorded yet
    for path in [
        "/hls/nope/master.m3u8",
        f"/hls/{created['id']}/x/..%2F..%2Fmediaserver.db",
        f"/hls/{created['id']}/x/../../../mediaserver.db",
        f"/hls/{created['id']}/b1/720p/seg-1.m4s",
        f"/hls/{created['id']}/b1/720p/../../../../admin_token",
    ]:
        status, _, body = server.get(path)
        assert status == 404, path
        assert b"token" not in body


def test_raw_path_traversal(server: ServerHandle) -> None:
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=5) as s:
        s.sendall(b"GET /hls/a/b/../../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    assert b"root:" not in reply
    assert reply.split(b"\r\n", 1)[0].split()[1] in (b"400", b"404")


def test_watch_page(server: ServerHandle) -> None:
    created = server.create_stream("Evening <Prayer>")
    status, headers, body = server.get(f"/watch/{created['id']}")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<Prayer>" not in body  # the title can't inject markup
    assert server.get("/watch/nope")[0] == 404
    assert server.get("/")[0] == 200
