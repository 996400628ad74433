"""The watch page of a recording in Chromium: its chat comes back at the moments it was sent (and goes again when
the viewer seeks back), a message a moderator hid never shows, hovering the seek bar shows the storyboard's tile
for the time under the pointer, and the recording's poster stands in the video before playback.

A giving moment a moderator sent at a known time of the broadcast comes back in the replay (API and page) at that
time, and a message hidden from the console's Recordings page never shows to an anonymous viewer.

The broadcast (real RTMP from another process, chat from real WebSocket clients at known wall times) is the one
tests/test_thumbnails_replay.py makes, plus a moderator's giving moment; this module gets its own."""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import re
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.browser import module_browser
from tests.chat_client import connect, guest_session
from tests.console_fixture import screenshot, signed_in_page
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config
from tests.media_source import publish_numbered
from tests.test_thumbnails_replay import FPS, SECONDS, WIDTH, Broadcast, chat_during, first_frame_number, parse_vtt

pytestmark = pytest.mark.media

FIRST, HIDDEN = "Good morning church", "Amen to that"
GIVING_AT = 6.5  # seconds into the broadcast (the guests write at 4 s and 9 s)
GIVING = {"title": "Giving moment", "text": "Support the food bank", "url": "https://give.example.org/food"}
WAIT_MS = 30000


async def giving_during(server: ServerHandle, stream_id: str, started: list[float]) -> float:
    """A moderator sends a giving moment (an announcement with a card) GIVING_AT s in; returns when."""
    async with guest_session() as session:
        while not started:
            await asyncio.sleep(0.05)
        moderator = await connect(session, server, stream_id, token=ADMIN_TOKEN)
        await asyncio.sleep(max(0.0, started[0] + GIVING_AT - time.time()))
        at = time.time()
        await moderator.send("stream:announcement", {"card": GIVING})
        await moderator.expect("stream:announcement")
        await moderator.ws.close()
    return at


async def chat_and_giving(server: ServerHandle, stream_id: str, started: list[float]) -> dict[str, float]:
    sent, giving_at = await asyncio.gather(chat_during(server, stream_id, started),
                                           giving_during(server, stream_id, started))
    return {**sent, "giving": giving_at}


@pytest.fixture(scope="module")
def broadcast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broadcast]:
    """As tests/test_thumbnails_replay.py's, with a giving moment (its wall time in sent["giving"])."""
    server = run_server(small_config(tmp_path_factory.mktemp("data")))
    try:
        stream = server.create_stream("Replay Sunday")
        ctx = multiprocessing.get_context("spawn")
        queue: "multiprocessing.Queue[float]" = ctx.Queue()
        publisher = ctx.Process(target=publish_numbered, args=(server.rtmp_url(stream["stream_key"]), SECONDS, queue, 0, "gradient"),
                                daemon=True)
        publisher.start()
        started = [queue.get(timeout=60)]
        sent = asyncio.run(asyncio.wait_for(chat_and_giving(server, stream["id"], started), 60))
        publisher.join(60)
        assert publisher.exitcode == 0
        assert server.api("POST", f"/api/streams/{stream['id']}/end")[0] == 200
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            body = server.api("GET", f"/api/streams/{stream['id']}")[1]
            if body["status"] == "ENDED" and body["recording"] and body["recording"]["status"] == "READY":
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the recording was not saved")
        yield Broadcast(server, stream, sent, started[0])
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


def open_watch_page(browser: Any, server: ServerHandle, stream_id: str) -> tuple[Any, list[str]]:
    """The recording's watch page once the replay is loaded and the player knows the recording's length; paused.
    Also the URLs of every WebSocket the page opened."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(f"{server.http}/watch/{stream_id}")
    page.wait_for_function(
        "() => window.player && window.player.video.readyState >= 1 && !document.getElementById('seek').disabled",
        timeout=WAIT_MS)
    page.evaluate("() => window.player.video.pause()")
    return page, sockets


def seek(page: Any, seconds: float) -> None:
    page.evaluate("""(t) => new Promise((done) => {
        const video = window.player.video;
        video.addEventListener('seeked', () => done(), { once: true });
        video.currentTime = t;
    })""", seconds)


def shown_texts(page: Any) -> list[str]:
    return list(page.eval_on_selector_all("#messages li .text", "nodes => nodes.map(n => n.textContent.trim())"))


def replay_times(server: ServerHandle, base: str) -> dict[str, float]:
    """Each message's place on the recording's timeline as the replay API gives it to the page (staff view: hidden
    ones too). That placement is checked against the publisher's own clock in test_thumbnails_replay.py; here
    the page is under test: does it show each message when playback reaches that place, and only then."""
    status, replay = server.api("GET", base)
    assert status == 200, replay
    return {i["text"]: float(i["media_time"]) for i in replay["items"] if i["kind"] == "message"}


def test_replay_shows_chat_as_playback_reaches_it(broadcast: Broadcast, browser: Any, tmp_path: Path) -> None:
    server, stream, recording = broadcast.server, broadcast.stream, broadcast.recording
    base = f"/api/streams/{stream['id']}/recordings/{recording['id']}/chat-replay"
    assert server.api("POST", f"{base}/{broadcast.sent['id:' + HIDDEN]}/hide")[0] == 200
    times = replay_times(server, base)
    at, hidden_at = times[FIRST], times[HIDDEN]
    assert 0.5 < at < hidden_at < recording["duration"] - 1.0, (times, recording["duration"])

    page, sockets = open_watch_page(browser, server, stream["id"])
    try:
        page.wait_for_function("() => document.getElementById('room').dataset.replay === 'ready'", timeout=WAIT_MS)
        assert page.inner_text(".room-header").strip() == "Chat replay"
        assert page.query_selector("#chat-form") is None  # nothing to say into an ended broadcast

        # Before its moment: not there.
        seek(page, max(0.0, at - 2.0))
        page.evaluate("() => window.room.sync()")
        assert FIRST not in shown_texts(page)

        # Playing on: it appears when the playhead reaches its moment; note the playhead then.
        page.evaluate(f"""() => {{
            const list = document.getElementById('messages');
            new MutationObserver(() => {{
                if (window.revealedAt === undefined && list.textContent.includes({FIRST!r}))
                    window.revealedAt = window.player.video.currentTime;
            }}).observe(list, {{ childList: true, subtree: true }});
            window.player.video.muted = true;
            return window.player.video.play();
        }}""")
        page.wait_for_function("() => window.revealedAt !== undefined", timeout=WAIT_MS)
        revealed = float(page.evaluate("() => window.revealedAt"))
        page.evaluate("() => window.player.video.pause()")
        # Not before its place; soon after (the page looks every 250 ms; the bound only says "not at the end").
        assert at - 0.05 <= revealed <= at + 2.0, (revealed, at)
        assert shown_texts(page).count(FIRST) == 1

        # Seeking back before it: gone again.
        seek(page, 1.0)
        page.wait_for_function(f"() => !document.getElementById('messages').textContent.includes({FIRST!r})",
                               timeout=WAIT_MS)

        # Jumping past both: the first comes back, the hidden one never shows.
        seek(page, recording["duration"] - 0.5)
        page.wait_for_function(f"() => document.getElementById('messages').textContent.includes({FIRST!r})",
                               timeout=WAIT_MS)
        assert HIDDEN not in shown_texts(page)
        page.screenshot(path=str(tmp_path / "replay.png"))
        assert not [url for url in sockets if "/ws/" in url], sockets  # replay opens no room socket

        # The recording's own poster, as no branding poster is set: a picture of the source's size.
        poster = page.get_attribute("#video", "poster") or ""
        assert poster.endswith(f"/{recording['poster_url'].split('/hls/', 1)[1]}"), poster
        width = page.evaluate("""(src) => new Promise((done) => {
            const image = new Image();
            image.onload = () => done(image.naturalWidth);
            image.onerror = () => done(0);
            image.src = src;
        })""", poster)
        assert width == WIDTH
    finally:
        page.close()
    # Unhidden, the replay would have had it: it was hidden by the flag, not lost.
    assert server.api("POST", f"{base}/{broadcast.sent['id:' + HIDDEN]}/unhide")[0] == 200
    status, replay = server.api("GET", base, token=None)
    assert status == 200 and HIDDEN in [i.get("text") for i in replay["items"]]


def test_hovering_the_seek_bar_shows_the_storyboard_tile(broadcast: Broadcast, browser: Any, tmp_path: Path) -> None:
    server, stream, recording = broadcast.server, broadcast.stream, broadcast.recording
    status, _, vtt = server.get(recording["storyboard_url"])
    assert status == 200
    cues = parse_vtt(vtt.decode())  # read here, independently of the page's parser
    assert len(cues) >= 5
    duration = cues[-1][1]

    page, _ = open_watch_page(browser, server, stream["id"])
    try:
        page.wait_for_function("() => Number(document.querySelector('.storyboard').dataset.cues) > 0",
                               timeout=WAIT_MS)
        box = page.locator("#seek").bounding_box()
        assert box is not None
        seen = set()
        for index in (len(cues) // 4, len(cues) // 2, 3 * len(cues) // 4):
            start, end, uri, (x, y, w, h) = cues[index]
            moment = (start + end) / 2  # the middle of the cue: a pixel of pointer either way stays inside it
            page.mouse.move(box["x"] + box["width"] * moment / duration, box["y"] + box["height"] / 2)
            page.wait_for_function("() => !document.querySelector('.storyboard').hidden", timeout=WAIT_MS)
            tile = page.evaluate("""() => {
                const image = getComputedStyle(document.querySelector('.storyboard-image'));
                return { x: image.backgroundPositionX, y: image.backgroundPositionY, w: image.width,
                         h: image.height, url: image.backgroundImage,
                         label: document.querySelector('.storyboard-time').textContent };
            }""")
            assert (-float(tile["x"][:-2]), -float(tile["y"][:-2])) == (x, y), (tile, cues[index])
            assert (tile["w"], tile["h"]) == (f"{w}px", f"{h}px"), tile
            assert re.search(rf"/{re.escape(uri)}\"?\)$", tile["url"]), tile
            minutes, seconds = tile["label"].split(":")
            assert abs(int(minutes) * 60 + int(seconds) - moment) <= 1, (tile, moment)
            seen.add((x, y))
        assert len(seen) == 3
        # The sheet the tiles are cut from loads, and holds the last tile.
        sprite = re.search(r'url\("?([^")]+)"?\)', tile["url"])
        assert sprite is not None
        size = page.evaluate("""(src) => new Promise((done) => {
            const image = new Image();
            image.onload = () => done([image.naturalWidth, image.naturalHeight]);
            image.onerror = () => done([0, 0]);
            image.src = src;
        })""", sprite.group(1))
        assert size[0] >= max(c[3][0] + c[3][2] for c in cues) and size[1] >= max(c[3][1] + c[3][3] for c in cues)
        page.screenshot(path=str(tmp_path / "storyboard.png"))
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] - 200)  # off the bar: the preview goes
        page.wait_for_function("() => document.querySelector('.storyboard').hidden", timeout=WAIT_MS)
    finally:
        page.close()


def test_a_private_recording_replays_with_its_token_only(broadcast: Broadcast, browser: Any) -> None:
    server, stream = broadcast.server, broadcast.stream
    assert server.api("PATCH", f"/api/streams/{stream['id']}", {"visibility": "PRIVATE"})[0] == 200
    try:
        status, grant = server.api("POST", f"/api/streams/{stream['id']}/playback-tokens", {})
        assert status == 201
        page = browser.new_page()
        try:
            page.goto(f"{server.http}/watch/{stream['id']}")  # no token: nothing of the recording
            assert page.query_selector("#room") is None
            assert not page.get_attribute("#video", "poster")
            assert page.evaluate("() => JSON.parse(document.getElementById('player-config').textContent)"
                                 ".chat_replay_url") is None
            # With the token: replay, storyboard and poster all load (each carries the token).
            page.goto(f"{server.http}/watch/{stream['id']}?token={grant['token']}")
            page.wait_for_function("() => document.getElementById('room').dataset.replay === 'ready'"
                                   " && Number(document.querySelector('.storyboard').dataset.cues) > 0",
                                   timeout=WAIT_MS)
            assert FIRST in page.evaluate("""() => fetch(JSON.parse(document.getElementById('player-config')
                .textContent).chat_replay_url).then(r => r.text())""")
            poster = page.get_attribute("#video", "poster") or ""
            assert "token=" in poster
            assert server.get(poster.replace(f"?token={grant['token']}", ""))[0] in (401, 403, 404)
            width = page.evaluate("""(src) => new Promise((done) => {
                const image = new Image();
                image.onload = () => done(image.naturalWidth);
                image.onerror = () => done(0);
                image.src = src;
            })""", poster)
            assert width == WIDTH
        finally:
            page.close()
    finally:
        assert server.api("PATCH", f"/api/streams/{stream['id']}", {"visibility": "PUBLIC"})[0] == 200


def test_giving_moment_replays_at_its_time(broadcast: Broadcast, browser: Any, tmp_path: Path) -> None:
    server, stream, recording = broadcast.server, broadcast.stream, broadcast.recording
    status, _, body = server.get(recording["chat_replay_url"])  # anonymous: the stream is public
    assert status == 200, body
    moments = [i for i in json.loads(body)["items"] if i["kind"] == "giving"]
    assert len(moments) == 1, moments
    moment = moments[0]
    assert moment["card"] == GIVING and moment["type"] == "ANNOUNCEMENT"
    # Independently of the server's timeline: the publisher was at frame (sent - frame 0's wall time) * FPS when
    # the moderator sent it, and the recording begins at frame `first` (read from its MP4's first picture).
    first = first_frame_number(server, recording["mp4_url"])
    expected = (broadcast.sent["giving"] - broadcast.started) - first / FPS
    assert abs(moment["media_time"] - expected) <= 1.0, (moment, expected)
    at = float(moment["media_time"])

    page, _ = open_watch_page(browser, server, stream["id"])
    try:
        page.wait_for_function("() => document.getElementById('room').dataset.replay === 'ready'", timeout=WAIT_MS)
        seek(page, max(0.0, at - 2.0))
        page.evaluate("() => window.room.sync()")
        assert page.is_hidden("#moment")  # not before its time
        page.evaluate("""() => {
            const card = document.getElementById('moment');
            new MutationObserver(() => {
                if (window.cardAt === undefined && !card.hidden) window.cardAt = window.player.video.currentTime;
            }).observe(card, { attributes: true, childList: true });
            window.player.video.muted = true;
            return window.player.video.play();
        }""")
        page.wait_for_function("() => window.cardAt !== undefined", timeout=WAIT_MS)
        shown_at = float(page.evaluate("() => window.cardAt"))
        page.evaluate("() => window.player.video.pause()")
        assert at - 0.05 <= shown_at <= at + 2.0, (shown_at, at)
        assert GIVING["title"] in page.inner_text("#moment") and GIVING["text"] in page.inner_text("#moment")
        assert page.get_attribute("#moment a.give", "href") == GIVING["url"]
        assert GIVING["title"] in shown_texts(page)  # its line in the chat, as in the live room
        page.screenshot(path=str(tmp_path / "giving.png"))
        seek(page, 0.5)  # back before it: the card goes
        page.wait_for_function("() => document.getElementById('moment').hidden", timeout=WAIT_MS)
    finally:
        page.close()


def test_console_hides_a_message_from_the_replay(broadcast: Broadcast, browser: Any) -> None:
    server, stream, recording = broadcast.server, broadcast.stream, broadcast.recording
    message_id = str(broadcast.sent["id:" + HIDDEN])
    console = signed_in_page(browser, server, ADMIN_TOKEN)
    try:
        console.goto(f"{server.http}/admin#/recordings")
        card = console.locator(f"article[data-recording-id='{recording['id']}']")
        card.get_by_role("button", name="Chat replay").click()
        row = card.locator(f"li[data-message-id='{message_id}']")
        row.get_by_role("button", name=re.compile("^Hide")).click()
        row.get_by_role("button", name=re.compile("^Unhide")).wait_for(timeout=WAIT_MS)
        screenshot(console, "recordings-chat-replay")
        _, audit = server.api("GET", f"/api/streams/{stream['id']}/chat/audit")
        last = audit["entries"][-1]
        assert (last["action"], last["target"]) == ("replay_hide", message_id), last

        viewer, _ = open_watch_page(browser, server, stream["id"])  # a context of its own: no session
        try:
            viewer.wait_for_function("() => document.getElementById('room').dataset.replay === 'ready'",
                                     timeout=WAIT_MS)
            seek(viewer, recording["duration"] - 0.5)  # past every message
            viewer.wait_for_function(f"() => document.getElementById('messages').textContent.includes({FIRST!r})",
                                     timeout=WAIT_MS)
            assert HIDDEN not in viewer.inner_text("#room")
            assert HIDDEN not in viewer.evaluate(
                "() => fetch(JSON.parse(document.getElementById('player-config').textContent).chat_replay_url)"
                ".then(r => r.text())")
        finally:
            viewer.close()

        row.get_by_role("button", name=re.compile("^Unhide")).click()
        row.get_by_role("button", name=re.compile("^Hide")).wait_for(timeout=WAIT_MS)
        _, audit = server.api("GET", f"/api/streams/{stream['id']}/chat/audit")
        assert audit["entries"][-1]["action"] == "replay_unhide"
        base = f"/api/streams/{stream['id']}/recordings/{recording['id']}/chat-replay"
        assert HIDDEN in [i.get("text") for i in server.api("GET", base, token=None)[1]["items"]]
    finally:
        console.context.close()
