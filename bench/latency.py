"""Segment latency: from a frame being published over RTMP to the first moment a client can download the
segment that holds it. Prints p50/p95 over the segments seen. No pass/fail: figures only.

The frame measured is each segment's first frame (the one that waits longest for its segment).
Usage: python bench/latency.py [--segments 30] [--segment-duration 2] [--width 1280 --height 720]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediaserver.config import Config, Rendition  # noqa: E402
from tests.server_fixture import ADMIN_TOKEN, run_server  # noqa: E402
from tests.hls_reader import parse_media  # noqa: E402
from tests.media_source import start_publisher  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--segments", type=int, default=30)
    parser.add_argument("--segment-duration", type=float, default=2.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        config = Config()
        config.server.host, config.server.http_port, config.server.rtmp_port = "127.0.0.1", 0, 0
        config.server.data_dir, config.server.admin_token = tmp, ADMIN_TOKEN
        config.hls.segment_duration = args.segment_duration
        config.transcode.renditions = [r for r in config.transcode.renditions if r.height <= args.height] or [
            Rendition("src", args.height, 2_000_000)
        ]
        server = run_server(config)
        try:
            _, stream = server.api("POST", "/api/streams", {"title": "latency"})
            seconds = args.segments * args.segment_duration + 4
            # The publisher runs in its own process (PyAV holds the GIL while it writes to the network).
            publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=seconds, width=args.width,
                                        height=args.height, fps=args.fps, gop_seconds=args.segment_duration)
            top = config.transcode.renditions[0].name
            seen: dict[str, float] = {}
            latencies: list[float] = []
            url = f"{server.http}/hls/{stream['id']}/{top}.m3u8"
            while publisher.is_alive():
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        playlist = parse_media(response.read().decode())
                except Exception:
                    time.sleep(0.02)
                    continue
                now = time.time()
                # The DVR window holds the whole run, so a segment starts where the ones before it end.
                start = 0.0
                for uri, duration, _ in playlist.segments:
                    if uri not in seen and publisher.started_at and playlist.media_sequence == 0:
                        seen[uri] = now
                        latencies.append(now - (publisher.started_at + start))
                    start += duration
                time.sleep(0.02)
            publisher.join(30)
        finally:
            server.stop()
    # The first segment includes encoder start-up; report it apart.
    steady = latencies[1:]
    print(f"source {args.width}x{args.height}@{args.fps}, {args.segment_duration:g} s segments, "
          f"ladder {', '.join(r.name for r in config.transcode.renditions)}; polled every 20 ms")
    print(f"first segment: {latencies[0]:.2f} s" if latencies else "no segments seen")
    if steady:
        q = statistics.quantiles(steady, n=20)
        print(f"segment latency over {len(steady)} segments: p50 {statistics.median(steady):.2f} s  "
              f"p95 {q[18]:.2f} s  max {max(steady):.2f} s")


if __name__ == "__main__":
    main()
