"""Source timestamps that jump back, jump forward, wrap at 2^32 ms or restart: the timeline only moves forward."""
from __future__ import annotations

from pathlib import Path

import pytest

from ingest.flv import FlvTag
from tests.hls_reader import parse_media
from tests.media_source import encode_flv, flv_file, flv_tags, publish_tags
from tests.server_fixture import run_server, small_config
from tests.media_source import WorkerRun, decode, run_worker
from tests.test_broadcast import fetch_text, stream_status, wait_for, wait_recording
from transcode.source_clock import SourceClock


# -- the sans-IO clock ------------------------------------------------------------------------------

def test_clock_backward_jump_continues_one_frame_later() -> None:
    clock = SourceClock(start=10.0)
    times = [clock.place("video", ms) for ms in (100_000, 100_033, 100_066)]
    assert times == [10.0, 10.033, 10.066]
    after = clock.place("video", 100_066 - 97_468)
    assert after == pytest.approx(10.099)
    assert clock.place("audio", 100_066 - 97_468 + 10) == pytest.approx(10.109)
    assert clock.place("video", 100_066 - 97_468 + 33) == pytest.approx(10.132)
    assert len(clock.jumps) == 1 and clock.jumps[0].source_delta_ms == -97_468


def test_clock_unwraps_32_bit_timestamps_without_a_jump() -> None:
    clock = SourceClock()
    start = (1 << 32) - 100
    placed = [clock.place_ms("video", (start + i * 33) & 0xFFFFFFFF) for i in range(10)]
    assert placed == [i * 33 for i in range(10)]
    assert clock.jumps == []


def test_clock_forward_jump_reset_and_small_steps_back() -> None:
    clock = SourceClock(max_gap_ms=5000)
    for ms in (0, 40, 80):
        clock.place_ms("video", ms)
    assert clock.place_ms("video", 3_600_000) == 120  # an hour ahead: a discontinuity
    assert clock.place_ms("video", 0) == 160          # encoder restarted its clock
    assert clock.place_ms("video", 40) == 200
    assert clock.place_ms("audio", 30) == 190         # interleaving: the other track may be a bit behind
    assert clock.place_ms("audio", 20) == 190         # a small step back inside a track holds still
    assert len(clock.jumps) == 2
    # Audio interleaved 700 ms ahead of video, and video pausing 4 s while audio goes on: no jumps.
    clock = SourceClock()
    for i in range(300):
        clock.place_ms("video", i * 33 if not 100 <= i < 220 else 100 * 33)
        clock.place_ms("audio", 700 + i * 33)
    assert clock.place_ms("video", 300 * 33) == 9900 and clock.jump_count == 0
    # Timestamps never decrease per track, whatever the input.
    import random

    rng = random.Random(7)
    clock = SourceClock()
    last: dict[str, int] = {}
    for _ in range(5000):
        kind = rng.choice(["audio", "video"])
        value = clock.place_ms(kind, rng.randrange(0, 1 << 32))
        assert value >= last.get(kind, 0)
        last[kind] = value


# -- real media through the worker -----------------------------------------------------------------

def shifted(tags: list[FlvTag], after_ms: int, shift_ms: int) -> list[FlvTag]:
    """Every audio/video tag from after_ms on moves by shift_ms (wrapped to 32 bits, as RTMP carries it)."""
    out = []
    for t in tags:
        if t.kind in (8, 9) and t.timestamp_ms >= after_ms:
            t = FlvTag(t.kind, (t.timestamp_ms + shift_ms) & 0xFFFFFFFF, t.body)
        out.append(t)
    return out


def check_continuous(run: WorkerRun, seconds: float) -> None:
    assert run.code == 0, run.of("error")
    segments = run.segments("180p")
    assert segments and all(s["duration"] > 0 for s in segments), [s["duration"] for s in segments]
    for a, b in zip(segments, segments[1:]):
        assert b["start"] == pytest.approx(a["start"] + a["duration"], abs=0.002)
    total = sum(s["duration"] for s in segments)
    assert abs(total - seconds) <= 0.2, total
    media = decode(run.media("180p"))
    assert all(b > a for a, b in zip(media.video_pts, media.video_pts[1:]))
    assert abs(len(media.video_pts) - seconds * 30) <= 2
    assert media.audio_pts and abs(media.audio_pts[-1] - media.video_pts[-1]) < 0.1


@pytest.mark.parametrize("shift_ms", [-97_468, -3_000, 600_000])
def test_jump_in_source_timestamps_keeps_the_timeline(tmp_path: Path, shift_ms: int) -> None:
    tags = flv_tags(encode_flv(seconds=6))
    run = run_worker(flv_file(shifted(tags, 3000, shift_ms)), tmp_path)
    check_continuous(run, 6.0)
    assert len(run.pipeline.clock.jumps) >= 1


def test_timestamps_wrapping_at_2_pow_32(tmp_path: Path) -> None:
    tags = flv_tags(encode_flv(seconds=6))
    run = run_worker(flv_file(shifted(tags, 0, (1 << 32) - 3000)), tmp_path)
    check_continuous(run, 6.0)
    assert run.pipeline.clock.jumps == []


def test_encoder_restarting_its_clock_mid_stream(tmp_path: Path) -> None:
    tags = flv_tags(encode_flv(seconds=6))
    run = run_worker(flv_file(shifted(tags, 3000, -3000)), tmp_path)  # back to 0 at 3 s
    check_continuous(run, 6.0)


@pytest.mark.media
def test_jump_back_through_the_server_keeps_the_broadcast(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=6.0))
    try:
        stream = server.create_stream()
        url = server.rtmp_url(stream["stream_key"])
        tags = flv_tags(encode_flv(seconds=5))
        publish_tags(url, shifted(tags, 2500, -97_468))
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "ENDING", 20, "ENDING")
        live = parse_media(fetch_text(server, f"/hls/{stream['id']}/180p.m3u8"))
        assert live.segments and all(d > 0 for _, d, _ in live.segments), live.segments
        # A valid encoder reconnecting inside the window continues the same broadcast.
        publish_tags(url, flv_tags(encode_flv(seconds=3)))
        body = wait_recording(server, stream["id"])
        assert body["status"] == "ENDED", body
        assert abs(body["recording"]["duration"] - 8.0) <= 1.2, body["recording"]
        base = body["recording"]["playback_url"].rsplit("/", 1)[0]
        vod = parse_media(fetch_text(server, f"{base}/180p.m3u8"))
        assert all(d > 0 for _, d, _ in vod.segments) and abs(vod.duration - 8.0) <= 1.2
    finally:
        server.stop()


def test_segmenter_never_takes_a_decode_time_back() -> None:
    """Whatever a caller passes, fragments get increasing, non-negative decode times."""
    from packager.fmp4 import VideoTrack
    from packager.segmenter import Segmenter

    avcc = next(t for t in flv_tags(encode_flv(seconds=0.2, audio=False)) if t.kind == 9).body[5:]
    segmenter = Segmenter(VideoTrack(1, 90_000, 320, 180, avcc), None)
    out = []
    for i, dts in enumerate([0, 3000, 6000, -7_519_530, -7_516_530, -7_513_530, 12000, 15000]):
        out += segmenter.add_video(b"\x00\x00\x00\x01\x65", dts, dts, i % 3 == 0, i % 3 == 0)
    out += segmenter.finish()
    assert all(s.duration > 0 for s in out) and [s.start for s in out] == sorted(s.start for s in out)


def test_audio_waiting_for_a_stopped_video_is_bounded() -> None:
    """Video stops, audio goes on for a minute: what the segmenter holds stays within max_audio_buffer."""
    from packager.fmp4 import AudioTrack, VideoTrack
    from packager.segmenter import Segmenter

    avcc = next(t for t in flv_tags(encode_flv(seconds=0.2, audio=False)) if t.kind == 9).body[5:]
    segmenter = Segmenter(VideoTrack(1, 90_000, 320, 180, avcc), AudioTrack(2, 48_000, 48_000, 2, b"\x11\x90"),
                          max_audio_buffer=5.0)
    for i in range(60):  # two seconds of video, then nothing
        segmenter.add_video(b"\x00\x00\x00\x01\x65", i * 3000, i * 3000, i % 30 == 0, i % 30 == 0)
    held = []
    for n in range(60 * 48_000 // 1024):  # a minute of AAC frames
        segmenter.add_audio(b"\x21" * 8, n * 1024, 1024)
        held.append(sum(sample.duration for sample in segmenter._audio) / 48_000)
    assert max(held) <= 5.0 + 1024 / 48_000
    assert segmenter.finish()  # what is left still closes into segments
