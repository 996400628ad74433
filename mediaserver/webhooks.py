"""Webhook subscriptions and a durable delivery queue: signed (Webhook-Signature, as Mux and Stripe do),
kept in SQLite so a restart loses nothing, sent in order per subscription, retried with backoff.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import aiohttp
import sqlite_utils

log = logging.getLogger(__name__)

EVENT_TYPES: tuple[str, ...] = (
    "stream.created", "stream.starting_soon", "stream.connected", "stream.live", "stream.disconnected",
    "stream.ended", "stream.failed", "stream.cancelled", "recording.ready",
)


class WebhookError(ValueError):
    """A bad subscription; the message starts with the field's name."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None, tolerance: float = 300) -> bool:
    """For receivers: a valid signature no older than `tolerance` seconds (older ones may be replays)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp, signature = int(parts["t"]), parts["v1"]
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, signature)


class WebhookStore:
    """Subscriptions, deliveries and attempts in SQLite (its own WAL connection, thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            names = self.db.table_names()
            if "webhook_subscriptions" not in names:
                self.db.table("webhook_subscriptions").create(
                    {"id": str, "org_id": str, "url": str, "secret": str, "events": str, "created_at": float}, pk="id")
            if "webhook_deliveries" not in names:
                self.db.table("webhook_deliveries").create(
                    {"id": str, "seq": int, "subscription_id": str, "org_id": str, "event_type": str, "body": str,
                     "status": str, "attempts": int, "created_at": float, "next_attempt_at": float,
                     "delivered_at": float, "last_status_code": int, "last_error": str}, pk="id")
                self.db.table("webhook_deliveries").create_index(["status", "next_attempt_at"])
                self.db.table("webhook_deliveries").create_index(["subscription_id", "seq"])
            if "webhook_attempts" not in names:
                self.db.table("webhook_attempts").create(
                    {"id": int, "delivery_id": str, "at": float, "status_code": int, "error": str, "duration": float},
                    pk="id")

    @staticmethod
    def _view(row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row["id"], "org_id": row["org_id"], "url": row["url"], "events": json.loads(row["events"]),
                "secret_set": True, "created_at": row["created_at"]}

    def subscribe(self, org_id: str, url: str, secret: str, events: list[str]) -> dict[str, Any]:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise WebhookError(f"url: {url!r} is not an http(s) URL")
        if not isinstance(secret, str) or len(secret) < 16:
            raise WebhookError("secret: at least 16 characters")
        if not events or any(e not in EVENT_TYPES and e != "*" for e in events):
            raise WebhookError(f"events: choose from {', '.join(EVENT_TYPES)} or '*'")
        row = {"id": "wh_" + secrets.token_hex(8), "org_id": org_id, "url": url, "secret": secret,
               "events": json.dumps(sorted(set(events))), "created_at": time.time()}
        with self._lock:
            self.db.table("webhook_subscriptions").insert(row)
        return self._view(row)

    def subscriptions(self, org_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self.db.table("webhook_subscriptions").rows_where("org_id = ?", [org_id], order_by="created_at"))
        return [self._view(r) for r in rows]

    def _subscription_row(self, org_id: str, sub_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("webhook_subscriptions").rows_where("id = ? and org_id = ?", [sub_id, org_id]))
        return rows[0] if rows else None

    def subscription(self, org_id: str, sub_id: str) -> dict[str, Any] | None:
        row = self._subscription_row(org_id, sub_id)
        return self._view(row) if row else None

    def delete(self, org_id: str, sub_id: str) -> bool:
        with self._lock:
            if self._subscription_row(org_id, sub_id) is None:
                return False
            self.db.table("webhook_subscriptions").delete(sub_id)
            self.db.execute("UPDATE webhook_deliveries SET status = 'CANCELLED' WHERE subscription_id = ? AND status = 'PENDING'", [sub_id])
        return True

    def enqueue(self, org_id: str, event_type: str, data: dict[str, Any]) -> list[str]:
        now = time.time()
        ids = []
        with self._lock:
            subs = list(self.db.table("webhook_subscriptions").rows_where("org_id = ?", [org_id]))
            seq = (self.db.execute("SELECT coalesce(max(seq), 0) FROM webhook_deliveries").fetchone()[0] or 0) + 1
            for sub in subs:
                events = json.loads(sub["events"])
                if "*" not in events and event_type not in events:
                    continue
                delivery_id = "dlv_" + secrets.token_hex(8)
                body = json.dumps({"id": delivery_id, "type": event_type, "created_at": now, "org_id": org_id, "data": data},
                                  separators=(",", ":"))
                self.db.table("webhook_deliveries").insert({
                    "id": delivery_id, "seq": seq, "subscription_id": sub["id"], "org_id": org_id,
                    "event_type": event_type, "body": body, "status": "PENDING", "attempts": 0, "created_at": now,
                    "next_attempt_at": now, "delivered_at": None, "last_status_code": None, "last_error": None})
                seq += 1
                ids.append(delivery_id)
        return ids

    def deliveries(self, org_id: str, sub_id: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self.db.table("webhook_deliveries").rows_where(
                "subscription_id = ? and org_id = ?", [sub_id, org_id], order_by="seq desc", limit=limit))
            for row in rows:
                row["attempt_log"] = list(self.db.table("webhook_attempts").rows_where(
                    "delivery_id = ?", [row["id"]], order_by="id", select="at, status_code, error, duration"))
                row.pop("body", None)
        return rows

    # -- for the sender ----------------------------------------------------------------------------
    def due(self, now: float, limit: int = 50) -> list[dict[str, Any]]:
        """The oldest pending delivery of each subscription, if its time has come (keeps order)."""
        sql = ("SELECT d.*, s.url, s.secret FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id "
               "WHERE d.status = 'PENDING' AND d.seq = (SELECT min(seq) FROM webhook_deliveries "
               "WHERE subscription_id = d.subscription_id AND status = 'PENDING') AND d.next_attempt_at <= ? "
               "ORDER BY d.seq LIMIT ?")
        with self._lock:
            return list(self.db.query(sql, [now, limit]))

    def record(self, delivery: dict[str, Any], *, ok: bool, status_code: int | None, error: str | None,
               duration: float, now: float, next_attempt_at: float | None) -> None:
        with self._lock:
            self.db.table("webhook_attempts").insert({"delivery_id": delivery["id"], "at": now, "status_code": status_code,
                                                      "error": error, "duration": duration})
            fields: dict[str, Any] = {"attempts": delivery["attempts"] + 1, "last_status_code": status_code, "last_error": error}
            if ok:
                fields.update(status="DELIVERED", delivered_at=now)
            elif next_attempt_at is None:
                fields.update(status="FAILED")
            else:
                fields.update(next_attempt_at=next_attempt_at)
            self.db.table("webhook_deliveries").update(delivery["id"], fields)


class WebhookSender:
    """Background task sending due deliveries; one receiver's failure never holds up another's."""

    def __init__(self, store: WebhookStore, *, timeout: float = 10.0, backoff_base: float = 5.0, backoff_max: float = 3600.0,
                 give_up_after: float = 26 * 3600, poll_interval: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.timeout, self.backoff_base, self.backoff_max = timeout, backoff_base, backoff_max
        self.give_up_after, self.poll_interval, self.clock = give_up_after, poll_interval, clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook-sender")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            try:
                due = await asyncio.to_thread(self.store.due, self.clock())
                if due:
                    await asyncio.gather(*(self._send(d) for d in due))
                    continue
            except Exception:
                log.exception("webhook sender pass failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except asyncio.TimeoutError:
                pass

    def _backoff(self, attempts: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.9, 1.1)

    async def _send(self, delivery: dict[str, Any]) -> None:
        assert self._session is not None
        body = delivery["body"].encode()
        now = self.clock()
        headers = {"Content-Type": "application/json", "User-Agent": "mediaserver-webhooks/1",
                   "Webhook-Id": delivery["id"], "Webhook-Signature": sign(delivery["secret"], int(now), body)}
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        try:
            async with self._session.post(delivery["url"], data=body, headers=headers, allow_redirects=False) as response:
                status_code = response.status
                await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        ok = status_code is not None and 200 <= status_code < 300
        if not ok and error is None:
            error = f"HTTP {status_code}"
        attempts = delivery["attempts"] + 1
        next_at: float | None = now + self._backoff(attempts)
        if not ok and next_at is not None and next_at - delivery["created_at"] > self.give_up_after:
            next_at = None
            log.warning("webhook %s to %s failed for good after %d attempts: %s", delivery["id"], delivery["url"], attempts, error)
        await asyncio.to_thread(self.store.record, delivery, ok=ok, status_code=status_code, error=error,
                                duration=time.perf_counter() - started, now=now, next_attempt_at=None if ok else next_at)
