"""The live room with real WebSocket clients against a running server."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest

from tests.chat_client import Client, connect, run
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHandle]:
    handle = run_server(small_config(tmp_path / "data"))
    handle.server.db.update_org("default", settings=json.dumps(
        {"chat": {"blocked_words": ["ass", "heretic"], "link_filter": True, "slow_mode_seconds": 0}}))
    yield handle
    handle.stop()


def test_messages_history_and_order(server: ServerHandle) -> None:
    stream = server.create_stream()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            alice = await connect(session, server, stream["id"], name="Alice")
            bob = await connect(session, server, stream["id"], name="Bob")
            for n in range(5):
                await alice.send("chat:message", {"text": f"Good morning {n} <b>church</b>"})
            got = [(await bob.expect("chat:message"))["text"] for _ in range(5)]
            assert got == [f"Good morning {n} <b>church</b>" for n in range(5)]  # stored as typed
            await bob.send("chat:message", {"text": "Please pray for my mother", "type": "PRAYER_REQUEST"})
            prayer = await alice.expect("chat:message", lambda d: d["author"] == "Bob")
            assert prayer["type"] == "PRAYER_REQUEST"
            late = await session.ws_connect(f"{server.http}/ws/streams/{stream['id']}", params={"name": "Carol"})
            history = Client(late)
            data = await history.expect("chat:history")
            assert [m["author"] for m in data["messages"]] == ["Alice"] * 5 + ["Bob"]
            count = await history.expect("stream:viewers", lambda d: d["count"] == 3)
            assert count["peak"] >= 3

    run(scenario())


def test_moderation_rules(server: ServerHandle) -> None:
    stream = server.create_stream()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            guest = await connect(session, server, stream["id"], name="Dave")
            mod = await connect(session, server, stream["id"], token=ADMIN_TOKEN, name="Pastor Jim")
            # Word boundaries: "class" and "assembly" are fine; "ass" and "HÉRÉTIC" are held.
            await guest.send("chat:message", {"text": "Welcome to Sunday class and the assembly"})
            assert (await mod.expect("chat:message", lambda d: d["author"] == "Dave"))["text"].startswith("Welcome")
            await guest.send("chat:message", {"text": "you HÉRÉTIC"})
            held = await guest.expect("chat:moderated")
            assert held["status"] == "HELD"
            queue = await mod.expect("chat:moderated", lambda d: "held" in d)
            assert queue["held"][0]["text"] == "you HÉRÉTIC"
            await guest.send("chat:message", {"text": "free stuff at www.example.com"})
            link = (await mod.expect("chat:moderated", lambda d: "held" in d))["held"][0]
            await mod.send("chat:review", {"id": link["id"], "approve": True})
            assert (await guest.expect("chat:message", lambda d: "example" in d["text"]))["author"] == "Dave"
            await guest.send("chat:message", {"text": "x" * 501})
            assert (await guest.expect("chat:error", lambda d: d["code"] == "rejected"))["message"].startswith("message longer")
            # Pin and remove reach everybody.
            await mod.send("chat:message", {"text": "Sermon notes at the welcome desk"})
            mine = await guest.expect("chat:message", lambda d: d["author"] == "Pastor Jim")
            await mod.send("chat:pin", {"id": mine["id"]})
            assert (await guest.expect("chat:pinned"))["message"]["id"] == mine["id"]
            await mod.send("chat:remove", {"id": mine["id"]})
            assert (await guest.expect("chat:removed"))["id"] == mine["id"]
            # Guests can't moderate, or pose as staff.
            await guest.send("chat:remove", {"id": "x"})
            assert (await guest.expect("chat:error", lambda d: d["code"] == "forbidden"))
            fake = await connect(session, server, stream["id"], name="Moderator")
            await fake.send("chat:message", {"text": "hi"})
            assert (await guest.expect("chat:message", lambda d: d["text"] == "hi"))["author"].startswith("Guest")
            # Timeout and ban.
            await mod.send("chat:timeout", {"name": "Dave", "seconds": 60})
            await asyncio.sleep(0.1)
            await guest.send("chat:message", {"text": "still here"})
            assert (await guest.expect("chat:error", lambda d: d["code"] == "muted"))
        audit = server.server.chat.store
        await audit.flush()
        actions = [a["action"] for a in audit.audit_log(stream["id"])]
        assert actions == ["approve", "pin", "remove", "timeout"]

    run(scenario())


def test_bad_frames_rate_limits_and_a_flood(server: ServerHandle) -> None:
    stream = server.create_stream()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            flooder = await connect(session, server, stream["id"], name="Eve")
            calm = await connect(session, server, stream["id"], name="Frank")
            listener = await connect(session, server, stream["id"], name="Grace")
            await flooder.ws.send_str("{not json")
            assert (await flooder.expect("chat:error"))["code"] == "bad_frame"
            await flooder.send("chat:dance")
            assert (await flooder.expect("chat:error"))["code"] == "unknown_event"
            await flooder.ws.send_str(json.dumps({"event": "chat:message", "data": {"text": "y" * 10_000}}))
            assert (await flooder.expect("chat:error"))["code"] == "too_large"
            for n in range(200):
                await flooder.send("chat:message", {"text": f"spam {n}"})
            errors = 0
            while True:
                try:
                    await flooder.expect("chat:error", lambda d: d["code"] == "rate_limited", timeout=0.5)
                    errors += 1
                except AssertionError:
                    break
            assert errors >= 190
            t0 = time.monotonic()
            await calm.send("chat:message", {"text": "Amen!"})
            await listener.expect("chat:message", lambda d: d["text"] == "Amen!")
            assert time.monotonic() - t0 < 5  # delivered, not stuck behind the flood
            for _ in range(12):
                await calm.send("stream:reaction", {"type": "AMEN"})
            await calm.expect("chat:error", lambda d: d["code"] == "rate_limited")
            counts = await listener.expect("stream:reactions", lambda d: d["counts"].get("AMEN"))
            assert counts["counts"]["AMEN"] == 10 and counts["totals"]["AMEN"] == 10

    run(scenario())


def test_chat_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = run_server(small_config(data))
    stream = server.create_stream()

    async def say() -> None:
        async with aiohttp.ClientSession() as session:
            c = await connect(session, server, stream["id"], name="Hannah")
            await c.send("chat:message", {"text": "Peace be with you"})
            await c.expect("chat:message")

    run(say())
    server.stop()
    restarted = run_server(small_config(data))
    try:
        async def read() -> None:
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(f"{restarted.http}/ws/streams/{stream['id']}")
                history = await Client(ws).expect("chat:history")
                assert [m["text"] for m in history["messages"]] == ["Peace be with you"]

        run(read())
    finally:
        restarted.stop()


def test_presence_giving_moment_and_sse(server: ServerHandle) -> None:
    status, stream = server.api("POST", "/api/streams", {"title": "Giving Sunday", "giving_enabled": True,
                                                         "giving_url": "https://give.example.org/grace",
                                                         "giving_message": "Support our mission"})
    assert status == 201 and stream["giving_url"] == "https://give.example.org/grace"
    phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Mobile/15E148 Safari/604.1"

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sse = await session.get(f"{server.http}/sse/streams/{stream['id']}")
            assert sse.headers["Content-Type"].startswith("text/event-stream")
            mod = await connect(session, server, stream["id"], token=ADMIN_TOKEN)
            ws = await session.ws_connect(f"{server.http}/ws/streams/{stream['id']}", params={"name": "Ivy"},
                                          headers={"User-Agent": phone})
            ivy = Client(ws)
            await ivy.expect("chat:history")
            await mod.send("stream:announcement", {"text": "Giving moment", "card": {
                "title": "Give", "text": "Support our mission", "url": "https://give.example.org/grace"}})
            card = await ivy.expect("stream:announcement")
            assert card["card"]["url"] == "https://give.example.org/grace"
            await ivy.send("stream:reaction", {"type": "PRAY"})
            # SSE carries the viewer count and reactions without a socket.
            seen = ""
            deadline = time.monotonic() + 5
            while "stream:reactions" not in seen or "stream:viewers" not in seen:
                assert time.monotonic() < deadline, seen
                seen += (await sse.content.readline()).decode()
            sse.close()
            await ivy.ws.close()
            await mod.ws.close()
        await asyncio.sleep(0.6)

    run(scenario())
    store = server.server.chat.store
    server.call(store.flush())
    sessions = store.sessions(stream["id"])
    assert {(s["device"], s["browser"]) for s in sessions if s["role"] == "guest"} == {("mobile", "Safari")}
    assert all(s["watch_seconds"] >= 0 for s in sessions)
    assert server.api("GET", f"/api/streams/{stream['id']}")[1]["peak_viewers"] >= 2


def test_members_hold_for_review_and_highlight(server: ServerHandle) -> None:
    server.server.db.update_org("default", settings=json.dumps({"chat": {"hold_for_review": True}}))
    stream = server.create_stream()
    status, member = server.api("POST", "/api/orgs/default/member-tokens", {"name": "Ruth Smith"})
    assert status == 201

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            mod = await connect(session, server, stream["id"], token=ADMIN_TOKEN)
            ruth = await connect(session, server, stream["id"], token=member["token"], name="Someone Else")
            joined = [f for f in ruth.frames if f["event"] == "stream:join"]
            assert joined and joined[0]["data"]["role"] == "member" and joined[0]["data"]["name"] == "Ruth Smith"
            # A guest can't take a member's name.
            impostor = await connect(session, server, stream["id"], name="Ruth Smith")
            me = [f for f in impostor.frames if f["event"] == "stream:join"][0]["data"]
            assert me["name"] != "Ruth Smith"
            # Everything from guests waits for review; members speak straight away.
            await impostor.send("chat:message", {"text": "hello all"})
            assert (await impostor.expect("chat:moderated"))["status"] == "HELD"
            await ruth.send("chat:message", {"text": "Good morning!"})
            said = await mod.expect("chat:message", lambda d: d["author"] == "Ruth Smith")
            await mod.send("chat:highlight", {"id": said["id"]})
            assert (await ruth.expect("chat:highlighted"))["id"] == said["id"]
            await impostor.ws.close()
            left = await mod.expect("stream:leave")
            assert left["name"] == me["name"]

    run(scenario())
    assert server.api("POST", "/api/orgs/default/member-tokens", {"name": ""})[0] == 400
    bad = server.api("POST", "/api/orgs/default/member-tokens", {"name": "x"}, token="nope")
    assert bad[0] == 401


def test_slow_mode_and_system_messages(server: ServerHandle) -> None:
    server.server.db.update_org("default", settings=json.dumps({"chat": {"slow_mode_seconds": 30}}))
    stream = server.create_stream()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            guest = await connect(session, server, stream["id"], name="Lydia")
            mod = await connect(session, server, stream["id"], token=ADMIN_TOKEN)
            await guest.send("chat:message", {"text": "first"})
            await mod.expect("chat:message", lambda d: d["text"] == "first")
            await guest.send("chat:message", {"text": "second"})
            slow = await guest.expect("chat:error", lambda d: d["code"] == "rejected")
            assert slow["message"].startswith("slow mode")
            await mod.send("chat:message", {"text": "staff are not slowed"})
            await mod.send("chat:message", {"text": "twice"})
            await guest.expect("chat:message", lambda d: d["text"] == "twice")
            # The server's own lines when the service starts and ends.
            manager = server.server.manager
            server.loop.call_soon_threadsafe(manager.bus_publish, "stream.live", stream["id"], {})
            live = await guest.expect("chat:message", lambda d: d["type"] == "SYSTEM")
            assert "live" in live["text"]
            await guest.expect("stream:live")

    run(scenario())


def test_disguised_words_bare_domains_and_lookalike_names(server: ServerHandle) -> None:
    stream = server.create_stream()
    status, member = server.api("POST", "/api/orgs/default/member-tokens", {"name": "Ruth Smith"})
    assert status == 201

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            mod = await connect(session, server, stream["id"], token=ADMIN_TOKEN, name="Pastor Jim")
            ruth = await connect(session, server, stream["id"], token=member["token"])
            assert ruth.joined()["name"] == "Ruth Smith"
            for name in ("P\u0430stor", "\u0410dmin", "\uff30\uff41\uff53\uff54\uff4f\uff52", "Pas\u200btor",
                         "\u202erotsaP", "Moder4tor", "Ruth Sm\u0456th", "Pastor J\u0456m"):
                fake = await connect(session, server, stream["id"], name=name)
                assert fake.joined()["name"].startswith("Guest "), name
            # Blocked words in disguise and bare domains are held; ordinary sentences are not.
            for text in ("you h\u0435r\u0435tic", "a\u200bss", "h-e-r-e-t-i-c", "h.e.r.e.t.i.c", "h e r e t i c",
                         "win at scam.ru/win", "visit grace.church"):
                guest = await connect(session, server, stream["id"], name="Dave")  # each a browser of its own
                await guest.send("chat:message", {"text": text})
                assert (await guest.expect("chat:moderated"))["status"] == "HELD", text
            await guest.send("chat:message", {"text": "That was the end.Then we prayed"})
            await mod.expect("chat:message", lambda d: d["text"].startswith("That was the end"))
            # Nothing visible, or text reordered by bidi overrides: refused with a reason.
            for text in ("\u200b\u2060", "\u202eevil"):
                await guest.send("chat:message", {"text": text})
                refused = await guest.expect("chat:error", lambda d: d["code"] == "rejected")
                assert "visible" in refused["message"] or "bidi" in refused["message"]

    run(scenario())
