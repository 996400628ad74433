"""Guests are known by their browser, not their address: bans, time-outs and rate limits on one
church network (every client here is 127.0.0.1, each guest with its own cookie jar)."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest

from tests.chat_client import Client, connect, guest_session, run
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHandle]:
    handle = run_server(small_config(tmp_path / "data"))
    yield handle
    handle.stop()


async def speaks(speaker: Client, listener: Client, text: str) -> None:
    await speaker.send("chat:message", {"text": text})
    await listener.expect("chat:message", lambda d: d["text"] == text)


async def muted(speaker: Client, text: str = "let me speak") -> str:
    await speaker.send("chat:message", {"text": text})
    return str((await speaker.expect("chat:error", lambda d: d["code"] == "muted"))["message"])


def test_banning_one_guest_leaves_the_rest_of_the_network_speaking(server: ServerHandle) -> None:
    stream = server.create_stream()
    status, member = server.api("POST", "/api/orgs/default/member-tokens", {"name": "Ruth Smith"})
    assert status == 201

    async def scenario() -> None:
        async with guest_session() as dave_browser, guest_session() as ann_browser, guest_session() as new_browser, \
                aiohttp.ClientSession() as staff:
            mod = await connect(staff, server, stream["id"], token=ADMIN_TOKEN, name="Pastor Jim")
            ruth = await connect(staff, server, stream["id"], token=member["token"])
            dave = await connect(dave_browser, server, stream["id"], name="Dave")
            ann = await connect(ann_browser, server, stream["id"], name="Ann")
            await speaks(dave, mod, "hello from Dave")
            await mod.send("chat:ban", {"name": "Dave"})
            assert "banned" in await muted(dave)
            await speaks(ann, mod, "Ann still speaks")       # same address, another browser
            await speaks(mod, ann, "and so does the pastor")
            await speaks(ruth, ann, "and Ruth")
            answer = await mod.expect("chat:banned")
            assert answer["viewers"] == 1 and answer["address"] is False and "Dave is banned" in answer["message"]
            # Dave again: same browser under a new name, or a new browser one letter away, on his network.
            await dave.ws.close()
            dave2 = await connect(dave_browser, server, stream["id"], name="Someone Else")
            await muted(dave2)
            davee = await connect(new_browser, server, stream["id"], name="Davee")
            await muted(davee)
            dan = await connect(staff, server, stream["id"], name="Daniel")
            await speaks(dan, ann, "Daniel is not Dave")

    run(scenario())


def test_an_address_ban_is_explicit_and_spares_members_and_staff(server: ServerHandle) -> None:
    stream = server.create_stream()
    status, member = server.api("POST", "/api/orgs/default/member-tokens", {"name": "Ruth Smith"})
    assert status == 201

    async def scenario() -> None:
        async with guest_session() as eve_browser, guest_session() as ann_browser, aiohttp.ClientSession() as staff:
            mod = await connect(staff, server, stream["id"], token=ADMIN_TOKEN, name="Pastor Jim")
            ruth = await connect(staff, server, stream["id"], token=member["token"])
            eve = await connect(eve_browser, server, stream["id"], name="Eve")
            ann = await connect(ann_browser, server, stream["id"], name="Ann")
            await mod.send("chat:ban", {"name": "Eve", "address": True})
            await muted(eve)
            await muted(ann)                                  # a guest on that network
            await speaks(ruth, mod, "members still speak")
            await speaks(mod, ruth, "staff still speak")
            answer = await mod.expect("chat:banned")
            assert answer["address"] is True and "every guest on that network is muted" in answer["message"]
            await mod.send("chat:unban", {"name": "Eve"})
            assert (await mod.expect("chat:unbanned"))["lifted"] == 1
            await speaks(ann, mod, "back again")

    run(scenario())


def test_a_room_full_of_guests_on_one_address(server: ServerHandle) -> None:
    stream = server.create_stream()

    async def scenario() -> None:
        browsers = [guest_session() for _ in range(25)]
        try:
            async with aiohttp.ClientSession() as staff:
                listener = await connect(staff, server, stream["id"], token=ADMIN_TOKEN)
                guests = [await connect(b, server, stream["id"], name=f"Guest of honour {n}")
                          for n, b in enumerate(browsers)]
                for n, guest in enumerate(guests):
                    await guest.send("chat:message", {"text": f"Amen from pew {n}"})
                for n in range(25):
                    await listener.expect("chat:message", lambda d, n=n: d["text"] == f"Amen from pew {n}")
                # One browser is still held to 5 messages per 10 s.
                for n in range(6):
                    await guests[0].send("chat:message", {"text": f"again {n}"})
                assert (await guests[0].expect("chat:error"))["code"] == "rate_limited"
        finally:
            await asyncio.gather(*(b.close() for b in browsers))

    run(scenario())


def test_a_ban_reaches_a_guest_who_left_and_comes_back_renamed(server: ServerHandle) -> None:
    stream = server.create_stream()

    async def scenario() -> None:
        async with guest_session() as first, guest_session() as second, guest_session() as third, \
                aiohttp.ClientSession() as staff:
            mod = await connect(staff, server, stream["id"], token=ADMIN_TOKEN)
            mallory = await connect(first, server, stream["id"], name="Mallory")
            await speaks(mallory, mod, "spam spam")
            await mallory.ws.close()
            await asyncio.sleep(0.1)
            await mod.send("chat:ban", {"name": "mallory"})   # not in the room any more
            back = await connect(first, server, stream["id"], name="Totally New")
            await muted(back)
            renamed = await connect(second, server, stream["id"], name="Malory")
            await muted(renamed)
            assert (await mod.expect("chat:banned"))["viewers"] == 1
            # A time-out follows the browser and look-alike names the same way.
            trent = await connect(third, server, stream["id"], name="Trent")
            await speaks(trent, mod, "hi")
            await mod.send("chat:timeout", {"name": "Trent", "seconds": 600})
            await trent.ws.close()
            trentt = await connect(staff, server, stream["id"], name="Trentt")
            assert "timed out" in await muted(trentt)
            assert (await mod.expect("chat:timed_out"))["until"] is not None

    run(scenario())


def test_configured_chat_limits_reach_the_room(tmp_path: Path) -> None:
    """[chat] messages_per_address and messages_per_viewer, set low, act on a live room."""
    config = small_config(tmp_path / "data")
    config.chat.messages_per_address, config.chat.messages_per_viewer = 3, 2
    server = run_server(config)
    stream = server.create_stream()

    async def scenario() -> None:
        browsers = [guest_session() for _ in range(4)]
        try:
            guests = [await connect(b, server, stream["id"], name=f"Pew {n}") for n, b in enumerate(browsers)]
            for n, guest in enumerate(guests[:3]):
                await speaks(guest, guests[3], f"first from {n}")
            await guests[3].send("chat:message", {"text": "fourth on this address"})
            assert (await guests[3].expect("chat:error"))["code"] == "rate_limited"
        finally:
            await asyncio.gather(*(b.close() for b in browsers))

    async def one_viewer() -> None:
        other = server.create_stream("Evening Service")  # a room of its own: the address budget is fresh
        async with guest_session() as browser, guest_session() as listening:
            listener = await connect(listening, server, other["id"], name="Listener")
            guest = await connect(browser, server, other["id"], name="Eager")
            await speaks(guest, listener, "note 0")
            await speaks(guest, listener, "note 1")
            await guest.send("chat:message", {"text": "note 2"})
            assert (await guest.expect("chat:error"))["code"] == "rate_limited"

    try:
        run(scenario())
        run(one_viewer())
    finally:
        server.stop()
