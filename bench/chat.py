"""Chat fan-out: N WebSocket viewers in one room, M messages per second from a few senders.

Prints delivery latency p50/p99 (send to receive, same machine clock) and the server's CPU use.
The server runs as its own process (`mediaserver serve`); viewers are spread over client processes.
No pass/fail: figures only. Usage: python bench/chat.py --viewers 1000 --rate 50 --seconds 20
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-admin-token"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def viewers(url: str, count: int, seconds: float, out: "multiprocessing.Queue[list[float]]") -> None:
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets = []
        for _ in range(count):
            sockets.append(await session.ws_connect(url, params={"name": "viewer"}, heartbeat=None))

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                if '"chat:message"' in msg.data:
                    data = json.loads(msg.data)["data"]
                    if data["text"].startswith("bench "):
                        latencies.append(time.time() - float(data["text"][6:]))

        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        await asyncio.sleep(seconds)
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    out.put(latencies)


def viewer_process(url: str, count: int, seconds: float, out: "multiprocessing.Queue[list[float]]") -> None:
    asyncio.run(viewers(url, count, seconds, out))


async def send(url: str, rate: float, seconds: float, senders: int) -> int:
    sent = 0
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(url, params={"name": f"sender{i}", "token": TOKEN}) for i in range(senders)]
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            ws = sockets[sent % senders]
            await ws.send_str(json.dumps({"event": "chat:message", "data": {"text": f"bench {time.time():.6f}"}}))
            sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
        for ws in sockets:
            await ws.close()
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second, all senders together")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--senders", type=int, default=3)
    parser.add_argument("--client-processes", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        port = 18000 + os.getpid() % 1000
        env = {**os.environ, "MEDIASERVER_ADMIN_TOKEN": TOKEN}
        server = subprocess.Popen(
            [sys.executable, "-m", "mediaserver.cli", "serve", "--data-dir", tmp, "--http-port", str(port),
             "--rtmp-port", "0", "--host", "127.0.0.1", "--log-level", "WARNING"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            request = urllib.request.Request(base + "/api/streams", data=json.dumps({"title": "bench"}).encode(),
                                             headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            stream = json.loads(urllib.request.urlopen(request).read())
            url = f"{base}/ws/streams/{stream['id']}"
            ctx = multiprocessing.get_context("spawn")
            out: multiprocessing.Queue[list[float]] = ctx.Queue()
            per = args.viewers // args.client_processes
            window = args.seconds + 10 + args.viewers / 500
            procs = [ctx.Process(target=viewer_process, args=(url, per, window, out)) for _ in range(args.client_processes)]
            for p in procs:
                p.start()
            time.sleep(5 + args.viewers / 500)  # let everyone join
            cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
            sent = asyncio.run(send(url, args.rate, args.seconds, args.senders))
            cpu = cpu_seconds(server.pid) - cpu0
            wall = time.perf_counter() - t0
            latencies: list[float] = []
            for _ in procs:
                latencies += out.get(timeout=window + 60)
            for p in procs:
                p.join(10)
        finally:
            server.terminate()
            server.wait(10)
    expected = sent * per * args.client_processes
    print(f"{per * args.client_processes} viewers, {sent} messages at {args.rate:g}/s over {args.seconds:g} s, "
          f"{os.cpu_count()} CPUs shared by server and clients")
    print(f"delivered {len(latencies)} of {expected} ({100 * len(latencies) / max(1, expected):.1f} %)")
    if latencies:
        q = statistics.quantiles(latencies, n=100)
        print(f"delivery latency p50 {statistics.median(latencies) * 1000:.0f} ms  p99 {q[98] * 1000:.0f} ms  "
              f"max {max(latencies) * 1000:.0f} ms")
    print(f"server CPU {cpu:.1f} s over {wall:.1f} s ({100 * cpu / wall:.0f} % of one core)")


if __name__ == "__main__":
    main()
