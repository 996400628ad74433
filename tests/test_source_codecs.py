"""New SPS mid-stream and interlaced sources are decoded correctly (enhanced RTMP codecs: test_enhanced_rtmp.py)."""
from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest

from ingest.flv import TAG_VIDEO, FlvTag
from tests.media_source import _frame_image, encode_flv, flv_file, flv_tags, publish_tags
from tests.server_fixture import run_server, small_config
from tests.media_source import decode, run_worker
from tests.test_broadcast import stream_status, wait_for

def test_new_sps_mid_stream_reopens_the_decoder(tmp_path: Path) -> None:
    """The encoder switches from 320x180 to 480x270 (a new AVC sequence header) after 2 s."""
    first = flv_tags(encode_flv(seconds=2, width=320, height=180, audio=False))
    second = flv_tags(encode_flv(seconds=2, width=480, height=270, audio=False))
    end = max(t.timestamp_ms for t in first) + 33
    tags = [t for t in first if t.kind == TAG_VIDEO] + [
        FlvTag(t.kind, t.timestamp_ms + end, t.body) for t in second if t.kind == TAG_VIDEO]
    # The 180p rung encoded throughout (one init segment); a copied rung under a new SPS is in
    # test_top_rung_passthrough.py.
    run = run_worker(flv_file(tags), tmp_path, late_audio_wait=0.0, top_rung="encode")
    assert run.code == 0
    media = decode(run.media("180p"), keep_frames=True)
    assert abs(len(media.video_pts) - 120) <= 2
    assert (media.width, media.height) == (320, 180)
    # Each output picture matches its source picture scaled to 320x180 (an old decoder gives garbage).
    for k in (30, 75, 100):
        i, size = (k, (320, 180)) if k < 60 else (k - 60, (480, 270))
        expected = av.VideoFrame.from_ndarray(_frame_image(i, *size), format="rgb24").reformat(
            width=320, height=180, format="gray").to_ndarray()
        diff = np.abs(media.frames[k].astype(np.int32) - expected.astype(np.int32)).mean()
        assert diff < 5, (k, diff)


def test_interlaced_source_is_deinterlaced(tmp_path: Path) -> None:
    run = run_worker(encode_flv(seconds=2, width=320, height=180, interlaced=True), tmp_path)
    assert run.code == 0
    assert run.pipeline._deinterlacer.deinterlaced >= 55
    media = decode(run.media("180p"), keep_frames=True)
    assert abs(len(media.video_pts) - 60) <= 2
    # Combing: an interlaced moving edge alternates rows; a deinterlaced one does not.
    frame = media.frames[30].astype(np.int32)
    comb = np.abs(np.diff(frame, n=2, axis=0)).mean()
    assert comb < 20, comb
