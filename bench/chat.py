"""Chat fan-out: N WebSocket viewers in one room, M messages per second from staff and guest senders.

Staff skip moderation; guests go through all of it (rate limits, normalisation, the blocked-word list and
the link filter), so the two are timed apart. Messages alternate over all senders, staff and guests
together. Each guest is a browser of its own (its own cookie jar, so its own viewer token). The
per-viewer and per-address limits (5 and 200 messages / 10 s by default) would throttle a few guests
sending many messages, so the server is started with a config raising `[chat] messages_per_viewer` and
`messages_per_address` to fit the rate; the organization gets a blocked-word list and the link filter on,
as a church would set them. Prints delivery latency p50/p99 (send to receive, same machine clock) for
staff and guest messages, what the senders were told (errors, held messages) and the server's CPU use:
CPU seconds per delivered frame and delivered frames per second per server core (the CPU of every server
process, read from /proc: with `--workers N` the origin and its web workers together).
The server runs as its own process(es) (`mediaserver serve [--workers N]`); viewers are spread over client
processes. `--workers` above 1 needs Redis: `--redis URL`, or the bench starts a throwaway redis-server.
No pass/fail: figures only. Usage: python bench/chat.py --viewers 1000 --rate 50 --seconds 20 [--workers 2]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import socket
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
# Words the room's blocked-word list holds (none is in the bench messages, so nothing is held for them).
BLOCKED_WORDS = [f"blockedword{i}" for i in range(100)] + ["scam", "casino", "crypto giveaway"]
FILLER = "praying for everyone here this morning, thank you for the music"


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (the origin's web workers), from /proc."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children[ppid].append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def tree_cpu(pids: list[int]) -> dict[int, tuple[float, float]]:
    out = {}
    for pid in pids:
        try:
            out[pid] = cpu_split(pid)
        except (OSError, IndexError, ValueError):
            pass
    return out


def start_redis(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway redis-server on a free port, no persistence."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.terminate()
    raise SystemExit("redis-server did not start")


Latencies = dict[str, list[float]]  # "staff" / "guest" -> seconds from send to receive
Counts = collections.Counter[str]


async def viewers(url: str, count: int, seconds: float, out: multiprocessing.Queue[Latencies]) -> None:
    latencies: Latencies = {"staff": [], "guest": []}
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
                    parts = data["text"].split(" ", 3)
                    if parts[0] == "bench" and parts[2] in latencies:
                        latencies[parts[2]].append(time.time() - float(parts[1]))

        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        await asyncio.sleep(seconds)
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    out.put(latencies)


def viewer_process(url: str, count: int, seconds: float, out: multiprocessing.Queue[Latencies]) -> None:
    asyncio.run(viewers(url, count, seconds, out))


async def answers(ws: aiohttp.ClientWebSocketResponse, told: collections.Counter[str]) -> None:
    """Drain a sender's socket, counting what the room told it (chat:error codes, held messages)."""
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        if '"chat:error"' in msg.data or '"chat:moderated"' in msg.data:
            frame = json.loads(msg.data)
            if frame["event"] == "chat:error":
                told[f"error {frame['data'].get('code')}"] += 1
            elif frame["data"].get("status") == "HELD":
                told["held"] += 1


async def send(url: str, rate: float, seconds: float, staff: int, guests: int) -> tuple[Counts, dict[str, Counts]]:
    """Send at `rate` over all senders in turn; returns (messages sent per kind, what each kind was told)."""
    sent: Counts = collections.Counter()
    told: dict[str, Counts] = {"staff": collections.Counter(), "guest": collections.Counter()}
    staff_session = aiohttp.ClientSession()
    # Each guest is its own browser: its own cookie jar, so its own ms_viewer token and rate limit.
    guest_sessions = [aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) for _ in range(guests)]
    try:
        senders = [("staff", await staff_session.ws_connect(url, params={"name": f"staff{i}", "token": TOKEN}))
                   for i in range(staff)]
        senders += [("guest", await session.ws_connect(url, params={"name": f"guest{i}"}))
                    for i, session in enumerate(guest_sessions)]
        drains = [asyncio.create_task(answers(ws, told[kind])) for kind, ws in senders]
        count = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            kind, ws = senders[count % len(senders)]
            text = f"bench {time.time():.6f} {kind} {FILLER}"
            await ws.send_str(json.dumps({"event": "chat:message", "data": {"text": text}}))
            sent[kind] += 1
            count += 1
            await asyncio.sleep(max(0.0, start + count / rate - time.perf_counter()))
        # After the timed part: one blocked word and one link from each guest, to show the filters are on
        # (both are held for review; the senders count "held").
        for kind, ws in senders:
            if kind == "guest":
                for probe in ("probe: free crypto giveaway", "probe: see grace-fellowship.church/give"):
                    await ws.send_str(json.dumps({"event": "chat:message", "data": {"text": probe}}))
        await asyncio.sleep(2)  # let the answers to the last messages arrive
        for _, ws in senders:
            await ws.close()
        await asyncio.gather(*drains, return_exceptions=True)
    finally:
        for session in [staff_session, *guest_sessions]:
            await session.close()
    return sent, told


def chat_limits(rate: float, guests: int, senders: int) -> tuple[int, int]:
    """(messages_per_viewer, messages_per_address) per 10 s with room for the guests' share of `rate`:
    twice what they send, and never below the defaults."""
    guest_rate = rate * guests / max(1, senders)
    per_viewer = max(5, int(2 * 10 * guest_rate / max(1, guests)) + 1)
    per_address = max(200, int(2 * 10 * guest_rate) + 1)
    return per_viewer, per_address


def latency_line(kind: str, values: list[float], sent: int, viewers: int) -> str:
    expected = sent * viewers
    line = f"{kind:>5}: delivered {len(values)} of {expected} ({100 * len(values) / max(1, expected):.1f} %)"
    if len(values) >= 2:
        q = statistics.quantiles(values, n=100, method="inclusive")
        line += (f"; latency p50 {statistics.median(values) * 1000:.0f} ms  p99 {q[98] * 1000:.0f} ms  "
                 f"max {max(values) * 1000:.0f} ms")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second, all senders together")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--senders", "--staff-senders", dest="senders", type=int, default=3,
                        help="staff senders (skip moderation)")
    parser.add_argument("--guest-senders", type=int, default=3, help="guest senders (moderated), one browser each")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="server processes (`mediaserver serve --workers N`)")
    parser.add_argument("--redis", default="", help="[cluster] redis_url for the server; with --workers above 1 "
                        "and none given, a throwaway redis-server is started")
    args = parser.parse_args()
    if args.senders + args.guest_senders < 1:
        parser.error("need at least one sender")

    per_viewer, per_address = chat_limits(args.rate, args.guest_senders, args.senders + args.guest_senders)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench-config.toml"
        redis_url, redis = args.redis, None
        if args.workers > 1 and not redis_url:
            redis, redis_url = start_redis(tmp)
        config.write_text(f"[chat]\nmessages_per_viewer = {per_viewer}\nmessages_per_address = {per_address}\n"
                          + (f"[cluster]\nredis_url = {json.dumps(redis_url)}\n" if redis_url else ""))
        port = 18000 + os.getpid() % 1000
        env = {**os.environ, "MEDIASERVER_ADMIN_TOKEN": TOKEN}
        server = subprocess.Popen(
            [sys.executable, "-m", "mediaserver.cli", "serve", "--config", str(config),
             "--data-dir", str(Path(tmp) / "data"), "--http-port", str(port), "--rtmp-port", "0",
             "--host", "127.0.0.1", "--log-level", "WARNING", "--workers", str(args.workers)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                if server.poll() is not None:
                    raise SystemExit(f"the server exited with code {server.returncode} (its error is above)")
                try:
                    urllib.request.urlopen(base + "/", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            stream = api(base, "POST", "/api/streams", {"title": "bench"})
            api(base, "PATCH", "/api/orgs/default",
                {"settings": {"chat": {"blocked_words": BLOCKED_WORDS, "link_filter": True}}})
            url = f"{base}/ws/streams/{stream['id']}"
            ctx = multiprocessing.get_context("spawn")
            out: multiprocessing.Queue[Latencies] = ctx.Queue()
            per = args.viewers // args.client_processes
            window = args.seconds + 10 + args.viewers / 500
            procs = [ctx.Process(target=viewer_process, args=(url, per, window, out)) for _ in range(args.client_processes)]
            for p in procs:
                p.start()
            time.sleep(5 + args.viewers / 500)  # let everyone join
            cpu0, t0 = tree_cpu(process_tree(server.pid)), time.perf_counter()
            redis0 = sum(cpu_split(redis.pid)) if redis is not None else 0.0
            sent, told = asyncio.run(send(url, args.rate, args.seconds, args.senders, args.guest_senders))
            cpu1 = tree_cpu(process_tree(server.pid))
            # A process that started meanwhile (a restarted worker) counts from zero.
            user = sum(u - cpu0.get(pid, (0.0, 0.0))[0] for pid, (u, _) in cpu1.items())
            system = sum(k - cpu0.get(pid, (0.0, 0.0))[1] for pid, (_, k) in cpu1.items())
            cpu = user + system
            server_processes = len(cpu1)
            redis_cpu = sum(cpu_split(redis.pid)) - redis0 if redis is not None else None
            wall = time.perf_counter() - t0  # the timed sending plus 2 s for the last answers
            latencies: Latencies = {"staff": [], "guest": []}
            for _ in procs:
                for kind, values in out.get(timeout=window + 60).items():
                    latencies[kind] += values
            for p in procs:
                p.join(10)
        finally:
            server.terminate()
            server.wait(10)
            if redis is not None:
                redis.terminate()
                redis.wait(10)
    viewers = per * args.client_processes
    print(f"{viewers} viewers, {sum(sent.values())} messages at {args.rate:g}/s over {args.seconds:g} s from "
          f"{args.senders} staff and {args.guest_senders} guest senders (in turn), "
          f"{os.cpu_count()} CPUs shared by server and clients")
    print(f"server config: [chat] messages_per_viewer = {per_viewer}, messages_per_address = {per_address} "
          f"(defaults 5 and 200 per 10 s); org: {len(BLOCKED_WORDS)} blocked words, link filter on")
    for kind in ("staff", "guest"):
        print(latency_line(kind, latencies[kind], sent[kind], viewers))
        if told[kind]:
            print(f"       {kind} senders were told: {dict(told[kind])}"
                  + (f" (held: {2 * args.guest_senders} probes with a blocked word or a link expected)"
                     if kind == "guest" else ""))
    if len(latencies["staff"]) >= 2 and len(latencies["guest"]) >= 2:
        ratio = statistics.median(latencies["guest"]) / statistics.median(latencies["staff"])
        print(f"guest/staff latency, same run: p50 {ratio:.2f}x")
    print(f"server CPU {cpu:.1f} s (user {user:.1f} s, system {system:.1f} s) over {wall:.1f} s "
          f"({100 * cpu / wall:.0f} % of one core), "
          f"{server_processes} server process(es), --workers {args.workers}")
    if redis_cpu is not None:
        print(f"the bench's redis-server: CPU {redis_cpu:.1f} s (not in the server figures below)")
    frames = sum(len(v) for v in latencies.values())  # chat messages delivered to the viewers
    if frames and cpu > 0:
        print(f"server CPU per delivered frame {1e6 * cpu / frames:.1f} us; "
              f"delivered frames per second per server core {frames / cpu:,.0f} "
              f"({frames} frames, {frames / wall:,.0f} /s wall)")


def api(base: str, method: str, path: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())

if __name__ == "__main__":
    main()
