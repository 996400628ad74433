"""The console's "Video platform" choice, driven in headless Chromium against real servers: one with Mux (the
local stand-in of tests/mux_standin.py, which mux-python talks to over HTTP) and AWS IVS (moto in server mode,
tests/ivs_fixture.py) configured, one with only this server's own engine.

What the pages did is checked independently: the stream through the API with the server's admin token, the
platform's side in the Mux stand-in's own records and through a separate boto3 client on moto, and a refusal's
words against the same request sent straight to the API.
"""
from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from mediaserver.db import Database
from tests.browser import module_browser
from tests.console_fixture import screenshot, signed_in_page
from tests.ivs_fixture import IvsStandIn, ivs_client
from tests.mux_standin import MuxStandIn
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_broadcast import wait_for

pytestmark = [pytest.mark.browser]

MUX_TOKEN_ID, MUX_TOKEN_SECRET = "console-token-id", "console-token-secret-4c3b2a"
MUX_WEBHOOK_SECRET = "console-webhook-secret-9z8y7x"
# Where the stand-in "Mux" tells encoders to send: the page must show exactly this (from config, not the code).
MUX_RTMP_URL = "rtmp://mux-standin.invalid:5222/app"
MUX_RTMPS_URL = "rtmps://mux-standin.invalid:443/app"


class Cloud:
    def __init__(self, server: ServerHandle, mux: MuxStandIn, ivs: IvsStandIn, org: dict[str, Any]) -> None:
        self.server, self.mux, self.ivs, self.org = server, mux, ivs, org


def make_org(server: ServerHandle, slug: str) -> dict[str, Any]:
    db = Database(server.server.config.data_path / "mediaserver.db")
    row = db.create_org(slug, f"{slug.title()} Church", "America/Chicago")
    _, token = db.create_token(row["id"], "console backends test")
    return {"id": row["id"], "token": token}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    mux = MuxStandIn(MUX_TOKEN_ID, MUX_TOKEN_SECRET, MUX_WEBHOOK_SECRET).start()
    ivs = IvsStandIn(tmp_path_factory.mktemp("console-ivs")).start()
    config = small_config(tmp_path_factory.mktemp("console-backends"))
    config.mux.token_id, config.mux.token_secret = MUX_TOKEN_ID, MUX_TOKEN_SECRET
    config.mux.webhook_secret, config.mux.base_url = MUX_WEBHOOK_SECRET, mux.url
    config.mux.rtmp_url, config.mux.rtmps_url = MUX_RTMP_URL, MUX_RTMPS_URL
    config.ivs = ivs.config()
    server = run_server(config)
    try:
        yield Cloud(server, mux, ivs, make_org(server, "grace"))
    finally:
        server.stop()
        mux.stop()
        ivs.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, dict[str, Any]]]:
    server = run_server(small_config(tmp_path_factory.mktemp("console-builtin-only")))
    try:
        yield server, make_org(server, "hope")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


def open_console(browser: Any, server: ServerHandle, org: dict[str, Any], hash_: str) -> tuple[Any, list[str]]:
    page = signed_in_page(browser, server, org["token"])
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.http}/admin{hash_}")
    return page, errors


def admin_read(server: ServerHandle, path: str) -> Any:
    """The API as the server's administrator sees it: independent of the console's session."""
    status, answer = server.api("GET", path)
    assert status == 200, (path, status, answer)
    return answer


def streams_titled(server: ServerHandle, title: str) -> list[dict[str, Any]]:
    return [s for s in admin_read(server, "/api/streams?state=all&limit=100")["streams"] if s["title"] == title]


def mux_streams_for(mux: MuxStandIn, stream_id: str) -> list[dict[str, Any]]:
    """The live streams the stand-in made whose passthrough is our stream id (mux-python sends it on create)."""
    return [s.data for s in list(mux.streams.values()) if s.data.get("passthrough") == stream_id]


def raw_get(url: str, token: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_api_lists_what_is_configured_without_secrets(cloud: Cloud,
                                                           plain: tuple[ServerHandle, dict[str, Any]]) -> None:
    url = f"{cloud.server.http}/api/backends"
    assert raw_get(url, None)[0] == 401  # like every /api route: nothing without a token
    status, body = raw_get(url, cloud.org["token"])
    assert status == 200
    answer = json.loads(body)
    by_name = {b["name"]: b for b in answer["backends"]}
    assert list(by_name) == ["builtin", "mux", "ivs"]  # what this test configured, in that order
    assert answer["org_id"] == cloud.org["id"] and answer["default"] == "builtin" and answer["default_available"]
    # IVS channels can't rewind and don't push to other targets themselves (AWS's documented limits).
    assert not by_name["ivs"]["dvr_window"] and not by_name["ivs"]["simulcast"]
    assert "no DVR window" in by_name["ivs"]["summary"] and "no simulcast" in by_name["ivs"]["summary"]
    assert by_name["builtin"]["dvr_window"] and by_name["builtin"]["summary"] == "This server"
    assert "realtime" not in by_name["mux"]["latency_modes"] and "no real-time mode" in by_name["mux"]["lacks"]
    ivs_settings = cloud.server.server.config.ivs
    for secret in (MUX_TOKEN_ID, MUX_TOKEN_SECRET, MUX_WEBHOOK_SECRET, cloud.mux.url, ivs_settings.secret_access_key,
                   ivs_settings.notification_secret, ivs_settings.endpoint_url):
        assert secret.encode() not in body, secret

    # Another organization's token can't read this one's default.
    other = make_org(cloud.server, "other")
    status, _ = raw_get(f"{url}?org={cloud.org['id']}", other["token"])
    assert status == 404
    server, org = plain
    status, body = raw_get(f"{server.http}/api/backends", org["token"])
    assert status == 200 and [b["name"] for b in json.loads(body)["backends"]] == ["builtin"]


def test_choosing_mux_in_the_new_stream_form(cloud: Cloud, browser: Any) -> None:
    page, errors = open_console(browser, cloud.server, cloud.org, "#/streams")
    page.click("#new-stream")
    platform = page.locator("#new-backend")
    expect(platform).to_be_visible()
    options = platform.locator("option").all_inner_texts()
    assert options[0].startswith("This server") and "(your default)" in options[0]
    assert any(o.startswith("AWS IVS") and "no DVR window" in o for o in options), options
    assert any(o.startswith("Mux") and "no DVR window" in o for o in options), options
    before = set(cloud.mux.streams)
    page.fill("#new-title", "Advent Lessons and Carols")
    platform.select_option("mux")
    page.click("#new-stream-form button[type=submit]")
    expect(page.locator("#created")).to_be_visible()
    key = page.locator("#key-value").input_value()
    assert page.locator("#key-server").input_value() == MUX_RTMP_URL

    made = streams_titled(cloud.server, "Advent Lessons and Carols")
    assert len(made) == 1 and made[0]["backend"] == "mux"
    assert made[0]["rtmp_url"] == MUX_RTMP_URL
    new = [cloud.mux.streams[i].data for i in set(cloud.mux.streams) - before]
    assert len(new) == 1 and new[0]["passthrough"] == made[0]["id"]
    assert key == new[0]["stream_key"]  # the key Mux made, not one of ours

    # Its go-live panel: which platform carries it, and the platform's server and key for OBS.
    page.click("#created a[href^='#/stream/']")
    expect(page.locator("#stream-platform")).to_have_text("Runs on Mux")
    expect(page.locator("#obs-server")).to_have_value(MUX_RTMP_URL)
    expect(page.locator("#obs-rtmps")).to_have_value(MUX_RTMPS_URL)
    expect(page.locator("#obs-key")).to_have_value(key)
    expect(page.locator("#obs-platform-note")).to_contain_text("Mux's")
    # Mux puts it live when the encoder connects: no "Open for the encoder" (that is this server's own engine).
    expect(page.locator("#rotate-key")).to_be_visible()
    assert page.locator("#start-stream").count() == 0
    screenshot(page, "backend-mux-stream")
    # Shown once: opened again, the page has the server but no longer the key.
    page.reload()
    expect(page.locator("#obs-server")).to_have_value(MUX_RTMP_URL)
    expect(page.locator("#obs-key-hint")).to_be_visible()
    assert page.locator("#obs-key").count() == 0 and key not in page.content()
    assert errors == []
    page.context.close()


def test_moving_a_stream_to_mux_from_its_edit_form(cloud: Cloud, browser: Any) -> None:
    status, made = cloud.server.api("POST", "/api/streams", {"title": "Midweek Prayer"}, token=cloud.org["token"])
    assert status == 201 and made["backend"] == "builtin"
    page, errors = open_console(browser, cloud.server, cloud.org, "#/streams")
    row = page.locator(f"tr[data-stream-id='{made['id']}']")
    row.get_by_role("button", name="Edit Midweek Prayer").click()
    expect(page.locator("#edit-backend")).to_have_value("builtin")
    page.select_option("#edit-backend", "mux")
    expect(page.locator("#edit-dvr_enabled")).not_to_be_checked()  # Mux has no DVR window here: rewind goes off
    page.click("#edit-stream-form button[type=submit]")
    expect(page.locator("#moved")).to_be_visible()
    key = page.locator("#key-value").input_value()
    view = admin_read(cloud.server, f"/api/streams/{made['id']}")
    assert view["backend"] == "mux" and not view["dvr_enabled"]
    remote = mux_streams_for(cloud.mux, made["id"])
    assert len(remote) == 1 and remote[0]["stream_key"] == key
    assert page.locator("#key-server").input_value() == MUX_RTMP_URL
    assert errors == []
    page.context.close()


def test_the_list_and_the_simulcast_panel_say_what_the_platform_does(cloud: Cloud, browser: Any) -> None:
    """The streams list marks a cloud stream's platform; an IVS stream's simulcast panel says IVS can't push (no
    form to add a target that could never go anywhere); a Mux stream's offers only the source, as Mux pushes it."""
    token = cloud.org["token"]
    made = {}
    for backend in ("ivs", "mux", "builtin"):
        status, made[backend] = cloud.server.api("POST", "/api/streams", {"title": f"Vespers {backend}",
                                                                          "backend": backend}, token=token)
        assert status == 201, made[backend]
    page, errors = open_console(browser, cloud.server, cloud.org, "#/streams")
    for backend, label in (("ivs", "AWS IVS"), ("mux", "Mux")):
        expect(page.locator(f"tr[data-stream-id='{made[backend]['id']}'] .badge.platform")).to_have_text(label)
    expect(page.locator(f"tr[data-stream-id='{made['builtin']['id']}']")).to_be_visible()
    assert page.locator(f"tr[data-stream-id='{made['builtin']['id']}'] .badge.platform").count() == 0
    page.goto(f"{cloud.server.http}/admin#/stream/{made['ivs']['id']}")
    expect(page.locator("#simulcast-intro")).to_contain_text("AWS IVS can't send the service to other platforms")
    expect(page.locator("#simulcast-form")).to_be_hidden()
    page.goto(f"{cloud.server.http}/admin#/stream/{made['mux']['id']}")
    expect(page.locator("#simulcast-intro")).to_contain_text("Mux sends the service to each target below itself")
    expect(page.locator("#simulcast-form")).to_be_visible()
    options = page.locator("#simulcast-rendition option")
    expect(options).to_have_count(1)
    assert options.first.get_attribute("value") == "source"
    page.goto(f"{cloud.server.http}/admin#/stream/{made['builtin']['id']}")
    expect(page.locator("#simulcast-form")).to_be_visible()
    assert page.locator("#simulcast-rendition option").count() > 1  # our own pusher offers the ladder's rungs
    assert errors == []
    page.context.close()


def test_an_impossible_choice_shows_the_apis_reason(cloud: Cloud, browser: Any) -> None:
    aws = ivs_client(cloud.ivs.endpoint)
    channels_before = len(aws.list_channels()["channels"])
    page, errors = open_console(browser, cloud.server, cloud.org, "#/streams")
    page.click("#new-stream")
    page.fill("#new-title", "Watch Night")
    page.select_option("#new-backend", "ivs")
    dvr = page.locator("#new-dvr_enabled")
    expect(dvr).not_to_be_checked()  # IVS can't rewind: the box follows the platform
    dvr.check()  # ...but the volunteer insists
    page.click("#new-stream-form button[type=submit]")
    shown = page.locator("#new-stream-form [data-error-for='dvr_enabled']")
    expect(shown).to_be_visible()

    # The same request straight to the API: the page shows its words, beside the field.
    status, refused = cloud.server.api("POST", "/api/streams", {"title": "Watch Night", "backend": "ivs",
                                                                "dvr_enabled": True}, token=cloud.org["token"])
    assert status == 400 and "dvr_enabled" in refused["details"]
    expect(shown).to_have_text(refused["details"]["dvr_enabled"])
    screenshot(page, "backend-ivs-refused")
    assert streams_titled(cloud.server, "Watch Night") == []
    assert len(aws.list_channels()["channels"]) == channels_before  # nothing made at the platform either

    # Unticked, the same form makes it on IVS: the page shows IVS's ingest server, as boto3 reads the channel.
    dvr.uncheck()
    page.click("#new-stream-form button[type=submit]")
    expect(page.locator("#created")).to_be_visible()
    expect(shown).to_have_count(0)
    made = streams_titled(cloud.server, "Watch Night")
    assert len(made) == 1 and made[0]["backend"] == "ivs"
    channel = next(c for c in aws.list_channels()["channels"] if c["name"] == f"mediaserver-{made[0]['id']}")
    endpoint = aws.get_channel(arn=channel["arn"])["channel"]["ingestEndpoint"]
    assert endpoint in page.locator("#key-server").input_value()
    assert errors == []
    page.context.close()


def test_a_series_on_ivs_from_the_series_form(cloud: Cloud, browser: Any) -> None:
    aws = ivs_client(cloud.ivs.endpoint)
    page, errors = open_console(browser, cloud.server, cloud.org, "#/streams")
    page.click("#new-series")
    page.fill("#series-title", "Vespers")
    expect(page.locator("#series-backend")).to_have_value("builtin")
    page.select_option("#series-backend", "ivs")
    page.click("#series-form button[type=submit]")
    expect(page.locator("#series-created")).to_be_visible()
    series = [s for s in admin_read(cloud.server, "/api/series")["series"] if s["title"] == "Vespers"]
    assert len(series) == 1 and series[0]["backend"] == "ivs"
    channel = next(c for c in aws.list_channels()["channels"] if c["name"] == f"mediaserver-{series[0]['id']}")
    details = aws.get_channel(arn=channel["arn"])["channel"]
    assert details["ingestEndpoint"] in page.locator("#key-server").input_value()
    keys = [aws.get_stream_key(arn=k["arn"])["streamKey"]["value"]
            for k in aws.list_stream_keys(channelArn=channel["arn"])["streamKeys"]]
    assert page.locator("#key-value").input_value() in keys
    assert errors == []
    page.context.close()


def test_the_org_default_set_in_settings_makes_the_next_stream_a_mux_one(cloud: Cloud, browser: Any) -> None:
    page, errors = open_console(browser, cloud.server, cloud.org, "#/settings")
    expect(page.locator("#org-backend")).to_have_value("builtin")
    page.select_option("#org-backend", "mux")
    expect(page.locator("#org-backend-notes")).to_contain_text("real-time")  # what Mux can't do, before saving
    screenshot(page, "backend-settings")
    page.click("#set-platform button[type=submit]")
    wait_for(lambda: admin_read(cloud.server, f"/api/orgs/{cloud.org['id']}")["settings"].get("backend") == "mux",
             10, "the default platform saved")
    try:
        page.goto(f"{cloud.server.http}/admin#/streams")
        page.click("#new-stream")
        expect(page.locator("#new-backend")).to_have_value("mux")  # preselected, untouched: the server decides
        expect(page.locator("#new-backend option[value=mux]")).to_contain_text("(your default)")
        page.fill("#new-title", "Christmas Eve Candlelight")
        page.click("#new-stream-form button[type=submit]")
        expect(page.locator("#created")).to_be_visible()
        made = streams_titled(cloud.server, "Christmas Eve Candlelight")
        assert len(made) == 1 and made[0]["backend"] == "mux"
        assert len(mux_streams_for(cloud.mux, made[0]["id"])) == 1
        assert errors == []
    finally:
        status, _ = cloud.server.api("PATCH", f"/api/orgs/{cloud.org['id']}", {"settings": {"backend": "builtin"}})
        assert status == 200
        page.context.close()


def test_no_platform_choice_when_only_this_server_is_configured(plain: tuple[ServerHandle, dict[str, Any]],
                                                                 browser: Any, tmp_path: Path) -> None:
    server, org = plain
    page, errors = open_console(browser, server, org, "#/streams")
    with page.expect_response(lambda r: "/api/backends" in r.url) as answered:
        page.click("#new-stream")
    assert answered.value.status == 200  # the console asked, and was told there is no choice
    expect(page.locator("#new-title")).to_be_visible()
    assert page.locator("#new-backend").count() == 0
    expect(page.locator("#new-platform")).to_be_hidden()
    page.fill("#new-title", "Morning Worship")
    page.click("#new-stream-form button[type=submit]")
    expect(page.locator("#created")).to_be_visible()
    made = streams_titled(server, "Morning Worship")
    assert len(made) == 1 and made[0]["backend"] == "builtin"
    page.click("#created a[href^='#/stream/']")
    expect(page.locator("#obs-server")).to_have_value(made[0]["rtmp_url"])
    expect(page.locator("#start-stream")).to_be_visible()
    assert page.locator("#stream-platform").count() == 0 and page.locator("#obs-platform-note").count() == 0
    with page.expect_response(lambda r: "/api/backends" in r.url):
        page.goto(f"{server.http}/admin#/settings")
    expect(page.locator("#set-streaming")).to_be_visible()
    assert page.locator("#set-platform").count() == 0
    page.screenshot(path=str(tmp_path / "settings-builtin-only.png"))
    assert errors == []
    page.context.close()
