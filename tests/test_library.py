"""The sermon library end to end: real RTMP broadcasts become recordings, one is auto-published, one published
through the API, a private one is refused; the public page (filters, escaping), the JSON Feed 1.1, the podcast
RSS (checked by a small validator written from Apple's and Podcast Index's requirements) and the episode audio
(AAC only, the recording's own packets, the recording's duration)."""
from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import time
from datetime import timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote
from xml.etree import ElementTree as ET

import av
import feedparser
import pytest

from mediaserver.config import Rendition
from tests.browser import module_browser
from tests.console_fixture import screenshot, signed_in_page
from tests.media_source import start_publisher
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config

pytestmark = pytest.mark.media

ITUNES = "{http://www.itunes.com/dtds/podcast-1.0.dtd}"


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def broadcasts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, dict[str, dict[str, Any]]]]:
    """One server; three streams broadcast at once for 3 s: auto-published, manual, private (auto on)."""
    config = small_config(tmp_path_factory.mktemp("library") / "data",
                          renditions=[Rendition("180p", 180, 300_000)])
    server = run_server(config)
    try:
        specs = {
            "auto": {"title": "Grace Alone", "library_auto_publish": True},
            "manual": {"title": "Faith Works"},
            "private": {"title": "Elders Meeting", "visibility": "PRIVATE", "library_auto_publish": True},
        }
        streams: dict[str, dict[str, Any]] = {}
        for name, body in specs.items():
            status, stream = server.api("POST", "/api/streams", body)
            assert status == 201, stream
            streams[name] = stream
        assert streams["auto"]["library_auto_publish"] is True and streams["manual"]["library_auto_publish"] is False
        publishers = [start_publisher(server.rtmp_url(s["stream_key"]), seconds=3.0) for s in streams.values()]
        for publisher in publishers:
            publisher.join(timeout=60)
            assert publisher.finished and publisher.error is None, publisher.error

        def recorded(stream_id: str) -> Callable[[], dict[str, Any] | None]:
            def check() -> dict[str, Any] | None:
                body = server.api("GET", f"/api/streams/{stream_id}")[1]
                rec = body["recording"]
                return body if rec and rec["status"] == "READY" and rec["mp4_url"] else None
            return check

        for name, stream in streams.items():
            streams[name] = wait_for(recorded(stream["id"]), 60, f"the {name} recording")
        yield server, streams
    finally:
        server.stop()


def library(server: ServerHandle) -> list[dict[str, Any]]:
    status, body = server.api("GET", "/api/library")
    assert status == 200, body
    return list(body["items"])


def text_of(server: ServerHandle, path: str) -> str:
    status, _headers, body = server.get(path)
    assert status == 200, (path, status, body[:200])
    return body.decode()


def audio_packets(data: bytes) -> tuple[list[str], float, list[str]]:
    """(hashes of the AAC packets, decoded duration in seconds from the samples, every stream's type) of a file."""
    with av.open(io.BytesIO(data)) as container:
        kinds = [s.type for s in container.streams]
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        hashes = [hashlib.sha256(bytes(p)).hexdigest() for p in container.demux(audio) if p.size]
    with av.open(io.BytesIO(data)) as container:
        samples, rate = 0, 0
        for frame in container.decode(audio=0):
            samples, rate = samples + frame.samples, frame.sample_rate
    return hashes, samples / rate, kinds


def publish_manual(server: ServerHandle, streams: dict[str, dict[str, Any]]) -> dict[str, Any]:
    existing = [i for i in library(server) if i["stream_id"] == streams["manual"]["id"]]
    if existing:
        return existing[0]
    status, item = server.api("POST", "/api/library", {
        "stream_id": streams["manual"]["id"], "recording_id": streams["manual"]["recording"]["id"],
        "speaker": "Pastor Ruth", "series": "James", "scripture": "James 2:14-26", "date": "2026-11-29"})
    assert status == 201, item
    return dict(item)


def test_auto_publish_and_audio(broadcasts: tuple[ServerHandle, dict[str, dict[str, Any]]]) -> None:
    server, streams = broadcasts
    auto = wait_for(lambda: [i for i in library(server) if i["stream_id"] == streams["auto"]["id"]], 30,
                    "the auto-published item")[0]
    assert auto["recording_id"] == streams["auto"]["recording"]["id"] and auto["title"] == "Grace Alone"
    assert auto["audio_url"] and auto["audio_size"]
    # The episode's audio: what is served is what the feed will announce, AAC only, the recording's very own
    # packets (no re-encode), as long as the recording's sound (both measured by decoding here).
    status, headers, m4a = server.get(auto["audio_url"])
    assert status == 200 and headers["Content-Type"] == "audio/mp4" and len(m4a) == auto["audio_size"]
    mp4 = server.get(streams["auto"]["recording"]["mp4_url"])[2]
    m4a_packets, m4a_seconds, m4a_kinds = audio_packets(m4a)
    mp4_packets, mp4_seconds, _ = audio_packets(mp4)
    assert m4a_kinds == ["audio"]
    assert m4a_packets == mp4_packets and len(m4a_packets) > 100
    assert abs(m4a_seconds - mp4_seconds) < 0.05 and 2.0 < m4a_seconds < 5.0
    assert abs(auto["audio_duration"] - m4a_seconds) < 0.1


def test_private_stream_is_never_published(broadcasts: tuple[ServerHandle, dict[str, dict[str, Any]]]) -> None:
    server, streams = broadcasts
    private = streams["private"]
    # Its recording is ready (the fixture waited) and auto-publish was asked for, yet nothing was published.
    assert all(i["stream_id"] != private["id"] for i in library(server))
    status, body = server.api("POST", "/api/library", {"stream_id": private["id"],
                                                       "recording_id": private["recording"]["id"]})
    assert status == 409 and "public" in body["error"], body
    assert private["recording"]["id"] not in text_of(server, "/library/default/feed.json")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


@pytest.mark.browser
def test_console_publishes_a_recording(broadcasts: tuple[ServerHandle, dict[str, dict[str, Any]]],
                                       browser: Any) -> None:
    from playwright.sync_api import expect

    server, streams = broadcasts
    page = signed_in_page(browser, server, ADMIN_TOKEN)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.http}/admin#/recordings")
    # The private stream's recording: the server refuses, and the volunteer is told why.
    private = page.locator(f"article[data-recording-id='{streams['private']['recording']['id']}']")
    private.get_by_role("button", name="Publish Elders Meeting to the library").click()
    private.get_by_role("button", name="Publish", exact=True).click()
    expect(page.locator(".toast.error")).to_contain_text("public")
    manual_id = streams["manual"]["recording"]["id"]
    card = page.locator(f"article[data-recording-id='{manual_id}']")
    card.get_by_role("button", name="Publish Faith Works to the library").click()
    for name, value in (("speaker", "Pastor Ruth"), ("series", "James"), ("scripture", "James 2:14-26"),
                        ("date", "2026-11-29")):
        page.fill(f"#library-{name}-{manual_id}", value)
    card.get_by_role("button", name="Publish", exact=True).click()
    expect(card.locator(".library-published")).to_contain_text("In the sermon library")
    screenshot(page, "library-publish")
    item = next(i for i in library(server) if i["recording_id"] == manual_id)
    assert (item["title"], item["speaker"], item["series"], item["scripture"], item["date"]) == (
        "Faith Works", "Pastor Ruth", "James", "James 2:14-26", "2026-11-29")
    assert all(i["stream_id"] != streams["private"]["id"] for i in library(server))
    # The auto-published one shows as published from the start.
    auto = page.locator(f"article[data-recording-id='{streams['auto']['recording']['id']}']")
    expect(auto.locator(".library-published")).to_be_visible()
    assert errors == []
    page.context.close()


def test_publish_edit_and_other_org(broadcasts: tuple[ServerHandle, dict[str, dict[str, Any]]]) -> None:
    server, streams = broadcasts
    item = publish_manual(server, streams)
    assert (item["title"], item["speaker"], item["series"], item["date"]) == ("Faith Works", "Pastor Ruth", "James",
                                                                             "2026-11-29")
    status, again = server.api("POST", "/api/library", {"stream_id": streams["manual"]["id"],
                                                        "recording_id": streams["manual"]["recording"]["id"]})
    assert status == 409, again
    db = server.server.db
    other = db.org("elsewhere") or db.create_org("elsewhere", "Elsewhere")
    token = db.create_token(other["id"], "library")[1]
    assert server.api("GET", f"/api/library/{item['id']}", token=token)[0] == 404
    assert server.api("PATCH", f"/api/library/{item['id']}", {"speaker": "X"}, token=token)[0] == 404
    assert server.api("DELETE", f"/api/library/{item['id']}", token=token)[0] == 404
    assert server.api("POST", "/api/library", {"stream_id": streams["auto"]["id"],
                                               "recording_id": streams["auto"]["recording"]["id"]}, token=token)[0] == 404
    assert server.api("GET", "/api/library", token=token)[1]["items"] == []
    status, edited = server.api("PATCH", f"/api/library/{item['id']}", {"description": "On faith and deeds"})
    assert status == 200 and edited["description"] == "On faith and deeds" and edited["speaker"] == "Pastor Ruth"
    assert server.api("PATCH", f"/api/library/{item['id']}", {"date": "2026-02-30"})[0] == 400


def _titles(page: str) -> list[str]:
    return re.findall(r'<li class="sermon"[^>]*>.*?<h2><a [^>]*>(.*?)</a></h2>', page, re.S)


def test_public_page_filters_and_escapes(broadcasts: tuple[ServerHandle, dict[str, dict[str, Any]]]) -> None:
    server, streams = broadcasts
    publish_manual(server, streams)
    auto = wait_for(lambda: [i for i in library(server) if i["stream_id"] == streams["auto"]["id"]], 30, "auto")[0]
    status, _ = server.api("PATCH", f"/api/library/{auto['id']}", {
        "title": "<script>alert(1)</script> Grace Alone", "speaker": "Pastor Sam & Co", "series": "Romans",
        "scripture": "Romans 3:21-26"})
    assert status == 200
    page = text_of(server, "/library/default")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; Grace Alone" in page
    assert sorted(_titles(page)) == sorted(["&lt;script&gt;alert(1)&lt;/script&gt; Grace Alone", "Faith Works"])
    assert "Elders Meeting" not in page
    assert _titles(text_of(server, "/library/default?speaker=" + quote("Pastor Ruth"))) == ["Faith Works"]
    assert _titles(text_of(server, "/library/default?series=Romans"))[0].endswith("Grace Alone")
    assert len(_titles(text_of(server, "/library/default?series=Romans"))) == 1
    assert _titles(text_of(server, "/library/default?q=james+2")) == ["Faith Works"]
    assert _titles(text_of(server, "/library/default?q=nothing-like-this")) == []
    assert "&quot;&gt;&lt;b" in text_of(server, "/library/default?q=" + quote('"><b'))  # the echoed query too
    assert server.get("/library/no-such-church")[0] == 404


def test_json_feed(broadcasts: tuple[ServerHandle, dict[str, dict[str, Any]]]) -> None:
    server, streams = broadcasts
    manual = publish_manual(server, streams)
    status, headers, raw = server.get("/library/default/feed.json")
    assert status == 200 and headers["Content-Type"].startswith("application/feed+json")
    feed = json.loads(raw)
    # JSON Feed 1.1's required fields (https://jsonfeed.org/version/1.1).
    assert feed["version"] == "https://jsonfeed.org/version/1.1" and isinstance(feed["title"], str)
    assert feed["feed_url"].endswith("/library/default/feed.json")
    ids = [item["id"] for item in feed["items"]]
    assert len(ids) == len(set(ids)) and manual["id"] in ids
    for item in feed["items"]:
        assert isinstance(item["id"], str) and (item.get("content_text") or item.get("content_html"))
        for attachment in item.get("attachments", []):
            assert attachment["url"] and attachment["mime_type"] == "audio/mp4"
            status, _, data = server.get(attachment["url"])
            assert status == 200 and len(data) == attachment["size_in_bytes"]
    entry = next(i for i in feed["items"] if i["id"] == manual["id"])
    assert entry["_sermon"]["speaker"] == "Pastor Ruth" and entry["date_published"].startswith("2026-11-29")


def validate_podcast(xml: bytes, owner_email: str | None = None) -> list[str]:
    """What Apple Podcasts and Podcast Index document as required, as a list of problems (empty: valid).
    With owner_email (the organization has set one): Apple's itunes:owner with itunes:name and that itunes:email."""
    problems: list[str] = []
    root = ET.fromstring(xml)
    channel = root.find("channel")
    if root.tag != "rss" or root.get("version") != "2.0" or channel is None:
        return ["not RSS 2.0 with a channel"]
    if owner_email is not None:
        owner = channel.find(f"{ITUNES}owner")
        if owner is None:
            problems.append("channel itunes:owner missing")
        else:
            if not (owner.findtext(f"{ITUNES}name") or "").strip():
                problems.append("itunes:owner itunes:name missing")
            if (owner.findtext(f"{ITUNES}email") or "").strip() != owner_email:
                problems.append("itunes:owner itunes:email missing or not the organization's")
    for tag in ("title", "link", "description", "language", f"{ITUNES}explicit"):
        if not (channel.findtext(tag) or "").strip():
            problems.append(f"channel {tag} missing")
    if (channel.findtext(f"{ITUNES}explicit") or "") not in ("true", "false"):
        problems.append("itunes:explicit must be true or false")
    image = channel.find(f"{ITUNES}image")
    if image is None or not (image.get("href") or "").startswith("http"):
        problems.append("channel itunes:image href missing")
    category = channel.find(f"{ITUNES}category")
    if category is None or not category.get("text"):
        problems.append("channel itunes:category missing")
    guids = set()
    for item in channel.findall("item"):
        for tag in ("title", "guid", "pubDate"):
            if not (item.findtext(tag) or "").strip():
                problems.append(f"item {tag} missing")
        enclosure = item.find("enclosure")
        if enclosure is None or not enclosure.get("url") or not (enclosure.get("length") or "").isdigit() \
                or not (enclosure.get("type") or "").startswith("audio/"):
            problems.append("item enclosure url/length/type missing")
        guid = item.findtext("guid")
        if guid in guids:
            problems.append(f"guid {guid} repeated")
        guids.add(guid)
        try:
            parsedate_to_datetime(item.findtext("pubDate") or "")
        except (TypeError, ValueError):
            problems.append("item pubDate is not RFC 2822")
        if not re.fullmatch(r"\d+(:\d\d){0,2}", item.findtext(f"{ITUNES}duration") or ""):
            problems.append("item itunes:duration malformed")
    return problems


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_podcast_feed(broadcasts: tuple[ServerHandle, dict[str, dict[str, Any]]]) -> None:
    server, streams = broadcasts
    manual = publish_manual(server, streams)
    status, headers, xml = server.get("/library/default/podcast.xml")
    assert status == 200 and headers["Content-Type"].startswith("application/rss+xml")
    assert validate_podcast(xml) == []
    channel = ET.fromstring(xml).find("channel")
    assert channel is not None
    artwork_url = channel.find(f"{ITUNES}image").get("href")  # type: ignore[union-attr]
    status, _, png = server.get(str(artwork_url))
    assert status == 200 and png_size(png) == (1400, 1400)
    with av.open(io.BytesIO(png), format="png_pipe") as image:  # it decodes, at that size
        frame = next(image.decode(video=0))
        assert (frame.width, frame.height) == (1400, 1400)
    items = {i.findtext("guid"): i for i in channel.findall("item")}
    assert len(items) == 2  # the auto-published and the manual one; not the private stream's
    item = items[f"mediaserver-library-{manual['id']}"]
    enclosure = item.find("enclosure")
    assert enclosure is not None
    status, _, data = server.get(str(enclosure.get("url")))
    assert status == 200 and int(str(enclosure.get("length"))) == len(data) and enclosure.get("type") == "audio/mp4"
    _, seconds, kinds = audio_packets(data)
    assert kinds == ["audio"] and int(item.findtext(f"{ITUNES}duration") or "-1") == round(seconds)
    published = parsedate_to_datetime(item.findtext("pubDate") or "")
    assert published.astimezone(timezone.utc).date().isoformat() == "2026-11-29"
    # A second, independent reader: feedparser (what many podcast tools are built on) reads the feed without a
    # complaint and finds the podcast's iTunes fields and each episode's audio enclosure with its length.
    parsed = feedparser.parse(xml)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "rss20" and "itunes_explicit" in parsed.feed and parsed.feed.get("tags")
    assert parsed.feed.get("image", {}).get("href") == artwork_url
    assert {e.id for e in parsed.entries} == set(items)
    for entry in parsed.entries:
        audio = [link for link in entry.links if link.get("rel") == "enclosure"]
        assert len(audio) == 1 and audio[0]["type"] == "audio/mp4" and int(audio[0]["length"]) > 0
        assert entry.get("itunes_duration")


def episode_files(server: ServerHandle) -> list[Path]:
    return list(Path(server.server.config.data_path).rglob("podcast.m4a"))


def test_made_private_or_unpublished_drops_out(broadcasts: tuple[ServerHandle, dict[str, dict[str, Any]]]) -> None:
    server, streams = broadcasts
    manual = publish_manual(server, streams)
    audio_url = manual["audio_url"]
    assert server.get(audio_url)[0] == 200
    assert [p for p in episode_files(server) if streams["manual"]["id"] in p.parts]
    status, _ = server.api("PATCH", f"/api/streams/{streams['manual']['id']}", {"visibility": "MEMBERS_ONLY"})
    assert status == 200
    assert "Faith Works" not in text_of(server, "/library/default")
    assert manual["id"] not in text_of(server, "/library/default/feed.json")
    assert manual["id"] not in text_of(server, "/library/default/podcast.xml")
    assert server.get(audio_url)[0] == 404
    server.api("PATCH", f"/api/streams/{streams['manual']['id']}", {"visibility": "PUBLIC"})
    assert server.get(audio_url)[0] == 200
    assert server.api("DELETE", f"/api/library/{manual['id']}")[0] == 204
    assert server.get(audio_url)[0] == 404
    assert manual["id"] not in text_of(server, "/library/default/podcast.xml")
    assert server.api("GET", f"/api/library/{manual['id']}")[0] == 404
    # Unpublishing also deletes the episode's audio file (the recording itself stays).
    assert not [p for p in episode_files(server) if streams["manual"]["id"] in p.parts]
    assert server.get(streams["manual"]["recording"]["mp4_url"])[0] == 200


def test_deleted_recording_leaves_the_library(broadcasts: tuple[ServerHandle, dict[str, dict[str, Any]]]) -> None:
    server, streams = broadcasts
    auto = streams["auto"]
    feed_ids = [i["id"] for i in json.loads(text_of(server, "/library/default/feed.json"))["items"]]
    item = next(i for i in library(server) if i["recording_id"] == auto["recording"]["id"])
    assert item["id"] in feed_ids
    status, body = server.api("DELETE", f"/api/streams/{auto['id']}/recordings/{auto['recording']['id']}")
    assert status == 204, body
    assert item["id"] not in text_of(server, "/library/default/feed.json")
    assert item["id"] not in text_of(server, "/library/default/podcast.xml")
    assert "Grace Alone" not in text_of(server, "/library/default")


APPLE_WARNING = "Apple Podcasts needs an owner e-mail"


@pytest.mark.browser
def test_podcast_owner_email_from_the_console(broadcasts: tuple[ServerHandle, dict[str, dict[str, Any]]],
                                              browser: Any) -> None:
    """Without a contact e-mail the feed still validates and the org API and console warn; set in the console's
    Settings, it is the feed's itunes:owner e-mail."""
    from playwright.sync_api import expect

    server, streams = broadcasts
    publish_manual(server, streams)  # at least one episode
    status, org = server.api("GET", "/api/orgs/default")
    assert status == 200 and not org["settings"].get("contact_email")
    assert any(APPLE_WARNING in w for w in org["warnings"]), org["warnings"]
    xml = server.get("/library/default/podcast.xml")[2]
    assert validate_podcast(xml) == []
    assert validate_podcast(xml, "office@grace.example.org") != []  # the validator does look for it
    channel = ET.fromstring(xml).find("channel")
    assert channel is not None and channel.find(f"{ITUNES}owner/{ITUNES}email") is None

    for bad in ("not an e-mail", "office@grace", "office@grace.example.org\n", "<a@b.org>"):
        assert server.api("PATCH", "/api/orgs/default", {"settings": {"contact_email": bad}})[0] == 400, bad

    page = signed_in_page(browser, server, ADMIN_TOKEN)
    try:
        page.goto(f"{server.http}/admin#/settings")
        expect(page.locator("#podcast-warning")).to_contain_text(APPLE_WARNING)
        page.fill("#contact-email", "office@grace.example.org")
        page.get_by_role("button", name="Save contact e-mail").click()
        expect(page.locator("#podcast-warning")).to_be_hidden()
        screenshot(page, "settings-podcast-email")
    finally:
        page.context.close()
    status, org = server.api("GET", "/api/orgs/default")
    assert org["settings"]["contact_email"] == "office@grace.example.org" and org["warnings"] == []
    xml = server.get("/library/default/podcast.xml")[2]
    assert validate_podcast(xml, "office@grace.example.org") == []
    # Another organization's token can't set it (404, as every org route answers).
    other = server.server.db.create_org("elsewhere-r2", "Elsewhere")
    token = str(server.server.db.create_token(other["id"], "test")[1])
    assert server.api("PATCH", "/api/orgs/default", {"settings": {"contact_email": "x@evil.example"}},
                      token=token)[0] == 404


@pytest.mark.browser
def test_console_checkbox_auto_publishes_the_next_broadcast(
        broadcasts: tuple[ServerHandle, dict[str, dict[str, Any]]], browser: Any) -> None:
    """Ticking "Publish to the library when the service ends" in the console's stream edit form makes the next
    ended broadcast appear in the library's JSON feed, with nobody publishing it."""
    from playwright.sync_api import expect

    server, _ = broadcasts
    status, stream = server.api("POST", "/api/streams", {"title": "Ticked Sunday"})
    assert status == 201 and stream["library_auto_publish"] is False
    page = signed_in_page(browser, server, ADMIN_TOKEN)
    try:
        page.goto(f"{server.http}/admin#/streams")
        page.get_by_role("button", name="Edit Ticked Sunday").click()
        box = page.locator("#edit-library_auto_publish")
        expect(box).not_to_be_checked()
        box.check()
        page.get_by_role("button", name="Save changes").click()
        wait_for(lambda: server.api("GET", f"/api/streams/{stream['id']}")[1]["library_auto_publish"], 30,
                 "the console's save")
        screenshot(page, "stream-library-auto-publish")
    finally:
        page.context.close()

    publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=3.0)
    publisher.join(timeout=60)
    assert publisher.finished and publisher.error is None, publisher.error
    assert server.api("POST", f"/api/streams/{stream['id']}/end")[0] == 200

    def in_feed() -> dict[str, Any] | None:
        feed = json.loads(text_of(server, "/library/default/feed.json"))
        return next((i for i in feed["items"] if i["title"] == "Ticked Sunday"), None)
    entry = wait_for(in_feed, 90, "the ticked stream's broadcast in the library feed")
    recording = server.api("GET", f"/api/streams/{stream['id']}")[1]["recording"]
    item = next(i for i in library(server) if i["stream_id"] == stream["id"])
    assert item["recording_id"] == recording["id"] and entry["id"] == item["id"]
