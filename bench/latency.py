"""Live latency as a viewer sees it, standard HLS and LL-HLS in the same run: from the publisher's clock when a
frame is handed to its encoder to the moment an HLS client has finished downloading the bytes that hold it.

How it measures (no pass/fail: figures only):
- The server runs in a child process (tests.server_fixture.small_config: ladder 720p/480p/360p, x264 ultrafast,
  2 s segments). Streams are made through the API with the admin token; the LL one gets
  PATCH {"low_latency": true} before its publish (a refusal is reported, and that mode skipped).
- The publisher (another child, PyAV writing FLV over RTMP, 720p30 at real-time pace, x264 ultrafast zerolatency,
  2 s GOP, AAC tone) draws each frame's number into the picture (bench/frame_code.py) and stores time.time()
  just before it hands that frame to the encoder.
- The client (asyncio + aiohttp, in this process) follows one media playlist (360p by default: the rung the
  frame code is tested on). Standard mode: reload the playlist every --poll seconds (or block with _HLS_msn when
  the playlist says CAN-BLOCK-RELOAD=YES), download each new segment in full. LL mode (RFC 8216bis 6.2.5.2,
  6.2.6): blocking reloads with _HLS_msn/_HLS_part for the next part, and every EXT-X-PRELOAD-HINT part requested
  as soon as a playlist advertises it; a part counts as downloaded when its last byte arrived. URIs come only from
  the playlists. Each download's completion time is noted; nothing is decoded while measuring.
- Afterwards every segment (init + its parts or itself) is decoded with PyAV, each frame's number read from
  the picture, and latency = download complete - publish time of that frame, for the frames published in the
  measured window (after --warmup). Server-side timestamps (EXTINF, PDT) are not used. When the server streams
  a hinted part as it is written, the time each frame's own bytes arrived is shown too.
- The client also reports what it sees against RFC 8216bis (blocking reloads answered without what was asked
  for, hinted parts sent before they were complete or not found, playlist rules a client can check).
- hls.js (web/static/vendor, served by the server) plays the same stream in headless Chromium for
  --browser-seconds: its own hls.latency, and the age of the frame on screen (frame code read from a canvas).
- Load: os.getloadavg() and the CPU time of the server process and its children (the transcode workers) and of
  the publisher, from /proc, over each measured window.
Publisher, server and client share this machine's clock.
- --ingest rtmp,srt,whip measures each way in, in turn, in one run: srt pushes the publisher's MPEG-TS through
  the ffmpeg CLI (a copy, as an SRT caller); whip publishes with aiortc (its own H.264 encoder, as a browser
  does; the tone is aiortc's silent Opus track instead).
Usage: python bench/latency.py [--seconds 60] [--mode standard|ll|both] [--ingest rtmp,srt,whip] [--skip-browser]
"""
from __future__ import annotations

import argparse
import asyncio
import io
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import frame_code  # noqa: E402
from bench.hls_client import STREAMED, ClientLog, HlsClient, Piece  # noqa: E402

ADMIN_TOKEN = "bench-admin-token"
LADDER = [("720p", 720, 2_800_000), ("480p", 480, 1_200_000), ("360p", 360, 700_000)]
CHROMIUM = str(ROOT / "tests" / "chromium")  # /usr/bin/chromium without real-time threads
TARGETS = {"standard": 2.5, "ll": 1.0}  # p95 the lead compares to (printed, not asserted)


# -- the server (child process) -----------------------------------------------------------------------------
def _serve(data_dir: str, segment_duration: float, part_target: float, srt_latency_ms: int, conn: Connection) -> None:
    """Run mediaserver on free loopback ports; send (http_port, rtmp_port), stop when anything arrives on conn."""
    from mediaserver.config import Rendition
    from mediaserver.server import start_server
    from tests.server_fixture import free_udp_ports, small_config

    logging.basicConfig(level=logging.INFO, filename=os.path.join(data_dir, "server.log"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = small_config(Path(data_dir), renditions=[Rendition(*r) for r in LADDER], srt=(free_udp_ports(4), 4))
    config.srt.latency_ms = srt_latency_ms
    config.server.admin_token = ADMIN_TOKEN
    config.hls.segment_duration = segment_duration
    config.hls.part_target = part_target
    config.validate()

    async def run() -> None:
        server = await start_server(config)
        conn.send((server.http_port, server.rtmp_port))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await server.stop()

    asyncio.run(run())


# -- the publisher (child process) --------------------------------------------------------------------------
def _pictures(width: int, height: int) -> Any:
    """A function i -> the yuv420p picture of frame i: a scrolling luma wave, a moving square, the frame code.
    Built in yuv420p (no colour conversion per frame)."""
    wave = (125 + 100 * np.sin(np.arange(width + 256) * 2 * np.pi / 256)).astype(np.uint8)
    scroll = np.broadcast_to(wave, (height, width + 256))
    chroma = np.full((height // 2, width), 128, np.uint8)
    chroma[:, : width // 4] = 90  # some colour: a U/V block on the left

    def picture(i: int) -> np.ndarray:
        img = np.empty((height * 3 // 2, width), np.uint8)
        luma = img[:height]
        offset = (i * 4) % 256
        luma[:] = scroll[:, offset : offset + width]
        x = (i * 8) % max(1, width - 96)
        luma[height // 2 : height // 2 + 96, x : x + 96] = 235
        img[height:] = chroma
        frame_code.draw(luma, i, white=235, black=16)
        return img

    return picture


def _publish(ingest: str, url: str, frames: int, width: int, height: int, fps: int, gop_seconds: float,
             sent_at: Any) -> None:
    """H.264 (x264 ultrafast, zerolatency) + AAC tone at real-time pace; sent_at[i] = time.time() just before
    frame i is handed to the encoder. rtmp: FLV over RTMP from PyAV. srt: the same encoder writing MPEG-TS into
    the ffmpeg CLI, which pushes it over SRT as a caller (PyAV's FFmpeg has no libsrt)."""
    if ingest == "whip":
        asyncio.run(_publish_whip(url, frames, width, height, fps, sent_at))
        return
    relay = None
    if ingest == "srt":
        import subprocess

        relay = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-fflags", "nobuffer", "-f", "mpegts",
                                  "-i", "pipe:0", "-c", "copy", "-f", "mpegts", url], stdin=subprocess.PIPE)
        assert relay.stdin is not None
        container = av.open(relay.stdin, "w", format="mpegts", buffer_size=4096)
    else:
        container = av.open(url, "w", format="flv", timeout=10)
    try:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(max(1, int(fps * gop_seconds)))}
        audio = container.add_stream("aac", rate=48000, layout="stereo")
        picture = _pictures(width, height)
        samples = 48000 // fps
        t = np.arange(samples, dtype=np.float32)
        audio_pts = 0
        start = time.perf_counter()
        for i in range(frames):
            delay = start + i / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            frame = av.VideoFrame.from_ndarray(picture(i), format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            sent_at[i] = time.time()
            for packet in video.encode(frame):
                container.mux(packet)
            tone = (0.2 * np.sin(2 * np.pi * 440 * (t + audio_pts) / 48000)).astype(np.float32)
            aframe = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            aframe.sample_rate, aframe.pts, aframe.time_base = 48000, audio_pts, Fraction(1, 48000)
            audio_pts += samples
            for packet in audio.encode(aframe):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    finally:
        try:
            container.close()
        except av.error.FFmpegError:
            pass
        if relay is not None:
            if relay.stdin is not None:
                relay.stdin.close()
            relay.wait(10)


async def _publish_whip(url: str, frames: int, width: int, height: int, fps: int, sent_at: Any) -> None:
    """aiortc as a WHIP client (as a browser would be): url is "WHIP-ENDPOINT KEY". aiortc's own H.264 encoder
    encodes each frame as the track hands it over; sent_at[i] is noted then. An Opus tone goes with it."""
    from aiortc import AudioStreamTrack, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

    endpoint, key = url.split(" ", 1)
    picture = _pictures(width, height)

    class Pictures(VideoStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            self.i = 0
            self.start = time.perf_counter()

        async def recv(self) -> av.VideoFrame:
            i = self.i
            delay = self.start + i / fps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = av.VideoFrame.from_ndarray(picture(i % 65536), format="yuv420p")
            frame.pts, frame.time_base = i * (90000 // fps), Fraction(1, 90000)
            if i < len(sent_at):
                sent_at[i] = time.time()
            self.i += 1
            return frame

    pc = RTCPeerConnection()
    pc.addTrack(Pictures())
    pc.addTrack(AudioStreamTrack())  # aiortc's own: silence, Opus-encoded
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video":
            from aiortc.rtcrtpsender import RTCRtpSender

            transceiver.setCodecPreferences(
                [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"])
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as session:
        async with session.post(endpoint, data=pc.localDescription.sdp, headers={
                "Authorization": f"Bearer {key}", "Content-Type": "application/sdp"}) as response:
            if response.status != 201:
                raise RuntimeError(f"WHIP POST -> {response.status} {await response.text()}")
            location = response.headers["Location"]
            answer = await response.text()
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.sleep(frames / fps)
        async with session.delete(aiohttp.client.URL(endpoint).join(aiohttp.client.URL(location)),
                                  headers={"Authorization": f"Bearer {key}"}):
            pass
    await pc.close()


# -- load -----------------------------------------------------------------------------------------------------
def _proc_cpu() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user+system CPU seconds) for every process we can read."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


class CpuMeter:
    """CPU seconds used by a process and all its descendants between start() and stop(), sampled every second
    (a child that lived between two samples is missed; transcode workers live for the whole publish)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def sample(self) -> None:
        table = _proc_cpu()
        tree, frontier = {self.pid}, [self.pid]
        while frontier:
            parent = frontier.pop()
            for pid, (ppid, _) in table.items():
                if ppid == parent and pid not in tree:
                    tree.add(pid)
                    frontier.append(pid)
        for pid in tree:
            if pid in table:
                self.first.setdefault(pid, table[pid][1])
                self.last[pid] = table[pid][1]

    def seconds(self, children_only: bool = False) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last if not children_only or pid != self.pid)


@dataclass
class Load:
    wall: float = 0.0
    loadavg_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    loadavg_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    server_cpu: float = 0.0     # CPU seconds, server process + children
    worker_cpu: float = 0.0     # of which the children (transcode workers)
    publisher_cpu: float = 0.0

    def __str__(self) -> str:
        if not self.wall:
            return "not measured"
        return (f"loadavg (1/5/15 min) {'/'.join(f'{v:.2f}' for v in self.loadavg_start)} at start -> "
                f"{'/'.join(f'{v:.2f}' for v in self.loadavg_end)} at end on {os.cpu_count()} CPUs; CPU over "
                f"{self.wall:.0f} s: server {100 * (self.server_cpu - self.worker_cpu) / self.wall:.0f} % + its "
                f"transcode worker(s) {100 * self.worker_cpu / self.wall:.0f} %, "
                f"publisher {100 * self.publisher_cpu / self.wall:.0f} % (100 % = one core)")


async def measure_load(server_pid: int, publisher_pid: int, until: float, load: Load) -> None:
    meters = [CpuMeter(server_pid), CpuMeter(publisher_pid)]
    start, load.loadavg_start = time.time(), os.getloadavg()
    while True:
        for meter in meters:
            meter.sample()
        if time.time() >= until:
            break
        await asyncio.sleep(min(1.0, max(0.0, until - time.time())))
    load.wall, load.loadavg_end = time.time() - start, os.getloadavg()
    load.server_cpu, load.publisher_cpu = meters[0].seconds(), meters[1].seconds()
    load.worker_cpu = meters[0].seconds(children_only=True)


# -- reading the frames back ----------------------------------------------------------------------------------
@dataclass
class FrameSeen:
    number: int
    done_at: float          # its download (segment or part) complete
    bytes_at: float         # the last byte of this frame's own sample had arrived
    via: str
    piece: tuple[int, int]  # (msn, part index or -1) of the download that held it


def frames_in(pieces: list[Piece], init: bytes) -> tuple[list[FrameSeen], int, int]:
    """Decode one segment (init + its parts in order, or the whole segment): (frames with their piece's
    download time, frames decoded, frame codes unreadable)."""
    data = init + b"".join(p.data for p in pieces)
    starts, bounds, offset = [], [], len(init)
    for p in pieces:
        starts.append(offset)
        offset += len(p.data)
        bounds.append(offset)  # piece i holds bytes starts[i] up to bounds[i]
    seen, decoded, unreadable = [], 0, 0
    sample_of_pts: dict[int, tuple[Piece, float]] = {}  # pts -> (its piece, when its sample's last byte came)
    with av.open(io.BytesIO(data), "r", format="mp4") as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.pts is not None and packet.pos is not None and packet.pos >= 0:
                i = min(bisect_right(bounds, packet.pos), len(pieces) - 1)
                end = packet.pos + packet.size - starts[i]
                came = next((t for n, t in pieces[i].arrivals if n >= end), pieces[i].done_at)
                sample_of_pts[packet.pts] = (pieces[i], came)
            for frame in packet.decode():
                decoded += 1
                number = frame_code.read_frame(frame)
                found = sample_of_pts.get(frame.pts) if frame.pts is not None else None
                if number is None or found is None:
                    unreadable += 1
                    continue
                piece, came = found
                seen.append(FrameSeen(number, piece.done_at, came, piece.via, (piece.msn, piece.index)))
    return seen, decoded, unreadable


def read_back(log: ClientLog) -> tuple[list[FrameSeen], int, int, int]:
    """Every frame the client downloaded: (frames, decoded, unreadable, segments that failed to decode)."""
    groups: dict[tuple[str, int], list[Piece]] = {}
    for piece in log.pieces:
        groups.setdefault((piece.map_url, piece.msn), []).append(piece)
    frames, decoded, unreadable, failed = [], 0, 0, 0
    for (map_url, _), pieces in sorted(groups.items(), key=lambda g: g[0][1]):
        try:
            seen, n, bad = frames_in(pieces, log.inits[map_url])
        except (av.error.FFmpegError, IndexError) as exc:
            failed += 1
            log.problem("segment did not decode", f"segment {pieces[0].msn}: {exc}")
            continue
        frames += seen
        decoded, unreadable = decoded + n, unreadable + bad
    return frames, decoded, unreadable, failed


# -- hls.js in Chromium -------------------------------------------------------------------------------------
PAGE = """<!doctype html><html><body style="margin:0;background:#000">
<video id=v muted autoplay playsinline style="width:640px"></video>
<script src="/static/vendor/hls.min.js"></script>
<script>
const video = document.getElementById('v');
const hls = new Hls(CONFIG);
window.errors = [];
hls.on(Hls.Events.ERROR, (_, d) => window.errors.push(d.type + ' ' + d.details + (d.fatal ? ' (fatal)' : '')));
hls.loadSource(SOURCE);
hls.attachMedia(video);
video.play().catch(() => {});
const canvas = document.createElement('canvas');
const ctx = canvas.getContext('2d', {willReadFrequently: true});
window.sample = () => {
  const w = video.videoWidth, h = video.videoHeight;
  const out = {t: Date.now() / 1000, latency: hls.latency, target: hls.targetLatency, level: hls.currentLevel,
               time: video.currentTime, width: w, height: h, strip: null};
  if (w && h && video.readyState >= 2) {
    const rows = Math.ceil(h * STRIP);
    canvas.width = w; canvas.height = rows;
    ctx.drawImage(video, 0, 0, w, h);
    const px = ctx.getImageData(0, 0, w, rows).data;
    let s = '';
    for (let i = 0; i < px.length; i += 4)
      s += String.fromCharCode(Math.round(0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2]));
    out.strip = btoa(s);
  }
  return out;
};
</script></body></html>"""


@dataclass
class BrowserResult:
    latency: list[float] = field(default_factory=list)   # hls.latency samples
    target: float | None = None
    on_screen: list[float] = field(default_factory=list)  # now - publish time of the frame in the video element
    levels: set[int] = field(default_factory=set)
    heights: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    note: str = ""


async def hlsjs_latency(browser: Any, http: str, master_url: str, low_latency: bool, seconds: float,
                        sent_at: Any) -> BrowserResult:
    """Play master_url with hls.js; sample hls.latency and the on-screen frame's age every 0.5 s for `seconds`
    once playback has started."""
    import base64
    import json

    result = BrowserResult()
    config = {"lowLatencyMode": low_latency}
    strip = (1.5 + frame_code.ROW_BLOCKS + 0.5) * frame_code.BLOCK_FRACTION
    html = PAGE.replace("CONFIG", json.dumps(config)).replace("SOURCE", json.dumps(master_url)).replace(
        "STRIP", f"{strip:.4f}")
    page = await browser.new_page()
    try:
        await page.route(f"{http}/bench-latency.html",
                         lambda route: route.fulfill(status=200, content_type="text/html", body=html))
        await page.goto(f"{http}/bench-latency.html")
        deadline = time.time() + 20
        while time.time() < deadline and not await page.evaluate("video.currentTime > 0"):
            await asyncio.sleep(0.2)
        if not await page.evaluate("video.currentTime > 0"):
            result.note = "playback did not start within 20 s"
        else:
            await asyncio.sleep(2)  # past the first-segment catch-up
            end = time.time() + seconds
            while time.time() < end:
                s = await page.evaluate("window.sample()")
                if isinstance(s["latency"], (int, float)) and s["latency"] == s["latency"]:
                    result.latency.append(float(s["latency"]))
                if isinstance(s["target"], (int, float)):
                    result.target = float(s["target"])
                result.levels.add(s["level"])
                if s["strip"]:
                    rows = np.frombuffer(base64.b64decode(s["strip"]), np.uint8).reshape(-1, s["width"])
                    picture = np.zeros((s["height"], s["width"]), np.uint8)
                    picture[: rows.shape[0]] = rows
                    number = frame_code.read(picture)
                    if number is not None and number < len(sent_at) and sent_at[number] > 0:
                        result.on_screen.append(s["t"] - sent_at[number])
                        result.heights.add(s["height"])
                await asyncio.sleep(0.5)
        result.errors = await page.evaluate("window.errors")
    finally:
        await page.close()
    return result


# -- one mode, the run, the report -----------------------------------------------------------------------------
@dataclass
class ModeResult:
    mode: str
    ingest: str = "rtmp"
    unavailable: str = ""
    log: ClientLog | None = None
    sent_at: Any = None
    window: tuple[float, float] = (0.0, 0.0)
    load: Load = field(default_factory=Load)
    browser: BrowserResult | None = None


class Api:
    def __init__(self, session: aiohttp.ClientSession, http: str) -> None:
        self.session, self.http = session, http

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.http + path, json=body,
                                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
            return response.status, await response.json(content_type=None)


def ingest_url(ingest: str, stream: dict[str, Any], http: str, rtmp_port: int) -> str:
    """Where the publisher sends the stream for this way in (whip: "ENDPOINT KEY")."""
    if ingest == "srt":
        if not stream.get("srt_url"):
            raise RuntimeError("the server gives no srt_url (SRT ingest unavailable)")
        return str(stream["srt_url"])
    if ingest == "whip":
        return f"{http}/whip/{stream['id']} {stream['stream_key']}"
    return f"rtmp://127.0.0.1:{rtmp_port}/live/{stream['stream_key']}"


async def run_mode(mode: str, args: argparse.Namespace, api: Api, session: aiohttp.ClientSession,
                   rtmp_port: int, server_pid: int, browser: Any, ingest: str = "rtmp") -> ModeResult:
    result = ModeResult(mode, ingest)
    status, stream = await api.call("POST", "/api/streams", {"title": f"latency bench {mode} {ingest}"})
    if status != 201:
        raise RuntimeError(f"POST /api/streams -> {status} {stream}")
    if mode == "ll":
        status, body = await api.call("PATCH", f"/api/streams/{stream['id']}", {"low_latency": True})
        if status != 200 or not body.get("low_latency"):
            result.unavailable = f'PATCH /api/streams/{{id}} {{"low_latency": true}} -> {status} {body}'
            return result
    grace = 2 * args.segment_duration + 4
    browser_time = 0 if browser is None else args.browser_seconds + 25
    seconds = args.warmup + args.seconds + grace + browser_time + 3
    ctx = multiprocessing.get_context("spawn")
    result.sent_at = sent_at = ctx.Array("d", int(seconds * args.fps), lock=False)
    publisher = ctx.Process(target=_publish, daemon=True, args=(
        ingest, ingest_url(ingest, stream, api.http, rtmp_port), len(sent_at), args.width, args.height,
        args.fps, args.segment_duration, sent_at))
    publisher.start()
    try:
        deadline = time.time() + 15
        while sent_at[0] == 0 and time.time() < deadline and publisher.is_alive():
            await asyncio.sleep(0.05)
        if sent_at[0] == 0:
            raise RuntimeError("the publisher did not start")
        start = sent_at[0] + args.warmup
        result.window = (start, start + args.seconds)
        http = api.http
        client = HlsClient(session, f"{http}/hls/{stream['id']}/{args.rendition}.m3u8", mode, args.poll)
        result.log = client.log
        follow = client.follow_parts if mode == "ll" else client.follow_segments
        await asyncio.sleep(max(0.0, start - time.time() - 3))  # join a few seconds before the window opens
        load_task = asyncio.create_task(_after(start, measure_load(server_pid, publisher.pid or 0,
                                                                    start + args.seconds, result.load)))
        await follow(result.window[1] + grace)
        await load_task
        if browser is not None:
            result.browser = await hlsjs_latency(browser, http, f"{http}/hls/{stream['id']}/master.m3u8",
                                                 mode == "ll", args.browser_seconds, sent_at)
    finally:
        publisher.kill()
        publisher.join(5)
        await api.call("POST", f"/api/streams/{stream['id']}/end")
    return result


async def _after(at: float, coro: Any) -> None:
    await asyncio.sleep(max(0.0, at - time.time()))
    await coro


def percentiles(values: list[float]) -> tuple[float, float, float] | None:
    """(p50, p95, max); p95 is the nearest-rank value."""
    if not values:
        return None
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(0.95 * len(values)))], values[-1]


def summary(values: list[float]) -> str:
    figures = percentiles(values)
    if figures is None:
        return "none"
    p50, p95, top = figures
    return f"p50 {p50:.3f} s  p95 {p95:.3f} s  max {top:.3f} s  min {min(values):.3f} s  (n={len(values)})"


def cell(values: list[float] | None) -> str:
    figures = percentiles(values or [])
    return "-" if figures is None else " / ".join(f"{v:.2f}" for v in figures)


def report(result: ModeResult, args: argparse.Namespace) -> list[str]:
    """Print one mode's figures; returns its row of the closing table."""
    title = {"standard": f"standard HLS, {args.segment_duration:g} s segments",
             "ll": "LL-HLS (parts, blocking reload, preload hints)"}[result.mode]
    label = f"{result.mode} via {result.ingest}"
    print(f"\n== {title}, published over {result.ingest}: watching {args.rendition} ==")
    if result.unavailable:
        print(f"not run: {result.unavailable}")
        return [label, "not run", "-", "-", "-"]
    log = result.log
    assert log is not None
    frames, decoded, unreadable, failed = read_back(log)
    first_seen: dict[int, FrameSeen] = {}
    for f in frames:
        if f.number not in first_seen or f.done_at < first_seen[f.number].done_at:
            first_seen[f.number] = f
    sent = result.sent_at
    lo, hi = result.window
    in_window = [n for n in range(len(sent)) if lo <= sent[n] < hi]
    latencies = [first_seen[n].done_at - sent[n] for n in in_window if n in first_seen]
    kinds: dict[str, int] = {}
    for n in in_window:
        if n in first_seen:
            kinds[first_seen[n].via] = kinds.get(first_seen[n].via, 0) + 1
    if result.mode == "standard":
        how = ("blocking reload (_HLS_msn)" if "CAN-BLOCK-RELOAD=YES" in log.first_playlist
               else f"playlist reloaded every {args.poll * 1000:.0f} ms")
    else:
        how = (f"{len(log.reloads)} blocking reloads (median hold {statistics.median(log.reloads):.3f} s)"
               if log.reloads else "no blocking reloads") + (
            f"; {log.hints_requested} preload-hint requests, {log.hints_used} parts came from one"
            + (f" (held median {statistics.median(log.hint_holds):.3f} s)" if log.hint_holds else ""))
        m = [line for line in log.last_playlist.splitlines()
             if line.startswith(("#EXT-X-PART-INF", "#EXT-X-SERVER-CONTROL", "#EXT-X-TARGETDURATION"))]
        how += "; " + " ".join(m)
    print(f"client: {how}; {len(log.pieces)} downloads ({', '.join(f'{v} frames via {k}' for k, v in kinds.items())})"
          + (f"; {log.segments_for_lost_parts} whole segments for parts gone" if log.segments_for_lost_parts else ""))
    print(f"frames published in the {args.seconds:g} s window: {len(in_window)} (real time would be "
          f"{args.seconds * args.fps:.0f}); read back: {len(latencies)}; "
          f"missing: {len(in_window) - len(latencies)}  (all downloads: {decoded} frames decoded, {unreadable} "
          f"unreadable, {failed} segments failed to decode)")
    print(f"latency per frame (publisher hands it to the encoder -> client has downloaded it): {summary(latencies)}"
          f"   [target p95 <= {TARGETS[result.mode]:.1f} s]")
    arrived = [first_seen[n].bytes_at - sent[n] for n in in_window if n in first_seen]
    if log.hint_spreads and statistics.median(log.hint_spreads) > STREAMED:
        print(f"  hinted parts were streamed as written (first -> last byte: {summary(log.hint_spreads)});\n"
              f"  a client that decodes as bytes arrive would see each frame once its own bytes are in: "
              f"{summary(arrived)}")
    newest_frame: dict[tuple[int, int], int] = {}  # download -> the newest frame number it held
    for f in first_seen.values():
        newest_frame[f.piece] = max(newest_frame.get(f.piece, -1), f.number)
    newest = {piece: first_seen[n].done_at - sent[n] for piece, n in newest_frame.items()
              if n < len(sent) and lo <= sent[n] < hi}
    print(f"newest frame of each download (freshest picture a player could show): {summary(list(newest.values()))}")
    oldest: dict[tuple[int, int], tuple[float, int, str]] = {}
    for n in in_window:
        seen = first_seen.get(n)
        if seen is not None and seen.done_at - sent[n] > oldest.get(seen.piece, (-1.0, 0, ""))[0]:
            oldest[seen.piece] = (seen.done_at - sent[n], n, seen.via)
    worst = sorted(oldest.items(), key=lambda kv: -kv[1][0])[:5]
    print("slowest downloads (segment.part: oldest frame's latency, frame, how fetched):",
          ", ".join(f"{m}{'' if i < 0 else f'.{i}'}: {v:.3f} s #{n} {via}" for (m, i), (v, n, via) in worst))
    if latencies:
        step = args.fps * 5
        medians = [statistics.median([first_seen[n].done_at - sent[n] for n in in_window[i : i + step]
                                      if n in first_seen] or [float("nan")])
                   for i in range(0, len(in_window), step)]
        print("median per 5 s of the window (drift shows here):", " ".join(f"{v:.2f}" for v in medians))
    print(f"load: {result.load}")
    b = result.browser
    if b is not None:
        print(f"hls.js {'(lowLatencyMode: true)' if result.mode == 'll' else '(defaults)'}: hls.latency "
              f"{summary(b.latency)}; targetLatency {b.target if b.target is None else round(b.target, 3)}")
        print(f"hls.js on screen (now - publish time of the frame in the <video>): {summary(b.on_screen)}; "
              f"levels {sorted(b.levels)}, heights {sorted(b.heights)}" + (f"; {b.note}" if b.note else ""))
        if b.errors:
            print(f"hls.js errors ({len(b.errors)}): {'; '.join(sorted(set(b.errors))[:6])}")
    if result.mode == "ll" and log.last_playlist:
        print("live edge of the last playlist reloaded:\n    " + "\n    ".join(log.last_playlist.splitlines()[-9:]))
    if log.problems:
        print("against the spec / failures (count: first occurrence):")
        for kind, count in log.problems.items():
            print(f"  {count} x {log.first_problem[kind]}")
    load = (f"{result.load.loadavg_end[0]:.1f} / "
            f"{100 * result.load.server_cpu / max(result.load.wall, 1e-9):.0f} %")
    return [label, cell(latencies), cell(b.latency if b else None), cell(b.on_screen if b else None), load]


async def run(args: argparse.Namespace, tmp: str) -> list[ModeResult]:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(tmp, args.segment_duration, args.part_target, args.srt_latency, theirs), daemon=True)
    server.start()
    if not ours.poll(60):
        raise RuntimeError(f"the server did not start; see {tmp}/server.log")
    http_port, rtmp_port = ours.recv()
    http = f"http://127.0.0.1:{http_port}"
    modes = ["standard", "ll"] if args.mode == "both" else [args.mode]
    results = []
    playwright = browser = None
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
            if not args.skip_browser:
                from playwright.async_api import async_playwright

                playwright = await async_playwright().start()
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True,
                    args=["--no-sandbox", "--disable-background-networking",
                          "--autoplay-policy=no-user-gesture-required"])
            api = Api(session, http)
            for ingest in args.ingest.split(","):
                for mode in modes:
                    try:
                        results.append(await run_mode(mode, args, api, session, rtmp_port, server.pid or 0,
                                                      browser, ingest))
                    except Exception as exc:  # one way in failing must not lose the others' figures
                        results.append(ModeResult(mode, ingest, unavailable=f"{type(exc).__name__}: {exc}"))
                    await asyncio.sleep(4)  # the ended broadcast's worker goes away before the next mode
    finally:
        if browser is not None:
            await browser.close()
        if playwright is not None:
            await playwright.stop()
        ours.send("stop")
        server.join(60)
        if server.is_alive():
            server.kill()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="measured window per mode, s")
    parser.add_argument("--mode", choices=["standard", "ll", "both"], default="both")
    parser.add_argument("--srt-latency", type=int, default=500, help="the server's srt.latency_ms (SRT's receive buffer)")
    parser.add_argument("--ingest", default="rtmp",
                        help="comma-separated ways in, each measured in turn: rtmp, srt, whip (e.g. rtmp,srt,whip)")
    parser.add_argument("--skip-browser", action="store_true", help="no hls.js figures")
    parser.add_argument("--browser-seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=8, help="publish time before the window opens, s")
    parser.add_argument("--segment-duration", type=float, default=2.0)
    parser.add_argument("--part-target", type=float, default=0.5, help="hls.part_target of the LL stream")
    parser.add_argument("--rendition", default="360p", choices=[r[0] for r in LADDER])
    parser.add_argument("--poll", type=float, default=0.1, help="standard mode's reload interval, s")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the server's data dir (server.log) and say where")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="latency-bench-")
    began = time.time()
    try:
        results = asyncio.run(run(args, tmp))
        print(f"source {args.width}x{args.height}@{args.fps} (x264 ultrafast zerolatency, {args.segment_duration:g} s "
              f"GOP) over {args.ingest}; server ladder {', '.join(r[0] for r in LADDER)} (x264 ultrafast), "
              f"{args.segment_duration:g} s segments; {os.cpu_count()} CPUs; run took {time.time() - began:.0f} s")
        rows = [report(result, args) for result in results]
        print("\nsummary, seconds as p50 / p95 / max:")
        table = [["mode", "frame downloaded", "hls.latency", "hls.js on screen", "load 1 min / server CPU"], *rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)))
        print(f"  targets: LL-HLS p95 <= {TARGETS['ll']:.1f} s; standard ({args.segment_duration:g} s segments) p95 <= "
              f"{TARGETS['standard']:.1f} s (frame downloaded)")
    finally:
        if args.keep:
            print(f"\nserver data and log kept in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
