"""Webhook subscriptions and a durable delivery queue: signed (Webhook-Signature, as Mux and Stripe do),
kept in SQLite so a restart loses nothing, sent in order per subscription, retried with backoff.
Only public addresses are reached (see net_guard), unless allow_private_networks says otherwise.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import random
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from mediaserver.db import open_sqlite
from mediaserver.net_guard import (AddressLookup, GuardedResolver, RefusedDestination, check_destination,
                                   check_literal_host, refusal_behind, system_lookup)

log = logging.getLogger(__name__)

EVENT_TYPES: tuple[str, ...] = (
    "stream.created", "stream.starting_soon", "stream.connected", "stream.live", "stream.disconnected",
    "stream.ended", "stream.failed", "stream.cancelled", "recording.ready", "simulcast.status",
    "clip.ready",  # mediaserver/clips.py
)
TEST_EVENT = "webhook.test"  # sent to one subscription on request ("Send test event"), whatever its events
DELIVERY_STATUSES = ("PENDING", "DELIVERED", "FAILED", "CANCELLED")
USER_AGENT = "mediaserver-webhooks/1"
MIN_SECRET_LENGTH = 16
MAX_URL_LENGTH = 2048
MAX_ERROR_LENGTH = 500


class WebhookError(ValueError):
    """A bad subscription; the message starts with the field's name ("url: ...", "events: ...", "secret: ...")."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Webhook-Signature` header value: t=UNIX_SECONDS,v1=HMAC-SHA256(secret, "t." + body) in hex."""
    digest = hmac.new(secret.encode(), f"{int(timestamp)}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={int(timestamp)},v1={digest}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None, tolerance: float = 300) -> bool:
    """For receivers: True for a valid signature no further than `tolerance` seconds from now (older ones may
    be replays). Several v1 values are accepted, as during a secret rotation; malformed headers give False."""
    if not isinstance(header, str) or not isinstance(body, (bytes, bytearray)):
        return False
    timestamp: int | None = None
    signatures: list[bytes] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                return False
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value.encode("utf-8", "replace"))
    if timestamp is None or not signatures:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, bytes(body)).split("v1=", 1)[1].encode()
    # Compare against every candidate (no early exit), each in constant time.
    return sum(hmac.compare_digest(expected, candidate) for candidate in signatures) > 0


def _validate(url: Any, secret: Any, events: Any) -> list[str]:
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise WebhookError(f"url: must be an http(s) URL of at most {MAX_URL_LENGTH} characters")
    try:
        parsed = urlparse(url)  # raises on unbalanced brackets or a bracketed host that isn't an IP address
        parsed.port  # raises on a port out of range or not a number
    except ValueError:
        raise WebhookError(f"url: {url!r} is not an http(s) URL with a valid host and port") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname or any(c.isspace() for c in url):
        raise WebhookError(f"url: {url!r} is not an http(s) URL")
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
        raise WebhookError(f"secret: at least {MIN_SECRET_LENGTH} characters")
    if (not isinstance(events, list) or not events
            or any(not isinstance(e, str) or (e not in EVENT_TYPES and e != "*") for e in events)):
        raise WebhookError(f"events: a non-empty list from {', '.join(EVENT_TYPES)}, or ['*']")
    return ["*"] if "*" in events else sorted(set(events))


def _check_public(url: str, lookup: AddressLookup) -> None:
    """Refuses a URL whose host is a non-public address, or a name resolving only to such addresses. The host is
    taken as aiohttp (yarl) will take it when sending, e.g. full-width digits already folded."""
    try:
        parsed = URL(url)
        host, port = parsed.raw_host, parsed.port
    except (ValueError, TypeError):
        raise WebhookError(f"url: {url!r} is not an http(s) URL") from None
    if not host or port is None:
        raise WebhookError(f"url: {url!r} is not an http(s) URL")
    try:
        check_destination(host, port, lookup)
    except RefusedDestination as exc:
        raise WebhookError(f"url: {exc} ({url!r}); webhooks only go to public addresses unless "
                           "[webhooks] allow_private_networks is true") from None


class WebhookStore:
    """Subscriptions, deliveries and attempts in SQLite (tables webhook_subscriptions, webhook_deliveries,
    webhook_attempts) on its own WAL connection; thread-safe, calls are short and synchronous, except that
    `subscribe` resolves the URL's host name (to refuse non-public destinations): call it from a thread.
    `lookup` resolves host names (the system resolver unless a test gives another)."""

    def __init__(self, path: str | Path, *, allow_private_networks: bool = False,
                 lookup: AddressLookup = system_lookup) -> None:
        self.allow_private_networks = allow_private_networks
        self.lookup = lookup
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.db = open_sqlite(path)
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            names = self.db.table_names()
            if "webhook_subscriptions" not in names:
                self.db.table("webhook_subscriptions").create(
                    {"id": str, "org_id": str, "url": str, "secret": str, "events": str, "created_at": float}, pk="id")
                self.db.table("webhook_subscriptions").create_index(["org_id"], if_not_exists=True)
            if "webhook_deliveries" not in names:
                # seq is the org's event number: every delivery of one event shares it, and it only grows.
                self.db.table("webhook_deliveries").create(
                    {"id": str, "seq": int, "subscription_id": str, "org_id": str, "event_type": str, "body": str,
                     "status": str, "attempts": int, "created_at": float, "next_attempt_at": float,
                     "delivered_at": float, "last_status_code": int, "last_error": str}, pk="id")
            deliveries = self.db.table("webhook_deliveries")
            deliveries.create_index(["status", "next_attempt_at"], if_not_exists=True)
            deliveries.create_index(["subscription_id", "seq"], if_not_exists=True)
            deliveries.create_index(["org_id", "seq"], if_not_exists=True)
            if "webhook_attempts" not in names:
                self.db.table("webhook_attempts").create(
                    {"id": int, "delivery_id": str, "at": float, "status_code": int, "error": str, "duration": float},
                    pk="id")
            self.db.table("webhook_attempts").create_index(["delivery_id"], if_not_exists=True)

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so two processes on the same file can't interleave."""
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _view(row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row["id"], "org_id": row["org_id"], "url": row["url"], "events": json.loads(row["events"]),
                "secret_set": True, "created_at": row["created_at"]}

    # -- subscriptions -------------------------------------------------------------------------------
    def subscribe(self, org_id: str, url: str, secret: str, events: list[str]) -> dict[str, Any]:
        events = _validate(url, secret, events)
        if not self.allow_private_networks:
            _check_public(url, self.lookup)
        row = {"id": "wh_" + secrets.token_hex(8), "org_id": org_id, "url": url, "secret": secret,
               "events": json.dumps(events), "created_at": time.time()}
        with self._lock:
            self.db.table("webhook_subscriptions").insert(row)
        return self._view(row)

    def subscriptions(self, org_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self.db.table("webhook_subscriptions").rows_where(
                "org_id = ?", [org_id], order_by="created_at, id"))
        return [self._view(r) for r in rows]

    def _subscription_row(self, org_id: str, sub_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("webhook_subscriptions").rows_where("id = ? and org_id = ?", [sub_id, org_id]))
        return rows[0] if rows else None

    def subscription(self, org_id: str, sub_id: str) -> dict[str, Any] | None:
        row = self._subscription_row(org_id, sub_id)
        return self._view(row) if row else None

    def delete(self, org_id: str, sub_id: str) -> bool:
        """Removes the subscription (only from its own org); its pending deliveries become CANCELLED."""
        with self._transaction() as conn:
            if conn.execute("DELETE FROM webhook_subscriptions WHERE id = ? AND org_id = ?",
                            [sub_id, org_id]).rowcount == 0:
                return False
            conn.execute("UPDATE webhook_deliveries SET status = 'CANCELLED', next_attempt_at = NULL "
                         "WHERE subscription_id = ? AND status = 'PENDING'", [sub_id])
        return True

    # -- the queue -----------------------------------------------------------------------------------
    def enqueue(self, org_id: str, event_type: str, data: dict[str, Any]) -> list[str]:
        """One PENDING delivery per subscription that wants `event_type`, due now; returns their ids."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown webhook event type {event_type!r}")
        now = time.time()
        ids: list[str] = []
        with self._transaction() as conn:
            subs = conn.execute("SELECT id, events FROM webhook_subscriptions WHERE org_id = ? ORDER BY created_at, id",
                                [org_id]).fetchall()
            wanted = [sub_id for sub_id, events in subs
                      if "*" in (chosen := json.loads(events)) or event_type in chosen]
            if not wanted:
                return ids
            seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM webhook_deliveries WHERE org_id = ?",
                               [org_id]).fetchone()[0]
            for sub_id in wanted:
                delivery_id = "dlv_" + secrets.token_hex(8)
                body = json.dumps({"id": delivery_id, "type": event_type, "created_at": now, "org_id": org_id,
                                   "data": data}, separators=(",", ":"), default=str)
                conn.execute(
                    "INSERT INTO webhook_deliveries (id, seq, subscription_id, org_id, event_type, body, status, attempts, "
                    "created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 'PENDING', 0, ?, ?)",
                    [delivery_id, seq, sub_id, org_id, event_type, body, now, now])
                ids.append(delivery_id)
        return ids

    def enqueue_test(self, org_id: str, sub_id: str) -> str | None:
        """A webhook.test delivery to that one subscription, due now, through the normal queue (signed, retried,
        logged); its id, or None when the organization has no such subscription."""
        now = time.time()
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM webhook_subscriptions WHERE id = ? AND org_id = ?",
                            [sub_id, org_id]).fetchone() is None:
                return None
            seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM webhook_deliveries WHERE org_id = ?",
                               [org_id]).fetchone()[0]
            delivery_id = "dlv_" + secrets.token_hex(8)
            body = json.dumps({"id": delivery_id, "type": TEST_EVENT, "created_at": now, "org_id": org_id,
                               "data": {"webhook_id": sub_id, "message": "A test event from the stream console."}},
                              separators=(",", ":"))
            conn.execute(
                "INSERT INTO webhook_deliveries (id, seq, subscription_id, org_id, event_type, body, status, attempts, "
                "created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 'PENDING', 0, ?, ?)",
                [delivery_id, seq, sub_id, org_id, TEST_EVENT, body, now, now])
        return delivery_id

    def deliveries(self, org_id: str, sub_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first, each with its attempt log (time, status code or error, duration)."""
        with self._lock:
            rows = list(self.db.query(
                "SELECT id, seq, subscription_id, org_id, event_type, status, attempts, created_at, next_attempt_at, "
                "delivered_at, last_status_code, last_error FROM webhook_deliveries "
                "WHERE subscription_id = ? AND org_id = ? ORDER BY seq DESC LIMIT ?", [sub_id, org_id, max(0, limit)]))
            for row in rows:
                row["attempt_log"] = list(self.db.query(
                    "SELECT at, status_code, error, duration FROM webhook_attempts WHERE delivery_id = ? ORDER BY id",
                    [row["id"]]))
        return rows

    # -- for the sender ------------------------------------------------------------------------------
    _HEADS = ("FROM (SELECT subscription_id, min(seq) AS seq FROM webhook_deliveries WHERE status = 'PENDING' "
              "GROUP BY subscription_id) head "
              "JOIN webhook_deliveries d ON d.subscription_id = head.subscription_id AND d.seq = head.seq "
              "JOIN webhook_subscriptions s ON s.id = d.subscription_id ")

    @staticmethod
    def _skip(exclude: set[str] | frozenset[str]) -> tuple[str, list[str]]:
        skip = sorted(exclude)
        return (f"AND d.subscription_id NOT IN ({', '.join('?' * len(skip))}) " if skip else ""), skip

    def due(self, now: float, limit: int = 50, exclude: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """The oldest pending delivery of each subscription (never a later one: order is kept) whose time has
        come, skipping subscriptions in `exclude` (those with a delivery in flight)."""
        skip_sql, skip = self._skip(exclude)
        sql = ("SELECT d.*, s.url, s.secret " + self._HEADS + "WHERE d.next_attempt_at <= ? " + skip_sql
               + "ORDER BY d.next_attempt_at, d.seq LIMIT ?")
        with self._lock:
            return list(self.db.query(sql, [now, *skip, limit]))

    def next_due_at(self, exclude: set[str] | frozenset[str] = frozenset()) -> float | None:
        """When the soonest pending delivery heading its subscription's queue becomes due (outside `exclude`)."""
        skip_sql, skip = self._skip(exclude)
        with self._lock:
            row = self.db.execute("SELECT min(d.next_attempt_at) " + self._HEADS + "WHERE 1 " + skip_sql,
                                  skip).fetchone()
        return None if row is None else row[0]

    def record(self, delivery: dict[str, Any], *, ok: bool, status_code: int | None, error: str | None,
               duration: float, now: float, next_attempt_at: float | None) -> None:
        """Logs one attempt; DELIVERED if ok, else rescheduled at next_attempt_at, or FAILED when that is None."""
        if ok:
            status, next_at, delivered_at = "DELIVERED", None, now
        elif next_attempt_at is None:
            status, next_at, delivered_at = "FAILED", None, None
        else:
            status, next_at, delivered_at = "PENDING", next_attempt_at, None
        with self._transaction() as conn:
            conn.execute("INSERT INTO webhook_attempts (delivery_id, at, status_code, error, duration) VALUES (?, ?, ?, ?, ?)",
                         [delivery["id"], now, status_code, error, duration])
            # Only a still-pending delivery moves on: one cancelled meanwhile stays cancelled.
            conn.execute("UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = ?, last_error = ?, "
                         "status = ?, next_attempt_at = ?, delivered_at = ? WHERE id = ? AND status = 'PENDING'",
                         [status_code, error, status, next_at, delivered_at, delivery["id"]])


class WebhookSender:
    """Background task sending due deliveries with aiohttp: one in flight per subscription so each receiver
    gets its events in order, many subscriptions at once so one slow or failing receiver holds up no other.
    Connections go only to public addresses, checked on the very addresses connected to, unless
    allow_private_networks; `resolver` is the name resolver beneath that check (aiohttp's unless given)."""

    def __init__(self, store: WebhookStore, *, timeout: float = 10.0, backoff_base: float = 5.0, backoff_max: float = 3600.0,
                 give_up_after: float = 26 * 3600, poll_interval: float = 1.0, clock: Callable[[], float] = time.time,
                 max_in_flight: int = 64, allow_private_networks: bool = False,
                 resolver: AbstractResolver | None = None) -> None:
        self.store = store
        self.allow_private_networks, self.resolver = allow_private_networks, resolver
        self.timeout, self.backoff_base, self.backoff_max = timeout, backoff_base, backoff_max
        self.give_up_after, self.poll_interval, self.clock = give_up_after, poll_interval, clock
        self.max_in_flight = max_in_flight
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._guard: GuardedResolver | None = None  # the connector's resolver, ours to close
        self._in_flight: dict[str, asyncio.Task[None]] = {}  # subscription id -> its send
        self._held: dict[str, float] = {}  # subscription id -> not before (after a store error)

    async def start(self) -> None:
        if self._task is not None:
            return
        self._guard = None if self.allow_private_networks else GuardedResolver(self.resolver)
        connector = aiohttp.TCPConnector(resolver=self._guard or self.resolver)
        # No proxy from the environment (trust_env is off): the connection goes where the resolver said.
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout),
                                              headers={"User-Agent": USER_AGENT})
        self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook-sender")

    def wake(self) -> None:
        """A delivery was enqueued: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stops sending; a send cut short stays PENDING and is sent again after the next start."""
        tasks = [t for t in (self._task, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._in_flight.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._guard is not None:
            await self._guard.close()
            self._guard = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            delay = self.poll_interval
            try:
                busy = await self._dispatch()
                if len(self._in_flight) < self.max_in_flight:
                    soonest = await asyncio.to_thread(self.store.next_due_at, busy)
                    if soonest is not None:
                        delay = max(0.0, min(delay, soonest - self.clock()))
            except Exception:
                log.exception("webhook sender pass failed")
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def _dispatch(self) -> frozenset[str]:
        """Starts a send for each subscription whose next delivery is due; returns the subscriptions busy."""
        now = self.clock()
        self._held = {sub: until for sub, until in self._held.items() if until > now}
        busy = frozenset(self._in_flight) | frozenset(self._held)
        room = self.max_in_flight - len(self._in_flight)
        if room <= 0:
            return busy
        for delivery in await asyncio.to_thread(self.store.due, now, room, busy):
            sub_id = delivery["subscription_id"]
            if sub_id in self._in_flight:
                continue
            task = asyncio.get_running_loop().create_task(self._send(delivery), name=f"webhook-{delivery['id']}")
            self._in_flight[sub_id] = task
            task.add_done_callback(functools.partial(self._finished, sub_id))
        return frozenset(self._in_flight) | frozenset(self._held)

    def _finished(self, sub_id: str, task: asyncio.Task[None]) -> None:
        if self._in_flight.get(sub_id) is task:
            del self._in_flight[sub_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery for %s not recorded", sub_id, exc_info=task.exception())
            self._held[sub_id] = self.clock() + self.poll_interval
        self._wake.set()  # the next delivery of this subscription may go now

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` failed ones: doubling from backoff_base, capped, ±10 %."""
        delay = min(self.backoff_max, self.backoff_base * 2.0 ** min(max(0, attempts - 1), 64))
        return delay * random.uniform(0.9, 1.1)

    async def _send(self, delivery: dict[str, Any]) -> None:
        assert self._session is not None
        body = delivery["body"].encode()
        now = self.clock()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "Webhook-Id": delivery["id"], "Webhook-Signature": sign(delivery["secret"], int(now), body)}
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        try:
            if not self.allow_private_networks:
                # aiohttp doesn't ask the resolver about a literal address (http://10.0.0.5/): checked here.
                check_literal_host(URL(delivery["url"]).raw_host or "")
            async with self._session.post(delivery["url"], data=body, headers=headers, allow_redirects=False) as response:
                status_code = response.status
                await response.content.read(65536)  # what a receiver says is not ours to keep
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            error = f"timeout after {self.timeout:g} s"
        except Exception as exc:  # connection refused, DNS, bad URL...: one receiver's problem, logged, retried
            refused = refusal_behind(exc)  # "refused: destination 10.0.0.5 is a private address"
            error = (str(refused) if refused is not None else f"{type(exc).__name__}: {exc}")[:MAX_ERROR_LENGTH]
        ok = status_code is not None and 200 <= status_code < 300
        if not ok and error is None:
            error = f"HTTP {status_code}"
        next_at: float | None = None
        if not ok:
            deadline = delivery["created_at"] + self.give_up_after
            if now < deadline:
                # The last try lands on the deadline itself rather than being skipped.
                next_at = min(now + self.backoff(delivery["attempts"] + 1), deadline)
            else:
                log.warning("webhook %s to %s failed for good after %d attempts: %s",
                            delivery["id"], delivery["url"], delivery["attempts"] + 1, error)
        await asyncio.to_thread(self.store.record, delivery, ok=ok, status_code=status_code, error=error,
                                duration=time.perf_counter() - started, now=now, next_attempt_at=next_at)
