"""A real RTMP publisher for tests: synthetic frames (numpy) and a tone, encoded by PyAV, sent as FLV.

It runs in a child process: PyAV holds the GIL while it writes to the network, which would starve a
server running in the test's own process.
"""
from __future__ import annotations

import multiprocessing
import queue
import time
from fractions import Fraction

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


def publish_here(url: str, *, seconds: float, width: int = 320, height: int = 180, fps: int = 30,
                 gop_seconds: float = 1.0, realtime: bool = True, audio: bool = True,
                 started_at: "multiprocessing.sharedctypes.Synchronized[float] | None" = None) -> int:
    """Publish `seconds` of video (+ a 440 Hz tone) to url from this process; returns the video frames sent."""
    container = av.open(url, "w", format="flv", timeout=10)
    sent = 0
    try:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(max(1, int(fps * gop_seconds)))}
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
                    gop_seconds: float = 1.0, realtime: bool = True, audio: bool = True) -> Publisher:
    """Starts publish() in a child process and returns its handle at once."""
    return Publisher(url, seconds=seconds, width=width, height=height, fps=fps, gop_seconds=gop_seconds,
                     realtime=realtime, audio=audio).start()


def publish(url: str, *, seconds: float, width: int = 320, height: int = 180, fps: int = 30,
            gop_seconds: float = 1.0, realtime: bool = True, audio: bool = True) -> int:
    """Publish synthetic video (a moving square, frame-dependent colour) and a 440 Hz tone as H.264
    (libx264 ultrafast, zerolatency) + AAC 48 kHz stereo in FLV to url (rtmp://HOST:PORT/live/KEY), paced
    at real time if realtime. Returns the video frames sent; raises PublishError if the server refused or
    dropped the publish."""
    publisher = start_publisher(url, seconds=seconds, width=width, height=height, fps=fps,
                                gop_seconds=gop_seconds, realtime=realtime, audio=audio)
    publisher.join(timeout=seconds * 3 + 30)
    if not publisher.finished:
        publisher.kill()
        raise PublishError(f"publisher still running {seconds * 3 + 30:.0f} s after start")
    if publisher.error is not None:
        raise publisher.error
    return publisher.frames
