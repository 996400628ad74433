"""Who may enter a room: private and members-only rooms over WebSocket and SSE, the auth frame, and the
per-browser viewer token (real clients against a running server)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest
from yarl import URL

from mediaserver.access import member_scope
from mediaserver.chat.room import ChatLimits
from mediaserver.playback_tokens import PlaybackSigner
from tests.chat_client import Client, connect, guest_session, run
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHandle]:
    handle = run_server(small_config(tmp_path / "data"))
    handle.server.chat.limits = ChatLimits(auth_timeout=1.0)  # rooms opened from now on wait 1 s for auth
    yield handle
    handle.stop()


def private_stream(server: ServerHandle, visibility: str = "PRIVATE") -> dict[str, Any]:
    status, stream = server.api("POST", "/api/streams", {"title": "Prayer night", "visibility": visibility})
    assert status == 201, stream
    return stream


def playback_token(server: ServerHandle, stream_id: str) -> str:
    status, body = server.api("POST", f"/api/streams/{stream_id}/playback-tokens", {})
    assert status == 201, body
    return str(body["token"])


async def say_as_admin(server: ServerHandle, stream_id: str, text: str) -> None:
    async with aiohttp.ClientSession() as session:
        admin = await connect(session, server, stream_id, token=ADMIN_TOKEN, name="Pastor Jim")
        await admin.send("chat:message", {"text": text, "type": "PRAYER_REQUEST"})
        await admin.expect("chat:message", lambda d: d["text"] == text)


def test_a_private_room_tells_nothing_without_credentials(server: ServerHandle) -> None:
    stream = private_stream(server)
    run(say_as_admin(server, stream["id"], "Please pray for my sister's surgery"))

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            # SSE: 401 without a token, 403 with a bad one, JSON either way.
            sse = await session.get(f"{server.http}/sse/streams/{stream['id']}")
            assert sse.status == 401 and (await sse.json())["error"]
            sse = await session.get(f"{server.http}/sse/streams/{stream['id']}", params={"token": "forged.x"})
            assert sse.status == 403
            # A bad token in the URL: refused before the upgrade.
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{server.http}/ws/streams/{stream['id']}", params={"token": "nope"})
            assert refused.value.status == 403
            # No token: the socket opens, waits for the auth frame, then closes; no history ever.
            silent = Client(await session.ws_connect(f"{server.http}/ws/streams/{stream['id']}"))
            code, frames = await silent.closed()
            assert code == 4401 and [f["event"] for f in frames] == ["chat:error"]
            assert frames[0]["data"]["code"] == "auth_required"
            # Speaking first is no way in either.
            eager = Client(await session.ws_connect(f"{server.http}/ws/streams/{stream['id']}"))
            await eager.send("chat:message", {"text": "let me in"})
            code, frames = await eager.closed()
            assert code == 4401 and [f["data"]["code"] for f in frames] == ["auth_required"]
            # A playback token for another stream is a 403 in the frame too.
            other = server.create_stream("Other")
            wrong = Client(await session.ws_connect(f"{server.http}/ws/streams/{stream['id']}"))
            await wrong.send("auth", {"token": playback_token(server, other["id"])})
            code, frames = await wrong.closed()
            assert code == 4403 and frames[0]["data"]["code"] == "forbidden"
            assert not any("surgery" in json.dumps(f) for f in frames)

    run(scenario())


def test_the_auth_frame_opens_a_private_room(server: ServerHandle) -> None:
    stream = private_stream(server)
    token = playback_token(server, stream["id"])
    run(say_as_admin(server, stream["id"], "Welcome to prayer night"))

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{server.http}/ws/streams/{stream['id']}", params={"name": "Ann"})
            ann = Client(ws)
            await ann.send("auth", {"token": token})
            history = await ann.expect("chat:history")
            assert [m["text"] for m in history["messages"]] == ["Welcome to prayer night"]
            await ann.send("chat:message", {"text": "Thank you all"})
            assert (await ann.expect("chat:message"))["author"] == "Ann"
            # ?token= keeps working for old clients; SSE takes it too.
            old = await connect(session, server, stream["id"], token=token, name="Bob")
            assert old.joined()["role"] == "guest"
            sse = await session.get(f"{server.http}/sse/streams/{stream['id']}", params={"token": token})
            assert sse.status == 200 and sse.headers["Content-Type"].startswith("text/event-stream")
            sse.close()
            # Staff put their token in the frame, not in the URL (proxy logs); they get the review queue.
            mod = Client(await session.ws_connect(f"{server.http}/ws/streams/{stream['id']}",
                                                  params={"name": "Pastor Jim"}))
            await mod.send("auth", {"token": ADMIN_TOKEN})
            me = await mod.expect("stream:join")
            assert me["role"] == "admin" and me["name"] == "Pastor Jim" and "viewer_token" not in me
            history = await mod.expect("chat:history")
            assert [m["text"] for m in history["messages"]][0] == "Welcome to prayer night"

    run(scenario())


def test_members_only_rooms_take_member_tokens_of_their_own_church(server: ServerHandle) -> None:
    stream = private_stream(server, "MEMBERS_ONLY")
    status, member = server.api("POST", "/api/orgs/default/member-tokens", {"name": "Ruth Smith"})
    assert status == 201
    other_org = server.server.db.create_org("elsewhere", "Elsewhere")
    # A member token another church issued (same server, so the same signing secret).
    outsider_token, _ = PlaybackSigner.from_data_dir(server.server.config.data_path).issue(
        member_scope(other_org["id"]), 3600, "Visitor")

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ruth = Client(await session.ws_connect(f"{server.http}/ws/streams/{stream['id']}"))
            await ruth.send("auth", {"token": member["token"]})
            me = await ruth.expect("stream:join")
            assert (me["role"], me["name"]) == ("member", "Ruth Smith")
            stranger = Client(await session.ws_connect(f"{server.http}/ws/streams/{stream['id']}"))
            await stranger.send("auth", {"token": outsider_token})
            code, frames = await stranger.closed()
            assert code == 4403 and frames[0]["data"]["code"] == "forbidden"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{server.http}/ws/streams/{stream['id']}", params={"token": outsider_token})
            assert refused.value.status == 403

    run(scenario())


def test_the_auth_frame_raises_a_guest_on_a_public_room(server: ServerHandle) -> None:
    server.server.db.update_org("default", settings=json.dumps({"chat": {"hold_for_review": True}}))
    stream = server.create_stream()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            guest = await connect(session, server, stream["id"], name="Zoe")
            await guest.send("chat:message", {"text": "first!"})
            assert (await guest.expect("chat:moderated"))["status"] == "HELD"
            jim = await connect(session, server, stream["id"], name="Pastor Jim")
            assert jim.joined()["role"] == "guest" and jim.joined()["name"].startswith("Guest ")
            await jim.send("auth", {"token": "not-a-token"})
            assert (await jim.expect("chat:error"))["code"] == "auth_failed"
            jim.frames.clear()
            await jim.send("auth", {"token": ADMIN_TOKEN})
            me = await jim.expect("stream:join")
            assert (me["role"], me["name"]) == ("admin", "Pastor Jim")
            queue = await jim.expect("chat:moderated", lambda d: "held" in d)
            assert queue["held"][0]["text"] == "first!" and "author_viewer" not in queue["held"][0]
            await jim.send("chat:review", {"id": queue["held"][0]["id"], "approve": True})
            assert (await guest.expect("chat:message"))["text"] == "first!"

    run(scenario())


def test_each_browser_gets_a_viewer_token(server: ServerHandle) -> None:
    stream = server.create_stream()

    async def scenario() -> None:
        async with guest_session() as browser, aiohttp.ClientSession() as cookieless:
            first = await connect(browser, server, stream["id"], name="Moderator")
            me = first.joined()
            cookie = browser.cookie_jar.filter_cookies(URL(server.http)).get("ms_viewer")
            assert cookie is not None and cookie.value == me["viewer_token"]
            again = await connect(browser, server, stream["id"], name="Moderator")
            assert again.joined()["viewer_token"] == me["viewer_token"]
            assert again.joined()["name"] == me["name"]  # "Guest NNNN" is per browser, not per address
            # A client without cookies keeps the token itself: in ?viewer= or in the auth frame.
            other = await connect(cookieless, server, stream["id"], name="Moderator")
            assert other.joined()["name"] != me["name"]
            other.frames.clear()
            await other.send("auth", {"viewer": me["viewer_token"]})
            assert (await other.expect("stream:join"))["name"] == me["name"]
            by_query = await connect(cookieless, server, stream["id"], name="Admin", viewer=me["viewer_token"])
            assert by_query.joined()["name"] == me["name"]

    run(scenario())


def test_making_a_stream_private_during_a_service_empties_the_room_of_strangers(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data"))
    stream = server.create_stream()
    _, grant = server.api("POST", f"/api/streams/{stream['id']}/playback-tokens", {"ttl": 600})

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            stranger = await connect(session, server, stream["id"], name="Passer-by")
            invited = await connect(session, server, stream["id"], name="Invited", token=grant["token"])
            host = await connect(session, server, stream["id"], token=ADMIN_TOKEN)
            events = await session.get(f"{server.http}/sse/streams/{stream['id']}")
            assert events.status == 200
            status, _ = server.api("PATCH", f"/api/streams/{stream['id']}", {"visibility": "PRIVATE"})
            assert status == 200
            code, frames = await stranger.closed()
            assert code == 4403 and any(f["event"] == "chat:error" and f["data"]["code"] == "forbidden" for f in frames)
            await asyncio.wait_for(events.content.read(), 10)  # the event stream ends too
            # Those with a token for it, and the staff, stay and keep talking.
            await invited.send("chat:message", {"text": "still here"})
            await host.expect("chat:message", lambda d: d["text"] == "still here")

    try:
        run(scenario())
    finally:
        server.stop()
