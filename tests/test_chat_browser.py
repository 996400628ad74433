"""The room on a private stream's watch page in Chromium: the page hands its playback token to the room in
the auth frame, never in the socket's URL."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.server_fixture import run_server, small_config
from tests.browser import module_browser

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


def test_a_private_streams_page_joins_its_room_with_the_auth_frame(tmp_path: Path, browser: Any) -> None:
    server = run_server(small_config(tmp_path / "data"))
    try:
        status, stream = server.api("POST", "/api/streams", {"title": "Prayer night", "visibility": "PRIVATE"})
        assert status == 201
        status, grant = server.api("POST", f"/api/streams/{stream['id']}/playback-tokens", {})
        assert status == 201
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        sockets: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.add_init_script("localStorage.setItem('chat-name', 'Naomi')")
        page.goto(f"{server.http}/watch/{stream['id']}?token={grant['token']}")
        page.wait_for_selector("#chat-text")
        page.fill("#chat-text", "Praying with you all")
        page.press("#chat-text", "Enter")
        page.wait_for_function("document.querySelector('#messages li .author')?.textContent === 'Naomi'",
                               timeout=10_000)
        assert sockets and not any("token=" in url for url in sockets)
        viewer_token = page.evaluate("localStorage.getItem('chat-viewer')")
        cookies = {c["name"]: c["value"] for c in context.cookies()}
        assert viewer_token and cookies.get("ms_viewer") == viewer_token
        context.close()
        assert errors == []
    finally:
        server.stop()
