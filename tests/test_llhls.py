"""Low-Latency HLS end to end: a real RTMP publish, playlists read over HTTP the way an LL client does
(blocking reloads on the preload hint), parts decoded with PyAV. Each rule of RFC 8216bis checked over
many reloads; standard readers (PyAV/FFmpeg) keep playing the same playlists."""
from __future__ import annotations

import http.client
import io
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import av
import pytest

from tests.hls_reader import parse_attributes, parse_master
from tests.media_source import start_publisher
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_broadcast import wait_for, wait_recording

pytestmark = pytest.mark.media

PART_TARGET = 0.25


@dataclass
class Part:
    uri: str
    duration: float
    independent: bool


@dataclass
class Segment:
    sequence: int
    uri: str
    duration: float
    parts: list[Part] = field(default_factory=list)


@dataclass
class LLPlaylist:
    text: str
    version: int = 0
    target: float = 0.0
    part_target: float = 0.0
    server_control: dict[str, str] = field(default_factory=dict)
    media_sequence: int = 0
    skipped: int = 0
    map_uri: str = ""
    segments: list[Segment] = field(default_factory=list)
    open_parts: list[Part] = field(default_factory=list)  # of the segment still being written
    preload_hint: str | None = None
    reports: list[dict[str, str]] = field(default_factory=list)

    def newest_part(self) -> tuple[int, int]:
        """(media sequence, index) of the newest part listed."""
        if self.open_parts:
            return self.media_sequence + self.skipped + len(self.segments), len(self.open_parts) - 1
        last = self.segments[-1]
        return last.sequence, len(last.parts) - 1

    def all_parts(self) -> list[tuple[int, int, Part]]:
        out = [(s.sequence, i, p) for s in self.segments for i, p in enumerate(s.parts)]
        open_sequence = self.media_sequence + self.skipped + len(self.segments)
        return out + [(open_sequence, i, p) for i, p in enumerate(self.open_parts)]


def parse_ll(text: str) -> LLPlaylist:
    assert text.startswith("#EXTM3U\n"), text[:80]
    playlist = LLPlaylist(text)
    pending: list[Part] = []
    duration: float | None = None
    for line in text.splitlines():
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-VERSION":
            playlist.version = int(value)
        elif tag == "#EXT-X-TARGETDURATION":
            playlist.target = float(value)
        elif tag == "#EXT-X-PART-INF":
            playlist.part_target = float(parse_attributes(value)["PART-TARGET"])
        elif tag == "#EXT-X-SERVER-CONTROL":
            playlist.server_control = parse_attributes(value)
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            playlist.media_sequence = int(value)
        elif tag == "#EXT-X-SKIP":
            playlist.skipped = int(parse_attributes(value)["SKIPPED-SEGMENTS"])
        elif tag == "#EXT-X-MAP":
            playlist.map_uri = parse_attributes(value)["URI"]
        elif tag == "#EXT-X-PART":
            attrs = parse_attributes(value)
            pending.append(Part(attrs["URI"], float(attrs["DURATION"]), attrs.get("INDEPENDENT") == "YES"))
        elif tag == "#EXTINF":
            duration = float(value.rstrip(","))
        elif tag == "#EXT-X-PRELOAD-HINT":
            attrs = parse_attributes(value)
            assert attrs["TYPE"] == "PART", line
            playlist.preload_hint = attrs["URI"]
        elif tag == "#EXT-X-RENDITION-REPORT":
            playlist.reports.append(parse_attributes(value))
        elif line and not line.startswith("#"):
            assert duration is not None, line
            sequence = playlist.media_sequence + playlist.skipped + len(playlist.segments)
            playlist.segments.append(Segment(sequence, line, duration, pending))
            pending, duration = [], None
    playlist.open_parts = pending
    return playlist


def get(server: ServerHandle, path: str, timeout: float = 15) -> tuple[int, bytes, float]:
    """Status, body and the seconds the answer took."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(server.http + path, timeout=timeout) as response:
            return response.status, response.read(), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), time.monotonic() - started


def video_packets(init: bytes, media: bytes) -> tuple[bool, float]:
    """(first video packet is a keyframe, seconds of video) as FFmpeg's MP4 demuxer reads the part."""
    first: bool | None = None
    seconds = 0.0
    with av.open(io.BytesIO(init + media), "r", format="mp4") as container:
        for packet in container.demux(video=0):
            if packet.size:
                first = bool(packet.is_keyframe) if first is None else first
                seconds += float(packet.duration * packet.time_base)
    assert first is not None, "no video in the part"
    return first, seconds


def decoded_frames(init: bytes, media: bytes) -> int:
    with av.open(io.BytesIO(init + media), "r", format="mp4") as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, dict[str, Any]]]:
    config = small_config(tmp_path_factory.mktemp("ll") / "data", reconnect_window=4.0)
    config.hls.part_target = PART_TARGET
    server = run_server(config)
    status, stream = server.api("POST", "/api/streams", {"title": "Low latency", "low_latency": True})
    assert status == 201 and stream["low_latency"] is True, stream
    publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=16.0)
    try:
        wait_for(lambda: get(server, f"/hls/{stream['id']}/master.m3u8")[0] == 200, 30, "the master playlist")
        yield server, stream
    finally:
        publisher.join(60)
        server.stop()


def media_path(stream: dict[str, Any], query: str = "") -> str:
    return f"/hls/{stream['id']}/180p.m3u8" + (f"?{query}" if query else "")


def test_ll_playlists_keep_the_spec_over_many_reloads(live: tuple[ServerHandle, dict[str, Any]]) -> None:
    server, stream = live
    base = f"/hls/{stream['id']}/"
    status, body, _ = get(server, media_path(stream))
    assert status == 200
    playlist = parse_ll(body.decode())
    init = get(server, base + playlist.map_uri)[1]
    assert status == 200 and playlist.version >= 9
    control = playlist.server_control
    assert control["CAN-BLOCK-RELOAD"] == "YES"
    assert playlist.part_target == PART_TARGET
    assert float(control["PART-HOLD-BACK"]) >= 3 * playlist.part_target
    assert float(control["CAN-SKIP-UNTIL"]) >= 6 * playlist.target

    # Follow the live edge as an LL client does: block on the hinted part, fetch the hinted part at once.
    # Checks that need more requests come after, so the client is always waiting ahead of the server.
    seen: list[tuple[LLPlaylist, LLPlaylist, tuple[int, int, bytes, float] | None]] = []
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        assert playlist.preload_hint is not None
        hint_match = re.search(r"part-(\d+)\.(\d+)\.m4s", playlist.preload_hint)
        assert hint_match, playlist.preload_hint
        want = (int(hint_match.group(1)), int(hint_match.group(2)))
        got: dict[str, tuple[int, bytes, float]] = {}
        hint = playlist.preload_hint
        hinted = threading.Thread(target=lambda: got.update(part=get(server, base + hint)))
        hinted.start()
        status, body, _ = get(server, media_path(stream, f"_HLS_msn={want[0]}&_HLS_part={want[1]}"))
        assert status == 200, body
        hinted.join(10)
        before, playlist = playlist, parse_ll(body.decode())
        held = got.get("part")
        if held is not None and held[0] == 200:  # the held answer is the complete part the URI names
            assert held[1] == get(server, base + hint)[1]
        seen.append((before, playlist, held))
    assert len(seen) >= 15, len(seen)

    hints_kept: list[tuple[str | None, str]] = []  # (hint, the next part that came)
    answered_with_newest = 0
    checked: set[str] = set()
    independent = 0
    for before, after_playlist, _held in seen:
        old = before.newest_part()
        parts = after_playlist.all_parts()
        came = [(s, i, p) for s, i, p in parts if (s, i) > old]
        assert came, "the blocking reload returned without the part it waited for"
        hints_kept.append((before.preload_hint, came[0][2].uri))
        answered_with_newest += after_playlist.newest_part() == (came[0][0], came[0][1])
        fetch = after_playlist is seen[-1][1]  # older parts may have left the server's memory by now
        for s in after_playlist.segments:
            if s.parts:  # parts add up to their segment; the segment is its parts joined
                assert abs(sum(p.duration for p in s.parts) - s.duration) < 0.002, s
                # Every part but the last of its segment is at least 85 % of the part target (RFC 8216bis 4.4.4.9).
                assert all(p.duration >= 0.85 * after_playlist.part_target for p in s.parts[:-1]), s
                if fetch and s.uri not in checked:
                    checked.add(s.uri)
                    joined = b"".join(get(server, base + p.uri)[1] for p in s.parts)
                    assert joined == get(server, base + s.uri)[1]
        for s, i, part in parts:
            assert part.duration <= after_playlist.part_target + 0.001, part
            if fetch and part.uri not in checked:
                checked.add(part.uri)
                data = get(server, base + part.uri)[1]
                keyframe, seconds = video_packets(init, data)
                assert part.independent == keyframe, part
                # Measured from the media itself: within the configured part target, and as listed.
                assert seconds <= PART_TARGET + 0.001 and abs(seconds - part.duration) < 0.002, (part, seconds)
                independent += part.independent
                # An independent part decodes on its own (a player may start there).
                assert not part.independent or decoded_frames(init, data) > 0
        # Parts older than three target durations leave the playlist.
        end = sum(s.duration for s in after_playlist.segments)
        elapsed = 0.0
        for s in after_playlist.segments:
            if s.parts:
                assert end - elapsed <= 3 * after_playlist.target + s.duration + 0.01, (s, end, elapsed)
            elapsed += s.duration
        assert {r["URI"] for r in after_playlist.reports} == {"144p.m3u8"}
    assert independent >= 2 and len(checked) >= 10, checked
    # The preload hint named the part that came next (a hint at a segment's end may name a part that
    # the segment boundary made unnecessary, so nearly always rather than always).
    right = sum(1 for hint, came_uri in hints_kept if hint == came_uri)
    assert right >= 0.9 * len(hints_kept), hints_kept
    # Held until the part existed and answered then, not later: the answer's newest part is the one that came.
    assert answered_with_newest >= 0.9 * len(seen), (answered_with_newest, len(seen))


def test_a_hinted_part_asked_for_early_comes_whole_once_complete(live: tuple[ServerHandle, dict[str, Any]]) -> None:
    """A hinted part requested before it exists is held, then sent whole with its length: no byte of a part
    goes out before all of it can (RFC 8216bis 6.2.6), so a player's bandwidth estimate stays right. It comes
    no earlier than a second client's blocking reload for that part, and not much later."""
    server, stream = live
    for _ in range(5):
        playlist = parse_ll(get(server, media_path(stream))[1].decode())
        assert playlist.preload_hint is not None
        numbers = re.search(r"part-(\d+)\.(\d+)\.m4s", playlist.preload_hint)
        assert numbers is not None
        complete_at: list[float] = []

        def reload() -> None:
            get(server, media_path(stream, f"_HLS_msn={numbers.group(1)}&_HLS_part={numbers.group(2)}"))
            complete_at.append(time.monotonic())

        waiter = threading.Thread(target=reload)
        connection = http.client.HTTPConnection("127.0.0.1", server.server.http_port, timeout=15)
        connection.request("GET", f"/hls/{stream['id']}/{playlist.preload_hint}")
        waiter.start()
        response = connection.getresponse()
        first = response.read1(65536)
        first_at = time.monotonic()
        body = first + response.read()
        waiter.join(15)
        connection.close()
        if response.status == 404:  # the segment ended before the hinted part: allowed, and said at once
            continue
        assert response.status == 200
        assert response.getheader("Content-Length") == str(len(body))
        assert body == get(server, f"/hls/{stream['id']}/{playlist.preload_hint}")[1]
        assert body[4:8] in (b"styp", b"moof")
        # Blocked until the part was complete: the playlist that lists it was ready no later than its bytes.
        assert complete_at and complete_at[0] <= first_at + 0.5, (complete_at, first_at)


def test_blocking_reload_refuses_what_the_spec_refuses(live: tuple[ServerHandle, dict[str, Any]]) -> None:
    server, stream = live
    playlist = parse_ll(get(server, media_path(stream))[1].decode())
    last = playlist.segments[-1].sequence
    assert get(server, media_path(stream, "_HLS_part=1"))[0] == 400
    assert get(server, media_path(stream, f"_HLS_msn={last + 3}"))[0] == 400
    assert get(server, media_path(stream, "_HLS_msn=x"))[0] == 400
    # A segment already there is answered at once, with the whole playlist.
    status, body, _ = get(server, media_path(stream, f"_HLS_msn={last}"))
    assert status == 200 and parse_ll(body.decode()).segments[-1].sequence >= last
    # A part index past a complete segment's last part means the next segment's first part (6.2.5.2).
    playlist = parse_ll(get(server, media_path(stream))[1].decode())
    closed = playlist.segments[-1]
    status, body, _ = get(server, media_path(stream, f"_HLS_msn={closed.sequence}&_HLS_part={len(closed.parts)}"))
    assert status == 200
    assert any(s > closed.sequence for s, _, _ in parse_ll(body.decode()).all_parts()), body.decode()[-400:]
    # Waiting for the next segment returns once it is complete (its EXTINF is listed).
    status, body, _ = get(server, media_path(stream, f"_HLS_msn={last + 1}"))
    assert status == 200 and parse_ll(body.decode()).segments[-1].sequence >= last + 1


def test_delta_updates_match_the_full_playlist(live: tuple[ServerHandle, dict[str, Any]]) -> None:
    server, stream = live
    # Wait until the playlist is longer than CAN-SKIP-UNTIL (6 target durations of 1 s).
    wait_for(lambda: len(parse_ll(get(server, media_path(stream))[1].decode()).segments) > 8, 30, "9 segments")
    playlist = parse_ll(get(server, media_path(stream))[1].decode())
    sequence, index = playlist.newest_part()
    query = f"_HLS_msn={sequence}&_HLS_part={index}"
    full = parse_ll(get(server, media_path(stream, query))[1].decode())
    delta = parse_ll(get(server, media_path(stream, query + "&_HLS_skip=YES"))[1].decode())
    if full.newest_part() != delta.newest_part():  # a part came between the two requests: once more
        full = parse_ll(get(server, media_path(stream, query))[1].decode())
    assert delta.skipped > 0 and delta.media_sequence == full.media_sequence
    skip_until = float(full.server_control["CAN-SKIP-UNTIL"])
    assert sum(s.duration for s in full.segments[delta.skipped:]) >= skip_until
    tail = [(s.sequence, s.uri, s.duration) for s in full.segments[delta.skipped:]]
    assert [(s.sequence, s.uri, s.duration) for s in delta.segments][:len(tail)] == tail
    assert delta.map_uri == full.map_uri and len(delta.text) < len(full.text)


def test_standard_readers_play_the_ll_stream(live: tuple[ServerHandle, dict[str, Any]]) -> None:
    server, stream = live
    # FFmpeg's HLS demuxer knows nothing of parts: it reads the same playlists as segments.
    with av.open(server.http + f"/hls/{stream['id']}/master.m3u8", "r", options={"live_start_index": "0"}) as c:
        frames = 0
        for _ in c.decode(video=0):
            frames += 1
            if frames >= 45:
                break
    assert frames >= 45
    master = parse_master(get(server, f"/hls/{stream['id']}/master.m3u8")[1].decode())
    assert [uri for _, uri in master] == ["180p.m3u8", "144p.m3u8"]


def test_a_wait_past_three_target_durations_is_503_and_the_recording_has_no_parts(
        live: tuple[ServerHandle, dict[str, Any]]) -> None:
    server, stream = live
    # Once the encoder has stopped (the broadcast waits in its reconnect window), a part that never
    # comes is answered 503 after three target durations.
    wait_for(lambda: server.api("GET", f"/api/streams/{stream['id']}")[1]["status"] == "ENDING", 60, "ENDING")
    playlist = parse_ll(get(server, media_path(stream))[1].decode())
    sequence, index = playlist.newest_part()
    status, _, took = get(server, media_path(stream, f"_HLS_msn={sequence + 1}&_HLS_part=0"))
    assert status == 503 and took >= 2.5 * playlist.target
    assert wait_recording(server, stream["id"])["recording"]["status"] == "READY"
    vod = get(server, f"/hls/{stream['id']}/180p.m3u8")[1].decode()
    assert "#EXT-X-PART" not in vod and "#EXT-X-ENDLIST" in vod and "PRELOAD-HINT" not in vod


def test_private_ll_stream_carries_the_token_on_parts(tmp_path: Path) -> None:
    config = small_config(tmp_path / "data")
    config.hls.part_target = PART_TARGET
    server = run_server(config)
    try:
        status, stream = server.api("POST", "/api/streams", {"title": "Private LL", "low_latency": True,
                                                             "visibility": "PRIVATE"})
        assert status == 201
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=5.0)
        status, body = server.api("POST", f"/api/streams/{stream['id']}/playback-tokens", {})
        assert status in (200, 201), body
        token = body["token"]
        path = f"/hls/{stream['id']}/180p.m3u8?token={urllib.parse.quote(token)}"
        wait_for(lambda: get(server, path)[0] == 200, 30, "the private playlist")
        text = get(server, path)[1].decode()
        playlist = parse_ll(text)
        assert playlist.open_parts or any(s.parts for s in playlist.segments)
        for _, _, part in playlist.all_parts():
            assert "token=" in part.uri
        assert playlist.preload_hint and "token=" in playlist.preload_hint
        part_uri = playlist.all_parts()[-1][2].uri
        assert get(server, f"/hls/{stream['id']}/{part_uri}")[0] == 200
        assert get(server, f"/hls/{stream['id']}/{part_uri.split('?')[0]}")[0] in (401, 403)
        assert get(server, f"/hls/{stream['id']}/180p.m3u8?_HLS_msn=0")[0] in (401, 403)
        publisher.join(30)
    finally:
        server.stop()



