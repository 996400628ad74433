"""A Mux stream's watch page in Chromium: it plays the platform's video, with our chat and giving moments beside it.

The Mux stand-in (tests/mux_standin.py) plays stream.mux.com too (tests/platform_media.py): a real 320x180 HLS with
the frame number drawn into every picture, a signed playback id's files only with a valid RS256 playback JWT,
checked with the public key. The stream goes live through Mux's signed webhooks. What is checked is measured
outside the page's own code: the stand-in's log of the media it served (and the JWT claims it verified), the
frame number read from a canvas snapshot of the <video> (bench/frame_code.py), a chat message sent by a second,
real WebSocket client, and a giving moment a moderator sends over the room's socket.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import frame_code
from tests.browser import module_browser
from tests.chat_client import connect, guest_session
from tests.console_fixture import signed_in_page
from tests.mux_standin import MuxStandIn
from tests.platform_media import FPS, SECONDS, MuxMedia, Served, start_mux_with_media
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config
from tests.waiting import until

MUX_ID, MUX_SECRET, MUX_HOOK_SECRET = "watch-token-id", "watch-token-secret", "watch-hook-secret"
MUX_KEY_ID = "watch-kid"
GIVING = {"title": "Giving moment", "text": "Support the food bank", "url": "https://give.example.org/food"}
WAIT_MS = 30000


class Env:
    def __init__(self, server: ServerHandle, standin: MuxStandIn, media: MuxMedia, source: Path) -> None:
        self.server, self.standin, self.media, self.source = server, standin, media, source


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    mux = start_mux_with_media(tmp_path_factory.mktemp("source"), MUX_ID, MUX_SECRET, MUX_HOOK_SECRET)
    source, media, standin = mux.source, mux.media, mux.standin
    config = small_config(tmp_path_factory.mktemp("data"))
    mux.configure(config, MUX_KEY_ID)  # the API and stream.mux.com, both stand-ins
    server = run_server(config)
    try:
        yield Env(server, standin, media, source)
    finally:
        server.stop()
        standin.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


# -- Mux's side ------------------------------------------------------------------------------------------------
def remote_of(env: Env, stream_id: str) -> str:
    [remote] = [sid for sid, s in env.standin.streams.items() if s.data.get("passthrough") == stream_id]
    return remote


def live_playback_id(env: Env, stream_id: str) -> str:
    return str(env.standin.streams[remote_of(env, stream_id)].data["playback_ids"][0]["id"])


def live_mux_stream(env: Env, title: str) -> dict[str, Any]:
    """A public Mux stream, live: an encoder reaches Mux, Mux tells us through its signed webhooks (as
    tests/test_backends.py's Mux driver), and stream.mux.com plays the source under its live playback id."""
    status, created = env.server.api("POST", "/api/streams", {"title": title, "backend": "mux"})
    assert status == 201, created
    stream_id = created["id"]
    standin, remote = env.standin, remote_of(env, stream_id)
    standin.encoder_connects(remote)
    for kind in ("video.live_stream.connected", "video.live_stream.active"):
        status, answer = standin.send(f"{env.server.http}/hooks/mux", standin.event(kind, standin.streams[remote].data))
        assert status == 200, answer
    until(lambda: env.server.api("GET", f"/api/streams/{stream_id}")[1]["status"] == "LIVE", 15, "the stream live")
    # The live playlist is the source's HLS, VOD-style (ENDLIST): hls.js plays it the same way, and what is
    # checked here is whose media the page plays, not live-edge handling (tests/test_player_page.py does that).
    env.media.served[live_playback_id(env, stream_id)] = Served(env.source, signed=False)
    return dict(created)


# -- the page ----------------------------------------------------------------------------------------------------
def page_config(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("() => JSON.parse(document.getElementById('player-config').textContent)"))


def wait_playing(page: Any) -> float:
    """Once the player shows pictures and its clock has moved: the playhead then."""
    page.wait_for_function("() => window.player && window.player.video.readyState >= 2"
                           " && window.player.video.currentTime > 0.3", timeout=WAIT_MS)
    return float(page.evaluate("() => window.player.video.currentTime"))


def shown_frame(page: Any) -> tuple[int | None, float]:
    """Pause, copy the picture on screen to a canvas and read its frame number from the luma (independently of
    the player); also the playhead it was taken at."""
    width, height, at = page.evaluate("""async () => {
        const video = window.player.video;
        video.pause();
        await new Promise((done) => setTimeout(done, 200));   // the paused picture settles on screen
        const canvas = document.createElement('canvas');
        canvas.id = 'snapshot';
        canvas.width = video.videoWidth; canvas.height = video.videoHeight;
        canvas.getContext('2d').drawImage(video, 0, 0);
        document.body.append(canvas);
        return [canvas.width, canvas.height, video.currentTime];
    }""")
    luma = page.evaluate("""() => {
        const canvas = document.getElementById('snapshot');
        const rgba = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        const out = new Array(rgba.length / 4);
        for (let i = 0; i < out.length; i++)
            out[i] = Math.round(0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2]);
        canvas.remove();
        return out;
    }""")
    assert (width, height) == (320, 180)
    return frame_code.read(np.array(luma, dtype=np.uint8).reshape(height, width)), float(at)


def check_frame(page: Any) -> int:
    number, at = shown_frame(page)
    assert number is not None and 0 <= number < int(SECONDS * FPS), number
    # The picture is the source's frame for the playhead (hls.js starts the timeline at the first frame).
    assert abs(number - at * FPS) <= 3, (number, at)
    return number


def room_send(env: Env, stream_id: str, text: str) -> None:
    """A guest writes in the room from a second browser (a real WebSocket client); a moderator sends a giving
    moment (an announcement with a card)."""
    async def run() -> None:
        async with guest_session() as guest_session_, guest_session() as staff_session:
            guest = await connect(guest_session_, env.server, stream_id, name="Ruth")
            await guest.send("chat:message", {"text": text})
            await guest.expect("chat:message", lambda d: d["text"] == text, timeout=15)
            moderator = await connect(staff_session, env.server, stream_id, token=ADMIN_TOKEN)
            await moderator.send("stream:announcement", {"card": GIVING})
            await moderator.expect("stream:announcement", timeout=15)
            await guest.ws.close()
            await moderator.ws.close()
    # In a thread of its own: sync Playwright keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, asyncio.wait_for(run(), 30)).result()


def check_room(env: Env, page: Any, stream_id: str, text: str) -> None:
    page.wait_for_function("() => window.roomHistory > 0", timeout=WAIT_MS)  # the page's socket is in the room
    room_send(env, stream_id, text)
    page.wait_for_function(f"() => document.getElementById('messages').textContent.includes({text!r})",
                           timeout=WAIT_MS)
    page.wait_for_function("() => !document.getElementById('moment').hidden", timeout=WAIT_MS)
    card = page.inner_text("#moment")
    assert GIVING["title"] in card and GIVING["text"] in card, card
    assert page.get_attribute("#moment a.give", "href") == GIVING["url"]


def open_watch(context_or_browser: Any, env: Env, stream_id: str) -> tuple[Any, list[str]]:
    """The stream's watch page, and every URL it requested (playlists, segments: hls.js's XHRs)."""
    page = context_or_browser.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    # Counts the chat:history frames the room's socket got (the room is joined then), seen from outside chat.js.
    page.add_init_script("""(() => {
        window.roomHistory = 0;
        const Native = window.WebSocket;
        window.WebSocket = function (...args) {
            const socket = new Native(...args);
            socket.addEventListener('message', (event) => {
                if (String(event.data).includes('"chat:history"')) window.roomHistory += 1;
            });
            return socket;
        };
        window.WebSocket.prototype = Native.prototype;
        Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
    })()""")
    page.goto(f"{env.server.http}/watch/{stream_id}")
    return page, requested


# -- the tests -----------------------------------------------------------------------------------------------------
def test_public_mux_stream_plays_mux_video_with_our_chat_and_giving(env: Env, browser: Any, tmp_path: Path) -> None:
    sid = live_mux_stream(env, "Sunday on Mux")["id"]
    pid = live_playback_id(env, sid)
    before = len(env.media.fetched)

    page, requested = open_watch(browser, env, sid)
    try:
        assert page_config(page)["playback_url"] == f"{env.standin.url}/{pid}.m3u8"
        first = wait_playing(page)
        page.wait_for_function(f"() => window.player.video.currentTime > {first + 0.5}", timeout=WAIT_MS)
        # The media came from "stream.mux.com": Chromium asked the stand-in for the playlists and segments, and the
        # stand-in served them (its own log); nothing of the video came from this server's /hls.
        assert page.evaluate("() => window.player.hls.url") == f"{env.standin.url}/{pid}.m3u8"
        assert f"{env.standin.url}/{pid}/0.ts" in requested, requested
        assert not [u for u in requested if "/hls/" in u], requested
        served = [(f.pid, f.name) for f in env.media.fetched[before:]]
        assert (pid, f"{pid}.m3u8") in served and (pid, "rendition.m3u8") in served and (pid, "0.ts") in served
        check_frame(page)

        check_room(env, page, sid, "Hello from the back row")
        page.screenshot(path=str(tmp_path / "mux-watch.png"))
    finally:
        page.close()


def test_private_mux_stream_plays_signed_for_a_volunteer_only(env: Env, browser: Any, tmp_path: Path) -> None:
    stream = live_mux_stream(env, "Members' evening on Mux")
    sid = stream["id"]
    old_pid = live_playback_id(env, sid)
    status, view = env.server.api("PATCH", f"/api/streams/{sid}", {"visibility": "PRIVATE"})
    assert status == 200, view
    pid = live_playback_id(env, sid)
    live = env.standin.streams[remote_of(env, sid)].data
    assert pid != old_pid and [p["policy"] for p in live["playback_ids"]] == ["signed"]
    # Mux removed the public playback id; stream.mux.com serves the signed one only with a valid JWT.
    env.media.served.pop(old_pid)
    env.media.served[pid] = Served(env.source, signed=True)
    refused = env.media.refused

    # A stranger: a locked page that names no URL and plays nothing; the stand-in was never asked.
    stranger = browser.new_context()
    try:
        page, requested = open_watch(stranger, env, sid)
        config = page_config(page)
        assert config["locked"] is True and config["playback_url"] == ""
        assert env.standin.url not in page.content() and pid not in page.content()
        page.wait_for_function("() => document.getElementById('status').textContent.includes('private')",
                               timeout=WAIT_MS)
        assert page.evaluate("() => [window.player === undefined, document.getElementById('video').readyState,"
                             " document.getElementById('video').currentSrc]") == [True, 0, ""]
        assert not [u for u in requested if u.startswith(env.standin.url)], requested
        assert page.query_selector("#messages") is None  # nor the room
    finally:
        stranger.close()

    # Another church's volunteer, signed in to the console: the same locked page.
    db = env.server.server.db
    other = db.org("elsewhere") or db.create_org("elsewhere", "Elsewhere")
    outsider = signed_in_page(browser, env.server, db.create_token(other["id"], "outsider")[1])
    try:
        page, requested = open_watch(outsider.context, env, sid)
        assert page_config(page)["playback_url"] == "" and pid not in page.content()
        assert not [u for u in requested if u.startswith(env.standin.url)], requested
    finally:
        outsider.context.close()

    # The church's own volunteer, signed in to the console: the page plays Mux's signed playback.
    org = db.org("default")
    assert org is not None and stream["org_id"] == org["id"]
    volunteer = signed_in_page(browser, env.server, db.create_token(org["id"], "volunteer")[1])
    before = len(env.media.fetched)
    try:
        page, requested = open_watch(volunteer.context, env, sid)
        url = page_config(page)["playback_url"]
        assert url.startswith(f"{env.standin.url}/{pid}.m3u8?token="), url
        wait_playing(page)
        # The stand-in verified a JWT (RS256, our public key, audience "v") naming this playback id on the
        # playlist request and on the segments, and refused nothing.
        fetched = env.media.fetched[before:]
        master = [f for f in fetched if f.name == f"{pid}.m3u8"]
        assert master and all(f.pid == pid and f.claims and f.claims["sub"] == pid for f in master), master
        segments = [f for f in fetched if f.name.endswith(".ts")]
        assert segments and all(f.claims and f.claims["sub"] == pid for f in segments), segments
        assert env.media.refused == refused
        assert any(u.startswith(f"{env.standin.url}/{pid}/0.ts?token=") for u in requested), requested
        check_frame(page)
        # The volunteer is in the private stream's room too (the console session opens it, as the video).
        page.wait_for_function("() => window.roomHistory > 0", timeout=WAIT_MS)
        page.screenshot(path=str(tmp_path / "mux-private-watch.png"))
    finally:
        volunteer.context.close()
