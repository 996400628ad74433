"""Stream rows held in memory for the access decision, so a playlist or segment request is decided on the event
loop without a thread hop and a SQLite query each time.

Correctness comes from the data module: every write to a stream's row in mediaserver/db.py drops that row here
(Database.on_stream_change) before the write call returns, so the request after an admin's change sees it; a
read that raced a write is not kept. Entries also expire after `ttl` seconds, which bounds how long a change
made outside mediaserver/db.py (another process on the same database, the chat store's peak_viewers) can go
unseen; they never concern access.
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, Final

from mediaserver.db import Database

Row = dict[str, Any]


class _Miss:
    """The type of MISS: no fresh entry for the stream."""


MISS: Final = _Miss()

# Seconds an entry may be served without a write having been seen (a change from outside mediaserver/db.py).
DEFAULT_TTL = 1.0
# Entries kept at most (unknown ids are held too, as None, so a flood of made-up ids is bounded by this).
DEFAULT_MAX_ENTRIES = 10_000


class StreamCache:
    """A stream id -> its row (or None: no such stream), read through from the database.

    Rows handed out are shared between requests: callers must not change them. Reads run on the event loop;
    invalidate() may run in any thread (it is called by the database's writers).
    """

    def __init__(self, db: Database, *, ttl: float = DEFAULT_TTL, max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._rows: dict[str, tuple[float, Row | None]] = {}  # id -> (expires at, by clock; row or None)
        self._generation = 0  # bumped by every invalidation
        self._lock = threading.Lock()  # orders "keep a row just read" against an invalidation
        self._unsubscribe = db.on_stream_change(self.invalidate)
        self.hits = self.misses = 0

    def close(self) -> None:
        """Stop following the database's writes (and hold nothing more: every read goes to the database)."""
        unsubscribe, self._unsubscribe = self._unsubscribe, lambda: None
        unsubscribe()
        self.ttl = 0.0
        self._rows.clear()

    def invalidate(self, stream_id: str | None = None) -> None:
        """Forget one stream's row (or every row, with None); safe from any thread."""
        with self._lock:
            self._generation += 1
            if stream_id is None:
                self._rows.clear()
            else:
                self._rows.pop(stream_id, None)

    def peek(self, stream_id: str) -> Row | None | _Miss:
        """The stream's row (None: no such stream) if a fresh one is held, else MISS; never blocks."""
        entry = self._rows.get(stream_id)
        if entry is not None and entry[0] > self._clock():
            self.hits += 1
            return entry[1]
        return MISS

    async def get(self, stream_id: str) -> Row | None:
        """The stream's row, or None if there is no such stream: from memory, else read off the loop."""
        row = self.peek(stream_id)
        if not isinstance(row, _Miss):
            return row
        self.misses += 1
        generation = self._generation
        row = await asyncio.to_thread(self._db.stream, stream_id)
        self._keep(stream_id, row, generation)
        return row

    def _keep(self, stream_id: str, row: Row | None, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # a write happened while we read: what we read may predate it
            if len(self._rows) >= self.max_entries:
                for key in list(self._rows)[: max(1, self.max_entries // 2)]:  # oldest first
                    del self._rows[key]
            self._rows.pop(stream_id, None)  # re-inserted at the end: the newest
            self._rows[stream_id] = (self._clock() + self.ttl, row)

    def __len__(self) -> int:
        return len(self._rows)
