"""Webhook store and sender against real aiohttp receivers on 127.0.0.1: signatures, order, retries while a
receiver is down, a restart in the middle, giving up, validation and org isolation. Loopback receivers need
allow_private_networks, on here; test_webhook_ssrf tests the default that refuses them."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from aiohttp import web

from mediaserver.webhooks import EVENT_TYPES, WebhookError, WebhookSender, WebhookStore, sign, verify

pytestmark = pytest.mark.timeout(60)

SECRET = "a-long-webhook-secret-123"
ORG = "org_a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """A real HTTP endpoint on loopback, in the test's event loop, recording every request it gets."""

    def __init__(self, port: int | None = None, *, status: int = 204, delay: float = 0.0) -> None:
        self.port = port or free_port()
        self.status, self.delay = status, delay
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def log_of(store: WebhookStore, sub_id: str) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    async def read() -> list[dict[str, Any]]:
        return list(reversed(await asyncio.to_thread(store.deliveries, ORG, sub_id)))  # oldest first
    return read


async def enqueue_three(store: WebhookStore) -> list[str]:
    ids = []
    for n, kind in enumerate(("stream.created", "stream.live", "stream.ended")):
        ids += await asyncio.to_thread(store.enqueue, ORG, kind, {"stream_id": "st_1", "n": n})
    return ids


def fast_sender(store: WebhookStore, **kwargs: Any) -> WebhookSender:
    options: dict[str, Any] = {"timeout": 5.0, "backoff_base": 0.2, "poll_interval": 0.05,
                               "allow_private_networks": True, **kwargs}  # the receivers are on loopback
    return WebhookSender(store, **options)


# -- signing ------------------------------------------------------------------------------------------
def test_sign_and_verify() -> None:
    body = b'{"id":"dlv_1"}'
    header = sign(SECRET, 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, header, body, now=1_700_000_100)
    assert not verify(SECRET, header, body + b" ", now=1_700_000_100)  # tampered body
    assert not verify("another-secret-of-16+", header, body, now=1_700_000_100)  # wrong secret
    assert not verify(SECRET, header, body, now=1_700_000_301)  # too old: a replay
    assert not verify(SECRET, header, body, now=1_699_999_000)  # from the future
    assert verify(SECRET, header, body, now=1_700_000_400, tolerance=600)
    # A rotated secret: either signature is enough.
    rotated = header + ",v1=" + sign("the-previous-secret-x", 1_700_000_000, body).split("v1=")[1]
    assert verify(SECRET, rotated, body, now=1_700_000_000)
    for bad in ("", "garbage", "t=,v1=", "t=abc,v1=00", "v1=" + header.split("v1=")[1], "t=1700000000",
                "t=1700000000,v1=é", "t=1700000000,t=1700000000,v1=00", "t=-5,v1=00", "t=1700000000;v1=00"):
        assert verify(SECRET, bad, body, now=1_700_000_000) is False, bad


# -- delivery -----------------------------------------------------------------------------------------
def test_three_events_arrive_signed_in_order_with_headers(tmp_path: Path) -> None:
    async def main() -> None:
        store = WebhookStore(tmp_path / "db.sqlite", allow_private_networks=True)
        receiver = await Receiver().start()
        sub = store.subscribe(ORG, receiver.url, SECRET, ["*"])
        sender = fast_sender(store)
        await sender.start()
        try:
            ids = await enqueue_three(store)
            sender.wake()
            await until(lambda: len(receiver.requests) == 3, what="three deliveries")
            assert [e["type"] for e in receiver.events] == ["stream.created", "stream.live", "stream.ended"]
            assert [e["id"] for e in receiver.events] == ids
            for (headers, body), event in zip(receiver.requests, receiver.events):
                assert verify(SECRET, headers["Webhook-Signature"], body)
                assert headers["Content-Type"] == "application/json"
                assert headers["User-Agent"] == "mediaserver-webhooks/1"
                assert headers["Webhook-Id"] == event["id"]
                assert set(event) == {"id", "type", "created_at", "org_id", "data"}
                assert event["org_id"] == ORG and event["data"]["stream_id"] == "st_1"
                assert isinstance(event["created_at"], float)
                # Tampered, or replayed later: refused.
                assert not verify(SECRET, headers["Webhook-Signature"], body.replace(b"st_1", b"st_2"))
                assert not verify(SECRET, headers["Webhook-Signature"], body, now=time.time() + 301)
            rows = await until(lambda: all(r["status"] == "DELIVERED" for r in store.deliveries(ORG, sub["id"]))
                               and store.deliveries(ORG, sub["id"]), what="DELIVERED")
            assert [r["event_type"] for r in rows] == ["stream.ended", "stream.live", "stream.created"]  # newest first
            assert all(r["attempts"] == 1 and r["last_status_code"] == 204 and r["delivered_at"] for r in rows)
            assert "body" not in rows[0] and "secret" not in rows[0]
        finally:
            await sender.stop()
            await receiver.stop()
            store.close()

    asyncio.run(main())


def test_a_down_receiver_gets_every_event_in_order_once_it_is_up(tmp_path: Path) -> None:
    async def main() -> None:
        store = WebhookStore(tmp_path / "db.sqlite", allow_private_networks=True)
        receiver = Receiver()  # nothing listens on its port yet
        sub = store.subscribe(ORG, receiver.url, SECRET, ["stream.created", "stream.live", "stream.ended"])
        sender = fast_sender(store)
        await sender.start()
        try:
            ids = await enqueue_three(store)
            sender.wake()
            log = log_of(store, sub["id"])
            await until(lambda: _first_attempts(log, 2), what="two failed attempts")
            await receiver.start()
            await until(lambda: len(receiver.requests) == 3, what="three deliveries")
            assert [e["id"] for e in receiver.events] == ids
            assert [e["type"] for e in receiver.events] == ["stream.created", "stream.live", "stream.ended"]
            rows = await until(lambda: _all_delivered(log), what="DELIVERED")
            first = rows[0]
            assert first["attempts"] >= 3
            assert all(a["status_code"] is None and a["error"] for a in first["attempt_log"][:-1])
            assert first["attempt_log"][-1]["status_code"] == 204 and first["attempt_log"][-1]["error"] is None
            gaps = [b["at"] - a["at"] for a, b in zip(first["attempt_log"], first["attempt_log"][1:])]
            assert gaps[0] >= 0.2 * 0.9 - 0.01 and gaps[1] >= 0.4 * 0.9 - 0.01  # exponential backoff
            # The later events waited their turn: one attempt each, after the first was delivered.
            assert [r["attempts"] for r in rows[1:]] == [1, 1]
            assert rows[1]["attempt_log"][0]["at"] >= first["delivered_at"]
        finally:
            await sender.stop()
            await receiver.stop()
            store.close()

    asyncio.run(main())


async def _first_attempts(log: Callable[[], Awaitable[list[dict[str, Any]]]], n: int) -> bool:
    rows = await log()
    return bool(rows) and rows[0]["attempts"] >= n


async def _all_delivered(log: Callable[[], Awaitable[list[dict[str, Any]]]]) -> list[dict[str, Any]] | None:
    rows = await log()
    return rows if rows and all(r["status"] == "DELIVERED" for r in rows) else None


def test_deliveries_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"

    # The receiver's port is held (bound, not listening: connections are refused) until it starts, so no other
    # test's server, in another worker, can take it meanwhile and hold the first deliveries open.
    placeholder = socket.socket()
    placeholder.bind(("127.0.0.1", 0))

    async def before() -> tuple[str, int, list[str]]:
        store = WebhookStore(path, allow_private_networks=True)
        port = int(placeholder.getsockname()[1])
        sub = store.subscribe(ORG, f"http://127.0.0.1:{port}/hook", SECRET, ["*"])
        sender = fast_sender(store)
        await sender.start()
        ids = await enqueue_three(store)
        sender.wake()
        await until(lambda: _first_attempts(log_of(store, sub["id"]), 1), what="a failed attempt")
        await sender.stop()
        store.close()
        return sub["id"], port, ids

    sub_id, port, ids = asyncio.run(before())

    async def after() -> None:
        store = WebhookStore(path, allow_private_networks=True)
        assert store.subscription(ORG, sub_id) is not None
        placeholder.close()
        receiver = await Receiver(port).start()
        sender = fast_sender(store)
        await sender.start()
        try:
            await until(lambda: len(receiver.requests) >= 3, what="every event after the restart")
            await asyncio.sleep(0.3)  # nothing more comes
            assert [e["id"] for e in receiver.events] == ids
            assert await until(lambda: _all_delivered(log_of(store, sub_id)), what="DELIVERED")
            # More events after the restart follow the old ones.
            more = await asyncio.to_thread(store.enqueue, ORG, "recording.ready", {"stream_id": "st_1"})
            sender.wake()
            await until(lambda: len(receiver.requests) == 4, what="a new event")
            assert receiver.events[-1]["id"] == more[0]
        finally:
            await sender.stop()
            await receiver.stop()
            store.close()

    asyncio.run(after())


def test_gives_up_after_the_deadline_with_attempts_logged(tmp_path: Path) -> None:
    async def main() -> None:
        store = WebhookStore(tmp_path / "db.sqlite", allow_private_networks=True)
        receiver = await Receiver(status=500).start()
        sub = store.subscribe(ORG, receiver.url, SECRET, ["stream.failed"])
        sender = fast_sender(store, give_up_after=1.0)
        await sender.start()
        try:
            [delivery_id] = await asyncio.to_thread(store.enqueue, ORG, "stream.failed", {"stream_id": "st_9"})
            sender.wake()
            rows = await until(lambda: [r for r in store.deliveries(ORG, sub["id"]) if r["status"] == "FAILED"],
                               what="FAILED")
            row = rows[0]
            assert row["id"] == delivery_id and row["delivered_at"] is None and row["last_status_code"] == 500
            assert row["attempts"] >= 3 and len(row["attempt_log"]) == row["attempts"] == len(receiver.requests)
            assert all(a["status_code"] == 500 and a["error"] == "HTTP 500" and a["duration"] >= 0
                       for a in row["attempt_log"])
            assert row["attempt_log"][-1]["at"] - row["created_at"] >= 1.0 - 0.05  # tried until the deadline
            # Every retry carried the same Webhook-Id, so a receiver can dedupe.
            assert {headers["Webhook-Id"] for headers, _ in receiver.requests} == {delivery_id}
            count = len(receiver.requests)
            await asyncio.sleep(0.4)
            assert len(receiver.requests) == count  # given up: no more tries
        finally:
            await sender.stop()
            await receiver.stop()
            store.close()

    asyncio.run(main())


def test_one_failing_or_slow_receiver_holds_up_no_other(tmp_path: Path) -> None:
    async def main() -> None:
        store = WebhookStore(tmp_path / "db.sqlite", allow_private_networks=True)
        slow = await Receiver(delay=3.0).start()
        broken = await Receiver(status=503).start()
        good = await Receiver().start()
        store.subscribe(ORG, slow.url, SECRET, ["*"])
        store.subscribe(ORG, broken.url, SECRET, ["*"])
        store.subscribe(ORG, "http://127.0.0.1:1/nothing-here", SECRET, ["*"])
        store.subscribe(ORG, good.url, SECRET, ["*"])
        sender = fast_sender(store)
        await sender.start()
        try:
            started = time.monotonic()
            await enqueue_three(store)
            sender.wake()
            await until(lambda: len(good.requests) == 3, what="the good receiver's events")
            assert time.monotonic() - started < 2.5  # not waiting behind the slow receiver
            assert len(slow.requests) == 1  # in order: its second event waits for the first
            assert len(broken.requests) >= 1
        finally:
            await sender.stop()
            for receiver in (slow, broken, good):
                await receiver.stop()
            store.close()

    asyncio.run(main())


# -- subscriptions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, secret, events, field", [
    ("ftp://example.org/hook", SECRET, ["*"], "url"),
    ("not a url", SECRET, ["*"], "url"),
    ("http://", SECRET, ["*"], "url"),
    ("http://example.org:99999/hook", SECRET, ["*"], "url"),
    (None, SECRET, ["*"], "url"),
    ("http://example.org/" + "x" * 3000, SECRET, ["*"], "url"),
    ("https://example.org/hook", "short", ["*"], "secret"),
    ("https://example.org/hook", None, ["*"], "secret"),
    ("https://example.org/hook", SECRET, [], "events"),
    ("https://example.org/hook", SECRET, ["stream.exploded"], "events"),
    ("https://example.org/hook", SECRET, "stream.live", "events"),
    ("https://example.org/hook", SECRET, [None], "events"),
])
def test_subscribe_names_the_bad_field(tmp_path: Path, url: Any, secret: Any, events: Any, field: str) -> None:
    store = WebhookStore(tmp_path / "db.sqlite", allow_private_networks=True)
    with pytest.raises(WebhookError) as caught:
        store.subscribe(ORG, url, secret, events)
    assert str(caught.value).startswith(field + ":")
    assert store.subscriptions(ORG) == []
    store.close()


def test_subscriptions_belong_to_their_org(tmp_path: Path) -> None:
    store = WebhookStore(tmp_path / "db.sqlite", allow_private_networks=True)
    sub = store.subscribe(ORG, "https://example.org/hook", SECRET, ["stream.live", "stream.live", "stream.ended"])
    assert sub["secret_set"] is True and "secret" not in sub
    assert sub["events"] == ["stream.ended", "stream.live"]
    assert store.subscription(ORG, sub["id"]) == sub
    assert store.subscriptions(ORG) == [sub]
    assert all("secret" not in row for row in store.subscriptions(ORG))
    # Another org sees nothing and can delete nothing.
    assert store.subscription("org_b", sub["id"]) is None
    assert store.subscriptions("org_b") == []
    assert store.delete("org_b", sub["id"]) is False
    assert store.enqueue("org_b", "stream.live", {}) == []
    store.enqueue(ORG, "stream.live", {"n": 1})
    assert store.deliveries("org_b", sub["id"]) == []
    assert store.subscription(ORG, sub["id"]) == sub
    # Its own org deletes it; pending deliveries are cancelled, not sent.
    assert store.delete(ORG, sub["id"]) is True
    assert store.subscription(ORG, sub["id"]) is None
    assert store.delete(ORG, sub["id"]) is False
    assert [r["status"] for r in store.deliveries(ORG, sub["id"])] == ["CANCELLED"]
    assert store.due(time.time() + 1) == []
    store.close()


def test_enqueue_filters_and_numbers_events_per_org(tmp_path: Path) -> None:
    store = WebhookStore(tmp_path / "db.sqlite", allow_private_networks=True)
    live_only = store.subscribe(ORG, "https://example.org/live", SECRET, ["stream.live"])
    everything = store.subscribe(ORG, "https://example.org/all", SECRET, ["*"])
    store.subscribe("org_b", "https://example.org/b", SECRET, ["*"])
    assert len(store.enqueue(ORG, "stream.created", {})) == 1
    assert len(store.enqueue(ORG, "stream.live", {})) == 2
    assert len(store.enqueue("org_b", "stream.live", {})) == 1
    assert [r["event_type"] for r in store.deliveries(ORG, live_only["id"])] == ["stream.live"]
    seqs = [r["seq"] for r in store.deliveries(ORG, everything["id"])]
    assert seqs == [2, 1]  # the org's own numbering, newest first
    assert store.deliveries(ORG, live_only["id"])[0]["seq"] == 2  # one number per event, shared
    assert [r["seq"] for r in store.deliveries("org_b", store.subscriptions("org_b")[0]["id"])] == [1]
    with pytest.raises(ValueError):
        store.enqueue(ORG, "stream.exploded", {})
    # Only the head of each subscription's queue is due.
    due = store.due(time.time() + 1)
    assert sorted((d["subscription_id"], d["seq"]) for d in due) == sorted(
        [(live_only["id"], 2), (everything["id"], 1), (store.subscriptions("org_b")[0]["id"], 1)])
    assert set(EVENT_TYPES) >= {"stream.created", "recording.ready"}
    store.close()


def test_backoff_doubles_capped_with_jitter(tmp_path: Path) -> None:
    store = WebhookStore(tmp_path / "db.sqlite", allow_private_networks=True)
    sender = WebhookSender(store, backoff_base=5.0, backoff_max=3600.0)
    for attempts, base in ((1, 5.0), (2, 10.0), (3, 20.0), (10, 2560.0), (11, 3600.0), (5000, 3600.0)):
        for _ in range(20):
            assert base * 0.9 <= sender.backoff(attempts) <= base * 1.1
    store.close()
