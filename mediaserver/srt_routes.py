"""Which SRT port serves which stream keys, and keeping ingest/srt.py's listeners in step with the streams table.

Ports come from [srt] port .. port + ports - 1 and are kept per stream (the srt_port column), so a stream's srt_url never
changes; streams sharing a key (a series' occurrences) share its port. A stream listens while it is enabled, not
cancelled, and scheduled, on air, or used within [srt] listen_days; a port is only taken from a stream that no longer
listens when the range is used up.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from ingest.media import Authorizer
from ingest.srt import SrtEndpoint, SrtIngest, SrtSettings, ffmpeg_has_srt
from mediaserver.config import Config, SrtConfig
from mediaserver.db import Database, hash_key

log = logging.getLogger(__name__)

_ON_AIR = ("SCHEDULED", "STARTING", "LIVE", "ENDING")
_assigning = threading.Lock()  # one port assignment at a time (the API and the routing pass both assign)
REFRESH_INTERVAL = 3600.0  # seconds between passes that retire listeners of streams idle past listen_days


def listening(row: dict[str, Any], config: SrtConfig, now: float) -> bool:
    if not row["enabled"] or row["status"] == "CANCELLED":
        return False
    if row["status"] in _ON_AIR or config.listen_days <= 0:
        return True
    last = max(t for t in (row["actual_end"], row["updated_at"], row["created_at"], 0.0) if t is not None)
    return now - last < config.listen_days * 86400


def _in_range(port: Any, config: SrtConfig) -> bool:
    return isinstance(port, int) and config.port <= port < config.port + config.ports


def _assign(db: Database, config: SrtConfig, rows: list[dict[str, Any]], row: dict[str, Any], now: float) -> int | None:
    """Give row a port (written to the database and to row); rows is every stream, kept up to date."""
    if _in_range(row["srt_port"], config):
        return int(row["srt_port"])
    port = next((r["srt_port"] for r in rows if r["key_hash"] == row["key_hash"] and _in_range(r["srt_port"], config)),
                None)
    if port is None:
        taken = {r["srt_port"] for r in rows if _in_range(r["srt_port"], config)}
        port = next((p for p in range(config.port, config.port + config.ports) if p not in taken), None)
    if port is None:  # the range is used up: take the port of the streams idle the longest
        busy = {r["srt_port"] for r in rows if _in_range(r["srt_port"], config) and listening(r, config, now)}
        last_use: dict[int, float] = {}
        for r in rows:
            if _in_range(r["srt_port"], config) and r["srt_port"] not in busy:
                last = r["actual_end"] or r["updated_at"] or r["created_at"] or 0.0
                last_use[r["srt_port"]] = max(last_use.get(r["srt_port"], 0.0), last)
        candidates = sorted((last, p) for p, last in last_use.items())
        if not candidates:
            log.warning("no SRT port left for stream %s: all %d ports of [srt] are in use", row["id"], config.ports)
            return None
        port = candidates[0][1]
        for r in rows:
            if r["srt_port"] == port:
                db.update_stream(r["id"], srt_port=None)
                r["srt_port"] = None
        log.info("SRT port %d taken from idle streams for stream %s", port, row["id"])
    db.update_stream(row["id"], srt_port=port)
    row["srt_port"] = port
    return int(port)


def assign_port(db: Database, config: SrtConfig, stream_id: str) -> int | None:
    """The stream's SRT port, given one now if it has none (None when none is left). Blocking: run in a thread."""
    with _assigning:
        rows = db.streams()
        row = next((r for r in rows if r["id"] == stream_id), None)
        return None if row is None else _assign(db, config, rows, row, time.time())


def endpoints(db: Database, config: SrtConfig) -> list[SrtEndpoint]:
    """Every port that should listen now, with the key hashes it takes (assigning ports where missing)."""
    now = time.time()
    with _assigning:
        rows = db.streams()
        for row in sorted(rows, key=lambda r: r["created_at"] or 0.0):
            if listening(row, config, now) and not _in_range(row["srt_port"], config):
                _assign(db, config, rows, row, now)
    by_port: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if listening(row, config, now) and _in_range(row["srt_port"], config):
            by_port.setdefault(row["srt_port"], []).append(row)
    result = []
    for port, group in sorted(by_port.items()):
        # Occurrences of a series may disagree: the most recently edited one's passphrase applies.
        newest = max(group, key=lambda r: r["updated_at"] or r["created_at"] or 0.0)
        ids = [r["id"] for r in group]
        label = "stream " + ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        result.append(SrtEndpoint(port, frozenset(r["key_hash"] for r in group), newest["srt_passphrase"] or None, label))
    return result


class SrtRouting:
    """Runs the SRT listeners: one pass at start, another after every write to a stream's row (debounced)."""

    def __init__(self, config: Config, db: Database, authorize: Authorizer, *, debounce: float = 0.2) -> None:
        self.config = config
        self.db = db
        self.ingest = SrtIngest(authorize, hash_key, SrtSettings(
            host=config.server.host, latency_ms=config.srt.latency_ms, probe_seconds=config.srt.probe_seconds,
            ffmpeg_path=config.srt.ffmpeg))
        self.debounce = debounce
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Any = None
        self._pending = False
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self.db.on_stream_change(self._changed)
        await self.refresh()
        self._spawn(self._every_hour())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _changed(self, stream_id: str) -> None:  # any thread
        loop = self._loop
        if loop is None or self._stopped:
            return
        try:
            loop.call_soon_threadsafe(self._schedule)
        except RuntimeError:  # the loop is closed
            pass

    def _schedule(self) -> None:
        if self._pending or self._stopped:
            return
        self._pending = True
        self._spawn(self._refresh_soon())

    async def _refresh_soon(self) -> None:
        await asyncio.sleep(self.debounce)
        self._pending = False
        await self.refresh()

    async def _every_hour(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            await self.refresh()

    async def refresh(self) -> None:
        async with self._lock:
            if self._stopped:
                return
            try:
                wanted = await asyncio.to_thread(endpoints, self.db, self.config.srt)
            except Exception:
                log.exception("SRT: reading the streams' ports failed")
                return
            if not self._stopped:
                self.ingest.apply(wanted)

    async def stop(self) -> None:
        self._stopped = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._lock:
            await self.ingest.stop()


async def start_srt(config: Config, db: Database, authorize: Authorizer) -> SrtRouting | None:
    """The SRT listeners, or None (logged) when SRT is off or this ffmpeg has no libsrt."""
    if not config.srt.enabled:
        return None
    if not await asyncio.to_thread(ffmpeg_has_srt, config.srt.ffmpeg):
        log.warning("SRT ingest is off: %r has no libsrt (install Debian's ffmpeg: apt-get install ffmpeg)",
                    config.srt.ffmpeg)
        config.srt.enabled = False  # the API then gives no srt_url
        return None
    routing = SrtRouting(config, db, authorize)
    await routing.start()
    return routing
