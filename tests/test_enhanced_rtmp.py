"""Enhanced RTMP (OBS 30+): HEVC, AV1 and VP9 video arrive under FourCC tags, are decoded with PyAV and
transcoded into the H.264 ladder; what can't be decoded fails the broadcast with a reason within seconds."""
from __future__ import annotations

import os
import time
from pathlib import Path

import av
import numpy as np
import pytest

from ingest.flv import TAG_AUDIO, TAG_VIDEO, FlvTag
from tests.media_source import _frame_image, decode, encode_flv, flv_tags, publish, publish_tags, run_worker
from tests.server_fixture import run_server, small_config
from tests.test_broadcast import fetch_text, stream_status, wait_for, wait_recording


def picture_error(picture: np.ndarray, i: int) -> float:
    """Mean absolute difference between a decoded grey picture and source picture i scaled to its size."""
    height, width = picture.shape
    expected = av.VideoFrame.from_ndarray(_frame_image(i, 320, 180), format="rgb24").reformat(
        width=width, height=height, format="gray").to_ndarray()
    return float(np.abs(picture.astype(np.int32) - expected.astype(np.int32)).mean())


@pytest.mark.parametrize("codec", ["libx265", "libsvtav1", "libvpx-vp9"])
def test_worker_transcodes_enhanced_rtmp_codecs_into_h264(tmp_path: Path, codec: str) -> None:
    run = run_worker(encode_flv(seconds=2, codec=codec), tmp_path, late_audio_wait=0.0)
    assert run.code == 0, run.of("error")
    (rendition,) = run.of("rendition")
    assert rendition["codecs"].startswith("avc1.") and "mp4a.40.2" in rendition["codecs"]
    assert rendition["passthrough"] is False
    media = decode(run.media("180p"), keep_frames=True)
    assert abs(len(media.video_pts) - 60) <= 2
    assert media.audio_samples > 0
    # Each output picture is its source picture (a wrong decoder or a dropped frame gives another one).
    for k in (5, 30, 55):
        assert picture_error(media.frames[k], k) < 8, (codec, k)


def test_encoding_av1_leaves_the_test_process_under_normal_scheduling() -> None:
    # SVT-AV1 makes its caller SCHED_FIFO 99 when run as root; every child of a test process would inherit that.
    encode_flv(seconds=0.5, codec="libsvtav1", audio=False)
    realtime = [tid for tid in os.listdir("/proc/self/task")
                if os.sched_getscheduler(int(tid)) in (os.SCHED_FIFO, os.SCHED_RR)]
    assert realtime == []


@pytest.mark.media
def test_hevc_publish_over_enhanced_rtmp_becomes_a_ladder_and_a_recording(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=0.0))
    try:
        stream = server.create_stream()
        sent = publish(server.rtmp_url(stream["stream_key"]), seconds=3, codec="libx265")
        body = wait_recording(server, stream["id"])
        assert body["error"] is None
        master = fetch_text(server, body["recording"]["playback_url"])
        assert "avc1." in master and "RESOLUTION=320x180" in master and "RESOLUTION=256x144" in master
        status, _, mp4 = server.get(body["recording"]["mp4_url"])
        assert status == 200
        media = decode(mp4, keep_frames=True)
        assert abs(len(media.video_pts) - sent) <= 3 and media.audio_samples > 0
        assert picture_error(media.frames[45], 45) < 8
    finally:
        server.stop()


@pytest.mark.media
def test_undecodable_hevc_fails_the_broadcast_within_seconds(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=0.0))
    try:
        stream = server.create_stream()
        real = flv_tags(encode_flv(seconds=6, codec="libx265"))
        # A well-formed enhanced RTMP stream whose HEVC is garbage: a broken hvcC, frames of noise.
        rng = np.random.default_rng(7)
        tags = []
        for tag in real:
            if tag.kind == TAG_VIDEO:
                header, size = tag.body[:5], len(tag.body) - 5
                tags.append(FlvTag(TAG_VIDEO, tag.timestamp_ms, header + rng.integers(0, 256, size, np.uint8).tobytes()))
            elif tag.kind == TAG_AUDIO:
                tags.append(tag)
        started = time.monotonic()
        try:
            publish_tags(server.rtmp_url(stream["stream_key"]), tags, realtime=True)
        except Exception:
            pass  # the server closes the connection under the publisher
        body = wait_for(lambda: (b := stream_status(server, stream["id"]))["status"] == "FAILED" and b, 15, "FAILED")
        assert "HEVC (H.265) video can't be decoded" in (body["error"] or "")
        assert time.monotonic() - started < 12
    finally:
        server.stop()


@pytest.mark.media
def test_audio_the_server_cannot_take_fails_the_broadcast_at_once(tmp_path: Path) -> None:
    """MP3 audio (FLV sound format 2): the RTMP ingest refuses it before any worker sees it."""
    server = run_server(small_config(tmp_path / "data", reconnect_window=0.0))
    try:
        stream = server.create_stream()
        tags = [FlvTag(t.kind, t.timestamp_ms, bytes([0x2F]) + t.body[1:]) if t.kind == TAG_AUDIO else t
                for t in flv_tags(encode_flv(seconds=3))]
        try:
            publish_tags(server.rtmp_url(stream["stream_key"]), tags, realtime=True)
        except Exception:
            pass  # the server closes the connection under the publisher
        body = wait_for(lambda: (b := stream_status(server, stream["id"]))["status"] == "FAILED" and b, 10, "FAILED")
        assert "audio format 2 is not AAC (10)" in (body["error"] or "")
        assert not (tmp_path / "data" / "media" / stream["id"]).exists() or not any(
            (tmp_path / "data" / "media" / stream["id"]).rglob("seg-*.m4s"))
    finally:
        server.stop()
