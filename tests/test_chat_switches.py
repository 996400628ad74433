"""A stream's chat_enabled and reactions_enabled switches act on the room itself, not only on the page."""
from __future__ import annotations

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


def test_chat_and_reactions_off_are_refused_by_the_room(server: ServerHandle) -> None:
    status, stream = server.api("POST", "/api/streams", {"title": "Quiet Service", "chat_enabled": False,
                                                        "reactions_enabled": False})
    assert status == 201

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            listener = await connect(session, server, stream["id"], name="Listener")
            guest = await connect(session, server, stream["id"], name="Guest")
            await guest.send("chat:message", {"text": "hello"})
            assert (await guest.expect("chat:error"))["code"] == "chat_off"
            await guest.send("stream:reaction", {"type": "AMEN"})
            assert (await guest.expect("chat:error"))["code"] == "reactions_off"
            # Staff can still speak (an announcement, a welcome) when the guests' chat is off.
            host = await connect(session, server, stream["id"], headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            await host.send("chat:message", {"text": "Welcome, all"})
            got = await listener.expect("chat:message")
            assert got["text"] == "Welcome, all"
            frames = await listener.gather(1.0)
            assert not any(f["event"] == "chat:message" and f["data"]["text"] == "hello" for f in frames)
            assert not any(f["event"] == "stream:reactions" and f["data"]["counts"] for f in frames)
            # Turning chat back on through the API reaches the open room.
            status, _ = server.api("PATCH", f"/api/streams/{stream['id']}", {"chat_enabled": True})
            assert status == 200
            await guest.send("chat:message", {"text": "hello again"})
            assert (await listener.expect("chat:message"))["text"] == "hello again"

    run(scenario())
