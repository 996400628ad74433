"""The one data module: streams, broadcasts and recordings in SQLite (WAL) through sqlite-utils.

Calls are short and synchronous; async code runs them with asyncio.to_thread so the loop never waits on disk.
"""
from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import sqlite_utils

STATUSES = ("SCHEDULED", "STARTING", "LIVE", "ENDING", "ENDED", "CANCELLED", "FAILED")


def new_id(nbytes: int = 8) -> str:
    return secrets.token_urlsafe(nbytes).replace("-", "x").replace("_", "y")


def new_stream_key() -> str:
    # 160 random bits; the key is the RTMP stream name, so it stays URL-safe.
    return "sk_" + secrets.token_urlsafe(20)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Database:
    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            if "streams" not in self.db.table_names():
                self.db.table("streams").create(
                    {
                        "id": str, "title": str, "key_hash": str, "status": str, "created_at": float,
                        "actual_start": float, "actual_end": float, "error": str, "enabled": int,
                    },
                    pk="id",
                )
                self.db.table("streams").create_index(["key_hash"], unique=True)
            if "broadcasts" not in self.db.table_names():
                self.db.table("broadcasts").create(
                    {
                        "id": str, "stream_id": str, "started_at": float, "ended_at": float,
                        "status": str, "key_prefix": str, "connections": int,
                    },
                    pk="id",
                    foreign_keys=[("stream_id", "streams", "id")],
                )
            if "recordings" not in self.db.table_names():
                self.db.table("recordings").create(
                    {
                        "id": str, "stream_id": str, "broadcast_id": str, "created_at": float,
                        "duration": float, "size": int, "mp4_size": int, "playlist_key": str, "mp4_key": str,
                        "status": str, "error": str,
                    },
                    pk="id",
                    foreign_keys=[("stream_id", "streams", "id"), ("broadcast_id", "broadcasts", "id")],
                )

    # -- streams -----------------------------------------------------------------------------------
    def create_stream(self, title: str) -> tuple[dict[str, Any], str]:
        """A new stream and its key (returned once; only its hash is stored)."""
        key = new_stream_key()
        row = {
            "id": new_id(), "title": title, "key_hash": hash_key(key), "status": "SCHEDULED",
            "created_at": time.time(), "actual_start": None, "actual_end": None, "error": None, "enabled": 1,
        }
        with self._lock:
            self.db.table("streams").insert(row)
        return row, key

    def stream(self, stream_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("streams").rows_where("id = ?", [stream_id]))
        return rows[0] if rows else None

    def stream_by_key(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("streams").rows_where("key_hash = ?", [hash_key(key)]))
        return rows[0] if rows else None

    def streams(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.table("streams").rows_where(order_by="created_at desc"))

    def update_stream(self, stream_id: str, **fields: Any) -> None:
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown status {fields['status']!r}")
        with self._lock:
            self.db.table("streams").update(stream_id, fields)

    # -- broadcasts --------------------------------------------------------------------------------
    def create_broadcast(self, stream_id: str, key_prefix_root: str) -> dict[str, Any]:
        broadcast_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + new_id(3)
        row = {
            "id": broadcast_id, "stream_id": stream_id, "started_at": time.time(), "ended_at": None,
            "status": "STARTING", "key_prefix": f"{key_prefix_root}/{stream_id}/{broadcast_id}", "connections": 1,
        }
        with self._lock:
            self.db.table("broadcasts").insert(row)
        return row

    def update_broadcast(self, broadcast_id: str, **fields: Any) -> None:
        with self._lock:
            self.db.table("broadcasts").update(broadcast_id, fields)

    def broadcast(self, broadcast_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("broadcasts").rows_where("id = ?", [broadcast_id]))
        return rows[0] if rows else None

    def open_broadcasts(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.table("broadcasts").rows_where("ended_at is null"))

    # -- recordings --------------------------------------------------------------------------------
    def add_recording(self, **fields: Any) -> dict[str, Any]:
        row = {"id": new_id(), "created_at": time.time(), **fields}
        with self._lock:
            self.db.table("recordings").insert(row, alter=True)
        return row

    def update_recording(self, recording_id: str, **fields: Any) -> None:
        with self._lock:
            self.db.table("recordings").update(recording_id, fields)

    def latest_recording(self, stream_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(
                self.db.table("recordings").rows_where("stream_id = ?", [stream_id], order_by="created_at desc", limit=1)
            )
        return rows[0] if rows else None

    def recording_for_broadcast(self, broadcast_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("recordings").rows_where("broadcast_id = ?", [broadcast_id]))
        return rows[0] if rows else None
