"""Limits of the room against a running server: typing floods, frame sizes in bytes, oversized frames,
and announcements that must be valid before anyone sees them."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest

from tests.chat_client import connect, run
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHandle]:
    handle = run_server(small_config(tmp_path / "data"))
    yield handle
    handle.stop()


def test_typing_is_coalesced_per_room(server: ServerHandle) -> None:
    stream = server.create_stream()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            listener = await connect(session, server, stream["id"], name="Listener")
            typist = await connect(session, server, stream["id"], name="Typist")
            other = await connect(session, server, stream["id"], name="Other")
            started = time.monotonic()
            for _ in range(500):
                await typist.send("chat:typing")
            await other.send("chat:typing")
            frames = await listener.gather(2.5)
            typing = [f["data"] for f in frames if f["event"] == "chat:typing"]
            elapsed = time.monotonic() - started
            assert 1 <= len(typing) <= elapsed / 1.0 + 1, typing   # one per room per second at most
            assert {n for t in typing for n in t["names"]} == {"Typist", "Other"}
            assert all(t["name"] == t["names"][0] for t in typing)

    run(scenario())


def test_frame_limits_count_bytes_and_oversized_frames_are_explained(server: ServerHandle) -> None:
    stream = server.create_stream()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            listener = await connect(session, server, stream["id"], name="Listener")
            sender = await connect(session, server, stream["id"], name="Sender")
            # 3,900 characters but 15,6xx bytes of UTF-8: over the 4 KiB limit.
            wide = json.dumps({"event": "chat:message", "data": {"text": "hi", "padding": "🙏" * 3900}},
                              ensure_ascii=False)
            assert len(wide) < 4096 < len(wide.encode())
            await sender.ws.send_str(wide)
            assert not [f for f in await listener.gather(0.5) if f["event"] == "chat:message"]
            assert (await sender.expect("chat:error"))["code"] == "too_large"
            await sender.send("chat:message", {"text": "still connected"})
            await listener.expect("chat:message", lambda d: d["text"] == "still connected")
            # Over 64 KiB: told why, then closed with 1009 (message too big).
            await sender.ws.send_str(json.dumps({"event": "chat:message", "data": {"text": "x" * 100_000}}))
            code, frames = await sender.closed()
            assert code == 1009 and [f["data"]["code"] for f in frames if f["event"] == "chat:error"] == ["too_large"]

    run(scenario())


def test_announcements_are_validated_before_anyone_sees_them(server: ServerHandle) -> None:
    stream = server.create_stream()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            guest = await connect(session, server, stream["id"], name="Ivy")
            mod = await connect(session, server, stream["id"], token=ADMIN_TOKEN)
            refused = ({}, {"text": ""}, {"text": 5}, {"card": {"text": "no title"}},
                       {"text": "Give", "card": {"title": "Give", "url": "javascript:alert(1)"}},
                       {"text": "\u200b\u200b"})
            for bad in refused:
                await mod.send("stream:announcement", bad)
            assert not [f for f in await guest.gather(0.5) if f["event"] in ("stream:announcement", "chat:message")]
            errors = [f["data"]["code"] for f in await mod.gather(0.2) if f["event"] == "chat:error"]
            assert len(errors) == len(refused) and set(errors) <= {"bad_request", "rejected"}, errors
            # A card with a title needs no text: the title is the text.
            await mod.send("stream:announcement", {"card": {"title": "Giving moment", "url": "https://give.example"}})
            card = await guest.expect("stream:announcement")
            assert card == {"text": "Giving moment", "card": {"title": "Giving moment", "url": "https://give.example"}}
            line = await guest.expect("chat:message", lambda d: d["type"] == "ANNOUNCEMENT")
            assert line["text"] == "Giving moment"

    run(scenario())
