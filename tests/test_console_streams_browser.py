"""The console's Streams page, go-live panel and Recordings library, driven in headless Chromium as a volunteer
would, against a real server with real RTMP publishers. What the pages did is checked through the API (or by
decoding the downloaded file), and times are converted independently here with zoneinfo."""
from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from datetime import time as wall_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import av
import pytest
from playwright.sync_api import expect

from mediaserver.db import Database
from tests.browser import module_browser
from tests.console_fixture import DESKTOP, PHONE, screenshot, signed_in_page
from tests.media_source import PublishError, publish, start_publisher
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_broadcast import wait_for

pytestmark = [pytest.mark.media, pytest.mark.browser]

CHICAGO = ZoneInfo("America/Chicago")
FPS = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = run_server(small_config(tmp_path_factory.mktemp("console-streams")))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def org(server: ServerHandle) -> dict[str, Any]:
    db = Database(server.server.config.data_path / "mediaserver.db")
    row = db.create_org("grace", "Grace Church", "America/Chicago")
    _, token = db.create_token(row["id"], "console streams test")
    return {"id": row["id"], "token": token}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


def signed_in(browser: Any, server: ServerHandle, token: str, viewport: dict[str, int]) -> Any:
    """A browser context signed in through the console's own sign-in form."""
    return signed_in_page(browser, server, token, viewport)


def open_page(browser: Any, server: ServerHandle, org: dict[str, Any], hash_: str,
              viewport: dict[str, int] = DESKTOP) -> tuple[Any, list[str]]:
    page = signed_in(browser, server, org["token"], viewport)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.http}/admin{hash_}")
    return page, errors


def api(server: ServerHandle, org: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
    status, answer = server.api(method, path, body, token=org["token"])
    assert status < 300, (method, path, status, answer)
    return answer


def stream_of(server: ServerHandle, org: dict[str, Any], stream_id: str) -> dict[str, Any]:
    return api(server, org, "GET", f"/api/streams/{stream_id}")


def test_create_edit_cancel_delete_and_schedule_a_weekly_series(server: ServerHandle, org: dict[str, Any],
                                                                 browser: Any) -> None:
    page, errors = open_page(browser, server, org, "#/streams")
    expect(page.locator("h1")).to_have_text("Streams")

    # A one-off service next July (daylight time in Chicago, while today may be standard time).
    day = date(date.today().year + 1, 7, 5)
    page.click("#new-stream")
    page.fill("#new-title", "Independence Day Picnic")
    page.fill("#new-start", f"{day.isoformat()}T19:00")
    page.fill("#new-minutes", "60")
    page.select_option("#new-zone", "America/Chicago")
    page.click("#new-stream-form button[type=submit]")
    expect(page.locator("#created")).to_be_visible()
    key = page.locator("#key-value").input_value()
    assert key.startswith("sk_")
    listed = api(server, org, "GET", "/api/streams?state=upcoming&limit=100")["streams"]
    made = next(s for s in listed if s["title"] == "Independence Day Picnic")
    start = datetime.combine(day, wall_time(19, 0), CHICAGO).astimezone(timezone.utc)
    assert datetime.fromisoformat(made["scheduled_start"]) == start
    assert datetime.fromisoformat(made["scheduled_end"]) == start + timedelta(minutes=60)
    assert made["timezone"] == "America/Chicago"

    # Edit: the form shows the time back in the stream's zone, so saving only the title keeps the time.
    row = page.locator(f"tr[data-stream-id='{made['id']}']")
    expect(row).to_be_visible()
    row.get_by_role("button", name="Edit Independence Day Picnic").click()
    expect(page.locator("#edit-start")).to_have_value(f"{day.isoformat()}T19:00")
    page.fill("#edit-title", "Fourth of July Picnic")
    page.click("#edit-stream-form button[type=submit]")
    wait_for(lambda: stream_of(server, org, made["id"])["title"] == "Fourth of July Picnic", 10, "the edit")
    assert datetime.fromisoformat(stream_of(server, org, made["id"])["scheduled_start"]) == start
    # The key the page showed is the stream's: it publishes (a refused key would raise PublishError).
    publish(server.rtmp_url(key), seconds=1.5)
    wait_for(lambda: stream_of(server, org, made["id"])["actual_start"], 20, "the shown key to publish")

    # Cancel a scheduled one from its row, then delete it with its media.
    other = api(server, org, "POST", "/api/streams", {"title": "Choir rehearsal"})
    page.click("#tab-upcoming")
    row = page.locator(f"tr[data-stream-id='{other['id']}']")
    row.get_by_role("button", name="Cancel Choir rehearsal").click()
    row.get_by_role("button", name="Cancel the stream").click()
    wait_for(lambda: stream_of(server, org, other["id"])["status"] == "CANCELLED", 10, "the cancel")
    page.click("#tab-past")
    row = page.locator(f"tr[data-stream-id='{other['id']}']")
    row.get_by_role("button", name="Delete Choir rehearsal").click()
    row.get_by_role("button", name="Delete for good").click()
    expect(row).to_have_count(0)
    assert server.api("GET", f"/api/streams/{other['id']}", token=org["token"])[0] == 404

    # The series builder: weekly on Sunday at 10:30, America/Chicago.
    page.click("#new-series")
    page.fill("#series-title", "Sunday Worship")
    page.check("#series-day-SU")
    page.fill("#series-time", "10:30")
    page.fill("#series-duration", "75")
    page.select_option("#series-zone", "America/Chicago")
    expect(page.locator("#series-rrule")).to_have_text("FREQ=WEEKLY;BYDAY=SU")
    page.click("#series-form button[type=submit]")
    expect(page.locator("#series-created")).to_be_visible()
    series = next(s for s in api(server, org, "GET", "/api/series")["series"] if s["title"] == "Sunday Worship")
    assert series["rrule"] == "FREQ=WEEKLY;BYDAY=SU"
    assert (series["timezone"], series["start_time"], series["duration"]) == ("America/Chicago", "10:30", 75)
    today = datetime.now(CHICAGO).date()
    sunday = today + timedelta(days=(6 - today.weekday()) % 7)
    expected = datetime.combine(sunday, wall_time(10, 30), CHICAGO).astimezone(timezone.utc)
    occurrences = api(server, org, "GET", f"/api/series/{series['id']}/occurrences?from={today.isoformat()}"
                                          f"&to={(today + timedelta(days=15)).isoformat()}")["occurrences"]
    assert datetime.fromisoformat(occurrences[0]["start"]) == expected
    assert datetime.fromisoformat(occurrences[1]["start"]) == datetime.combine(
        sunday + timedelta(days=7), wall_time(10, 30), CHICAGO).astimezone(timezone.utc)
    # Its services are listed under Upcoming.
    page.click("#tab-upcoming")
    expect(page.locator("#series-list")).to_contain_text("Every week on Sunday at 10:30 (America/Chicago)")
    first = occurrences[0]["stream_id"]
    expect(page.locator(f"tr[data-stream-id='{first}']")).to_be_visible()
    screenshot(page, "streams-desktop")
    phone, phone_errors = open_page(browser, server, org, "#/streams", PHONE)
    expect(phone.locator(f"tr[data-stream-id='{first}']")).to_be_visible()
    screenshot(phone, "streams-phone")
    assert errors == [] and phone_errors == []
    page.context.close()
    phone.context.close()


def test_go_live_panel_turns_green_then_warns_about_the_keyframe_interval(server: ServerHandle, org: dict[str, Any],
                                                                           browser: Any) -> None:
    stream = api(server, org, "POST", "/api/streams", {"title": "Sunday Service"})
    page, errors = open_page(browser, server, org, f"#/stream/{stream['id']}")
    health = page.locator("#health")
    expect(health).to_contain_text("Waiting for the encoder")
    expect(page.locator("#obs-server")).to_have_value(stream["rtmp_url"])
    expect(page.locator("#obs-keyframe")).to_have_value("2 s")

    publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=25, gop_seconds=1.0)
    try:
        expect(health).to_have_class(re.compile(r"\bhealth good\b"), timeout=30_000)
        expect(health).to_contain_text("Healthy")
        expect(page.locator("[data-fact=resolution]")).to_have_text("320×180")
        shown = float(page.locator("[data-fact=frame-rate]").inner_text().split()[0])
        assert abs(shown - FPS) <= 3, shown
        # The preview plays the live stream (hls.js on the master playlist, through the session cookie).
        page.wait_for_function("document.querySelector('#preview').currentTime > 0.5", timeout=30_000)
        screenshot(page, "golive-desktop")
        phone, phone_errors = open_page(browser, server, org, f"#/stream/{stream['id']}", PHONE)
        expect(phone.locator("#health")).to_have_class(re.compile(r"\bhealth good\b"), timeout=15_000)
        screenshot(phone, "golive-phone")
        phone.context.close()
        assert phone_errors == []
        # End broadcast, while the encoder is still sending: the server ends it (skipping the reconnect window).
        assert publisher.is_alive()
        page.click("#end-stream")
        page.get_by_role("button", name="End now").click()
        wait_for(lambda: stream_of(server, org, stream["id"])["status"] == "ENDED", 15, "the broadcast to end")
        expect(health).to_contain_text("Waiting for the encoder")
    finally:
        publisher.kill()

    # Keyframes 7 s apart: the server's warning shows in the panel, word for word.
    publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=25, gop_seconds=7.0)
    try:
        warning = page.locator("#health .warnings li", has_text="keyframe every")
        expect(warning).to_be_visible(timeout=30_000)
        expect(health).to_have_class(re.compile(r"\bhealth warning\b"))
        expect(health).to_contain_text("Needs attention")
        text = warning.inner_text()
        assert "set the keyframe interval to 2 s in OBS" in text
        wait_for(lambda: text in ((stream_of(server, org, stream["id"])["ingest"] or {}).get("warnings") or []), 10,
                 "the panel's warning in the API's ingest health")
    finally:
        publisher.kill()
    wait_for(lambda: stream_of(server, org, stream["id"])["status"] == "ENDED", 30, "the broadcast to end")
    assert errors == []
    page.context.close()


def test_rotating_the_key_shows_the_new_one_once_and_the_old_one_is_refused(server: ServerHandle, org: dict[str, Any],
                                                                            browser: Any) -> None:
    stream = api(server, org, "POST", "/api/streams", {"title": "Midweek"})
    old = stream["stream_key"]
    # The OBS suggestions follow the organization's own ladder (its top rung).
    api(server, org, "PATCH", f"/api/orgs/{org['id']}",
        {"settings": {"default_ladder": [{"name": "small", "height": 180, "video_bitrate": 400_000}]}})
    page, errors = open_page(browser, server, org, f"#/stream/{stream['id']}")
    expect(page.locator("#obs-resolution")).to_have_value("320x180")
    expect(page.locator("#obs-bitrate")).to_have_value("480 Kbps")
    api(server, org, "PATCH", f"/api/orgs/{org['id']}", {"settings": {"default_ladder": []}})
    expect(page.locator("#obs-key-hint")).to_be_visible()  # no key known to the page yet
    page.click("#rotate-key")
    page.get_by_role("button", name="Rotate the key").click()
    new = page.locator("#key-value")
    expect(new).to_have_value(re.compile(r"^sk_"))
    key = new.input_value()
    assert key != old
    expect(page.locator("#obs-key")).to_have_value(key)
    with pytest.raises(PublishError):
        publish(server.rtmp_url(old), seconds=1.0)
    publish(server.rtmp_url(key), seconds=1.5)
    wait_for(lambda: stream_of(server, org, stream["id"])["actual_start"], 20, "the new key to publish")
    # Shown once: opening the panel again does not show it.
    fresh, fresh_errors = open_page(browser, server, org, f"#/stream/{stream['id']}")
    expect(fresh.locator("#obs-key-hint")).to_be_visible()
    assert key not in fresh.content()
    assert errors == [] and fresh_errors == []
    page.context.close()
    fresh.context.close()


def test_recordings_library_renames_downloads_and_deletes(server: ServerHandle, org: dict[str, Any], browser: Any,
                                                          tmp_path: Path) -> None:
    stream = api(server, org, "POST", "/api/streams", {"title": "Good Friday"})
    sent = publish(server.rtmp_url(stream["stream_key"]), seconds=5.0, gop_seconds=1.0)

    def saved() -> bool:
        now = stream_of(server, org, stream["id"])
        return bool(now["status"] == "ENDED" and now["recording"] and now["recording"]["status"] == "READY"
                    and now["recording"]["mp4_url"])

    wait_for(saved, 60, "the recording")
    recording = stream_of(server, org, stream["id"])["recording"]

    page, errors = open_page(browser, server, org, "#/recordings")
    card = page.locator(f"article[data-recording-id='{recording['id']}']")
    expect(card).to_contain_text("Good Friday")
    before = api(server, org, "GET", "/api/recordings")["storage_bytes"]
    expect(page.locator("#storage-used")).to_have_attribute("data-bytes", str(before))

    card.get_by_role("button", name="Rename Good Friday").click()
    page.fill(f"#rename-{recording['id']}", "Good Friday — Tenebrae")
    page.get_by_role("button", name="Save").click()
    expect(card.locator(".recording-title")).to_have_text("Good Friday — Tenebrae")
    listed = {r["id"]: r for r in api(server, org, "GET", "/api/recordings")["recordings"]}
    assert listed[recording["id"]]["title"] == "Good Friday — Tenebrae"
    assert listed[recording["id"]]["stream_title"] == "Good Friday"
    screenshot(page, "recordings-desktop")
    phone, phone_errors = open_page(browser, server, org, "#/recordings", PHONE)
    expect(phone.locator(f"article[data-recording-id='{recording['id']}']")).to_be_visible()
    screenshot(phone, "recordings-phone")
    phone.context.close()

    with page.expect_download() as download_info:
        card.get_by_role("link", name=re.compile("Download the MP4")).click()
    saved = tmp_path / "recording.mp4"
    download_info.value.save_as(saved)
    with av.open(str(saved)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert abs(frames - sent) <= FPS, (frames, sent)  # within one GOP (1 s) of what was published

    # Another organization neither sees it in its library nor renames it (404, as for every other route).
    db = Database(server.server.config.data_path / "mediaserver.db")
    _, outsider = db.create_token(db.create_org("hope", "Hope Chapel")["id"], "outsider")
    status, theirs = server.api("GET", "/api/recordings", token=outsider)
    assert status == 200 and theirs["recordings"] == [] and theirs["storage_bytes"] == 0
    assert server.api("GET", "/api/recordings?org=grace", token=outsider)[0] == 404
    assert server.api("PATCH", f"/api/streams/{stream['id']}/recordings/{recording['id']}", {"title": "Mine now"},
                      token=outsider)[0] == 404
    assert api(server, org, "GET", "/api/recordings?org=grace")["storage_bytes"] == before

    mine = listed[recording["id"]]
    card.get_by_role("button", name=re.compile("^Delete ")).click()
    card.get_by_role("button", name="Delete for good").click()
    expect(card).to_have_count(0)
    after = api(server, org, "GET", "/api/recordings")
    assert recording["id"] not in {r["id"] for r in after["recordings"]}
    assert after["storage_bytes"] == before - mine["size"] - (mine["mp4_size"] or 0) < before
    expect(page.locator("#storage-used")).to_have_attribute("data-bytes", str(after["storage_bytes"]))
    assert server.get(recording["mp4_url"])[0] == 404
    assert errors == [] and phone_errors == []
    page.context.close()
