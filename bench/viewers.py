"""What a viewer costs the server: N simulated players on a standard HLS stream, then N on a Low-Latency
HLS stream, each behaving as hls.js does (standard: reload the media playlist every target duration and
fetch each new segment; LL: blocking reload on the preload hint and fetch the hinted part at once).

The server runs as its own process (`mediaserver serve`), both streams are published by real RTMP clients
(PyAV), and the server's own CPU time (its process, not the transcode workers) is read from /proc around
each phase. Prints requests/s, bytes/s and CPU-milliseconds per viewer-second for both modes, and how many
viewers one core would carry at that rate. Figures only, no pass/fail.
Usage: python bench/viewers.py --viewers 100 --seconds 20
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.media_source import start_publisher  # noqa: E402

TOKEN = "bench-admin-token"
PART = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]+)"')
HINT_NUMBERS = re.compile(r"part-(\d+)\.(\d+)\.m4s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(base: str, method: str, path: str, body: object = None) -> dict:
    request = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@dataclass
class Tally:
    requests: int = 0
    bytes: int = 0
    errors: int = 0


async def standard_viewer(session: aiohttp.ClientSession, playlist_url: str, until: float, tally: Tally) -> None:
    base = playlist_url.rsplit("/", 1)[0] + "/"
    seen: set[str] = set()
    while time.monotonic() < until:
        async with session.get(playlist_url) as response:
            text = await response.text()
            tally.requests += 1
            tally.bytes += len(text)
        target = float(re.search(r"#EXT-X-TARGETDURATION:(\d+)", text).group(1))  # type: ignore[union-attr]
        uris = [line for line in text.splitlines() if line and not line.startswith("#")]
        for uri in ([u for u in uris[-1:] if u not in seen] if seen else uris[-1:]):
            async with session.get(base + uri) as response:
                tally.bytes += len(await response.read())
                tally.requests += 1
                tally.errors += response.status != 200
            seen.add(uri)
        await asyncio.sleep(target)


async def ll_viewer(session: aiohttp.ClientSession, playlist_url: str, until: float, tally: Tally) -> None:
    base = playlist_url.rsplit("/", 1)[0] + "/"
    query = ""
    fetches: set[asyncio.Task[None]] = set()
    while time.monotonic() < until:
        async with session.get(playlist_url + query) as response:
            text = await response.text()
            tally.requests += 1
            tally.bytes += len(text)
            tally.errors += response.status != 200
        hint = PART.search(text)
        if hint is None:
            await asyncio.sleep(0.2)
            continue
        numbers = HINT_NUMBERS.search(hint.group(1))
        assert numbers is not None
        query = f"?_HLS_msn={numbers.group(1)}&_HLS_part={numbers.group(2)}"

        async def part(uri: str = hint.group(1)) -> None:
            async with session.get(base + uri) as response:
                tally.bytes += len(await response.read())
                tally.requests += 1

        task = asyncio.ensure_future(part())  # fetched while the next reload waits, as hls.js does
        fetches.add(task)
        task.add_done_callback(fetches.discard)
    await asyncio.gather(*fetches, return_exceptions=True)


async def run_viewers(kind: str, playlist_url: str, viewers: int, seconds: float) -> Tally:
    tally = Tally()
    until = time.monotonic() + seconds
    viewer = ll_viewer if kind == "ll" else standard_viewer
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(viewer(session, playlist_url, until, tally) for _ in range(viewers)))
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench-config.toml"
        config.write_text('[[transcode.renditions]]\nname = "360p"\nheight = 360\nvideo_bitrate = 800000\n'
                          '[transcode]\npreset = "ultrafast"\n')
        port, rtmp_port = free_port(), free_port()
        env = {**os.environ, "MEDIASERVER_ADMIN_TOKEN": TOKEN}
        server = subprocess.Popen(
            [sys.executable, "-m", "mediaserver.cli", "serve", "--config", str(config),
             "--data-dir", str(Path(tmp) / "data"), "--http-port", str(port), "--rtmp-port", str(rtmp_port),
             "--host", "127.0.0.1", "--log-level", "WARNING"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            streams = {kind: api(base, "POST", "/api/streams", {"title": kind, "low_latency": kind == "ll"})
                       for kind in ("standard", "ll")}
            publishers = [start_publisher(f"rtmp://127.0.0.1:{rtmp_port}/live/{s['stream_key']}",
                                          seconds=2 * args.seconds + 30, width=640, height=360)
                          for s in streams.values()]
            time.sleep(8)  # both streams live with a few segments
            results = {}
            for kind, stream in streams.items():
                url = f"{base}/hls/{stream['id']}/360p.m3u8"
                cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
                tally = asyncio.run(run_viewers(kind, url, args.viewers, args.seconds))
                wall = time.perf_counter() - t0
                results[kind] = (tally, cpu_seconds(server.pid) - cpu0, wall)
            for p in publishers:
                p.kill()
        finally:
            server.terminate()
            server.wait(10)
    load = os.getloadavg()
    print(f"{args.viewers} simulated players per mode, {args.seconds:.0f} s each; one 360p rung, 2 s segments, "
          f"0.5 s parts; load average {load[0]:.2f} (2 cores; both publishers and their transcoders run meanwhile)")
    print(f"{'mode':10} {'req/s':>8} {'MB/s':>7} {'server CPU %':>13} {'CPU ms per viewer-s':>20} "
          f"{'viewers per core':>17} {'errors':>7}")
    for kind, (tally, cpu, wall) in results.items():
        per_viewer = 1000 * cpu / (args.viewers * wall)
        print(f"{kind:10} {tally.requests / wall:8.0f} {tally.bytes / wall / 1e6:7.2f} {100 * cpu / wall:13.1f} "
              f"{per_viewer:20.3f} {1000 / per_viewer if per_viewer else float('inf'):17.0f} {tally.errors:7d}")
    (std, std_cpu, std_wall), (ll, ll_cpu, ll_wall) = results["standard"], results["ll"]
    print(f"LL / standard: requests x{(ll.requests / ll_wall) / max(std.requests / std_wall, 1e-9):.1f}, "
          f"server CPU x{(ll_cpu / ll_wall) / max(std_cpu / std_wall, 1e-9):.1f}")


if __name__ == "__main__":
    main()
