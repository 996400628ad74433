"""Segment latency as a viewer sees it: from the publisher's clock when a frame is captured to the moment a
client has finished downloading the HLS segment that holds that frame. No pass/fail: figures only.

The publisher (a child process, PyAV over RTMP) stamps each frame's number into the picture as black and
white blocks in the top-left corner and records the wall-clock time it hands that frame to its encoder. A
client polls the live media playlist every 20 ms, downloads each new segment in full (the init segment once
per EXT-X-MAP, as a player does) and notes when the download ended. After the run it decodes every segment
with PyAV and reads the frame numbers back out of the pictures, so the figures do not trust the server's
EXTINF or timestamps. Per segment: latency of its newest frame (how fresh the newest picture a player can have
is) and of its first frame (which waited for the whole segment, and which a player shows first).
Publisher, server and client share this machine's clock.
Usage: python bench/latency.py [--segments 30] [--segment-duration 2] [--width 1280 --height 720]
"""
from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediaserver.config import Config, Rendition  # noqa: E402
from tests.hls_reader import parse_media  # noqa: E402
from tests.server_fixture import ADMIN_TOKEN, run_server  # noqa: E402

STAMP_BITS = 16  # frame numbers up to 65535 (36 minutes at 30 fps)


# -- the frame-number stamp -------------------------------------------------------------------------------
def stamp_block(height: int) -> int:
    """Side of one stamp block in source pixels: 1/30 of the picture height, so still 12 px at 360p from 720p."""
    return max(8, height // 30)


def draw_stamp(img: np.ndarray, number: int) -> None:
    """Row 1: the number's bits, most significant first (white = 1); row 2: the same bits inverted, so a
    block that x264 or scaling smeared to grey is caught instead of read as a wrong number."""
    block = stamp_block(img.shape[0])
    for bit in range(STAMP_BITS):
        on = (number >> (STAMP_BITS - 1 - bit)) & 1
        x = block * (1 + bit)
        img[block : 2 * block, x : x + block] = 255 if on else 0
        img[2 * block : 3 * block, x : x + block] = 0 if on else 255


def read_stamp(luma: np.ndarray, source_height: int) -> int | None:
    """The frame number stamped by draw_stamp, from a decoded picture of any rung; None if unreadable."""
    scale = luma.shape[0] / source_height
    block = stamp_block(source_height) * scale
    number = 0
    for bit in range(STAMP_BITS):
        values = []
        for row in (1, 2):
            # The middle half of the block, clear of the edges scaling and x264 blur.
            y0, y1 = int(block * (row + 0.25)), max(int(block * (row + 0.75)), int(block * (row + 0.25)) + 1)
            x0 = int(block * (1 + bit + 0.25))
            x1 = max(int(block * (1 + bit + 0.75)), x0 + 1)
            values.append(float(luma[y0:y1, x0:x1].mean()))
        top, bottom = values
        if abs(top - bottom) < 64:  # the two rows must disagree clearly
            return None
        number = (number << 1) | (top > bottom)
    return number


# -- the publisher ------------------------------------------------------------------------------------------
def _publish(url: str, seconds: float, width: int, height: int, fps: int, gop_seconds: float,
             sent_at: multiprocessing.sharedctypes.SynchronizedArray[float]) -> None:
    """H.264 (x264 ultrafast, zerolatency) + AAC tone in FLV, paced at real time; sent_at[i] = time.time()
    when frame i was handed to the encoder."""
    container = av.open(url, "w", format="flv", timeout=10)
    try:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(max(1, int(fps * gop_seconds)))}
        audio = container.add_stream("aac", rate=48000, layout="stereo")
        background = np.empty((height, width, 3), dtype=np.uint8)
        background[:, :, 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
        background[:, :, 2] = 96
        samples = 48000 // fps
        t = np.arange(samples, dtype=np.float32)
        audio_pts = 0
        start = time.perf_counter()
        for i in range(len(sent_at)):
            delay = start + i / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            img = background.copy()
            img[:, :, 0] = (i * 3) % 256
            x = (i * 8) % max(1, width - 64)
            img[height // 2 : height // 2 + 64, x : x + 64] = 255  # a moving square: real motion for x264
            draw_stamp(img, i)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            sent_at[i] = time.time()
            for packet in video.encode(frame):
                container.mux(packet)
            wave = (0.2 * np.sin(2 * np.pi * 440 * (t + audio_pts) / 48000)).astype(np.float32)
            aframe = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
            aframe.sample_rate, aframe.pts, aframe.time_base = 48000, audio_pts, Fraction(1, 48000)
            audio_pts += samples
            for packet in audio.encode(aframe):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    finally:
        container.close()


# -- the client ---------------------------------------------------------------------------------------------
@dataclass
class Download:
    uri: str
    init: bytes
    data: bytes
    done_at: float  # time.time() when the last byte of the segment was read


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def watch(playlist_url: str, publishing: Callable[[], bool], poll: float, idle: float) -> list[Download]:
    """Poll the playlist; download every new segment in full, in playlist order, as a player would. Goes on
    after the publisher stops until no new segment has come for `idle` seconds (a server that fell behind
    is still catching up)."""
    inits: dict[str, bytes] = {}
    seen: set[str] = set()
    downloads: list[Download] = []
    last_new = time.monotonic()
    while publishing() or time.monotonic() - last_new < idle:
        try:
            playlist = parse_media(fetch(playlist_url).decode())
        except (OSError, AssertionError, UnicodeDecodeError):  # not there yet, or caught mid-write
            time.sleep(poll)
            continue
        for uri, _, map_uri in playlist.segments:
            if uri in seen:
                continue
            seen.add(uri)
            last_new = time.monotonic()
            if map_uri not in inits:
                inits[map_uri] = fetch(urllib.parse.urljoin(playlist_url, map_uri))
            data = fetch(urllib.parse.urljoin(playlist_url, uri))
            downloads.append(Download(uri, inits[map_uri], data, time.time()))
        time.sleep(poll)
    return downloads


def frame_numbers(download: Download, source_height: int) -> tuple[list[int], int, int]:
    """(frame numbers read, frames decoded, frames unreadable) for one downloaded segment."""
    numbers, decoded, unreadable = [], 0, 0
    with av.open(io.BytesIO(download.init + download.data), "r", format="mp4") as container:
        for frame in container.decode(video=0):
            decoded += 1
            number = read_stamp(frame.to_ndarray(format="gray"), source_height)
            if number is None:
                unreadable += 1
            else:
                numbers.append(number)
    return numbers, decoded, unreadable


def summary(values: list[float]) -> str:
    if len(values) < 2:
        return "  ".join(f"{v:.2f} s" for v in values) or "none"
    p95 = statistics.quantiles(values, n=20, method="inclusive")[18]
    return f"p50 {statistics.median(values):.2f} s  p95 {p95:.2f} s  max {max(values):.2f} s  (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--segments", type=int, default=30)
    parser.add_argument("--segment-duration", type=float, default=2.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--rendition", default=None, help="rung to watch (default: the tallest)")
    parser.add_argument("--poll", type=float, default=0.02, help="playlist poll interval, s")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        config = Config()
        config.server.host, config.server.http_port, config.server.rtmp_port = "127.0.0.1", 0, 0
        config.server.data_dir, config.server.admin_token = tmp, ADMIN_TOKEN
        config.hls.segment_duration = args.segment_duration
        config.transcode.renditions = [r for r in config.transcode.renditions if r.height <= args.height] or [
            Rendition("src", args.height, 2_000_000)
        ]
        watched = args.rendition or config.transcode.renditions[0].name
        server = run_server(config)
        try:
            _, stream = server.api("POST", "/api/streams", {"title": "latency"})
            seconds = args.segments * args.segment_duration + 4
            ctx = multiprocessing.get_context("spawn")
            sent_at = ctx.Array("d", int(seconds * args.fps), lock=False)
            # The publisher runs in its own process (PyAV holds the GIL while it writes to the network).
            publisher = ctx.Process(target=_publish, daemon=True,
                                    args=(server.rtmp_url(stream["stream_key"]), seconds, args.width, args.height,
                                          args.fps, args.segment_duration, sent_at))
            publisher.start()
            downloads = watch(f"{server.http}/hls/{stream['id']}/{watched}.m3u8", publisher.is_alive, args.poll,
                              idle=3 * args.segment_duration + 2)
            publisher.join(30)
        finally:
            server.stop()

    sent = list(sent_at)
    # The publish runs 4 s past the segments asked for; segments that start in that tail are not counted
    # (the last one is only cut when the publisher hangs up, or when the reconnect window closes).
    tail = int(args.segments * args.segment_duration * args.fps)
    newest, first = [], []
    decoded = unreadable = in_tail = 0
    distinct: set[int] = set()
    for download in downloads:
        numbers, n, bad = frame_numbers(download, args.height)
        decoded, unreadable = decoded + n, unreadable + bad
        numbers = [k for k in numbers if k < len(sent) and sent[k] > 0]
        distinct.update(numbers)
        if numbers and min(numbers) >= tail:
            in_tail += 1
        elif numbers:
            newest.append(download.done_at - sent[max(numbers)])
            first.append(download.done_at - sent[min(numbers)])
    print(f"source {args.width}x{args.height}@{args.fps} (x264 ultrafast zerolatency over RTMP), "
          f"{args.segment_duration:g} s segments, ladder {', '.join(r.name for r in config.transcode.renditions)}; "
          f"watching {watched}, playlist polled every {args.poll * 1000:.0f} ms; {os.cpu_count()} CPUs")
    print(f"{len(downloads)} segments downloaded, {decoded} frames decoded, {unreadable} frame stamps unreadable; "
          f"{len(distinct)} distinct frame numbers read" +
          (f", {max(distinct) - min(distinct) + 1 - len(distinct)} missing between {min(distinct)} and {max(distinct)}"
           if distinct else ""))
    if not newest:
        print("no segment with a readable frame")
        return
    # The first segment includes encoder and transcoder start-up; report it apart.
    print(f"first segment: newest frame {newest[0]:.2f} s, first frame {first[0]:.2f} s; "
          f"{in_tail} segment(s) in the publish's last {len(sent) - tail} frames not counted")
    # In order, so a server falling behind real time (latency growing) shows.
    print("newest frame, per segment:", " ".join(f"{v:.2f}" for v in newest[1:]))
    print(f"newest frame in segment -> segment downloaded: {summary(newest[1:])}")
    print(f"first frame in segment  -> segment downloaded: {summary(first[1:])}")


if __name__ == "__main__":
    main()
