"""A real RTMP publisher for tests: synthetic frames (numpy) and a tone, encoded by PyAV, sent as FLV.

It runs in a child process: PyAV holds the GIL while it writes to the network, which would starve a
server running in the test's own process.
"""
from __future__ import annotations

import io
import os
import multiprocessing
import queue
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np


def _frame_image(i: int, width: int, height: int) -> np.ndarray:
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:, :, 0] = (i * 3) % 256
    img[:, :, 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    img[:, :, 2] = 96
    x = (i * 4) % max(1, width - 16)
    img[height // 3 : height // 3 + 16, x : x + 16] = 255  # a moving square
    return img


class PublishError(RuntimeError):
    """The publish failed (refused, dropped); the message is PyAV's error, as "ErrorType: text"."""


def codec_options(codec: str, gop: str) -> dict[str, str]:
    """Fast, quiet settings with a keyframe every `gop` frames, for the non-H.264 encoders OBS 30+ offers."""
    if codec == "libx265":
        return {"preset": "ultrafast", "x265-params": f"keyint={gop}:log-level=error"}
    if codec == "libsvtav1":
        return {"preset": "12", "g": gop, "svtav1-params": "lp=1"}
    if codec == "libvpx-vp9":
        return {"deadline": "realtime", "cpu-used": "8", "g": gop}
    return {"g": gop}


def publish_here(url: str, *, seconds: float, width: int = 320, height: int = 180, fps: int = 30,
                 gop_seconds: float = 1.0, realtime: bool = True, audio: bool = True,
                 started_at: "multiprocessing.sharedctypes.Synchronized[float] | None" = None,
                 codec: str = "libx264") -> int:
    """Publish `seconds` of video (+ a 440 Hz tone) to url from this process; returns the video frames sent.
    codec "libx265", "libsvtav1" or "libvpx-vp9" publishes over enhanced RTMP (FFmpeg's FLV muxer)."""
    container = av.open(url, "w", format="flv", timeout=10)
    sent = 0
    try:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        gop = str(max(1, int(fps * gop_seconds)))
        video.options = ({"preset": "ultrafast", "tune": "zerolatency", "g": gop} if codec == "libx264"
                         else codec_options(codec, gop))
        astream = container.add_stream("aac", rate=48000, layout="stereo") if audio else None
        frames = int(round(seconds * fps))
        samples_per_frame = 48000 // fps
        t = np.arange(samples_per_frame, dtype=np.float32)
        audio_pts = 0
        start = time.perf_counter()
        for i in range(frames):
            if realtime:
                delay = start + i / fps - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            if i == 0 and started_at is not None:
                started_at.value = time.time()
            frame = av.VideoFrame.from_ndarray(_frame_image(i, width, height), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
            sent += 1
            if astream is not None:
                wave = (0.2 * np.sin(2 * np.pi * 440 * (t + audio_pts) / 48000)).astype(np.float32)
                aframe = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
                aframe.sample_rate = 48000
                aframe.pts = audio_pts
                aframe.time_base = Fraction(1, 48000)
                audio_pts += samples_per_frame
                for packet in astream.encode(aframe):
                    container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if astream is not None:
            for packet in astream.encode(None):
                container.mux(packet)
    finally:
        try:
            container.close()
        except av.error.FFmpegError:
            pass
    return sent


def _child(url: str, kwargs: dict[str, object], result: "multiprocessing.Queue[tuple[int, str | None]]",
           started_at: "multiprocessing.sharedctypes.Synchronized[float]") -> None:
    try:
        result.put((publish_here(url, started_at=started_at, **kwargs), None))  # type: ignore[arg-type]
    except BaseException as exc:
        result.put((0, f"{type(exc).__name__}: {exc}"))


class Publisher:
    """A publish running in a child process, used like a thread: .join(timeout), then .frames (video frames
    sent) and .error (a PublishError, or None); .started_at is the unix time of frame 0."""

    def __init__(self, url: str, **kwargs: object) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._result: multiprocessing.Queue[tuple[int, str | None]] = ctx.Queue()
        self._started_at = ctx.Value("d", 0.0)
        self._process = ctx.Process(target=_child, args=(url, kwargs, self._result, self._started_at), daemon=True)
        self.frames = 0
        self.error: PublishError | None = None
        self._done = False

    def start(self) -> "Publisher":
        self._process.start()
        return self

    @property
    def started_at(self) -> float:
        return float(self._started_at.value)

    def is_alive(self) -> bool:
        return self._process.is_alive()

    @property
    def finished(self) -> bool:
        """The result (.frames, .error) is in."""
        return self._done

    def kill(self) -> None:
        self._process.kill()

    def join(self, timeout: float | None = None) -> None:
        """Waits for the result; returns early (still running) when timeout passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            exited = not self._process.is_alive()
            try:
                # Once the child has exited its result is already in the pipe: allow a moment to read it.
                frames, error = self._result.get(timeout=0.5 if exited else 0.1)
            except queue.Empty:
                if exited:  # died without reporting (killed, crashed in FFmpeg)
                    self.error = PublishError(f"publisher process died, exit code {self._process.exitcode}")
                    self._done = True
                elif deadline is not None and time.monotonic() >= deadline:
                    return
                continue
            self.frames, self.error = frames, None if error is None else PublishError(error)
            self._done = True
        self._process.join(None if deadline is None else max(0.1, deadline - time.monotonic()))


def start_publisher(url: str, *, seconds: float, width: int = 320, height: int = 180, fps: int = 30,
                    gop_seconds: float = 1.0, realtime: bool = True, audio: bool = True,
                    codec: str = "libx264") -> Publisher:
    """Starts publish() in a child process and returns its handle at once."""
    return Publisher(url, seconds=seconds, width=width, height=height, fps=fps, gop_seconds=gop_seconds,
                     realtime=realtime, audio=audio, codec=codec).start()


def publish(url: str, *, seconds: float, width: int = 320, height: int = 180, fps: int = 30,
            gop_seconds: float = 1.0, realtime: bool = True, audio: bool = True, codec: str = "libx264") -> int:
    """Publish synthetic video (a moving square, frame-dependent colour) and a 440 Hz tone as H.264
    (libx264 ultrafast, zerolatency) + AAC 48 kHz stereo in FLV to url (rtmp://HOST:PORT/live/KEY), paced
    at real time if realtime. Returns the video frames sent; raises PublishError if the server refused or
    dropped the publish."""
    publisher = start_publisher(url, seconds=seconds, width=width, height=height, fps=fps,
                                gop_seconds=gop_seconds, realtime=realtime, audio=audio, codec=codec)
    publisher.join(timeout=seconds * 3 + 30)
    if not publisher.finished:
        publisher.kill()
        raise PublishError(f"publisher still running {seconds * 3 + 30:.0f} s after start")
    if publisher.error is not None:
        raise publisher.error
    return publisher.frames


# -- FLV tags for tests that shape the stream themselves (timestamps, track order, codecs) -----------------

def normal_scheduling() -> int:
    """Put every thread of this process back under SCHED_OTHER; returns how many were real-time.

    SVT-AV1 (libsvtav1 in PyAV's FFmpeg), run as root, moves the thread that opens the encoder to SCHED_FIFO
    priority 99 and leaves it there. In a test process that policy then passes to every child it starts (Chromium,
    GStreamer, encoders): one of them spinning at real-time priority starves this 2-core machine."""
    found = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            if os.sched_getscheduler(int(tid)) in (os.SCHED_FIFO, os.SCHED_RR):
                found += 1
                os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass  # the thread ended meanwhile
    return found


def encode_flv(*, seconds: float, width: int = 320, height: int = 180, fps: float = 30, gop_seconds: float = 1.0,
               audio: bool = True, video: bool = True, codec: str = "libx264", audio_rate: int = 48000,
               audio_channels: int = 2, interlaced: bool = False, bframes: bool = False) -> bytes:
    """`seconds` of the synthetic picture and tone, encoded by PyAV into an in-memory FLV file: the same tags
    an encoder sends over RTMP. codec "libx265" gives HEVC in enhanced-RTMP FLV."""

    buf = io.BytesIO()
    container = av.open(buf, "w", format="flv")
    vstream = None
    rate = Fraction(fps).limit_denominator(1001)
    if video:
        vstream = container.add_stream(codec, rate=rate)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        gop = str(max(1, int(float(fps) * gop_seconds)))
        if codec == "libx264":
            options = {"preset": "ultrafast", "g": gop}
            if not bframes:
                options["tune"] = "zerolatency"
            if interlaced:
                options["x264-params"] = "interlaced=1:tff=1"
                options["flags"] = "+ildct+ilme"
            vstream.options = options
        else:
            vstream.options = codec_options(codec, gop)
    layout = "stereo" if audio_channels == 2 else "mono"
    astream = container.add_stream("aac", rate=audio_rate, layout=layout) if audio else None
    video_frames = int(round(seconds * float(fps))) if vstream is not None else 0
    block = 1024
    audio_blocks = int(seconds * audio_rate) // block if astream is not None else 0
    tone_phase = 0
    vi = ai = 0
    while vi < video_frames or ai < audio_blocks:
        video_next = vi / float(fps) if vi < video_frames else float("inf")
        audio_next = ai * block / audio_rate if ai < audio_blocks else float("inf")
        if vstream is not None and video_next <= audio_next:
            frame = av.VideoFrame.from_ndarray(_frame_image(vi, width, height), format="rgb24")
            frame.pts = vi
            frame.time_base = 1 / rate
            for packet in vstream.encode(frame):
                container.mux(packet)
            vi += 1
        elif astream is not None:
            t = np.arange(block, dtype=np.float32) + tone_phase
            wave = (0.2 * np.sin(2 * np.pi * 440 * t / audio_rate)).astype(np.float32)
            planes = np.stack([wave] * audio_channels)
            aframe = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
            aframe.sample_rate = audio_rate
            aframe.pts = tone_phase
            aframe.time_base = Fraction(1, audio_rate)
            tone_phase += block
            for packet in astream.encode(aframe):
                container.mux(packet)
            ai += 1
    if vstream is not None:
        for packet in vstream.encode(None):
            container.mux(packet)
    if astream is not None:
        for packet in astream.encode(None):
            container.mux(packet)
    container.close()
    if codec == "libsvtav1":
        normal_scheduling()
    return buf.getvalue()


def flv_tags(data: bytes) -> "list[FlvTag]":
    """The tags of an FLV file (see encode_flv)."""
    from ingest.flv import FlvReader

    return FlvReader().feed(data)


def flv_file(tags: "list[FlvTag]") -> bytes:
    """An FLV file of these tags (what the server writes into a transcode worker)."""
    from ingest.flv import encode_tag, flv_header

    return flv_header() + b"".join(encode_tag(t) for t in tags)


def flv_items(tags: "list[FlvTag]") -> "list[Any]":
    """The protocol-neutral media items of these FLV tags, as the RTMP ingest hands them to a session
    (malformed tags skipped, as it skips them)."""
    from ingest.flv import FlvError, FlvUnpacker, UnsupportedCodec

    unpacker, items = FlvUnpacker(), []
    for tag in tags:
        try:
            items.extend(unpacker.feed(tag))
        except UnsupportedCodec:
            raise
        except FlvError:
            continue
    return items


def feed_tag(pipeline: Any, tag: "FlvTag") -> None:
    """Feeds one FLV tag to a transcode Pipeline the way a session does: as media items (one FlvUnpacker per
    pipeline, as one per RTMP publish)."""
    from ingest.flv import FlvError, FlvUnpacker

    unpacker = pipeline.__dict__.setdefault("_test_unpacker", FlvUnpacker())
    try:
        items = unpacker.feed(tag)
    except FlvError:
        return
    for item in items:
        pipeline.on_item(item)


def item_stream(flv: bytes) -> bytes:
    """What a session writes into its transcode worker for this FLV file: the item stream of ingest/media.py."""
    from ingest.media import encode_item

    return b"".join(encode_item(item) for item in flv_items(flv_tags(flv)))


def publish_tags(url: str, tags: "list[FlvTag]", *, realtime: bool = False, chunk_size: int = 4096) -> None:
    """Publish FLV tags as they are (timestamps untouched, absolute type-0 headers) over a plain RTMP client,
    then unpublish. url is rtmp://HOST:PORT/APP/KEY. Raises PublishError if the server closes early."""
    from urllib.parse import urlparse

    from tests.test_rtmp_ingest import RawClient

    parsed = urlparse(url)
    app, key = parsed.path.strip("/").split("/", 1)
    client = RawClient(parsed.port or 1935)
    try:
        client.connect_and_publish(key, app)
        client.set_chunk_size(chunk_size)
        start = time.perf_counter()
        first = tags[0].timestamp_ms if tags else 0
        csid = {8: 5, 9: 6, 18: 4}
        for tag in tags:
            if realtime:
                delay = start + (tag.timestamp_ms - first) / 1000.0 - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            client.message(tag.kind, tag.body, field=tag.timestamp_ms & 0xFFFFFFFF, csid=csid[tag.kind], msid=1)
        client.command("FCUnpublish", 6, None, key)
        client.command("deleteStream", 7, None, 1)
        client.is_closed_by_server(10)
    except (OSError, AssertionError) as exc:
        raise PublishError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        client.close()


# -- a transcode worker run in this process on FLV bytes, and its output read back ---------------------------


@dataclass
class WorkerRun:
    code: int
    events: list[dict[str, Any]]
    root: Path
    job: Any
    frame_rate: float = 0.0
    pipeline: Any = None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    def segments(self, rendition: str) -> list[dict[str, Any]]:
        return [e for e in self.of("segment") if e["rendition"] == rendition]

    def media(self, rendition: str) -> bytes:
        """init + every segment of a rendition, as one fragmented MP4."""
        init = next(e["init"] for e in self.of("rendition") if e["name"] == rendition)
        parts = [(self.root / init).read_bytes()]
        parts += [(self.root / e["key"]).read_bytes() for e in self.segments(rendition)]
        return b"".join(parts)


@dataclass
class Decoded:
    video_pts: list[float] = field(default_factory=list)
    audio_pts: list[float] = field(default_factory=list)
    audio_samples: int = 0
    width: int = 0
    height: int = 0
    audio_rate: int = 0
    frames: list[Any] = field(default_factory=list)


def decode(data: bytes, keep_frames: bool = False) -> Decoded:
    out = Decoded()
    with av.open(io.BytesIO(data)) as container:
        streams = list(container.streams.video[:1]) + list(container.streams.audio[:1])
        for frame in container.decode(*streams):
            if frame.pts is None or frame.time_base is None:
                continue
            t = float(frame.pts * frame.time_base)
            if isinstance(frame, av.VideoFrame):
                out.video_pts.append(t)
                out.width, out.height = frame.width, frame.height
                if keep_frames:
                    out.frames.append(frame.to_ndarray(format="gray"))
            else:
                out.audio_pts.append(t)
                out.audio_samples += frame.samples
                out.audio_rate = frame.sample_rate
    return out


def run_worker(flv: bytes, tmp_path: Path, *, renditions: "list[Any] | None" = None,
               segment_duration: float = 1.0, time_offset: float = 0.0, audio_sample_rate: int = 48_000,
               chunk: int = 65536, items: bytes | None = None, **pipeline_options: Any) -> WorkerRun:
    """The worker run on this FLV's item stream (or on `items`, an item stream made by the test)."""
    from transcode.job import RenditionSpec, TranscodeJob, split_events
    from transcode.worker import EventWriter, Worker

    stream = item_stream(flv) if items is None else items

    job = TranscodeJob(
        stream_id="test", store_root=str(tmp_path / "store"), key_prefix="media/s/b",
        renditions=renditions or [RenditionSpec("180p", 180, 300_000)], segment_duration=segment_duration,
        time_offset=time_offset, preset="ultrafast", audio_sample_rate=audio_sample_rate,
    )
    out = io.BytesIO()
    worker = Worker(job, EventWriter(out))
    for name, value in pipeline_options.items():
        setattr(worker.pipeline, name, value)

    class Chunks(io.RawIOBase):
        def __init__(self) -> None:
            self.pos = 0

        def read(self, size: int = -1) -> bytes:
            piece = stream[self.pos : self.pos + chunk]
            self.pos += len(piece)
            return piece

    code = worker.run(Chunks())  # type: ignore[arg-type]
    events = [{"event": e.event, **e.data} for e in split_events(out.getvalue())]
    return WorkerRun(code, events, tmp_path / "store", job, worker.pipeline.frame_rate, worker.pipeline)


def numbered_picture(i: int, width: int, height: int, background: str) -> tuple[np.ndarray, str]:
    """Frame i with its number drawn in (bench/frame_code.py), as (pixels, PyAV format). Backgrounds: "flat"
    (grey), "gradient" (a horizontal ramp: thumbnails are never black), "moving" (colour and a square change
    every frame, so neighbouring frames differ everywhere)."""
    from bench import frame_code

    if background == "moving":
        img = _frame_image(i, width, height)
        frame_code.draw(img, i)
        return img, "rgb24"
    yuv = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    if background == "gradient":
        yuv[:height] = np.tile(np.linspace(40, 220, width, dtype=np.uint8), (height, 1))
    else:
        yuv[:height] = 60
    frame_code.draw(yuv[:height], i)
    return yuv, "yuv420p"


def publish_numbered(url: str, seconds: float, started: "multiprocessing.Queue[float] | None" = None,
                     bframes: int = 0, background: str = "flat", tone: bool = False, fps: int = 30,
                     width: int = 320, height: int = 180) -> int:
    """Publish `seconds` of H.264 (1 s GOP) + AAC over RTMP at real time, frame n showing the number n; frame 0's
    wall time goes to `started`. With `bframes`, x264 as OBS runs it (B-frames: decode order differs from
    presentation order). Returns the frames sent. Run it in its own process (see the module's docstring)."""
    container = av.open(url, "w", format="flv", timeout=10)
    try:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if bframes:
            video.options = {"preset": "veryfast", "g": str(fps), "bf": str(bframes), "sc_threshold": "0"}
        else:
            video.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps)}
        audio = container.add_stream("aac", rate=48000, layout="stereo")
        samples = 48000 // fps
        frames = int(seconds * fps)
        t0 = time.perf_counter()
        for i in range(frames):
            delay = t0 + i / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if i == 0 and started is not None:
                started.put(time.time())
            pixels, pixel_format = numbered_picture(i, width, height, background)
            frame = av.VideoFrame.from_ndarray(pixels, format=pixel_format)
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
            if tone:
                wave = (0.2 * np.sin(2 * np.pi * 440 * (np.arange(samples) + i * samples) / 48000)).astype(np.float32)
            else:
                wave = np.zeros(samples, dtype=np.float32)
            aframe = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
            aframe.sample_rate, aframe.pts, aframe.time_base = 48000, i * samples, Fraction(1, 48000)
            for packet in audio.encode(aframe):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    finally:
        container.close()
    return frames
