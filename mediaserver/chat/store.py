"""Chat persistence: messages (in the order they were published), reaction totals, the room's moderation
state (bans, time-outs, the pinned message, highlights) and the audit log in SQLite, written in batches
from a background task so the event loop never waits on the disk."""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any


from mediaserver.analytics_store import add_reaction_events, ensure_reaction_events
from mediaserver.db import open_sqlite

log = logging.getLogger(__name__)


class ChatStore:
    def __init__(self, path: str | Path, flush_interval: float = 0.2) -> None:
        self._lock = threading.RLock()
        self._flushing = asyncio.Lock()
        self.db = open_sqlite(path)
        names = self.db.table_names()
        if "chat_messages" not in names:
            self.db.table("chat_messages").create(
                {"id": str, "stream_id": str, "type": str, "text": str, "author": str, "role": str, "status": str,
                 "pinned": int, "created_at": float, "prayer_team_only": int}, pk="id")
            self.db.table("chat_messages").create_index(["stream_id", "created_at"])
        messages = self.db.table("chat_messages")
        # Added later: when a message was published (a held one: when approved), highlights, and who wrote
        # it (their viewer identity and address, never sent to clients) so bans can follow them; an
        # announcement's card (JSON {title, text, url}: a giving moment) so the chat replay shows it.
        for column, kind in (("published_at", float), ("highlighted", int), ("author_viewer", str),
                             ("author_address", str), ("card", str)):
            if column not in messages.columns_dict:
                messages.add_column(column, kind)
        if "chat_sanctions" not in names:
            self.db.table("chat_sanctions").create(
                {"id": str, "stream_id": str, "kind": str, "name": str, "name_key": str, "identities": str,
                 "addresses": str, "address_ban": int, "until": float, "created_at": float, "moderator": str},
                pk="id")
            self.db.table("chat_sanctions").create_index(["stream_id"])
        if "chat_reactions" not in names:
            self.db.table("chat_reactions").create({"stream_id": str, "type": str, "count": int}, pk=("stream_id", "type"))
        if "viewer_sessions" not in names:
            self.db.table("viewer_sessions").create(
                {"id": str, "stream_id": str, "role": str, "joined_at": float, "left_at": float, "watch_seconds": float,
                 "device": str, "browser": str}, pk="id")
            self.db.table("viewer_sessions").create_index(["stream_id"])
        # Added later: the viewer's identity (as the room knows them), so analytics count each viewer once.
        if "viewer" not in self.db.table("viewer_sessions").columns_dict:
            self.db.table("viewer_sessions").add_column("viewer", str)
        ensure_reaction_events(self.db)
        if "chat_audit" not in names:
            self.db.table("chat_audit").create(
                {"id": int, "stream_id": str, "at": float, "moderator": str, "action": str, "target": str, "detail": str}, pk="id")
        self._pending: list[tuple[str, Any]] = []
        self.flush_interval = flush_interval
        self._task: asyncio.Task[None] | None = None

    # -- writes, queued ------------------------------------------------------------------------------
    def save_message(self, message: dict[str, Any]) -> None:
        self._pending.append(("message", message))

    def update_message(self, message_id: str, **fields: Any) -> None:
        self._pending.append(("update", (message_id, fields)))

    def add_reactions(self, stream_id: str, counts: dict[str, int], at: float | None = None) -> None:
        """Add to the totals; with `at`, to that minute's counts too (mediaserver/analytics_store.py)."""
        self._pending.append(("reactions", (stream_id, counts, at)))

    def viewer_session(self, row: dict[str, Any]) -> None:
        self._pending.append(("session", row))

    def peak_viewers(self, stream_id: str, peak: int) -> None:
        self._pending.append(("peak", (stream_id, peak)))

    def save_sanction(self, row: dict[str, Any]) -> None:
        self._pending.append(("sanction", row))

    def delete_sanction(self, sanction_id: str) -> None:
        self._pending.append(("unsanction", sanction_id))

    def audit(self, stream_id: str, at: float, moderator: str, action: str, target: str, detail: Any = None) -> None:
        self._pending.append(("audit", {"stream_id": stream_id, "at": at, "moderator": moderator, "action": action,
                                        "target": target, "detail": json.dumps(detail)}))

    def _write(self, batch: list[tuple[str, Any]]) -> None:
        with self._lock, self.db.conn:
            for kind, item in batch:
                try:
                    self._apply(kind, item)
                except (sqlite3.Error, ValueError, TypeError):
                    # One bad write must not take the rest of the batch (or the writer) with it.
                    log.exception("chat: a %s write could not be saved", kind)

    def _apply(self, kind: str, item: Any) -> None:
        if kind == "message":
            self.db.table("chat_messages").insert(item, replace=True)
        elif kind == "update":
            message_id, fields = item
            columns = ", ".join(f"[{name}] = ?" for name in fields)
            self.db.execute(f"UPDATE chat_messages SET {columns} WHERE id = ?", [*fields.values(), message_id])
        elif kind == "reactions":
            stream_id, counts, at = item
            for rtype, count in counts.items():
                self.db.execute(
                    "INSERT INTO chat_reactions (stream_id, type, count) VALUES (?, ?, ?) "
                    "ON CONFLICT(stream_id, type) DO UPDATE SET count = count + excluded.count",
                    [stream_id, rtype, count])
            if at is not None:
                add_reaction_events(self.db, stream_id, at, counts)
        elif kind == "sanction":
            self.db.table("chat_sanctions").insert(item, replace=True)
        elif kind == "unsanction":
            self.db.execute("DELETE FROM chat_sanctions WHERE id = ?", [item])
        elif kind == "session":
            self.db.table("viewer_sessions").insert(item, replace=True)
        elif kind == "peak":
            # The streams table lives in the same database file.
            self.db.execute("UPDATE streams SET peak_viewers = max(coalesce(peak_viewers, 0), ?) WHERE id = ?",
                            [item[1], item[0]])
        else:
            self.db.table("chat_audit").insert(item)

    async def flush(self) -> None:
        # One flush at a time, batches in the order they were taken: an update never overtakes its insert.
        async with self._flushing:
            batch, self._pending = self._pending, []
            if batch:
                try:
                    await asyncio.to_thread(self._write, batch)
                except (sqlite3.Error, OSError):
                    log.exception("chat: %d writes could not be saved", len(batch))

    async def start(self) -> None:
        async def run() -> None:
            while True:
                await asyncio.sleep(self.flush_interval)
                await self.flush()
        self._task = asyncio.get_running_loop().create_task(run(), name="chat-store")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()

    # -- reads -------------------------------------------------------------------------------------
    def history(self, stream_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The last `limit` approved messages in the order they were published (a held message takes its
        place when it was approved, not when it was written)."""
        with self._lock:
            rows = list(self.db.table("chat_messages").rows_where(
                "stream_id = ? and status = 'APPROVED'", [stream_id],
                order_by="coalesce(published_at, created_at) desc, rowid desc", limit=limit))
        return list(reversed(rows))

    def pinned(self, stream_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("chat_messages").rows_where(
                "stream_id = ? and status = 'APPROVED' and pinned = 1", [stream_id],
                order_by="coalesce(published_at, created_at) desc", limit=1))
        return rows[0] if rows else None

    def held(self, stream_id: str, limit: int = 500) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.table("chat_messages").rows_where(
                "stream_id = ? and status = 'HELD'", [stream_id], order_by="created_at", limit=limit))

    def recent_authors(self, stream_id: str, limit: int = 2000) -> list[dict[str, Any]]:
        """Who wrote the last `limit` messages, oldest first: author, role, viewer identity, address."""
        with self._lock:
            rows = list(self.db.execute(
                "SELECT author, role, author_viewer, author_address FROM chat_messages "
                "WHERE stream_id = ? AND author_viewer IS NOT NULL ORDER BY created_at DESC LIMIT ?",
                [stream_id, limit]).fetchall())
        return [{"author": r[0], "role": r[1], "author_viewer": r[2], "author_address": r[3]} for r in reversed(rows)]

    def sanctions(self, stream_id: str, now: float) -> list[dict[str, Any]]:
        """Bans and time-outs still in force."""
        with self._lock:
            return list(self.db.table("chat_sanctions").rows_where(
                "stream_id = ? and (until is null or until > ?)", [stream_id, now], order_by="created_at"))

    def reaction_totals(self, stream_id: str) -> dict[str, int]:
        with self._lock:
            return {r["type"]: r["count"] for r in self.db.table("chat_reactions").rows_where("stream_id = ?", [stream_id])}

    def sessions(self, stream_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.table("viewer_sessions").rows_where("stream_id = ?", [stream_id], order_by="joined_at"))

    def audit_log(self, stream_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.table("chat_audit").rows_where("stream_id = ?", [stream_id], order_by="id"))
