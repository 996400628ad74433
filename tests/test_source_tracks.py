"""Sources with unusual tracks: audio only (radio-style), audio that starts late; buffers stay bounded."""
from __future__ import annotations

from pathlib import Path

import pytest

from ingest.flv import TAG_AUDIO, TAG_VIDEO, FlvTag
from tests.hls_reader import parse_master
from tests.media_source import encode_flv, feed_tag, flv_file, flv_tags, publish_tags
from tests.server_fixture import run_server, small_config
from tests.media_source import decode, run_worker
from tests.test_broadcast import fetch_text, stream_status, wait_for, wait_recording
from transcode.job import RenditionSpec, TranscodeJob
from transcode.pipeline import Pipeline


def test_audio_only_source_goes_out_as_an_audio_rendition(tmp_path: Path) -> None:
    run = run_worker(flv_file(flv_tags(encode_flv(seconds=6, video=False))), tmp_path)
    assert run.code == 0, run.of("error")
    (rendition,) = run.of("rendition")
    assert rendition["audio_only"] and rendition["codecs"] == "mp4a.40.2"
    assert rendition["width"] == 0 and rendition["height"] == 0 and rendition["bitrate"] > 0
    segments = run.segments(rendition["name"])
    assert len(segments) == 6 and all(s["duration"] > 0 for s in segments)
    assert abs(sum(s["duration"] for s in segments) - 6.0) < 0.1
    media = decode(run.media(rendition["name"]))
    assert not media.video_pts and abs(media.audio_samples / 48000 - 6.0) < 0.1


def late_audio(tags: list[FlvTag], after_video_frames: int) -> list[FlvTag]:
    """The AAC sequence header arrives after this many video frames; no audio before it."""
    out: list[FlvTag] = []
    header = next(t for t in tags if t.kind == TAG_AUDIO and t.body[1] == 0)
    seen = 0
    started = False
    for t in tags:
        if t.kind == TAG_VIDEO and t.body[1] == 1:
            seen += 1
            if seen == after_video_frames + 1 and not started:
                out.append(FlvTag(TAG_AUDIO, t.timestamp_ms, header.body))
                started = True
        if t.kind == TAG_AUDIO and (not started or t.body[1] == 0):
            continue
        out.append(t)
    return out


def test_late_audio_header_is_picked_up(tmp_path: Path) -> None:
    tags = late_audio(flv_tags(encode_flv(seconds=4)), after_video_frames=20)  # about 0.7 s late
    run = run_worker(flv_file(tags), tmp_path)
    assert run.code == 0
    (rendition,) = run.of("rendition")
    assert rendition["codecs"].endswith(",mp4a.40.2")
    media = decode(run.media("180p"))
    assert abs(len(media.video_pts) - 120) <= 2  # no video lost while waiting for audio
    assert media.audio_pts and 0.6 <= media.audio_pts[0] <= 0.8
    assert abs(media.audio_pts[-1] - media.video_pts[-1]) < 0.1


def test_held_media_is_bounded(tmp_path: Path) -> None:
    job = TranscodeJob("t", str(tmp_path), "m/s/b", [RenditionSpec("180p", 180, 300_000)], segment_duration=1.0,
                       preset="ultrafast")
    segments: list[object] = []
    # A video header but no pictures, and 30 s of audio: audio held up to its cap, then audio-only.
    tags = flv_tags(encode_flv(seconds=30, video=False))
    video_header = next(t for t in flv_tags(encode_flv(seconds=0.2)) if t.kind == TAG_VIDEO)
    pipeline = Pipeline(job, lambda *a: None, lambda r, s: segments.append(s), max_held_audio=100)
    feed_tag(pipeline, video_header)
    most = 0
    for tag in tags:
        feed_tag(pipeline, tag)
        most = max(most, len(pipeline._held_audio))
    pipeline.finish()
    assert most <= 100 and pipeline.renditions[0].plan.audio_only
    assert len(segments) >= 25
    # Video whose promised audio never comes: frames held up to their cap, then the encoders open.
    tags = [t for t in flv_tags(encode_flv(seconds=6)) if t.kind != TAG_AUDIO]
    pipeline = Pipeline(job, lambda *a: None, lambda r, s: segments.append(s), max_held_frames=40,
                        late_audio_wait=100.0)
    most = 0
    for tag in tags:
        feed_tag(pipeline, tag)
        most = max(most, len(pipeline._held_frames), len(pipeline._held_packets) // 2)
    assert pipeline.renditions and most <= 40
    pipeline.finish()


@pytest.mark.media
def test_audio_only_publish_goes_live(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=0.0))
    try:
        stream = server.create_stream("Radio")
        publish_tags(server.rtmp_url(stream["stream_key"]), flv_tags(encode_flv(seconds=8, video=False)),
                     realtime=True)
        body = wait_recording(server, stream["id"])
        assert body["actual_start"] is not None  # it went LIVE
        master = parse_master(fetch_text(server, body["recording"]["playback_url"]))
        assert [attrs["CODECS"] for attrs, _ in master] == ["mp4a.40.2"]
        assert abs(body["recording"]["duration"] - 8.0) <= 1.0
    finally:
        server.stop()


@pytest.mark.media
def test_audio_only_is_live_while_publishing(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=0.0))
    try:
        stream = server.create_stream("Radio")
        import threading

        tags = flv_tags(encode_flv(seconds=10, video=False))
        sender = threading.Thread(target=publish_tags, args=(server.rtmp_url(stream["stream_key"]), tags),
                                  kwargs={"realtime": True})
        sender.start()
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "LIVE", 15, "LIVE")
        master = parse_master(fetch_text(server, f"/hls/{stream['id']}/master.m3u8"))
        assert [attrs["CODECS"] for attrs, _ in master] == ["mp4a.40.2"]
        sender.join(30)
    finally:
        server.stop()


def test_audio_starting_after_the_renditions_opened_reopens_them(tmp_path: Path) -> None:
    """Audio 3 s late, past the wait: the rungs close and reopen with audio under a second init segment."""
    tags = late_audio(flv_tags(encode_flv(seconds=6)), after_video_frames=90)
    run = run_worker(flv_file(tags), tmp_path)
    assert run.code == 0, run.of("error")
    first, second = run.of("rendition")
    assert first["codecs"].startswith("avc1.") and "mp4a" not in first["codecs"]
    assert second["codecs"].endswith(",mp4a.40.2") and second["init"] != first["init"]
    segments = run.segments("180p")
    assert [s["sequence"] for s in segments] == list(range(len(segments)))
    for a, b in zip(segments, segments[1:]):
        assert b["start"] == pytest.approx(a["start"] + a["duration"], abs=0.002)
    assert {s["init"] for s in segments} == {first["init"], second["init"]}
    before = b"".join([(run.root / first["init"]).read_bytes()] +
                      [(run.root / s["key"]).read_bytes() for s in segments if s["init"] == first["init"]])
    after = b"".join([(run.root / second["init"]).read_bytes()] +
                     [(run.root / s["key"]).read_bytes() for s in segments if s["init"] == second["init"]])
    silent, audible = decode(before), decode(after)
    assert not silent.audio_pts and audible.audio_pts
    assert abs(len(silent.video_pts) + len(audible.video_pts) - 180) <= 2
    assert 2.9 <= audible.audio_pts[0] <= 3.2 and abs(audible.audio_pts[0] - audible.video_pts[0]) < 0.1
    assert abs(audible.audio_pts[-1] - audible.video_pts[-1]) < 0.1


@pytest.mark.media
def test_late_audio_publish_keeps_the_broadcast(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=0.0))
    try:
        stream = server.create_stream()
        tags = late_audio(flv_tags(encode_flv(seconds=6)), after_video_frames=90)
        publish_tags(server.rtmp_url(stream["stream_key"]), tags)
        body = wait_recording(server, stream["id"])
        assert body["status"] == "ENDED" and abs(body["recording"]["duration"] - 6.0) <= 1.0, body
    finally:
        server.stop()
