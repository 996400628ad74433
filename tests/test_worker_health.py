"""Worker-side live health: the transcode worker's own measurements (each rung's speed × real time, the source
audio's level) reach the stream API's `ingest` and /metrics, with each segment's production delay; the health
model turns them into plain-language warnings."""
from __future__ import annotations

import io
import math
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from ingest.media import AccessUnit, TrackInfo
from mediaserver.config import Rendition
from mediaserver.ingest_health import IngestHealth
from tests import media_source
from tests.media_source import _frame_image, encode_flv, flv_items, flv_tags, item_stream, start_publisher
from tests.server_fixture import run_server, small_config
from tests.test_broadcast import stream_status, wait_for
from tests.test_metrics import scrape
from transcode.job import RenditionSpec, TranscodeJob, split_events
from transcode.live_stats import LevelMeter, SpeedMeter
from transcode.worker import EventWriter, Worker

RATE = 48_000


def tone_flv(seconds: float, amplitude: float, *, fps: int = 30) -> tuple[bytes, np.ndarray]:
    """A 320x180 picture and a 1 kHz stereo sine of this peak amplitude (0: digital silence), as FLV; with the
    audio samples generated (channels x samples), for the test's own measurement."""
    buf = io.BytesIO()
    container = av.open(buf, "w", format="flv")
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
    video.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps)}
    audio = container.add_stream("aac", rate=RATE, layout="stereo")
    block = 1024
    total = int(seconds * RATE) // block * block
    wave = (amplitude * np.sin(2 * np.pi * 1000 * np.arange(total) / RATE)).astype(np.float32)
    samples = np.stack([wave, wave])
    vi = ai = 0
    while vi < seconds * fps or ai < total:
        if vi < seconds * fps and (ai >= total or vi / fps <= ai / RATE):
            frame = av.VideoFrame.from_ndarray(_frame_image(vi, 320, 180), format="rgb24")
            frame.pts, frame.time_base = vi, Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
            vi += 1
        else:
            aframe = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, ai:ai + block]), format="fltp",
                                                layout="stereo")
            aframe.sample_rate, aframe.pts, aframe.time_base = RATE, ai, Fraction(1, RATE)
            for packet in audio.encode(aframe):
                container.mux(packet)
            ai += block
    for stream in (video, audio):
        for packet in stream.encode(None):
            container.mux(packet)
    container.close()
    return buf.getvalue(), samples


def run_worker(flv: bytes, tmp_path: Path, rendition: RenditionSpec, *, preset: str = "ultrafast",
               top_rung: str = "auto") -> tuple[list[dict[str, Any]], float]:
    """The worker in this process, a stats event after every chunk it reads; (events, wall seconds it took)."""
    job = TranscodeJob(stream_id="t", store_root=str(tmp_path / "store"), key_prefix="media/s/b",
                       renditions=[rendition], segment_duration=1.0, preset=preset, top_rung=top_rung)
    out = io.BytesIO()
    worker = Worker(job, EventWriter(out), stats_interval=0.0)
    began = time.perf_counter()
    assert worker.run(io.BytesIO(item_stream(flv))) == 0
    took = time.perf_counter() - began
    return [{"event": e.event, **e.data} for e in split_events(out.getvalue())], took


def dbfs(x: float) -> float:
    return 20 * math.log10(x)


def last_audio_stats(events: list[dict[str, Any]]) -> dict[str, Any]:
    return [e for e in events if e["event"] == "stats" and e["audio"] is not None][-1]


@pytest.mark.parametrize("target", [-20.0, -40.0])
def test_worker_reports_the_source_audio_level(tmp_path: Path, target: float) -> None:
    amplitude = 10 ** (target / 20) * math.sqrt(2)  # a sine's RMS is its peak / sqrt(2)
    flv, samples = tone_flv(3, amplitude)
    rms = dbfs(float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))))
    peak = dbfs(float(np.max(np.abs(samples))))
    assert rms == pytest.approx(target, abs=0.05)  # the generator does what the test asked
    events, took = run_worker(flv, tmp_path, RenditionSpec("144p", 144, 200_000))
    stats = last_audio_stats(events)
    assert stats["audio"]["rms_dbfs"] == pytest.approx(rms, abs=1.5)
    assert stats["audio"]["peak_dbfs"] == pytest.approx(peak, abs=1.5)
    # The rung encoded all 3 s of video in at most the worker's whole run: its speed can't be lower than that.
    assert set(stats["rungs"]) == {"144p"} and stats["rungs"]["144p"]["passthrough"] is False
    assert stats["rungs"]["144p"]["speed"] >= 3 / took


def test_digital_silence_reads_none_and_the_health_model_warns(tmp_path: Path) -> None:
    flv, samples = tone_flv(3, 0.0)
    assert not samples.any()
    events, _ = run_worker(flv, tmp_path, RenditionSpec("144p", 144, 200_000))
    silent = last_audio_stats(events)
    assert silent["audio"] == {"rms_dbfs": None, "peak_dbfs": None}

    loud, _ = run_worker(tone_flv(3, 0.1)[0], tmp_path / "loud", RenditionSpec("144p", 144, 200_000))
    quiet_enough = last_audio_stats(loud)
    # The encoder's own media (audio present) for 12 s of arrivals, with the worker's stats once a second.
    items = [i for i in flv_items(flv_tags(tone_flv(12, 0.0)[0])) if isinstance(i, (AccessUnit, TrackInfo))]

    def health_after(stats: dict[str, Any], seconds: float) -> dict[str, Any]:
        health = IngestHealth("rtmp", "peer", 0.0)
        next_stats = 0.0
        now = 0.0
        for item in items:
            now = item.dts_ms / 1000 if isinstance(item, AccessUnit) else now
            if now > seconds:
                break
            health.feed(item, now)
            if now >= next_stats:
                health.on_stats(stats, now)
                next_stats += 1.0
        return health.snapshot(now)

    snap = health_after(silent, 11.5)
    assert snap["audio"]["present"] is True and snap["audio"]["silent"] is True
    assert snap["audio"]["level_dbfs"] is None
    assert "no sound: the audio track is silent" in snap["warnings"]
    assert "no sound: the audio track is silent" not in health_after(silent, 8)["warnings"]  # not yet 10 s
    snap = health_after(quiet_enough, 11.5)
    assert snap["audio"]["silent"] is False and snap["audio"]["level_dbfs"] == quiet_enough["audio"]["rms_dbfs"]
    assert not any(w.startswith("no sound") for w in snap["warnings"])


def test_a_slower_preset_reads_slower(tmp_path: Path) -> None:
    """The speed follows the encoder's real cost: x264 veryslow does many times the work of ultrafast."""
    flv, _ = tone_flv(2, 0.1)
    rung = RenditionSpec("180p", 180, 300_000)
    fast = [e for e in run_worker(flv, tmp_path / "fast", rung, top_rung="encode")[0] if e["event"] == "stats"]
    slow = [e for e in run_worker(flv, tmp_path / "slow", rung, preset="veryslow", top_rung="encode")[0]
            if e["event"] == "stats"]
    assert fast[-1]["rungs"]["180p"]["speed"] > 2 * slow[-1]["rungs"]["180p"]["speed"] > 0


def test_cant_keep_up_warning_from_the_health_model() -> None:
    health = IngestHealth("rtmp", "peer", 0.0)
    health.feed(TrackInfo("video", "h264"), 0.0)
    stats = {"rungs": {"1080p": {"speed": None, "passthrough": True}, "720p": {"speed": 0.8, "passthrough": False},
                       "480p": {"speed": 1.6, "passthrough": False}}, "audio": None}
    for second in range(10):
        health.on_stats(stats, float(second))
    assert not any("keep up" in w for w in health.warnings(9.0))  # below real time for 9 s only
    health.on_stats(stats, 10.0)
    snap = health.snapshot(10.0)
    assert "transcoding can't keep up (720p at 0.8× real time): lower the ladder or use a faster preset" \
        in snap["warnings"]
    assert [(r["rendition"], r["speed"], r["passthrough"]) for r in snap["transcode"]] == [
        ("1080p", None, True), ("720p", 0.8, False), ("480p", 1.6, False)]
    # Caught up: the warning goes at once; slow again: the 10 s start over.
    health.on_stats({**stats, "rungs": {**stats["rungs"], "720p": {"speed": 1.1, "passthrough": False}}}, 11.0)
    assert not any("keep up" in w for w in health.warnings(11.0))
    health.on_stats(stats, 12.0)
    assert not any("keep up" in w for w in health.warnings(12.0))
    # Stats that stop coming (a worker restarting) don't keep a warning up.
    for second in range(13, 23):
        health.on_stats(stats, float(second))
    assert any("keep up" in w for w in health.warnings(22.0))
    assert not any("keep up" in w for w in health.warnings(30.0))


def test_meters() -> None:
    speed = SpeedMeter(window=5.0)
    assert speed.speed(0.0) is None
    for i in range(300):  # 30 fps, each frame 1/90 s of work: 3× real time
        speed.add(i / 60, 1 / 30, 1 / 90)
    assert speed.speed(300 / 60) == pytest.approx(3.0)
    assert speed.speed(100.0) is None  # nothing in the last 5 s
    level = LevelMeter(window=1.0)
    assert level.level() == (None, None)
    block = np.full((2, 1000), 0.5, dtype=np.float32)
    for _ in range(10):
        level.add(block, 1000, 10_000)
    level.add(np.full((2, 1000), 0.05, dtype=np.float32), 1000, 10_000)  # a quieter last tenth of the second
    rms, peak = level.level()
    assert rms == pytest.approx(dbfs(math.sqrt((9 * 0.25 + 0.0025) / 10)), abs=1e-6)
    assert peak == pytest.approx(dbfs(0.5))


@pytest.mark.media
def test_stream_api_and_metrics_show_the_workers_measurements(tmp_path: Path) -> None:
    # 180p is the ladder's top rung at the source's height: copied (auto), 144p encoded.
    config = small_config(tmp_path / "data", renditions=[Rendition("180p", 180, 300_000),
                                                         Rendition("144p", 144, 200_000)])
    server = run_server(config)
    try:
        stream = server.create_stream()
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=6, gop_seconds=1.0)

        def measured() -> dict | None:
            ingest = stream_status(server, stream["id"])["ingest"]
            if not ingest or not ingest["transcode"] or ingest["audio"]["level_dbfs"] is None:
                return None
            rungs = ingest["transcode"]
            done = all(r["segment_delay_seconds"] is not None for r in rungs)
            return ingest if done and all(r["speed"] for r in rungs if not r["passthrough"]) else None

        ingest = wait_for(measured, 20, "the worker's stats")
        rungs = {r["rendition"]: r for r in ingest["transcode"]}
        assert set(rungs) == {"180p", "144p"}
        assert rungs["180p"]["passthrough"] is True and rungs["180p"]["speed"] is None
        assert rungs["144p"]["passthrough"] is False and rungs["144p"]["speed"] > 1
        # How late a segment comes out depends on this machine's load (no upper bound here); it can't come out
        # before its last frame arrived (a little clock jitter aside).
        assert all(r["segment_delay_seconds"] > -0.25 for r in rungs.values())
        assert ingest["segment_delay_seconds"] == max(r["segment_delay_seconds"] for r in rungs.values())
        tone = dbfs(0.2 / math.sqrt(2))  # the publisher's 440 Hz tone, 0.2 peak
        assert ingest["audio"]["level_dbfs"] == pytest.approx(tone, abs=1.5)
        assert ingest["audio"]["peak_dbfs"] == pytest.approx(dbfs(0.2), abs=1.5)
        assert not any("keep up" in w or "no sound" in w for w in ingest["warnings"])

        status, samples = scrape(server)
        assert status == 200
        sid = stream["id"]
        assert samples[("mediaserver_transcode_speed", (("rendition", "144p"), ("stream", sid)))] > 1
        assert ("mediaserver_transcode_speed", (("rendition", "180p"), ("stream", sid))) not in samples
        for name in ("144p", "180p"):
            delay = samples[("mediaserver_segment_delay_seconds", (("rendition", name), ("stream", sid)))]
            assert delay > -0.25
        assert samples[("mediaserver_audio_level_dbfs", (("stream", sid),))] == pytest.approx(tone, abs=1.5)
        publisher.join(30)
    finally:
        server.stop()


def test_segments_are_dated_from_when_the_server_received_the_media(tmp_path: Path) -> None:
    """The session stamps the arrival time into the item stream; a worker that gets to the media late (started
    slowly, a busy machine) still dates each segment from when its media arrived, not from when it read it."""
    from ingest.media import ARRIVAL_CLOCK, AccessUnit, SourceMetadata, encode_item

    arrived_at = time.time() - 100.0  # the media came in 100 s ago, at real-time pace; the worker reads it now
    stream = b""
    for item in flv_items(flv_tags(encode_flv(seconds=3, gop_seconds=1.0))):
        if isinstance(item, AccessUnit):
            stream += encode_item(SourceMetadata({ARRIVAL_CLOCK: arrived_at + item.dts_ms / 1000}))
        stream += encode_item(item)
    run = media_source.run_worker(b"", tmp_path, items=stream)
    assert run.code == 0, run.of("error")
    segments = run.segments("180p")
    assert len(segments) >= 2
    for segment in segments:
        # The segment's first frame arrived at arrived_at + its media time (the source starts at 0).
        assert segment["pdt"] == pytest.approx(arrived_at + segment["start"], abs=0.05), segment
    # Without stamps the read time stands in: the same media is dated now, 100 s later.
    unstamped = media_source.run_worker(encode_flv(seconds=3, gop_seconds=1.0), tmp_path / "plain")
    assert unstamped.segments("180p")[0]["pdt"] > arrived_at + 90
