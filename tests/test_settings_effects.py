"""Stream and organization settings act, shown by their effect on real broadcasts (not by a round trip):
dvr_enabled, recording_enabled, low_latency on streams; dvr_window_minutes, default_ladder, latency_mode on
organizations."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.hls_reader import parse_master, parse_media
from tests.media_source import publish, start_publisher
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_broadcast import stream_status, wait_for
from web.orgs_api import page_branding

def live_edge_server(tmp_path: Path) -> ServerHandle:
    """A server with an hour of DVR by default and a three-segment live edge."""
    config = small_config(tmp_path / "data", dvr_window=3600.0, reconnect_window=0.0)
    config.hls.live_edge_segments = 3  # the fewest the spec allows (three target durations)
    return run_server(config)


def org_token(server: ServerHandle, slug: str, settings: dict[str, Any]) -> str:
    db = server.server.db
    org = db.org(slug) or db.create_org(slug, slug.title())
    _row, token = db.create_token(org["id"], "test")
    status, body = server.api("PATCH", f"/api/orgs/{slug}", {"settings": settings}, token=token)
    assert status == 200, body
    return token


def create(server: ServerHandle, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    status, stream = server.api("POST", "/api/streams", body, **({"token": token} if token else {}))
    assert status == 201, stream
    return stream


def master_variants(server: ServerHandle, stream_id: str) -> list[tuple[str, str]] | None:
    """(RESOLUTION, URI) of each variant of the live master playlist, or None while there is none."""
    status, _, text = server.get(f"/hls/{stream_id}/master.m3u8")
    return [(attrs["RESOLUTION"], uri) for attrs, uri in parse_master(text.decode())] if status == 200 else None


def wait_live_edge_only(server: ServerHandle, stream_id: str) -> None:
    """The live media playlist slides with at most live_edge_segments (3) segments."""
    def slid() -> bool:
        status, _, text = server.get(f"/hls/{stream_id}/180p.m3u8")
        if status != 200:
            return False
        playlist = parse_media(text.decode())
        assert not playlist.ended and len(playlist.segments) <= 3, playlist.text
        return playlist.media_sequence >= 1

    wait_for(slid, 20, "the live playlist to keep only the live edge")


@pytest.mark.media
def test_dvr_disabled_keeps_only_the_live_edge(tmp_path: Path) -> None:
    server = live_edge_server(tmp_path)
    try:
        stream = create(server, {"title": "No rewind", "dvr_enabled": False})
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=7.0)
        wait_live_edge_only(server, stream["id"])
        # A segment that left the window is not served while the broadcast is live.
        base = f"/hls/{stream['id']}/{server.server.manager.broadcasts[stream['id']].id}"
        assert server.get(f"{base}/180p/seg-0.m4s")[0] == 404
        publisher.join(30)
        assert publisher.error is None
    finally:
        server.stop()


@pytest.mark.media
def test_org_dvr_window_minutes_sets_its_streams_window(tmp_path: Path) -> None:
    server = live_edge_server(tmp_path)
    try:
        token = org_token(server, "short-dvr", {"dvr_window_minutes": 0})
        stream = create(server, {"title": "Org window"}, token)
        assert stream["dvr_enabled"] is True  # the organization's window applies, not the stream's flag
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=7.0)
        wait_live_edge_only(server, stream["id"])
        publisher.join(30)
        assert publisher.error is None
    finally:
        server.stop()


@pytest.mark.media
def test_recording_disabled_makes_no_recording(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=0.0))
    try:
        stream = create(server, {"title": "Not kept", "recording_enabled": False})
        publish(server.rtmp_url(stream["stream_key"]), seconds=3.0)
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "ENDED", 20, "ENDED")
        folder = tmp_path / "data" / "media" / stream["id"]
        # The segments go once the broadcast has ended; no VOD playlists, no MP4.
        wait_for(lambda: not folder.exists() or not any(p.is_file() for p in folder.rglob("*")), 20,
                 "the broadcast's segments to be deleted")
        body = stream_status(server, stream["id"])
        assert body["recording"] is None
        assert server.get(f"/hls/{stream['id']}/master.m3u8")[0] == 404
        rows = list(server.server.db.db.query("select id from recordings where stream_id = ?", [stream["id"]]))
        assert rows == []
    finally:
        server.stop()


@pytest.mark.media
def test_org_default_ladder_is_the_ladder_of_its_broadcasts(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=0.0))
    try:
        token = org_token(server, "small-ladder", {"default_ladder": [
            {"name": "low", "height": 144, "video_bitrate": 200_000},
            {"name": "low", "height": 90, "video_bitrate": 100_000}]})  # a repeated name: the first rung wins
        stream = create(server, {"title": "Org ladder"}, token)
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=5.0)

        variants = wait_for(lambda: master_variants(server, stream["id"]), 20, "the live master playlist")
        # The server's ladder would give 180p and 144p for this 320x180 source.
        assert variants == [("256x144", "low.m3u8")]
        publisher.join(30)
        assert publisher.error is None
        # Another organization's streams keep the server's ladder.
        other = create(server, {"title": "Server ladder"})
        publisher = start_publisher(server.rtmp_url(other["stream_key"]), seconds=3.0)
        variants = wait_for(lambda: len(master_variants(server, other["id"]) or []) == 2 and
                            master_variants(server, other["id"]), 20, "the other master playlist")
        assert [uri for _, uri in variants] == ["180p.m3u8", "144p.m3u8"]
        publisher.join(30)
    finally:
        server.stop()


@pytest.mark.media
def test_low_latency_and_latency_mode_turn_parts_on(tmp_path: Path) -> None:
    """low_latency (and an organization's latency_mode LOW, for new streams) gives the live playlists
    LL-HLS parts and blocking reload; a standard stream's playlists have neither."""
    server = run_server(small_config(tmp_path / "data"))
    try:
        db = server.server.db
        org = db.create_org("latency", "Latency")
        _row, token = db.create_token(org["id"], "test")
        status, body = server.api("PATCH", "/api/orgs/latency", {"settings": {"latency_mode": "LOW"}}, token=token)
        assert status == 200 and body["settings"]["latency_mode"] == "LOW", body
        fast = create(server, {"title": "Fast"}, token)
        assert fast["low_latency"] is True
        standard = create(server, {"title": "Standard", "low_latency": False}, token)
        publishers = [start_publisher(server.rtmp_url(s["stream_key"]), seconds=3.0) for s in (fast, standard)]

        def media_text(stream: dict[str, Any]) -> str | None:
            status, _, body = server.get(f"/hls/{stream['id']}/180p.m3u8")
            return body.decode() if status == 200 and b"#EXTINF" in body else None

        fast_text = wait_for(lambda: media_text(fast), 30, "the LL playlist")
        standard_text = wait_for(lambda: media_text(standard), 30, "the standard playlist")
        assert "#EXT-X-PART:" in fast_text and "CAN-BLOCK-RELOAD=YES" in fast_text
        assert "#EXT-X-PART" not in standard_text and "CAN-BLOCK-RELOAD" not in standard_text
        for publisher in publishers:
            publisher.join(30)
        status, body = server.api("PATCH", "/api/orgs/latency", {"settings": {"latency_mode": "STANDARD"}},
                                  token=token)
        assert status == 200
        assert create(server, {"title": "After"}, token)["low_latency"] is False
    finally:
        server.stop()


def test_branding_is_what_the_watch_page_shows(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data"))
    try:
        branding = {"accent_color": "#1d4ed8", "logo_url": "/static/grace-logo.png",
                    "pre_stream_image": "https://cdn.example.org/soon.jpg", "watermark_position": "TOP_RIGHT"}
        token = org_token(server, "grace-brand", {"branding": branding})
        status, body = server.api("PATCH", "/api/orgs/grace-brand", {"settings": {"branding": {"accent_color": "blue"}}},
                                  token=token)
        assert status == 400 and "settings.branding.accent_color" in body["details"]
        org = server.server.db.org("grace-brand")
        expected = {"church_name": "Grace-Brand", "accent_color": "#1d4ed8", "logo_url": "/static/grace-logo.png",
                    "pre_stream_image": "https://cdn.example.org/soon.jpg"}
        assert page_branding(org) == expected
        stream = create(server, {"title": "Branded", "dvr_enabled": False}, token)
        status, _, page = server.get(f"/watch/{stream['id']}")
        assert status == 200
        match = re.search(r'<script id="player-config" type="application/json">(.*?)</script>', page.decode(), re.S)
        assert match
        config = json.loads(match.group(1))
        assert config["branding"] == expected
        assert config["dvr_window_seconds"] == 0  # dvr_enabled false: the page draws no DVR bar
    finally:
        server.stop()
