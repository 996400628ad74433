"""Console sign-ins: a volunteer trades an organization token (or the admin token) for a session once, and
the browser keeps only an HttpOnly cookie naming that session; no token ever sits in a page or a URL.

Sessions live in SQLite (a server restart during a service must not sign the volunteers out), are keyed by
the hash of the cookie's value (a copy of the database gives no live session), carry their own CSRF token,
and end after console.session_hours or console.idle_minutes without a request, whichever comes first.
Lookups are served from memory; the database is read on a miss and written on sign-in, sign-out and, at
most once a minute per session, to keep its last-seen time.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mediaserver.db import open_sqlite

# Last-seen times are written at most this often per session (each request refreshes the one in memory).
TOUCH_EVERY = 60.0


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    id_hash: str
    role: str                 # "admin" (the server's admin token: every organization) or "staff"
    org_id: str | None        # staff: their organization
    csrf: str                 # sent back in X-CSRF-Token (or a form's csrf field) with every change
    created_at: float
    last_seen: float
    expires_at: float         # the absolute end; idle expiry is decided from last_seen

    def idle_deadline(self, idle_seconds: float) -> float:
        return min(self.expires_at, self.last_seen + idle_seconds)

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and presented != "" and hmac.compare_digest(presented.encode(), self.csrf.encode())


class ConsoleSessions:
    def __init__(self, path: str | Path, session_hours: float, idle_minutes: float) -> None:
        self.lifetime = session_hours * 3600.0
        self.idle = idle_minutes * 60.0
        self._lock = threading.Lock()
        self._db = open_sqlite(path)
        with self._lock:
            if "console_sessions" not in self._db.table_names():
                self._db.table("console_sessions").create(
                    {"id_hash": str, "role": str, "org_id": str, "csrf": str, "created_at": float,
                     "last_seen": float, "expires_at": float, "user_agent": str, "address": str},
                    pk="id_hash")
        self._cache: dict[str, ConsoleSession] = {}
        self._written: dict[str, float] = {}   # id_hash -> last_seen as written

    # -- blocking (called in a thread) ------------------------------------------------------------------
    def create(self, role: str, org_id: str | None, user_agent: str, address: str,
               now: float | None = None) -> tuple[str, ConsoleSession]:
        """A new session; returns the cookie value (only its hash is kept) and the session."""
        now = time.time() if now is None else now
        session_id = secrets.token_urlsafe(32)
        session = ConsoleSession(_digest(session_id), role, org_id, secrets.token_urlsafe(24), now, now,
                                 now + self.lifetime)
        with self._lock:
            self._db.table("console_sessions").insert(
                {"id_hash": session.id_hash, "role": role, "org_id": org_id, "csrf": session.csrf, "created_at": now,
                 "last_seen": now, "expires_at": session.expires_at, "user_agent": user_agent[:300],
                 "address": address})
            self._purge_expired(now)
        self._cache[session.id_hash] = session
        self._written[session.id_hash] = now
        return session_id, session

    def load(self, session_id: str, now: float | None = None) -> ConsoleSession | None:
        """The live session behind a cookie value, reading the database on a cache miss."""
        now = time.time() if now is None else now
        id_hash = _digest(session_id)
        session = self._cache.get(id_hash)
        if session is None:
            with self._lock:
                rows = list(self._db.table("console_sessions").rows_where("id_hash = ?", [id_hash]))
            if not rows:
                return None
            row = rows[0]
            session = ConsoleSession(id_hash, row["role"], row["org_id"], row["csrf"], row["created_at"],
                                     row["last_seen"], row["expires_at"])
            self._written[id_hash] = row["last_seen"]
        return self._admit(session, now)

    def delete(self, session_id: str) -> None:
        id_hash = _digest(session_id)
        self._cache.pop(id_hash, None)
        self._written.pop(id_hash, None)
        with self._lock:
            self._db.execute("DELETE FROM console_sessions WHERE id_hash = ?", [id_hash])

    def flush_touch(self, session: ConsoleSession) -> None:
        with self._lock:
            self._db.execute("UPDATE console_sessions SET last_seen = ? WHERE id_hash = ?",
                             [session.last_seen, session.id_hash])
        self._written[session.id_hash] = session.last_seen

    def _purge_expired(self, now: float) -> None:
        self._db.execute("DELETE FROM console_sessions WHERE expires_at < ? OR last_seen < ?", [now, now - self.idle])

    # -- on the loop ------------------------------------------------------------------------------------
    def cached(self, session_id: str, now: float | None = None) -> tuple[bool, ConsoleSession | None]:
        """(known, session) without touching the disk: known=False means ask load() in a thread."""
        id_hash = _digest(session_id)
        session = self._cache.get(id_hash)
        if session is None:
            return False, None
        return True, self._admit(session, time.time() if now is None else now)

    def needs_write(self, session: ConsoleSession) -> bool:
        return session.last_seen - self._written.get(session.id_hash, 0.0) >= TOUCH_EVERY

    def _admit(self, session: ConsoleSession, now: float) -> ConsoleSession | None:
        if now >= session.idle_deadline(self.idle):
            self._cache.pop(session.id_hash, None)  # the row goes with the next purge
            return None
        session = replace(session, last_seen=now)
        self._cache[session.id_hash] = session
        return session

    def view(self, session: ConsoleSession) -> dict[str, Any]:
        return {"role": session.role, "org_id": session.org_id, "csrf_token": session.csrf,
                "expires_at": session.expires_at, "idle_seconds": self.idle}
