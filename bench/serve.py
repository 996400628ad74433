"""Serving capacity while a stream is live: requests/s and bytes/s of one `mediaserver serve` process for the
live-edge segment, the media playlist and the master playlist, beside nginx (one worker) serving the same
files from the same disk. No pass/fail: figures only.

The bench starts the server as its own process (`python -m mediaserver.cli serve`, uvloop if installed) with a
config in a temporary folder: one passthrough rung, so the stream's segments are the source's (1280x720,
~2 Mbit/s, 2 s GOPs: ~530 KB segments) and no encoder eats the CPU being measured. A child process publishes
over RTMP: one pre-encoded 2 s GOP repeated with advancing timestamps, plus a continuous AAC tone, at real
time. While the stream is live it runs `wrk` (Debian package `wrk`) for `--seconds` against
  (a) the newest segment of the rendition when the run starts (it is a few segments old by the end),
  (b) the media playlist (rendered by the session), (c) the master playlist,
then the same load against nginx (Debian `nginx-light`/`nginx`), started by the bench as a non-root process
(`daemon off; worker_processes 1;`) on a free 127.0.0.1 port, serving the store folder itself for (a) and, for
(b) and (c), files holding the playlist text the server answered just before.
The machine's 2 cores are shared: wrk (one thread) competes with the server for them, as do the publisher
and the transcode worker (both light here). CPU figures are per process, in % of one core.
Usage: python bench/serve.py [--seconds 10] [--connections 32] [--tree PATH] [--only segment,media,master]
                             [--py-spy DIR]
  --tree: the source tree to run the server from (default: this checkout), e.g. an unpacked `git archive`.
  --py-spy: sample the server with py-spy (pip install py-spy) during each of its measurements and write
    collapsed stacks to DIR/KIND.txt, plus a summary of the hottest functions (the figures then include
    py-spy's overhead).
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADMIN_TOKEN = "bench-admin-token"
RENDITION = "src"
GOP_SECONDS = 2
FPS = 30
NOBODY = 65534


# -- the source: one GOP of 720p at ~2 Mbit/s, repeated; a continuous tone -----------------------------------
def _encode(seconds: float, *, video: bool, bitrate: int, width: int, height: int) -> bytes:
    import av
    import numpy as np

    buf = io.BytesIO()
    container = av.open(buf, "w", format="flv")
    if video:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = bitrate
        kbit = bitrate // 1000
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(FPS * GOP_SECONDS),
                          "x264-params": f"vbv-maxrate={kbit}:vbv-bufsize={kbit}:scenecut=0"}
        rng = np.random.default_rng(1)
        base = np.zeros((height, width, 3), np.uint8)
        base[:, :, 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
        for i in range(int(seconds * FPS)):
            # Noise: incompressible, so x264 spends the whole bitrate as a camera picture would.
            img = base + rng.integers(0, 24, (height, width, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    else:
        astream = container.add_stream("aac", rate=48000, layout="stereo")
        block, pts = 1024, 0
        while pts < seconds * 48000:
            t = np.arange(block, dtype=np.float32) + pts
            wave = (0.2 * np.sin(2 * np.pi * 440 * t / 48000)).astype(np.float32)
            aframe = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
            aframe.sample_rate, aframe.pts, aframe.time_base = 48000, pts, Fraction(1, 48000)
            pts += block
            for packet in astream.encode(aframe):
                container.mux(packet)
        for packet in astream.encode(None):
            container.mux(packet)
    container.close()
    return buf.getvalue()


def source_tags(seconds: float, bitrate: int, width: int, height: int) -> list:
    from ingest.flv import FlvTag
    from tests.media_source import flv_tags

    gop = flv_tags(_encode(GOP_SECONDS, video=True, bitrate=bitrate, width=width, height=height))
    tone = flv_tags(_encode(seconds, video=False, bitrate=0, width=0, height=0))
    video_header = [t for t in gop if t.kind == 9 and t.body[1] == 0][:1]
    frames = [t for t in gop if t.kind == 9 and t.body[1] == 1]
    audio_header = [t for t in tone if t.kind == 8 and t.body[1] == 0][:1]
    audio = [t for t in tone if t.kind == 8 and t.body[1] == 1]
    video = [FlvTag(9, t.timestamp_ms + k * GOP_SECONDS * 1000, t.body)
             for k in range(int(seconds // GOP_SECONDS)) for t in frames]
    return video_header + audio_header + sorted(video + audio, key=lambda t: (t.timestamp_ms, t.kind))


def _publisher(url: str, seconds: float, bitrate: int, width: int, height: int) -> None:
    from tests.media_source import PublishError, publish_tags

    try:
        publish_tags(url, source_tags(seconds, bitrate, width, height), realtime=True)
    except PublishError as exc:
        print(f"publisher: {exc}", file=sys.stderr)


# -- processes ------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def http(url: str, method: str = "GET", body: object = None, token: str | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def write_server_config(folder: Path, http_port: int, rtmp_port: int, height: int, bitrate: int) -> Path:
    path = folder / "config.toml"
    path.write_text(f"""
[server]
host = "127.0.0.1"
http_port = {http_port}
rtmp_port = {rtmp_port}
data_dir = "{folder / 'data'}"
admin_token = "{ADMIN_TOKEN}"

[storage]
reserve_mb = 0.0

[hls]
segment_duration = {GOP_SECONDS}.0

[[transcode.renditions]]
name = "{RENDITION}"
height = {height}
video_bitrate = {bitrate}
passthrough = true
""")
    return path


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


def start_nginx(folder: Path, root: Path, port: int) -> subprocess.Popen[bytes]:
    """nginx, one worker, in the foreground, as a non-root user (nobody when the bench runs as root)."""
    state = folder / "nginx"
    state.mkdir()
    conf = state / "nginx.conf"
    conf.write_text(f"""
daemon off;
worker_processes 1;
pid {state}/nginx.pid;
error_log {state}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {state}/body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    types {{ application/vnd.apple.mpegurl m3u8; video/iso.segment m4s; video/mp4 mp4; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            add_header Access-Control-Allow-Origin "*";
            add_header Cache-Control "public, max-age=1";
        }}
    }}
}}
""")
    preexec = None
    if os.geteuid() == 0:
        for path in [folder, *folder.rglob("*")]:  # readable by nobody; the state folder writable
            os.chmod(path, (os.stat(path).st_mode | 0o755) if path.is_dir() else (os.stat(path).st_mode | 0o644))
        os.chown(state, NOBODY, NOBODY)

        def preexec() -> None:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)

    process = subprocess.Popen([nginx_binary() or "nginx", "-c", str(conf), "-p", str(state), "-e", str(state / "error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited: {process.stderr.read().decode() if process.stderr else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    raise RuntimeError("nginx did not start listening")


def nginx_worker(master: subprocess.Popen[bytes]) -> int:
    """The pid of nginx's one worker (its CPU time is the one that counts)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master.pid:
                    return int(entry.name)
            except (OSError, ValueError, IndexError):
                continue
    return master.pid


# -- load --------------------------------------------------------------------------------------------------
@dataclass
class Result:
    requests_per_s: float
    bytes_per_s: float
    errors: str
    server_cpu: float   # % of one core, the process serving
    wrk_cpu: float      # % of one core
    machine_cpu: float  # % of all cores, everything on the machine
    load: float         # 1-minute load average at the end

    @property
    def per_cpu_second(self) -> float:
        """Requests per second of the serving process's own CPU time: what one whole core would give, and
        less sensitive than req/s to what else the machine is running."""
        return self.requests_per_s / (self.server_cpu / 100) if self.server_cpu > 0 else float("nan")


UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}


def run_wrk(url: str, seconds: float, connections: int, server_pid: int) -> Result:
    cpu0, busy0 = cpu_seconds(server_pid), machine_busy()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url],
                         capture_output=True, text=True, check=False).stdout
    elapsed = time.monotonic() - start
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1, busy1 = cpu_seconds(server_pid), machine_busy()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", out)
    problems = [m.group(0).strip() for m in re.finditer(r"(Non-2xx or 3xx responses: \d+|Socket errors: .*)", out)]
    if rps is None or transfer is None:
        raise RuntimeError(f"wrk gave no figures for {url}:\n{out}")
    wrk_cpu = (children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime) / elapsed
    return Result(float(rps.group(1)), float(transfer.group(1)) * UNITS[transfer.group(2)], "; ".join(problems),
                  100 * (cpu1 - cpu0) / elapsed, 100 * wrk_cpu,
                  100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), os.getloadavg()[0])


def print_render_cost(tree: Path) -> None:
    """The loop time one live media playlist costs to render as the DVR window fills (the playlist measured
    above is only a minute or two long), with the tree's own packager, in a child process."""
    code = """
import sys, time
from packager.playlist import RenditionTrack, SegmentEntry, render_media, window
for n in (30, 900, 3600):
    track = RenditionTrack("src")
    track.entries = [SegmentEntry(i, 2.0 * i, 2.0, f"src/seg-{i}.m4s", "src/init-0.mp4", 1.7e9 + 2 * i, 530000)
                     for i in range(n)]
    for blocks in (False, True):
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < 0.5:
            listed = window(track.entries, 7200.0, 6)
            text = render_media(listed, all_entries=track.entries, configured_target=2.0, ended=False,
                                uri_prefix="b/", blocks=track.blocks("b/")[n - len(listed):] if blocks else None)
            count += 1
        spent = (time.perf_counter() - start) / count
        how = "from entry lines kept" if blocks else "every line afresh    "
        print(f"  {n:>5} segments ({n * 2 / 60:>3.0f} min of DVR), {how}: {len(text) / 1024:>4.0f} KB, "
              f"{spent * 1e3:6.2f} ms to render, at most {1 / spent:6.0f} renders/s")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(tree.resolve())})
    print("\nrendering one live media playlist (the server renders each once per new part or segment and answers "
          "every request from that text):")
    print(out.stdout.rstrip() or f"  (not measured: {out.stderr.strip().splitlines()[-1:]})")


# -- the run ---------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (one wrk thread)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree the server runs from")
    parser.add_argument("--only", default="segment,media,master")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--bitrate", type=int, default=1_900_000, help="source video bits/s")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--py-spy", type=Path, default=None, dest="py_spy", help="write profiles here")
    args = parser.parse_args()
    kinds = [k for k in args.only.split(",") if k]
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    have_nginx = nginx_binary() is not None
    if not have_nginx:
        print("nginx is not installed (apt-get install -y nginx-light): our figures only", file=sys.stderr)

    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    http_port, rtmp_port = free_port(), free_port()
    config = write_server_config(folder, http_port, rtmp_port, args.height, args.bitrate)
    env = {**os.environ, "PYTHONPATH": str(args.tree.resolve())}
    server = subprocess.Popen([sys.executable, "-m", "mediaserver.cli", "serve", "--config", str(config),
                               "--log-level", "WARNING"], cwd=args.tree, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "wb"))
    publisher: multiprocessing.process.BaseProcess | None = None
    nginx: subprocess.Popen[bytes] | None = None
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 30
        while http(base + "/api/openapi.json")[0] != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; see {folder / 'server.log'}")
            time.sleep(0.2)
        status, body = http(base + "/api/streams", "POST", {"title": "Bench"}, ADMIN_TOKEN)
        if status != 201:
            raise RuntimeError(f"creating the stream: {status} {body[:200]!r}")
        stream = json.loads(body)
        # Long enough for start-up, every measurement (ours and nginx's, with a warm-up each) and slack.
        publish_seconds = 40 + len(kinds) * 2 * (args.seconds + 3)
        publish_seconds = GOP_SECONDS * (int(publish_seconds) // GOP_SECONDS + 1)
        print(f"encoding the source ({args.width}x{args.height}, {args.bitrate / 1e6:g} Mbit/s, {GOP_SECONDS} s GOPs) "
              f"and publishing {publish_seconds} s ...", flush=True)
        publisher = multiprocessing.get_context("spawn").Process(
            target=_publisher, args=(f"rtmp://127.0.0.1:{rtmp_port}/live/{stream['stream_key']}", publish_seconds,
                                     args.bitrate, args.width, args.height), daemon=True)
        publisher.start()

        master_url = f"{base}/hls/{stream['id']}/master.m3u8"
        media_url = f"{base}/hls/{stream['id']}/{RENDITION}.m3u8"
        deadline = time.monotonic() + 60
        segments: list[str] = []
        while len(segments) < 3:
            if time.monotonic() > deadline or not publisher.is_alive():
                raise RuntimeError(f"the stream did not go live; see {folder / 'server.log'}")
            time.sleep(0.5)
            status, text = http(media_url)
            if status == 200:
                segments = [line for line in text.decode().splitlines() if line and not line.startswith("#")]
        print(f"live: {len(segments)} segments in the playlist; server pid {server.pid}, python {sys.version.split()[0]}, "
              f"tree {args.tree}", flush=True)

        www = folder / "www"
        www.mkdir()
        if have_nginx:
            nginx_port = free_port()
            (www / "media").symlink_to(folder / "data" / "media")
            nginx = start_nginx(folder, www, nginx_port)
            nginx_pid = nginx_worker(nginx)
            print("nginx: one worker process (worker_processes 1), sendfile on, access_log off, as "
                  f"{'nobody' if os.geteuid() == 0 else 'this user'}", flush=True)
        print(f"wrk: 1 thread, {args.connections} connections, {args.seconds:g} s per measurement; wrk, the publisher and "
              f"the transcode worker share the machine's {os.cpu_count()} cores with the server\n", flush=True)

        header = (f"{'what':<26}{'server':<8}{'req/s':>10}{'MB/s':>10}{'size KB':>9}{'cpu %':>7}{'req/cpu-s':>10}"
                  f"{'wrk %':>7}{'all %':>7}{'load':>6}  ours/nginx: req/s, req/cpu-s")
        print(header)
        print("-" * len(header))
        for kind in kinds:
            status, text = http(media_url)
            lines = [line for line in text.decode().splitlines() if line and not line.startswith("#")]
            if kind == "segment":
                ours = f"{base}/hls/{stream['id']}/{lines[-1]}"
                theirs_path = f"media/{stream['id']}/{lines[-1].split('?')[0]}"
                label = f"segment {lines[-1].rsplit('/', 1)[-1]}"
            elif kind == "media":
                ours, theirs_path, label = media_url, "media.m3u8", f"media playlist ({len(lines)} seg)"
                (www / "media.m3u8").write_bytes(text)
            else:
                ours, theirs_path, label = master_url, "master.m3u8", "master playlist"
                (www / "master.m3u8").write_bytes(http(master_url)[1])
            status, body = http(ours)
            size = len(body)
            if status != 200:
                raise RuntimeError(f"{ours}: {status}")
            http(ours)  # warm
            run_wrk(ours, 2, args.connections, server.pid)  # warm-up: connections, caches
            spy = None
            if args.py_spy is not None:
                args.py_spy.mkdir(parents=True, exist_ok=True)
                spy = subprocess.Popen(["py-spy", "record", "-p", str(server.pid), "-d", f"{args.seconds:g}", "-r", "250",
                                        "--nonblocking", "-f", "raw", "-o", str(args.py_spy / f"{kind}.txt")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            mine = run_wrk(ours, args.seconds, args.connections, server.pid)
            if spy is not None:
                spy.wait(30)
            print(f"{label:<26}{'ours':<8}{mine.requests_per_s:>10.0f}{mine.bytes_per_s / 1e6:>10.1f}{size / 1024:>9.1f}"
                  f"{mine.server_cpu:>7.0f}{mine.per_cpu_second:>10.0f}{mine.wrk_cpu:>7.0f}{mine.machine_cpu:>7.0f}"
                  f"{mine.load:>6.2f}  {mine.errors}", flush=True)
            if nginx is not None:
                url = f"http://127.0.0.1:{nginx_port}/{theirs_path}"
                if http(url)[0] != 200:
                    raise RuntimeError(f"nginx does not serve {url}")
                run_wrk(url, 2, args.connections, nginx_pid)
                theirs = run_wrk(url, args.seconds, args.connections, nginx_pid)
                ratio = mine.requests_per_s / theirs.requests_per_s if theirs.requests_per_s else float("nan")
                per_cpu = mine.per_cpu_second / theirs.per_cpu_second if theirs.per_cpu_second else float("nan")
                print(f"{'':<26}{'nginx':<8}{theirs.requests_per_s:>10.0f}{theirs.bytes_per_s / 1e6:>10.1f}"
                      f"{size / 1024:>9.1f}{theirs.server_cpu:>7.0f}{theirs.per_cpu_second:>10.0f}{theirs.wrk_cpu:>7.0f}"
                      f"{theirs.machine_cpu:>7.0f}{theirs.load:>6.2f}  {ratio:.2f}x, {per_cpu:.2f}x {theirs.errors}",
                      flush=True)
        print("\ncpu %: the serving process (ours: the server; nginx: its worker), % of one core; req/cpu-s: requests "
              "per second of that process's CPU time; wrk %: the load generator; all %: every core of the machine; "
              "load: 1-min load average.")
        print_render_cost(args.tree)
        return 0
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(5)
            except subprocess.TimeoutExpired:
                nginx.kill()
        if publisher is not None and publisher.is_alive():
            publisher.kill()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
