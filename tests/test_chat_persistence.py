"""Moderation state survives a restart, and settings changed during a service reach open rooms."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.chat_client import Client, connect, guest_session, run
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config


def test_bans_pins_highlights_and_order_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = run_server(small_config(data))
    stream = server.create_stream()
    before: dict[str, Any] = {}  # what the room showed, and Dave's browser cookie, kept across the restart

    async def service() -> None:
        async with guest_session() as dave_browser, guest_session() as eve_browser, \
                aiohttp.ClientSession() as staff:
            mod = await connect(staff, server, stream["id"], token=ADMIN_TOKEN, name="Pastor Jim")
            ann = await connect(staff, server, stream["id"], name="Ann")
            dave = await connect(dave_browser, server, stream["id"], name="Dave")
            before["cookie"] = f"ms_viewer={dave.joined().get('viewer_token')}"
            eve = await connect(eve_browser, server, stream["id"], name="Eve")
            for n in range(3):
                await ann.send("chat:message", {"text": f"line {n}"})
                await mod.expect("chat:message", lambda d, n=n: d["text"] == f"line {n}")
            await eve.send("chat:message", {"text": "see www.example.com/events"})  # held: a link
            held = (await mod.expect("chat:moderated", lambda d: "held" in d))["held"][0]
            for n in range(3, 6):
                await dave.send("chat:message", {"text": f"line {n}"})
                await mod.expect("chat:message", lambda d, n=n: d["text"] == f"line {n}")
            await mod.send("chat:review", {"id": held["id"], "approve": True})
            approved = await ann.expect("chat:message", lambda d: d["id"] == held["id"])
            await mod.send("chat:pin", {"id": approved["id"]})
            await ann.expect("chat:pinned")
            await mod.send("chat:highlight", {"id": approved["id"]})
            await ann.expect("chat:highlighted")
            await mod.send("chat:ban", {"name": "Dave"})
            await mod.send("chat:timeout", {"name": "Eve", "seconds": 3600})
            await mod.gather(0.3)  # chat:banned, chat:timed_out
            late = await connect(staff, server, stream["id"], name="Late")
            before["history"] = [m["text"] for m in late.history["messages"]]
            assert before["history"][-1] == "see www.example.com/events"  # published when approved: last

    try:
        run(service())
    finally:
        server.stop()
    restarted = run_server(small_config(data))
    try:
        async def after() -> None:
            async with aiohttp.ClientSession() as staff:
                ws = await staff.ws_connect(f"{restarted.http}/ws/streams/{stream['id']}", params={"name": "Ann"})
                ann = Client(ws)
                history = await ann.expect("chat:history")
                assert [m["text"] for m in history["messages"]] == before["history"]
                assert history["pinned"]["text"] == "see www.example.com/events"
                assert [m["text"] for m in history["messages"] if m.get("highlighted")] == ["see www.example.com/events"]
                assert not any("author_viewer" in m or "author_address" in m for m in history["messages"])
                dave = await connect(staff, restarted, stream["id"], headers={"Cookie": before["cookie"]},
                                     name="Somebody New")
                await dave.send("chat:message", {"text": "I'm back"})
                assert "banned" in (await dave.expect("chat:error", lambda d: d["code"] == "muted"))["message"]
                eve = await connect(staff, restarted, stream["id"], name="Eve")
                await eve.send("chat:message", {"text": "me too"})
                assert "timed out" in (await eve.expect("chat:error", lambda d: d["code"] == "muted"))["message"]
                await ann.send("chat:message", {"text": "Ann is fine"})
                await ann.expect("chat:message", lambda d: d["text"] == "Ann is fine")

        run(after())
    finally:
        restarted.stop()


def test_settings_changed_during_a_service_reach_the_open_room(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data"))
    stream = server.create_stream()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            mod = await connect(session, server, stream["id"], token=ADMIN_TOKEN)
            guest = await connect(session, server, stream["id"], name="Lydia")
            await guest.send("chat:message", {"text": "zebra crossing"})
            await mod.expect("chat:message", lambda d: d["text"] == "zebra crossing")
            status, _ = await _patch(session, server, {"settings": {"chat": {
                "blocked_words": ["zebra"], "slow_mode_seconds": 30, "hold_for_review": False}}})
            assert status == 200
            await guest.send("chat:message", {"text": "and again"})
            slow = await guest.expect("chat:error", lambda d: d["code"] == "rejected")
            assert slow["message"].startswith("slow mode")
            tom = await connect(session, server, stream["id"], name="Tom")
            await tom.send("chat:message", {"text": "another zebra"})
            assert (await tom.expect("chat:moderated"))["status"] == "HELD"

    try:
        run(scenario())
    finally:
        server.stop()


async def _patch(session: aiohttp.ClientSession, server: ServerHandle, body: dict[str, Any]) -> tuple[int, Any]:
    async with session.patch(f"{server.http}/api/orgs/default", data=json.dumps(body),
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                      "Content-Type": "application/json"}) as response:
        return response.status, await response.json()


def test_an_empty_room_is_closed_and_reopens_with_its_state(tmp_path: Path) -> None:
    """The hub keeps only rooms in use; a closed room's history and reactions come back on the next join."""
    import asyncio

    server = run_server(small_config(tmp_path / "data"))
    hub = server.server.chat
    hub.idle_close = 0.3
    stream = server.create_stream()

    async def scenario() -> None:
        async with guest_session() as browser, aiohttp.ClientSession() as staff:
            mod = await connect(staff, server, stream["id"], token=ADMIN_TOKEN)
            ann = await connect(browser, server, stream["id"], name="Ann")
            await ann.send("chat:message", {"text": "before the close"})
            await mod.expect("chat:message", lambda d: d["text"] == "before the close")
            await ann.send("stream:reaction", {"type": "AMEN"})
            await ann.ws.close()
            await mod.ws.close()
        for _ in range(50):
            if stream["id"] not in hub.rooms:
                break
            await asyncio.sleep(0.1)
        assert stream["id"] not in hub.rooms  # closed once empty
        async with guest_session() as browser:
            again = await connect(browser, server, stream["id"], name="Bea")
            assert [m["text"] for m in again.history["messages"]] == ["before the close"]
            totals = await again.expect("stream:reactions")
            assert totals["totals"].get("AMEN") == 1  # the last half second's reaction was saved on close
        assert stream["id"] in hub.rooms

    try:
        run(scenario())
    finally:
        server.stop()
