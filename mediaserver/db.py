"""The one data module: streams, broadcasts and recordings in SQLite (WAL) through sqlite-utils.

Calls are short and synchronous; async code runs them with asyncio.to_thread so the loop never waits on disk.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

import sqlite_utils

STATUSES = ("SCHEDULED", "STARTING", "LIVE", "ENDING", "ENDED", "CANCELLED", "FAILED")
DEFAULT_ORG = "default"

# Stream columns added after the first release, with their types and defaults.
STREAM_COLUMNS: dict[str, tuple[type, Any]] = {
    "org_id": (str, DEFAULT_ORG),
    "slug": (str, None),
    "description": (str, ""),
    "thumbnail_url": (str, None),
    "scheduled_start": (float, None),
    "scheduled_end": (float, None),
    "timezone": (str, None),
    "visibility": (str, "PUBLIC"),
    "password_hash": (str, None),
    "chat_enabled": (int, 1),
    "reactions_enabled": (int, 1),
    "giving_enabled": (int, 0),
    "dvr_enabled": (int, 1),
    "low_latency": (int, 1),  # LL-HLS for new streams (README: Latency); an org's latency_mode STANDARD turns it off
    "recording_enabled": (int, 1),
    "auto_publish": (int, 1),
    "auto_rotate_key": (int, 0),
    "series_id": (str, None),
    "occurrence_index": (int, None),
    "updated_at": (float, None),
    "starting_soon_sent": (int, 0),
    "peak_viewers": (int, 0),
    "giving_url": (str, None),
    "giving_message": (str, None),
    "srt_port": (int, None),  # the stream's SRT listening port, kept for good (mediaserver/srt_routes.py)
    "srt_passphrase": (str, None),  # SRT encryption passphrase (libsrt needs it in clear), None = unencrypted
    "library_auto_publish": (int, 0),  # publish the recording to the sermon library when ready (mediaserver/library.py)
    "simulated_recording_id": (str, None),  # re-air this recording at scheduled_start (mediaserver/simulated_live.py)
    "backend": (str, "builtin"),  # the video platform carrying it: builtin, mux, ivs (mediaserver/backends/)
    "backend_ref": (str, None),  # JSON of the platform's RemoteStream (its stream key sealed, never in clear)
}


def new_id(nbytes: int = 8) -> str:
    return secrets.token_urlsafe(nbytes).replace("-", "x").replace("_", "y")


def new_stream_key() -> str:
    # 160 random bits; the key is the RTMP stream name, so it stays URL-safe.
    return "sk_" + secrets.token_urlsafe(20)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def open_sqlite(path: str | Path) -> sqlite_utils.Database:
    """A connection every module opens the same way: usable from worker threads (callers hold a
    lock), autocommit, WAL so readers never wait on the writer, and a busy timeout for the others."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=5000")
    return db


def compact_wal(db: sqlite_utils.Database) -> None:
    """Write the WAL back into the database and truncate it: creating and migrating tables at start-up
    leaves ~0.5 MB of WAL that would otherwise sit on a small box's disk until the next checkpoint."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class Database:
    def __init__(self, path: str | Path) -> None:
        self._lock = threading.RLock()
        self.db = open_sqlite(path)
        # Called with a stream's id after every write to its row here (in the writing thread, lock held, write
        # done), so a cache of rows (mediaserver/stream_cache.py) never serves a stale visibility or password.
        self._stream_listeners: list[Callable[[str], None]] = []
        self._migrate()

    def on_stream_change(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call listener(stream_id) after each write to a stream's row; returns the function that stops it."""
        self._stream_listeners.append(listener)
        return lambda: self._stream_listeners.remove(listener)

    def _stream_changed(self, stream_id: str) -> None:
        for listener in list(self._stream_listeners):
            listener(stream_id)

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
                self.db.table("streams").create_index(["key_hash"])
            streams = self.db.table("streams")
            # Occurrences of a recurring series share their series' key, so the key index isn't unique.
            for index in streams.indexes:
                if index.unique and index.columns == ["key_hash"]:
                    self.db.execute(f"DROP INDEX [{index.name}]")
                    streams.create_index(["key_hash"])
            for name, (kind, _default) in STREAM_COLUMNS.items():
                if name not in streams.columns_dict:
                    streams.add_column(name, kind)
            self.db.execute("UPDATE streams SET org_id = ? WHERE org_id IS NULL", [DEFAULT_ORG])
            if "orgs" not in self.db.table_names():
                self.db.table("orgs").create(
                    {"id": str, "slug": str, "name": str, "timezone": str, "settings": str, "created_at": float},
                    pk="id",
                )
                self.db.table("orgs").create_index(["slug"], unique=True)
            if not list(self.db.table("orgs").rows_where("id = ?", [DEFAULT_ORG])):
                self.db.table("orgs").insert(
                    {"id": DEFAULT_ORG, "slug": DEFAULT_ORG, "name": "Default", "timezone": "UTC",
                     "settings": "{}", "created_at": time.time()}
                )
            if "api_tokens" not in self.db.table_names():
                self.db.table("api_tokens").create(
                    {"id": str, "org_id": str, "token_hash": str, "name": str, "created_at": float,
                     "last_used_at": float},
                    pk="id",
                )
                self.db.table("api_tokens").create_index(["token_hash"], unique=True)
            if "series" not in self.db.table_names():
                self.db.table("series").create(
                    {"id": str, "org_id": str, "title": str, "key_hash": str, "rrule": str, "start_time": str, "duration": int,
                     "timezone": str, "dtstart_date": str, "until_date": str, "template": str, "created_at": float},
                    pk="id",
                )
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
            recordings = self.db.table("recordings")
            if "segments_deleted_at" not in recordings.columns_dict:  # retention: the recording plays as its MP4
                recordings.add_column("segments_deleted_at", float)
            if "title" not in recordings.columns_dict:  # the library's own name for it (null: the stream's title)
                recordings.add_column("title", str)
            if "remote_asset" not in recordings.columns_dict:  # a cloud back-end's asset (JSON), null for our own
                recordings.add_column("remote_asset", str)
            series = self.db.table("series")
            if "backend" not in series.columns_dict:  # a cloud series: one platform live stream, all occurrences
                series.add_column("backend", str)
                series.add_column("backend_ref", str)
            if "backend_events" not in self.db.table_names():  # platform notifications handled (idempotency)
                self.db.table("backend_events").create(
                    {"backend": str, "event_id": str, "handled_at": float}, pk=("backend", "event_id"))

    # -- streams -----------------------------------------------------------------------------------
    def create_stream(self, title: str, org_id: str = DEFAULT_ORG, key_hash: str | None = None,
                      **fields: Any) -> tuple[dict[str, Any], str]:
        """A new stream and its key (returned once; only its hash is stored). With key_hash (a series'
        occurrence), the stream shares that key and no new key is returned."""
        key = "" if key_hash else new_stream_key()
        unknown = set(fields) - set(STREAM_COLUMNS)
        if unknown:
            raise ValueError(f"unknown stream fields {sorted(unknown)}")
        now = time.time()
        row = {
            "id": new_id(), "title": title, "key_hash": key_hash or hash_key(key), "status": "SCHEDULED",
            "created_at": now, "actual_start": None, "actual_end": None, "error": None, "enabled": 1,
            **{name: default for name, (_kind, default) in STREAM_COLUMNS.items()},
            "org_id": org_id, "updated_at": now, **fields,
        }
        with self._lock:
            self.db.table("streams").insert(row)
            self._stream_changed(row["id"])
        return row, key

    def compact(self) -> None:
        with self._lock:
            compact_wal(self.db)

    def stream(self, stream_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("streams").rows_where("id = ?", [stream_id]))
        return rows[0] if rows else None

    def stream_by_key(self, key: str, now: float | None = None) -> dict[str, Any] | None:
        """The stream a key publishes to. A series' key is shared by its occurrences: the one on air wins,
        then the scheduled occurrence nearest to now."""
        now = time.time() if now is None else now
        sql = ("SELECT * FROM streams WHERE key_hash = ? ORDER BY "
               "CASE WHEN status IN ('STARTING','LIVE','ENDING') THEN 0 WHEN status = 'SCHEDULED' THEN 1 ELSE 2 END, "
               "abs(coalesce(scheduled_start, created_at) - ?) LIMIT 1")
        with self._lock:
            rows = list(self.db.query(sql, [hash_key(key), now]))
        return rows[0] if rows else None

    def streams(self, org_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if org_id is None:
                return list(self.db.table("streams").rows_where(order_by="created_at desc"))
            return list(self.db.table("streams").rows_where("org_id = ?", [org_id], order_by="created_at desc"))

    def query_streams(self, where: str, params: list[Any], order_by: str, limit: int, offset: int) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.table("streams").rows_where(where, params, order_by=order_by, limit=limit, offset=offset))

    def count_streams(self, where: str, params: list[Any]) -> int:
        with self._lock:
            return int(self.db.table("streams").count_where(where, params))

    def transition(self, stream_id: str, from_states: tuple[str, ...], to_state: str, **fields: Any) -> bool:
        """Atomically move a stream to to_state if it is in one of from_states."""
        sets = ", ".join(f"{name} = ?" for name in fields)
        sql = (f"UPDATE streams SET status = ?, updated_at = ?{', ' + sets if sets else ''} "
               f"WHERE id = ? AND status IN ({','.join('?' * len(from_states))})")
        with self._lock:
            cursor = self.db.execute(sql, [to_state, time.time(), *fields.values(), stream_id, *from_states])
            self._stream_changed(stream_id)
            return cursor.rowcount == 1

    def delete_stream(self, stream_id: str) -> None:
        with self._lock:
            self.db.table("streams").delete(stream_id)
            self._stream_changed(stream_id)

    def rotate_key(self, stream_id: str) -> str:
        key = new_stream_key()
        with self._lock:
            self.db.table("streams").update(stream_id, {"key_hash": hash_key(key), "updated_at": time.time()})
            self._stream_changed(stream_id)
        return key

    def stream_by_remote(self, backend: str, remote_id: str, kind: str = "", now: float | None = None
                         ) -> dict[str, Any] | None:
        """The stream a cloud back-end's live stream (Mux id, IVS channel ARN) is carrying now. A series'
        occurrences share their series' live stream, as they share its key (stream_by_key): the one on air wins;
        then, for an encoder coming in, the scheduled occurrence nearest to now; for the end of a broadcast or its
        recording (kind "ended", "failed", "recording_ready"), the occurrence that went live last."""
        now = time.time() if now is None else now
        after = ("actual_start is null, actual_start desc" if kind in ("ended", "failed", "recording_ready")
                 else "CASE WHEN status = 'SCHEDULED' THEN 0 ELSE 1 END, "
                      "abs(coalesce(scheduled_start, created_at) - ?)")
        sql = ("SELECT * FROM streams WHERE backend = ? AND json_extract(backend_ref, '$.remote_id') = ? ORDER BY "
               f"CASE WHEN status IN ('STARTING','LIVE','ENDING') THEN 0 ELSE 1 END, {after} LIMIT 1")
        params: list[Any] = [backend, remote_id] + ([] if "?" not in after else [now])
        with self._lock:
            rows = list(self.db.query(sql, params))
        return rows[0] if rows else None

    def streams_by_remote(self, backend: str, remote_id: str) -> list[dict[str, Any]]:
        """Every stream on one platform live stream: one, or a cloud series' occurrences."""
        with self._lock:
            return list(self.db.table("streams").rows_where(
                "backend = ? and json_extract(backend_ref, '$.remote_id') = ?", [backend, remote_id]))

    def series_by_remote(self, backend: str, remote_id: str) -> list[dict[str, Any]]:
        """The series (the one made, and any that carried it on from a date) on one platform live stream."""
        with self._lock:
            return list(self.db.table("series").rows_where(
                "backend = ? and json_extract(backend_ref, '$.remote_id') = ?", [backend, remote_id]))

    def first_notification(self, backend: str, event_id: str) -> bool:
        """Record a platform notification as handled; False if it was handled before (a repeat)."""
        with self._lock:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO backend_events (backend, event_id, handled_at) VALUES (?, ?, ?)",
                [backend, event_id, time.time()])
            return cursor.rowcount == 1

    def forget_notification(self, backend: str, event_id: str) -> None:
        """A notification whose handling failed: let the platform's retry be handled."""
        with self._lock:
            self.db.execute("DELETE FROM backend_events WHERE backend = ? AND event_id = ?", [backend, event_id])

    # -- recurring series ---------------------------------------------------------------------------
    def create_series(self, **fields: Any) -> dict[str, Any]:
        row = {"id": new_id(), "created_at": time.time(), "until_date": None, "template": "{}", **fields}
        with self._lock:
            self.db.table("series").insert(row)
        return row

    def series(self, series_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("series").rows_where("id = ?", [series_id]))
        return rows[0] if rows else None

    def all_series(self, org_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if org_id is None:
                return list(self.db.table("series").rows_where(order_by="created_at"))
            return list(self.db.table("series").rows_where("org_id = ?", [org_id], order_by="created_at"))

    def update_series(self, series_id: str, **fields: Any) -> None:
        with self._lock:
            self.db.table("series").update(series_id, fields)

    def delete_series(self, series_id: str) -> None:
        with self._lock:
            self.db.table("series").delete(series_id)

    def series_occurrence_indexes(self, series_id: str) -> set[int]:
        """Occurrences already materialized (or edited, or cancelled) as streams."""
        with self._lock:
            return {r["occurrence_index"] for r in self.db.table("streams").rows_where(
                "series_id = ?", [series_id], select="occurrence_index")}

    # -- organizations and API tokens --------------------------------------------------------------
    def create_org(self, slug: str, name: str, timezone: str = "UTC", settings: dict[str, Any] | None = None) -> dict[str, Any]:
        row = {"id": new_id(), "slug": slug, "name": name, "timezone": timezone,
               "settings": json.dumps(settings or {}), "created_at": time.time()}
        with self._lock:
            self.db.table("orgs").insert(row)
        return row

    def org(self, org_id_or_slug: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("orgs").rows_where("id = ? or slug = ?", [org_id_or_slug, org_id_or_slug]))
        return rows[0] if rows else None

    def orgs(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.table("orgs").rows_where(order_by="created_at"))

    def update_org(self, org_id: str, **fields: Any) -> None:
        with self._lock:
            self.db.table("orgs").update(org_id, fields)

    def create_token(self, org_id: str, name: str = "") -> tuple[dict[str, Any], str]:
        """An API token for one organization; the token itself is returned once, only its hash kept."""
        token = "mst_" + secrets.token_urlsafe(32)
        row = {"id": new_id(), "org_id": org_id, "token_hash": hash_key(token), "name": name,
               "created_at": time.time(), "last_used_at": None}
        with self._lock:
            self.db.table("api_tokens").insert(row)
        return row, token

    def token_org(self, token: str) -> str | None:
        with self._lock:
            rows = list(self.db.table("api_tokens").rows_where("token_hash = ?", [hash_key(token)]))
        return rows[0]["org_id"] if rows else None

    def update_stream(self, stream_id: str, **fields: Any) -> None:
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown status {fields['status']!r}")
        with self._lock:
            self.db.table("streams").update(stream_id, fields)
            self._stream_changed(stream_id)

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

    def latest_broadcast(self, stream_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("broadcasts").rows_where(
                "stream_id = ?", [stream_id], order_by="started_at desc", limit=1))
        return rows[0] if rows else None

    def open_broadcasts(self) -> list[dict[str, Any]]:
        """Our engine's broadcasts left open; a cloud back-end's broadcast is the platform's to end."""
        with self._lock:
            return list(self.db.table("broadcasts").rows_where(
                "ended_at is null and stream_id not in "
                "(select id from streams where coalesce(backend, 'builtin') != 'builtin')"))

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

    def recording(self, stream_id: str, recording_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("recordings").rows_where("id = ? and stream_id = ?", [recording_id, stream_id]))
        return rows[0] if rows else None

    def recording_by_id(self, recording_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("recordings").rows_where("id = ?", [recording_id]))
        return rows[0] if rows else None

    def storage_bytes(self, stream_id: str) -> int:
        """Bytes of the stream's saved recordings (HLS segments and MP4s)."""
        with self._lock:
            row = self.db.execute(
                "SELECT coalesce(sum(coalesce(size, 0) + coalesce(mp4_size, 0)), 0) FROM recordings WHERE stream_id = ?",
                [stream_id]).fetchone()
        return int(row[0])

    def recordings_where(self, where: str, params: list[Any]) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.table("recordings").rows_where(where, params))

    def delete_recording(self, recording_id: str) -> None:
        with self._lock:
            self.db.table("recordings").delete(recording_id)

    def delete_media_rows(self, stream_id: str) -> None:
        """A deleted stream's broadcasts and recordings."""
        with self._lock, self.db.conn:
            self.db.execute("DELETE FROM recordings WHERE stream_id = ?", [stream_id])
            self.db.execute("DELETE FROM broadcasts WHERE stream_id = ?", [stream_id])

    def recording_for_broadcast(self, broadcast_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("recordings").rows_where("broadcast_id = ?", [broadcast_id]))
        return rows[0] if rows else None
