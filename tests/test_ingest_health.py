"""Live ingest health: what the encoder sends, measured by the server, and warnings a volunteer can act on."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ingest.flv import TAG_VIDEO
from ingest.media import AccessUnit, TrackInfo
from mediaserver.ingest_health import IngestHealth
from tests.media_source import encode_flv, flv_tags, publish_tags
from tests.server_fixture import run_server, small_config
from tests.test_broadcast import stream_status, wait_for


def feed_video(health: IngestHealth, seconds: float, *, fps: int = 30, gop: float = 2.0, late_per_second: float = 0.0,
               start: float = 100.0, dts0: int = 0, skip: set[int] | None = None) -> float:
    """Frames at fps arriving in real time (plus late_per_second of growing delay); returns the last arrival."""
    now = start
    for i in range(int(seconds * fps)):
        if skip and i in skip:
            continue
        t = i / fps
        now = start + t + late_per_second * t
        health.feed(AccessUnit("video", dts0 + round(t * 1000), 0, i % round(gop * fps) == 0, bytes(1000)), now)
    return now


def test_measures_rate_keyframes_and_warns_in_plain_language() -> None:
    health = IngestHealth("rtmp", "1.2.3.4:5", 100.0)
    health.feed(TrackInfo("video", "hevc", b"x", 1920, 1080), 100.0)
    now = feed_video(health, 20, gop=8.0)
    snap = health.snapshot(now)
    assert snap["video"]["codec"] == "HEVC" and (snap["video"]["width"], snap["video"]["height"]) == (1920, 1080)
    assert snap["video"]["keyframe_interval"] == 8.0
    assert snap["video"]["frame_rate"] == pytest.approx(30, abs=0.5)
    assert snap["video"]["bitrate"] == pytest.approx(30 * 1000 * 8, rel=0.05)
    assert snap["audio"]["present"] is False
    assert any(w.startswith("keyframe every 8 s") for w in snap["warnings"])
    assert any(w.startswith("no audio") for w in snap["warnings"])
    assert not any("upload" in w for w in snap["warnings"])


def test_upload_falling_behind_and_dropped_frames() -> None:
    health = IngestHealth("srt", "srt:8890", 0.0)
    health.feed(TrackInfo("video", "h264"), 0.0)
    # Each media second takes 1.2 s to arrive: after 20 s the picture is 4 s behind.
    now = feed_video(health, 20, late_per_second=0.2, skip={300, 301, 302})
    snap = health.snapshot(now)
    assert snap["behind_real_time"] == pytest.approx(20 * 0.2, abs=0.1)
    assert any(w.startswith("upload is dropping") for w in snap["warnings"])
    assert snap["video"]["dropped_frames"] == 3


def test_a_clock_jump_is_not_a_delay() -> None:
    health = IngestHealth("rtmp", "p", 0.0)
    health.feed(TrackInfo("video", "h264"), 0.0)
    now = feed_video(health, 5, start=0.0)
    now = feed_video(health, 5, start=now + 1 / 30, dts0=-100_000)  # the encoder restarted its clock 100 s back
    assert health.snapshot(now)["behind_real_time"] < 0.1


@pytest.mark.media
def test_the_stream_api_shows_what_a_real_encoder_sends(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data"))
    try:
        stream = server.create_stream()
        assert stream["ingest"] is None  # no encoder yet
        tags = flv_tags(encode_flv(seconds=12, gop_seconds=8))
        video_bytes = sum(len(t.body) for t in tags if t.kind == TAG_VIDEO)
        sender = threading.Thread(target=publish_tags, args=(server.rtmp_url(stream["stream_key"]), tags),
                                  kwargs={"realtime": True}, daemon=True)
        sender.start()

        def measured() -> dict | None:
            ingest = stream_status(server, stream["id"])["ingest"]
            return ingest if ingest and ingest["video"]["keyframe_interval"] and ingest["connected_seconds"] > 9 else None

        ingest = wait_for(measured, 20, "two keyframes measured")
        video = ingest["video"]
        assert ingest["protocol"] == "rtmp" and ingest["reconnects"] == 0
        assert (video["codec"], video["width"], video["height"]) == ("H.264", 320, 180)
        assert video["keyframe_interval"] == pytest.approx(8.0, abs=0.05)  # what the encoder was set to
        assert video["frame_rate"] == pytest.approx(30, abs=1)
        # Within a factor of two of the file's average (a 5 s window may or may not hold a keyframe).
        assert video_bytes * 8 / 12 / 2 < video["bitrate"] < video_bytes * 8 / 12 * 2
        assert {k: ingest["audio"][k] for k in ("codec", "present")} == {"codec": "AAC", "present": True}
        assert ingest["audio"]["bitrate"] > 0
        assert ingest["warnings"] == ["keyframe every 8 s — set the keyframe interval to 2 s in OBS "
                                      "(Settings → Output → Streaming)"]
        sender.join(30)
    finally:
        server.stop()
