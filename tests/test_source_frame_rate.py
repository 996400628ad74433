"""The frame rate comes from the SPS VUI timing, onMetaData or about a second of timestamps, snapped."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from ingest.flv import TAG_AUDIO, TAG_VIDEO, FlvTag
from tests.media_source import encode_flv, feed_tag, flv_file, flv_tags
from tests.media_source import run_worker
from transcode.frame_rate import choose_rate, declared_rate, measured_rate, snap


def jittered(rate: float, frames: int, jitter_ms: float, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [max(0, int(round(i * 1000 / rate + rng.uniform(-jitter_ms, jitter_ms)))) for i in range(frames)]


def gstreamer_like(frames: int = 30) -> list[int]:
    """30 fps stamped by a sender thread: frames bunch up in pairs (what made us read 32.258, 25.13...)."""
    out = []
    for i in range(frames):
        base = i * 1000 / 30
        out.append(int(base + (8 if i % 3 == 1 else 0) - (5 if i % 4 == 2 else 0)))
    return sorted(out)


@pytest.mark.parametrize("rate", [23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0])
def test_measured_rate_snaps_jittered_timestamps(rate: float) -> None:
    for seed in range(5):
        stamps = jittered(rate, int(rate) + 1, 4.0, seed)
        measured = measured_rate(stamps)
        assert measured is not None
        # 29.97/30 (and the like) can't be told apart from a second of millisecond stamps.
        assert abs(measured - rate) <= 0.002 * rate * 20, (rate, seed, measured)
    assert measured_rate(gstreamer_like()) == pytest.approx(30.0, abs=0.05)


def test_declared_rates_come_first() -> None:
    stamps = gstreamer_like()
    assert choose_rate(vui=29.97002997, metadata=25, timestamps_ms=stamps) == 29.97
    assert choose_rate(vui=None, metadata=25.0, timestamps_ms=stamps) == 25.0
    assert choose_rate(vui=0, metadata="junk", timestamps_ms=stamps) == pytest.approx(30.0, abs=0.05)
    assert choose_rate(timestamps_ms=[0]) == 30.0
    assert declared_rate(1000) is None and declared_rate(float("nan")) is None
    assert snap(14.99) == 14.99 and snap(30.3) == 30.0 and snap(59.95) == 59.94


def test_uneven_source_timestamps_get_the_true_rate(tmp_path: Path) -> None:
    """A 30 fps source whose FLV timestamps jitter by up to +-7 ms (its first intervals 31-38 ms)."""
    tags = flv_tags(encode_flv(seconds=4))
    rng = random.Random(5)
    out = []
    for t in tags:
        if t.kind == TAG_VIDEO and t.body[1] == 1:
            t = FlvTag(t.kind, max(0, t.timestamp_ms + rng.randint(-7, 7)), t.body)
        out.append(t)
    run = run_worker(flv_file(out), tmp_path)
    assert run.code == 0
    (rendition,) = run.of("rendition")
    assert rendition["frame_rate"] == 30.0
    # x264 got 30 fps: 1 s segments (the job's) hold 30 frames each.
    assert all(abs(s["duration"] - 1.0) < 0.05 for s in run.segments("180p")[:-1])


def test_metadata_rate_when_the_stream_declares_no_timing(tmp_path: Path) -> None:
    """No usable VUI: onMetaData's framerate (25) beats 1 s of bunched timestamps."""
    from transcode.job import RenditionSpec, TranscodeJob
    from transcode.pipeline import Pipeline

    tags = flv_tags(encode_flv(seconds=2, fps=25))
    job = TranscodeJob("t", str(tmp_path), "m/s/b", [RenditionSpec("180p", 180, 300_000)], preset="ultrafast")
    pipeline = Pipeline(job, lambda *a: None, lambda *a: None)
    feed_tag(pipeline, tags[0])  # onMetaData
    assert pipeline._metadata is not None and pipeline._metadata["framerate"] == 25.0
    pipeline._metadata["framerate"] = 25.0
    assert choose_rate(None, pipeline._metadata["framerate"], gstreamer_like()) == 25.0
    for t in tags[1:]:
        if t.kind != TAG_AUDIO:
            feed_tag(pipeline, t)
    pipeline.finish()
    assert pipeline.frame_rate == 25.0
