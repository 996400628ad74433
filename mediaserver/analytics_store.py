"""Viewer analytics in SQLite (the main database file): closed HLS sessions, concurrent-viewer samples and
reactions per minute; and the reads a report needs, chat data included. Writes are queued and saved in
batches from a background task, as the chat store does, so the event loop never waits on the disk."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from mediaserver.db import open_sqlite

log = logging.getLogger(__name__)


def ensure_reaction_events(db: sqlite_utils.Database) -> None:
    """Reactions per stream, minute (the minute's start, epoch seconds) and type; the chat store writes them."""
    if "reaction_events" not in db.table_names():
        db.table("reaction_events").create({"stream_id": str, "minute": float, "type": str, "count": int},
                                           pk=("stream_id", "minute", "type"))


def add_reaction_events(db: sqlite_utils.Database, stream_id: str, at: float, counts: dict[str, int]) -> None:
    minute = float(int(at // 60) * 60)
    for rtype, count in counts.items():
        db.execute("INSERT INTO reaction_events (stream_id, minute, type, count) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT(stream_id, minute, type) DO UPDATE SET count = count + excluded.count",
                   [stream_id, minute, rtype, count])


@dataclass
class StreamData:
    """Everything one stream's report is computed from (rows as stored)."""
    stream: dict[str, Any]
    chat_sessions: list[dict[str, Any]] = field(default_factory=list)   # viewer_sessions
    hls_sessions: list[dict[str, Any]] = field(default_factory=list)
    samples: list[tuple[float, int]] = field(default_factory=list)      # (at, concurrent viewers)
    messages: list[tuple[float, str]] = field(default_factory=list)     # (created_at, type), SYSTEM lines left out
    reactions: list[tuple[float, str, int]] = field(default_factory=list)  # (minute, type, count)
    reaction_totals: dict[str, int] = field(default_factory=dict)


class AnalyticsStore:
    def __init__(self, path: str | Path, flush_interval: float = 1.0) -> None:
        self._lock = threading.RLock()
        self._flushing = asyncio.Lock()
        self.db = open_sqlite(path)
        names = self.db.table_names()
        if "hls_sessions" not in names:
            self.db.table("hls_sessions").create(
                {"id": int, "stream_id": str, "viewer": str, "joined_at": float, "left_at": float,
                 "watch_seconds": float, "device": str, "browser": str, "bytes": int, "source": str}, pk="id")
            self.db.table("hls_sessions").create_index(["stream_id", "joined_at"])
        if "viewer_samples" not in names:
            self.db.table("viewer_samples").create({"stream_id": str, "at": float, "viewers": int})
            self.db.table("viewer_samples").create_index(["stream_id", "at"])
        ensure_reaction_events(self.db)
        self._pending: list[tuple[str, Any]] = []
        self.flush_interval = flush_interval
        self._task: asyncio.Task[None] | None = None

    # -- writes, queued ------------------------------------------------------------------------------
    def hls_sessions(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._pending.append(("hls", rows))

    def sample(self, stream_id: str, at: float, viewers: int) -> None:
        self._pending.append(("sample", {"stream_id": stream_id, "at": at, "viewers": viewers}))

    def _write(self, batch: list[tuple[str, Any]]) -> None:
        with self._lock, self.db.conn:
            for kind, item in batch:
                try:
                    if kind == "hls":
                        self.db.table("hls_sessions").insert_all(item)
                    else:
                        self.db.table("viewer_samples").insert(item)
                except (sqlite3.Error, ValueError, TypeError):
                    log.exception("analytics: a %s write could not be saved", kind)

    async def flush(self) -> None:
        async with self._flushing:
            batch, self._pending = self._pending, []
            if batch:
                try:
                    await asyncio.to_thread(self._write, batch)
                except (sqlite3.Error, OSError):
                    log.exception("analytics: %d writes could not be saved", len(batch))

    async def start(self) -> None:
        async def run() -> None:
            while True:
                await asyncio.sleep(self.flush_interval)
                await self.flush()
        self._task = asyncio.get_running_loop().create_task(run(), name="analytics-store")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()

    # -- reads (blocking: call off the loop) ----------------------------------------------------------
    def stream_data(self, stream: dict[str, Any]) -> StreamData:
        sid = stream["id"]
        with self._lock:
            q = self.db.execute
            data = StreamData(stream)
            data.chat_sessions = list(self.db.table("viewer_sessions").rows_where("stream_id = ?", [sid]))
            data.hls_sessions = list(self.db.table("hls_sessions").rows_where("stream_id = ?", [sid]))
            data.samples = [(r[0], r[1]) for r in q(
                "SELECT at, viewers FROM viewer_samples WHERE stream_id = ? ORDER BY at", [sid]).fetchall()]
            data.messages = [(r[0], r[1]) for r in q(
                "SELECT created_at, type FROM chat_messages WHERE stream_id = ? AND type != 'SYSTEM' "
                "ORDER BY created_at", [sid]).fetchall()]
            data.reactions = [(r[0], r[1], r[2]) for r in q(
                "SELECT minute, type, count FROM reaction_events WHERE stream_id = ? ORDER BY minute", [sid]).fetchall()]
            data.reaction_totals = {r[0]: r[1] for r in q(
                "SELECT type, count FROM chat_reactions WHERE stream_id = ?", [sid]).fetchall()}
        return data

    def org_streams(self, org_id: str, since: float, until: float) -> list[dict[str, Any]]:
        """The organization's streams that went on air between since and until, oldest first."""
        with self._lock:
            return list(self.db.table("streams").rows_where(
                "org_id = ? AND actual_start IS NOT NULL AND actual_start >= ? AND actual_start <= ?",
                [org_id, since, until], order_by="actual_start"))
