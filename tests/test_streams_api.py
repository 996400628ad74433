"""The stream management API: organizations and tokens, CRUD, lifecycle actions, lists, validation,
key rotation and private playback — every answer checked against the served OpenAPI document."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.hls_reader import parse_master, parse_media
from tests.media_source import PublishError, publish, start_publisher
from tests.openapi_check import OpenApiChecker
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config
from tests.test_broadcast import stream_status, wait_for
from web.auth import THROTTLE


class Client:
    """An API client that checks every answer against the OpenAPI document."""

    def __init__(self, server: ServerHandle, token: str, checker: OpenApiChecker) -> None:
        self.server, self.token, self.checker = server, token, checker

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.server.http + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        parsed = json.loads(payload) if payload else None
        self.checker.check(method, path, status, parsed)
        return status, parsed


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = run_server(small_config(tmp_path_factory.mktemp("api3") / "data"))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def checker(server: ServerHandle) -> OpenApiChecker:
    with urllib.request.urlopen(server.http + "/api/openapi.json", timeout=10) as response:
        return OpenApiChecker(json.loads(response.read()))


def admin_client(server: ServerHandle) -> Client:
    """The server admin's client, checking answers against the document this server serves."""
    with urllib.request.urlopen(server.http + "/api/openapi.json") as r:
        return Client(server, ADMIN_TOKEN, OpenApiChecker(json.loads(r.read())))


def org_client(server: ServerHandle, checker: OpenApiChecker, slug: str) -> Client:
    db = server.server.db
    org = db.org(slug) or db.create_org(slug, slug.title())
    _row, token = db.create_token(org["id"], "test")
    return Client(server, token, checker)


def test_crud_and_validation(server: ServerHandle, checker: OpenApiChecker) -> None:
    api = org_client(server, checker, "grace")
    status, stream = api.call("POST", "/api/streams", {
        "title": "Sunday Worship", "description": "Join us", "scheduled_start": "2026-12-06T16:30:00Z",
        "scheduled_end": "2026-12-06T18:00:00Z", "timezone": "America/Chicago", "visibility": "PUBLIC",
        "chat_enabled": True, "giving_enabled": True,
    })
    assert status == 201 and stream["slug"] == "sunday-worship" and stream["stream_key"]
    assert stream["scheduled_start"] == "2026-12-06T16:30:00.000Z" and stream["giving_enabled"] is True
    status, again = api.call("POST", "/api/streams", {"title": "Sunday Worship"})
    assert status == 201 and again["slug"] == "sunday-worship-2"
    status, body = api.call("POST", "/api/streams", {"title": "x", "slug": "sunday-worship"})
    assert status == 400 and "slug" in body["details"]

    status, got = api.call("GET", f"/api/streams/{stream['id']}")
    assert status == 200 and "stream_key" not in got and got["title"] == "Sunday Worship"
    status, patched = api.call("PATCH", f"/api/streams/{stream['id']}", {"title": "Advent Sunday", "dvr_enabled": False})
    assert status == 200 and patched["title"] == "Advent Sunday" and patched["dvr_enabled"] is False

    for bad, field in [({"title": 5}, "title"), ({"title": "t", "colour": "red"}, "colour"),
                       ({"title": "t", "visibility": "SECRET"}, "visibility"),
                       ({"title": "t", "scheduled_start": "next sunday"}, "scheduled_start"),
                       ({"title": "t", "timezone": "Mars/Base"}, "timezone"),
                       ({"title": "t", "scheduled_start": "2026-12-06T18:00:00Z", "scheduled_end": "2026-12-06T17:00:00Z"}, "scheduled_end"),
                       ({}, "title")]:
        status, body = api.call("POST", "/api/streams", bad)
        assert status == 400 and field in body["details"], (bad, body)
    status, body = api.call("PATCH", f"/api/streams/{stream['id']}", {"chat_enabled": "yes"})
    assert status == 400 and "chat_enabled" in body["details"]
    status, body = api.call("POST", "/api/streams", raw=b"{not json")
    assert status == 400 and body["error"]
    status, body = api.call("POST", "/api/streams", raw=json.dumps({"title": "x" * 100_000}).encode())
    assert status == 400 and "body" in body["details"]

    status, _ = api.call("DELETE", f"/api/streams/{again['id']}")
    assert status == 204
    status, _ = api.call("GET", f"/api/streams/{again['id']}")
    assert status == 404


def test_organizations_are_isolated(server: ServerHandle, checker: OpenApiChecker) -> None:
    a = org_client(server, checker, "campus-a")
    b = org_client(server, checker, "campus-b")
    status, stream = a.call("POST", "/api/streams", {"title": "North Campus"})
    assert status == 201
    for method, suffix in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/start"), ("POST", "/rotate-key")]:
        body = {"title": "hijack"} if method == "PATCH" else None
        status, answer = b.call(method, f"/api/streams/{stream['id']}{suffix}", body)
        assert status == 404, (method, suffix, answer)
    status, listing = b.call("GET", "/api/streams")
    assert stream["id"] not in [s["id"] for s in listing["streams"]]
    status, listing = a.call("GET", "/api/streams")
    assert [s["id"] for s in listing["streams"]] == [stream["id"]]


def test_actions_follow_the_state_machine(server: ServerHandle, checker: OpenApiChecker) -> None:
    api = org_client(server, checker, "states")
    _, stream = api.call("POST", "/api/streams", {"title": "Vespers"})
    sid = stream["id"]
    assert api.call("POST", f"/api/streams/{sid}/go-live")[0] == 409
    assert api.call("POST", f"/api/streams/{sid}/end")[0] == 409
    status, started = api.call("POST", f"/api/streams/{sid}/start")
    assert status == 200 and started["status"] == "STARTING"
    assert api.call("POST", f"/api/streams/{sid}/start")[0] == 409
    status, cancelled = api.call("POST", f"/api/streams/{sid}/cancel")
    assert status == 200 and cancelled["status"] == "CANCELLED"
    status, body = api.call("POST", f"/api/streams/{sid}/cancel")
    assert status == 409 and body["details"]["status"] == "CANCELLED"


def test_lists_and_pagination(server: ServerHandle, checker: OpenApiChecker) -> None:
    api = org_client(server, checker, "lists")
    ids = []
    for day in range(1, 6):
        _, s = api.call("POST", "/api/streams", {"title": f"Service {day}", "scheduled_start": f"2026-12-0{day}T16:00:00Z"})
        ids.append(s["id"])
    api.call("POST", f"/api/streams/{ids[0]}/cancel")
    status, page = api.call("GET", "/api/streams?state=upcoming&limit=2")
    assert status == 200 and page["total"] == 4 and [s["id"] for s in page["streams"]] == ids[1:3]
    assert page["next_offset"] == 2
    _, page2 = api.call("GET", "/api/streams?state=upcoming&limit=2&offset=2")
    assert [s["id"] for s in page2["streams"]] == ids[3:5] and page2["next_offset"] is None
    _, past = api.call("GET", "/api/streams?state=past")
    assert [s["id"] for s in past["streams"]] == [ids[0]]
    _, live = api.call("GET", "/api/streams?state=live")
    assert live["streams"] == []
    status, body = api.call("GET", "/api/streams?state=soon&limit=1000")
    assert status == 400 and {"state", "limit"} <= set(body["details"])


def test_bad_tokens_are_slowed_then_refused(server: ServerHandle, checker: OpenApiChecker) -> None:
    throttle = server.server.runner.app[THROTTLE]
    throttle.free_failures, throttle.block_after, throttle.max_delay = 2, 6, 0.05
    try:
        intruder = Client(server, "guess", checker)
        codes = [intruder.call("GET", "/api/streams")[0] for _ in range(8)]
        assert codes[:6] == [401] * 6 and codes[6:] == [429, 429]
        # The server admin's token is not refused... from another address it would not be blocked;
        # here the address is blocked for everyone, which is the point of a per-address block.
    finally:
        throttle._failures.clear()
        throttle.free_failures, throttle.block_after, throttle.max_delay = 5, 30, 5.0
    assert Client(server, ADMIN_TOKEN, checker).call("GET", "/api/streams")[0] == 200


@pytest.mark.media
def test_key_rotation_refuses_the_old_key(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=1.0))
    try:
        api = admin_client(server)
        _, stream = api.call("POST", "/api/streams", {"title": "Rotations"})
        old_key = stream["stream_key"]
        live = start_publisher(server.rtmp_url(old_key), seconds=6.0)
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "LIVE", 15, "LIVE")
        status, rotated = api.call("POST", f"/api/streams/{stream['id']}/rotate-key")
        assert status == 200 and rotated["stream_key"] != old_key
        # The broadcast on the old key is not cut...
        live.join(30)
        assert live.error is None
        # ...but the old key no longer opens a new connection, and the new one does.
        with pytest.raises(PublishError):
            publish(server.rtmp_url(old_key), seconds=1.0)
        assert publish(server.rtmp_url(rotated["stream_key"]), seconds=1.5) > 0
        # Rotation with disconnect cuts the encoder at once.
        _, again = api.call("POST", f"/api/streams/{stream['id']}/rotate-key")
        cut = start_publisher(server.rtmp_url(again["stream_key"]), seconds=20.0)
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "LIVE", 15, "LIVE again")
        status, _ = api.call("POST", f"/api/streams/{stream['id']}/rotate-key", {"disconnect": True})
        assert status == 200
        cut.join(15)
        assert cut.error is not None
    finally:
        server.stop()


@pytest.mark.media
def test_private_stream_needs_a_token_everywhere(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=0.5))
    try:
        api = admin_client(server)
        _, stream = api.call("POST", "/api/streams", {"title": "Members Meeting", "visibility": "PRIVATE", "password": "grace123"})
        publish(server.rtmp_url(stream["stream_key"]), seconds=3.0)
        wait_for(lambda: (stream_status(server, stream["id"])["recording"] or {}).get("mp4_url"), 60, "recording")
        sid = stream["id"]
        recording = stream_status(server, sid)["recording"]
        base = recording["playback_url"].rsplit("/", 1)[0]
        # Without a token nothing leaks: playlists, segments, init, the MP4.
        for url in [f"/hls/{sid}/master.m3u8", f"/hls/{sid}/180p.m3u8", recording["playback_url"],
                    f"{base}/180p/init-0.mp4", f"{base}/180p/seg-0.m4s", recording["mp4_url"]]:
            status, _, body = server.get(url)
            assert status == 401 and b"\x00" not in body, url
            status, _, _ = server.get(url + ("&" if "?" in url else "?") + "token=forged.token")
            assert status == 403, url
        # With a token (from the API or from the password) everything plays, segments included.
        status, grant = api.call("POST", f"/api/streams/{sid}/playback-tokens", {"ttl": 600})
        assert status == 201
        master = server.get(grant["playback_url"])
        assert master[0] == 200 and "private" in master[1]["Cache-Control"]
        variants = parse_master(master[2].decode())
        media_url = f"/hls/{sid}/{variants[0][1]}"
        assert "token=" in media_url
        playlist = parse_media(server.get(media_url)[2].decode())
        assert all("token=" in uri for uri, _, _ in playlist.segments)
        media_dir = media_url.split("?", 1)[0].rsplit("/", 1)[0]
        status, headers, data = server.get(f"{media_dir}/{playlist.segments[0][0]}")
        assert status == 200 and headers["Content-Type"] == "video/iso.segment" and len(data) > 1000
        # A token for this stream doesn't open another private stream.
        _, other = api.call("POST", "/api/streams", {"title": "Elders", "visibility": "PRIVATE"})
        assert server.get(f"/hls/{other['id']}/master.m3u8?token={grant['token']}")[0] == 403
        # The password buys a token; a wrong one doesn't.
        def unlock(password: str) -> tuple[int, Any]:
            req = urllib.request.Request(f"{server.http}/watch/{sid}/unlock", data=json.dumps({"password": password}).encode(), method="POST")
            try:
                with urllib.request.urlopen(req) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())
        assert unlock("wrong")[0] == 403
        status, body = unlock("grace123")
        assert status == 200 and server.get(f"/hls/{sid}/master.m3u8?token={body['token']}")[0] == 200
    finally:
        server.stop()


@pytest.mark.media
def test_go_live_publishes_a_previewed_broadcast(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=0.5))
    try:
        api = admin_client(server)
        _, stream = api.call("POST", "/api/streams", {"title": "Choir Rehearsal", "auto_publish": False})
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=8.0)
        manager = server.server.manager
        wait_for(lambda: (b := manager.broadcasts.get(stream["id"])) is not None and b.previewing, 20, "a preview")
        assert stream_status(server, stream["id"])["status"] == "STARTING"
        assert server.get(f"/hls/{stream['id']}/master.m3u8")[0] == 404  # viewers see nothing yet
        # Nor its segments, even to someone who knows the broadcast id; the church's staff can look.
        broadcast = manager.broadcasts[stream["id"]]
        rendition = next(name for name, track in broadcast.tracks.items() if track.entries)
        segment = f"/hls/{stream['id']}/{broadcast.id}/{rendition}/seg-0.m4s"
        init = f"/hls/{stream['id']}/{broadcast.id}/{rendition}/init-0.mp4"
        assert server.get(segment)[0] == 404 and server.get(init)[0] == 404
        staff = urllib.request.Request(server.http + segment, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(staff, timeout=10) as response:
            assert response.status == 200 and len(response.read()) > 100
        status, body = api.call("POST", f"/api/streams/{stream['id']}/go-live")
        assert status == 200 and body["status"] == "LIVE"
        assert server.get(f"/hls/{stream['id']}/master.m3u8")[0] == 200
        assert server.get(segment)[0] == 200
        assert api.call("POST", f"/api/streams/{stream['id']}/go-live")[0] == 409
        publisher.join(30)
    finally:
        server.stop()


def test_organization_settings_are_stream_defaults(server: ServerHandle, checker: OpenApiChecker) -> None:
    api = org_client(server, checker, "settings")
    status, org = api.call("GET", "/api/orgs/settings")
    assert status == 200 and org["settings"] == {}
    status, org = api.call("PATCH", "/api/orgs/settings", {"timezone": "America/Denver", "settings": {
        "auto_publish": False, "dvr_enabled": False, "latency_mode": "STANDARD",
        "chat": {"blocked_words": ["spam"], "link_filter": True, "slow_mode_seconds": 5},
        "branding": {"watermark_position": "TOP_RIGHT", "pre_stream_image": "/static/pre.png"},
        "default_ladder": [{"name": "720p", "height": 720, "video_bitrate": 2800000}]}})
    assert status == 200 and org["timezone"] == "America/Denver" and org["settings"]["chat"]["slow_mode_seconds"] == 5
    _, stream = api.call("POST", "/api/streams", {"title": "Defaults"})
    assert (stream["auto_publish"], stream["dvr_enabled"], stream["low_latency"], stream["timezone"]) == \
        (False, False, False, "America/Denver")
    _, explicit = api.call("POST", "/api/streams", {"title": "Explicit", "auto_publish": True})
    assert explicit["auto_publish"] is True
    for bad, field in [({"settings": {"latency_mode": "WARP"}}, "settings.latency_mode"),
                       ({"settings": {"chat": {"slow_mode_seconds": -1}}}, "settings.chat.slow_mode_seconds"),
                       ({"timezone": "Mars/Base"}, "timezone"), ({"colour": "red"}, "colour")]:
        status, body = api.call("PATCH", "/api/orgs/settings", bad)
        assert status == 400 and field in body["details"], (bad, body)
    other = org_client(server, checker, "other-church")
    assert other.call("GET", "/api/orgs/settings")[0] == 404


@pytest.mark.media
def test_auto_rotate_retires_the_key_after_a_broadcast(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=0.0))
    try:
        _, stream = server.api("POST", "/api/streams", {"title": "One-off", "auto_rotate_key": True})
        publish(server.rtmp_url(stream["stream_key"]), seconds=2.0)
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "ENDED", 20, "ENDED")
        with pytest.raises(PublishError):
            publish(server.rtmp_url(stream["stream_key"]), seconds=1.0)
        _, rotated = server.api("POST", f"/api/streams/{stream['id']}/rotate-key")
        assert publish(server.rtmp_url(rotated["stream_key"]), seconds=1.5) > 0
    finally:
        server.stop()
