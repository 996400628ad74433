"""The console's Moderation, Webhooks, Settings and Analytics pages in Chromium, driven as a volunteer does,
against a real server: guests are real WebSocket clients, the webhook receiver a real aiohttp server, viewers
real watch pages of a real RTMP publish. What the pages did is checked from outside them (the guest's frames,
the receiver's request and its signature computed here, the API, a CSV parsed here). Screenshots of every page
at desktop and phone sizes are kept under test-artifacts/console/."""
from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from aiohttp import web

from mediaserver.db import Database
from tests.browser import module_browser
from tests.chat_client import Client, connect, guest_session
from tests.console_fixture import DESKTOP, PHONE, screenshot, signed_in_page
from tests.media_source import start_publisher
from tests.server_fixture import ServerHandle, run_server, small_config

pytestmark = pytest.mark.browser
SECRET = "console-test-secret-0123456789"


class LoopThread:
    """An asyncio loop of the test's own in a thread (Playwright's sync API owns the main thread), for the
    guests' sockets and the webhook receiver."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Guest:
    """A viewer in the room: its own cookie jar and socket, in the loop thread. A reader task keeps every frame
    (aiohttp's receive() with a timeout marks the socket broken when it expires, so nothing here waits on it)."""

    def __init__(self, loop: LoopThread, server: ServerHandle, stream_id: str, name: str) -> None:
        self.loop = loop
        self.frames: list[dict[str, Any]] = []

        async def open_() -> tuple[Any, Client, Any]:
            session = guest_session()
            client = await connect(session, server, stream_id, name=name)
            self.frames.extend(client.frames)
            return session, client, asyncio.get_running_loop().create_task(self._read(client))

        self.session, self.client, self.reader = loop.call(open_())

    async def _read(self, client: Client) -> None:
        async for msg in client.ws:
            self.frames.append(json.loads(msg.data))

    def _take(self, found: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                for f in list(self.frames):
                    if found(f):
                        self.frames.remove(f)
                        return {"event": f["event"], **f["data"]}
                await asyncio.sleep(0.05)
            raise AssertionError(f"no {what}; got {[f['event'] for f in self.frames]}")
        return self.loop.call(go(), timeout=20)

    def say(self, text: str) -> dict[str, Any]:
        """Sends a message; returns the room's answer about it: its chat:message, chat:moderated or chat:error."""
        self.loop.call(self.client.send("chat:message", {"text": text}))
        return self._take(lambda f: (f["event"] == "chat:message" and f["data"].get("text") == text)
                          or f["event"] == "chat:error"
                          or (f["event"] == "chat:moderated" and f["data"].get("status") == "HELD"),
                          f"answer to {text!r}")

    def expect(self, event: str, match: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
        return self._take(lambda f: f["event"] == event and (match is None or bool(match(f["data"]))), event)

    def close(self) -> None:
        async def go() -> None:
            await self.client.ws.close()
            await self.session.close()
            await asyncio.gather(self.reader, return_exceptions=True)
        self.loop.call(go())


class Receiver:
    """A webhook receiver: a real aiohttp server on loopback recording every request."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.requests: list[tuple[dict[str, str], bytes]] = []

        async def handle(request: web.Request) -> web.Response:
            self.requests.append((dict(request.headers), await request.read()))
            return web.Response(status=204)

        async def start() -> tuple[web.AppRunner, int]:
            app = web.Application()
            app.router.add_post("/hook", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self.runner, port = loop.call(start())
        self.url = f"http://127.0.0.1:{port}/hook"

    def stop(self) -> None:
        self.loop.call(self.runner.cleanup())


def until(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def tiny_png(width: int, height: int) -> bytes:
    """A valid RGB PNG made here by hand (signature, IHDR, IDAT, IEND)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + b"\x1f\x5f\xbf" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    config = small_config(tmp_path_factory.mktemp("console-pages"))
    config.webhooks.allow_private_networks = True  # the receiver is on loopback
    config.analytics.sample_seconds = 1.0
    config.analytics.hls_idle_seconds = 3.0
    handle = run_server(config)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def org(server: ServerHandle) -> dict[str, Any]:
    db = Database(server.server.config.data_path / "mediaserver.db")
    grace = db.create_org("grace", "Grace Church", "America/Chicago")
    _, token = db.create_token(grace["id"], "console pages test")
    other = db.create_org("hope", "Hope Chapel")
    _, other_token = db.create_token(other["id"], "other")
    return {"id": grace["id"], "token": token, "other_token": other_token}


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


def new_stream(server: ServerHandle, org: dict[str, Any], title: str) -> dict[str, Any]:
    status, stream = server.api("POST", "/api/streams", {"title": title}, token=org["token"])
    assert status == 201, stream
    return stream


def signed_in(browser: Any, server: ServerHandle, token: str, viewport: dict[str, int]) -> Any:
    """A browser context signed in through the console's own sign-in form."""
    return signed_in_page(browser, server, token, viewport)


def console(browser: Any, server: ServerHandle, org: dict[str, Any], hash_: str, viewport: dict[str, int] = DESKTOP) -> Any:
    page = signed_in(browser, server, org["token"], viewport)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # checked at the end of each test: a script error fails it
    page.goto(f"{server.http}/admin{hash_}")
    return page


def test_the_moderation_record_and_test_events_belong_to_their_organization(server: ServerHandle, org: dict[str, Any]) -> None:
    stream = new_stream(server, org, "Private record")
    for path in ("chat/audit", "chat/sanctions"):
        status, body = server.api("GET", f"/api/streams/{stream['id']}/{path}", token=org["token"])
        assert status == 200 and body["stream_id"] == stream["id"], body
        status, body = server.api("GET", f"/api/streams/{stream['id']}/{path}", token=org["other_token"])
        assert status == 404, body
    status, hook = server.api("POST", "/api/webhooks", {"url": "http://127.0.0.1:9/x", "secret": SECRET, "events": ["*"]},
                              token=org["token"])
    assert status == 201, hook
    status, body = server.api("POST", f"/api/webhooks/{hook['id']}/test", token=org["other_token"])
    assert status == 404, body
    status, body = server.api("GET", f"/api/webhooks/{hook['id']}/deliveries", token=org["token"])
    assert body["deliveries"] == []  # the refused test queued nothing
    status, queued = server.api("POST", f"/api/webhooks/{hook['id']}/test", token=org["token"])
    assert status == 202 and queued["status"] == "PENDING"
    status, body = server.api("GET", f"/api/webhooks/{hook['id']}/deliveries", token=org["token"])
    assert [d["id"] for d in body["deliveries"]] == [queued["delivery_id"]]
    assert body["deliveries"][0]["event_type"] == "webhook.test"
    assert server.api("DELETE", f"/api/webhooks/{hook['id']}", token=org["token"])[0] == 204


def test_moderating_a_room_from_the_console(server: ServerHandle, org: dict[str, Any], browser: Any, loop: LoopThread) -> None:
    from playwright.sync_api import expect

    stream = new_stream(server, org, "Sunday Worship")
    page = console(browser, server, org, "#/settings")
    # The moderation word is set in Settings, through the page.
    page.fill("#chat-words", "grumble\nmurmur")
    page.get_by_role("button", name="Save chat moderation").click()
    expect(page.locator(".toast.ok")).to_contain_text("Chat moderation saved")
    status, saved = server.api("GET", f"/api/orgs/{org['id']}", token=org["token"])
    assert saved["settings"]["chat"]["blocked_words"] == ["grumble", "murmur"]

    page.goto(f"{server.http}/admin#/moderation")
    expect(page.get_by_role("link", name="Sunday Worship")).to_be_visible()
    screenshot(page, "moderation-picker-desktop")
    page.get_by_role("link", name="Sunday Worship").click()
    expect(page.locator(".mod-status")).to_contain_text("(moderator)")

    ruth = Guest(loop, server, stream["id"], "Ruth")
    boaz = Guest(loop, server, stream["id"], "Boaz")
    try:
        # Remove: the guest sees the message go.
        first = ruth.say("Hello from the back row")
        assert first["event"] == "chat:message", first
        item = page.locator("li.mod-message", has_text="Hello from the back row")
        item.get_by_role("button", name="Remove").click()
        assert ruth.expect("chat:removed", lambda d: d["id"] == first["id"])
        expect(item).to_have_count(0)

        # Pin: the guest sees it pinned.
        second = ruth.say("Pin this verse: Psalm 23")
        assert second["event"] == "chat:message", second
        page.locator("li.mod-message", has_text="Psalm 23").get_by_role("button", name="Pin").click()
        pinned = ruth.expect("chat:pinned", lambda d: d["message"] and d["message"]["id"] == second["id"])
        assert pinned["message"]["text"] == "Pin this verse: Psalm 23"
        expect(page.locator(".mod-pinned")).to_contain_text("Psalm 23")

        # Time-out: once the page shows it done, the guest's next message is refused.
        page.locator("li.mod-message", has_text="Psalm 23").get_by_role("button", name="Time out").click()
        expect(page.locator(".toast.ok", has_text="Ruth is timed out")).to_be_visible()
        refused = ruth.say("Can I still talk?")
        assert refused["event"] == "chat:error" and refused["code"] == "muted", refused
        expect(page.locator(".sanctions")).to_contain_text("Ruth")

        # A blocked word: the message waits in the review queue; approving publishes it to the guests.
        held = boaz.say("I grumble about the parking")
        assert held["event"] == "chat:moderated" and held["status"] == "HELD", held
        queued = page.locator("ol.held li.mod-message", has_text="grumble about the parking")
        expect(queued).to_be_visible()
        screenshot(page, "moderation-room-desktop")
        queued.get_by_role("button", name="Approve").click()
        published = boaz.expect("chat:message", lambda d: d["text"] == "I grumble about the parking")
        assert published["id"] == held["id"]
        assert ruth.expect("chat:message", lambda d: d["id"] == held["id"])
        expect(queued).to_have_count(0)

        # The audit log on the page lists every action, in the order they were taken (newest first).
        rows = page.locator("#audit-log tbody tr")
        expect(rows).to_have_count(4)
        assert page.locator("#audit-log tbody tr").evaluate_all("rs => rs.map(r => r.dataset.action)") == [
            "approve", "timeout", "pin", "remove"]
        expect(page.locator("#audit-log")).to_contain_text("Hello from the back row")  # the removed message, named
        status, audit = server.api("GET", f"/api/streams/{stream['id']}/chat/audit", token=org["token"])
        assert [e["action"] for e in audit["entries"]] == ["remove", "pin", "timeout", "approve"]
        assert audit["entries"][2]["target"] == "Ruth" and audit["entries"][2]["detail"] == 300
        assert audit["entries"][0]["message"] == {"text": "Hello from the back row", "author": "Ruth"}

        # Lifting the time-out from the page lets the guest speak again.
        page.get_by_role("button", name="Lift the time-out on Ruth").click()
        expect(page.locator(".toast.ok", has_text="Ruth may speak again")).to_be_visible()
        assert ruth.say("Thank you")["event"] == "chat:message"

        phone = console(browser, server, org, f"#/moderation/{stream['id']}", PHONE)
        expect(phone.locator(".mod-status")).to_contain_text("(moderator)")
        expect(phone.locator("#audit-log tbody tr")).to_have_count(5)
        # A page opened later still names the removed message (the API keeps what it said).
        expect(phone.locator("#audit-log")).to_contain_text("Hello from the back row")
        screenshot(phone, "moderation-room-phone")
        phone.goto(f"{server.http}/admin#/moderation")
        expect(phone.get_by_role("link", name="Sunday Worship")).to_be_visible()
        screenshot(phone, "moderation-picker-phone")
        assert phone.errors == []
        phone.context.close()
    finally:
        ruth.close()
        boaz.close()
    assert page.errors == []
    page.context.close()


def test_a_webhook_test_event_from_the_console(server: ServerHandle, org: dict[str, Any], browser: Any, loop: LoopThread) -> None:
    from playwright.sync_api import expect

    receiver = Receiver(loop)
    try:
        page = console(browser, server, org, "#/webhooks")
        page.fill("#hook-url", receiver.url)
        page.fill("#hook-secret", SECRET)
        page.get_by_role("button", name="Add webhook").click()
        card = page.locator("li.webhook", has_text=receiver.url)
        expect(card).to_be_visible()
        card.get_by_role("button", name="Send test event").click()

        headers, body = until(lambda: receiver.requests and receiver.requests[0], what="the test event")
        event = json.loads(body)
        assert event["type"] == "webhook.test" and event["org_id"] == org["id"]
        # The signature, checked here from its definition: t=..,v1=HMAC-SHA256(secret, "t." + body).
        parts = dict(item.split("=", 1) for item in headers["Webhook-Signature"].split(","))
        expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(parts["v1"], expected)
        assert abs(int(parts["t"]) - time.time()) < 120
        assert headers["Webhook-Id"] == event["id"]

        row = card.locator("table.deliveries tbody tr[data-event='webhook.test']")
        expect(row).to_have_attribute("data-status", "DELIVERED", timeout=15_000)
        expect(row).to_contain_text("HTTP 204")
        screenshot(page, "webhooks-desktop")
        phone = console(browser, server, org, "#/webhooks", PHONE)
        expect(phone.locator("li.webhook", has_text=receiver.url)).to_be_visible()
        phone.locator("li.webhook", has_text=receiver.url).get_by_role("button", name="Delivery log").click()
        expect(phone.locator("table.deliveries tbody tr[data-status='DELIVERED']")).to_have_count(1)
        screenshot(phone, "webhooks-phone")
        assert phone.errors == [] and page.errors == []
        phone.context.close()
        page.context.close()
        assert len(receiver.requests) == 1  # one press, one delivery
    finally:
        receiver.stop()


def test_settings_from_the_console_reach_the_api_and_new_streams(server: ServerHandle, org: dict[str, Any], browser: Any) -> None:
    from playwright.sync_api import expect

    page = console(browser, server, org, "#/settings")
    page.check("#lat-std")
    page.fill("#dvr-window", "45")
    page.get_by_role("button", name="Save streaming").click()
    expect(page.locator(".toast.ok", has_text="Streaming settings saved")).to_be_visible()
    status, saved = server.api("GET", f"/api/orgs/{org['id']}", token=org["token"])
    assert saved["settings"]["latency_mode"] == "STANDARD" and saved["settings"]["dvr_window_minutes"] == 45
    assert new_stream(server, org, "After standard")["low_latency"] is False  # new streams follow the org
    page.check("#lat-low")
    page.get_by_role("button", name="Save streaming").click()
    until(lambda: server.api("GET", f"/api/orgs/{org['id']}", token=org["token"])[1]["settings"]["latency_mode"] == "LOW",
          what="LOW saved")
    assert new_stream(server, org, "After low")["low_latency"] is True

    # A colour that isn't one is refused, and the page says why.
    page.fill("#brand-primary", "#12345")
    page.get_by_role("button", name="Save branding").click()
    expect(page.locator(".toast.error")).to_contain_text("#12345")
    page.fill("#brand-primary", "#7a1f3d")
    page.fill("#brand-name", "Grace Church Downtown")
    page.get_by_role("button", name="Save branding").click()
    expect(page.locator(".toast.ok", has_text="Branding saved")).to_be_visible()
    page.set_input_files("#brand-logo", files=[{"name": "logo.png", "mimeType": "image/png", "buffer": tiny_png(48, 24)}])
    expect(page.locator(".toast.ok", has_text="Logo uploaded")).to_be_visible()
    logo = page.locator("img.brand-preview.logo")
    expect(logo).to_be_visible()
    until(lambda: logo.evaluate("img => img.complete && img.naturalWidth") == 48, what="the logo preview")
    status, saved = server.api("GET", f"/api/orgs/{org['id']}", token=org["token"])
    branding = saved["settings"]["branding"]
    assert branding["primary_color"] == "#7a1f3d" and branding["display_name"] == "Grace Church Downtown"
    assert (branding["logo"]["width"], branding["logo"]["height"]) == (48, 24)

    # Giving: new streams start with the organization's Give button; the watch page shows it.
    page.check("#giving-enabled")
    page.fill("#giving-url", "https://give.example.org/grace")
    page.fill("#giving-message", "Support our ministry")
    page.get_by_role("button", name="Save giving").click()
    expect(page.locator(".toast.ok", has_text="Giving saved")).to_be_visible()
    giving_stream = new_stream(server, org, "After giving")
    assert (giving_stream["giving_enabled"], giving_stream["giving_url"], giving_stream["giving_message"]) == (
        True, "https://give.example.org/grace", "Support our ministry")
    watch = page.context.new_page()
    watch.goto(f"{server.http}/watch/{giving_stream['id']}")
    expect(watch.locator("#give")).to_have_attribute("href", "https://give.example.org/grace")
    watch.close()

    # The ladder: two rungs saved as the API takes them.
    page.get_by_role("button", name="Add a rung").click()
    page.get_by_role("button", name="Add a rung").click()
    rows = page.locator("tr.rung")
    for i, (name, height, kbps) in enumerate((("720p", 720, 2800), ("360p", 360, 700))):
        rows.nth(i).locator(".rung-name").fill(name)
        rows.nth(i).locator(".rung-height").fill(str(height))
        rows.nth(i).locator(".rung-kbps").fill(str(kbps))
    page.get_by_role("button", name="Save ladder").click()
    expect(page.locator(".toast.ok", has_text="Ladder saved")).to_be_visible()
    status, saved = server.api("GET", f"/api/orgs/{org['id']}", token=org["token"])
    assert saved["settings"]["default_ladder"] == [
        {"name": "720p", "height": 720, "video_bitrate": 2_800_000, "passthrough": False},
        {"name": "360p", "height": 360, "video_bitrate": 700_000, "passthrough": False}]
    screenshot(page, "settings-desktop")
    phone = console(browser, server, org, "#/settings", PHONE)
    expect(phone.locator("#dvr-window")).to_have_value("45")
    screenshot(phone, "settings-phone")
    assert phone.errors == [] and page.errors == []
    phone.context.close()
    page.context.close()


def test_analytics_follow_two_viewers_and_export_csv(server: ServerHandle, org: dict[str, Any], browser: Any) -> None:
    from playwright.sync_api import expect

    status, stream = server.api("POST", "/api/streams", {"title": "Evening Prayer"}, token=org["token"])
    assert status == 201
    publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=60, gop_seconds=1.0)
    viewers: list[Any] = []
    try:
        until(lambda: server.api("GET", f"/api/streams/{stream['id']}", token=org["token"])[1]["status"] == "LIVE",
              timeout=40, what="the stream to go live")
        page = console(browser, server, org, f"#/analytics/{stream['id']}")
        expect(page.locator("#current-viewers")).to_have_text("0")
        for _ in range(2):  # two people, each in a browser of their own
            context = browser.new_context(viewport={"width": 640, "height": 480})
            viewer = context.new_page()
            viewer.goto(f"{server.http}/watch/{stream['id']}")
            viewers.append(viewer)
        # The page refreshes itself every 5 s while on air: the figure and the chart reach 2.
        expect(page.locator("#current-viewers")).to_have_text("2", timeout=30_000)
        chart_counts = page.locator("figure[data-chart='Viewers over time'] tbody td")
        until(lambda: max(map(int, chart_counts.all_text_contents() or ["0"])) == 2, timeout=20, what="the chart at 2")
        expect(page.locator("#peak-viewers")).to_have_text("2")
        screenshot(page, "analytics-stream-desktop")

        for viewer in viewers:
            viewer.context.close()
        viewers.clear()
        expect(page.locator("#current-viewers")).to_have_text("0", timeout=30_000)
        expect(page.locator("#unique-viewers")).to_have_text("2")

        with page.expect_download() as download_info:
            page.get_by_role("link", name="Download this service's analytics as CSV").click()
        download = download_info.value
        text = open(download.path(), encoding="utf-8").read()
        table = list(csv.reader(io.StringIO(text)))
        assert len(table) >= 2 and all(len(row) == len(table[0]) for row in table), text[:500]

        phone = console(browser, server, org, f"#/analytics/{stream['id']}", PHONE)
        expect(phone.locator("#unique-viewers")).to_have_text("2")
        screenshot(phone, "analytics-stream-phone")
        phone.goto(f"{server.http}/admin#/analytics")
        expect(phone.get_by_role("link", name="Evening Prayer")).to_be_visible()
        screenshot(phone, "analytics-org-phone")
        page.goto(f"{server.http}/admin#/analytics")
        expect(page.get_by_role("link", name="Evening Prayer")).to_be_visible()
        page.get_by_role("button", name="7 days").click()
        expect(page.get_by_role("button", name="7 days")).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#org-unique")).not_to_have_text("0")
        with page.expect_download() as download_info:
            page.get_by_role("link", name="Download the last 7 days as CSV").click()
        org_csv = list(csv.reader(io.StringIO(open(download_info.value.path(), encoding="utf-8").read())))
        assert any("Evening Prayer" in row for row in org_csv), org_csv
        screenshot(page, "analytics-org-desktop")
        assert phone.errors == [] and page.errors == []
        phone.context.close()
        page.context.close()
    finally:
        for viewer in viewers:
            viewer.context.close()
        publisher.kill()
