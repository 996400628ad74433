"""Console sign-in: a token is traded once for an HttpOnly, SameSite session cookie; the API then answers
that cookie, changes need the session's CSRF token, another site's requests get nothing, and sessions end
(sign-out, idle time, absolute lifetime) for good."""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from mediaserver.db import Database
from tests.chat_client import Client
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    config = small_config(tmp_path_factory.mktemp("console"))
    config.console.idle_minutes = 3 / 60  # three seconds idle ends a session (one test waits for that)
    handle = run_server(config)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def org(server: ServerHandle) -> dict[str, Any]:
    db = Database(server.server.config.data_path / "mediaserver.db")
    org = db.create_org("grace", "Grace Church")
    _, token = db.create_token(org["id"], "console test")
    other = db.create_org("hope", "Hope Chapel")
    _, other_token = db.create_token(other["id"], "other")
    return {"id": org["id"], "token": token, "other_id": other["id"], "other_token": other_token}


def browser_session() -> aiohttp.ClientSession:
    # unsafe=True: keep cookies set by an IP-address host (127.0.0.1), as a browser does.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(http: aiohttp.ClientSession, server: ServerHandle, token: str) -> tuple[int, str]:
    async with http.post(f"{server.http}/admin/sign-in", data={"token": token}, allow_redirects=False) as response:
        return response.status, response.headers.get("Set-Cookie", "") + "\n" + response.headers.get("Location", "")


async def csrf_of(http: aiohttp.ClientSession, server: ServerHandle) -> str:
    async with http.get(f"{server.http}/admin") as response:
        assert response.status == 200
        page = await response.text()
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_sign_in_sets_a_strict_httponly_cookie_and_no_token_in_any_url(server: ServerHandle, org: dict[str, Any]) -> None:
    async def go() -> None:
        async with browser_session() as http:
            async with http.get(f"{server.http}/admin", allow_redirects=False) as response:
                assert response.status == 303 and response.headers["Location"] == "/admin/sign-in"
            status, headers = await sign_in(http, server, org["token"])
            assert status == 303, headers
            cookie, location = headers.split("\n")
            assert location == "/admin" and org["token"] not in location
            assert "ms_console=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert org["token"] not in cookie  # the cookie names a session, not the token
            async with http.get(f"{server.http}/admin/session") as response:
                who = await response.json()
            assert who["role"] == "staff" and who["org_id"] == org["id"]
            assert [o["slug"] for o in who["orgs"]] == ["grace"]  # an organization sees only itself
            page_csrf = await csrf_of(http, server)
            assert page_csrf == who["csrf_token"]
    run(go())


def test_a_wrong_token_is_refused_and_gets_no_cookie(server: ServerHandle, org: dict[str, Any]) -> None:
    async def go() -> None:
        async with browser_session() as http:
            async with http.post(f"{server.http}/admin/sign-in", data={"token": "not-a-token"},
                                 allow_redirects=False) as response:
                assert response.status == 401
                assert "ms_console" not in response.headers.get("Set-Cookie", "")
                assert "token is not valid" in await response.text()
            async with http.get(f"{server.http}/api/streams") as response:
                assert response.status == 401
    run(go())


def test_the_cookie_reaches_the_api_of_its_organization_only(server: ServerHandle, org: dict[str, Any]) -> None:
    _, theirs = server.api("POST", "/api/streams", {"title": "Hope's service"},
                           token=org["other_token"])

    async def go() -> None:
        async with browser_session() as http:
            await sign_in(http, server, org["token"])
            csrf = await csrf_of(http, server)
            async with http.post(f"{server.http}/api/streams", json={"title": "Console-made"},
                                 headers={"X-CSRF-Token": csrf}) as response:
                assert response.status == 201, await response.text()
                mine = await response.json()
            assert mine["org_id"] == org["id"]
            async with http.get(f"{server.http}/api/streams/{theirs['id']}") as response:
                assert response.status == 404
            async with http.get(f"{server.http}/api/streams") as response:
                listed = {s["id"] for s in (await response.json())["streams"]}
            assert mine["id"] in listed and theirs["id"] not in listed
    run(go())


def test_changes_need_the_csrf_token(server: ServerHandle, org: dict[str, Any]) -> None:
    async def go() -> None:
        async with browser_session() as http:
            await sign_in(http, server, org["token"])
            csrf = await csrf_of(http, server)
            for headers in ({}, {"X-CSRF-Token": "forged"}):
                async with http.post(f"{server.http}/api/streams", json={"title": "forged"}, headers=headers) as response:
                    assert response.status == 403, await response.text()
                    assert "CSRF" in (await response.json())["error"]
            # Reads need none; the real token works.
            async with http.get(f"{server.http}/api/streams") as response:
                assert response.status == 200
            async with http.post(f"{server.http}/api/streams", json={"title": "real"},
                                 headers={"X-CSRF-Token": csrf}) as response:
                assert response.status == 201
            # Sign-out is a change too: without the form's token the session stays.
            async with http.post(f"{server.http}/admin/sign-out", data={"csrf": "forged"},
                                 allow_redirects=False) as response:
                assert response.status == 403
            async with http.get(f"{server.http}/admin/session") as response:
                assert response.status == 200
    run(go())


def test_another_sites_requests_get_nothing_from_the_cookie(server: ServerHandle, org: dict[str, Any]) -> None:
    async def go() -> None:
        async with browser_session() as http:
            await sign_in(http, server, org["token"])
            csrf = await csrf_of(http, server)
            evil = {"Origin": "https://evil.example", "X-CSRF-Token": csrf}
            async with http.get(f"{server.http}/api/streams", headers=evil) as response:
                assert response.status == 401
            async with http.post(f"{server.http}/api/streams", json={"title": "x"}, headers=evil) as response:
                assert response.status == 401
            async with http.post(f"{server.http}/admin/sign-in", data={"token": org["token"]},
                                 headers={"Origin": "https://evil.example"}, allow_redirects=False) as response:
                assert response.status == 403  # login CSRF: no session chosen by another site
            own = {"Origin": server.http, "X-CSRF-Token": csrf}
            async with http.get(f"{server.http}/api/streams", headers=own) as response:
                assert response.status == 200
    run(go())


def test_sign_out_ends_the_session_on_the_server(server: ServerHandle, org: dict[str, Any]) -> None:
    async def go() -> None:
        async with browser_session() as http:
            await sign_in(http, server, org["token"])
            csrf = await csrf_of(http, server)
            stolen = http.cookie_jar.filter_cookies(URL(server.http))["ms_console"].value
            async with http.post(f"{server.http}/admin/sign-out", data={"csrf": csrf}, allow_redirects=False) as response:
                assert response.status == 303 and response.headers["Location"] == "/admin/sign-in"
        # A copy of the cookie taken before sign-out is worth nothing after it.
        async with aiohttp.ClientSession(cookies={"ms_console": stolen}) as replay:
            async with replay.get(f"{server.http}/api/streams") as response:
                assert response.status == 401
                assert "sign in again" in (await response.json())["error"]
    run(go())


def test_an_idle_session_expires_and_the_console_sends_the_volunteer_to_sign_in(server: ServerHandle,
                                                                                 org: dict[str, Any]) -> None:
    async def go() -> None:
        async with browser_session() as http:
            await sign_in(http, server, org["token"])
            for _ in range(3):  # activity keeps it alive past the idle time
                await asyncio.sleep(1.2)
                async with http.get(f"{server.http}/api/streams") as response:
                    assert response.status == 200
            await asyncio.sleep(3.5)
            async with http.get(f"{server.http}/api/streams") as response:
                assert response.status == 401
            async with http.get(f"{server.http}/admin", allow_redirects=False) as response:
                assert response.status == 303 and response.headers["Location"] == "/admin/sign-in?ended=1"
    run(go())


def test_sessions_survive_a_server_restart_and_end_at_their_lifetime(tmp_path: Any) -> None:
    config = small_config(tmp_path)
    config.console.session_hours = 6 / 3600  # six seconds
    handle = run_server(config)
    try:
        async def first() -> str:
            async with browser_session() as http:
                status, _ = await sign_in(http, handle, ADMIN_TOKEN)
                assert status == 303
                return http.cookie_jar.filter_cookies(URL(handle.http))["ms_console"].value
        cookie = run(first())
    finally:
        handle.stop()
    started = time.monotonic()
    handle = run_server(config)
    try:
        async def check() -> list[int]:
            seen = []
            async with aiohttp.ClientSession(cookies={"ms_console": cookie}) as http:
                async with http.get(f"{handle.http}/admin/session") as response:
                    seen.append(response.status)
                    assert (await response.json())["role"] == "admin"
                # Kept busy, it still ends at its lifetime.
                while time.monotonic() - started < 8:
                    await asyncio.sleep(1)
                    async with http.get(f"{handle.http}/api/streams") as response:
                        seen.append(response.status)
            return seen
        seen = run(check())
        assert seen[0] == 200 and seen[-1] == 401
    finally:
        handle.stop()


def test_the_console_cookie_seats_a_moderator_in_the_chat_room(server: ServerHandle, org: dict[str, Any]) -> None:
    _, stream = server.api("POST", "/api/streams", {"title": "Moderated"}, token=org["token"])

    async def go() -> None:
        async with browser_session() as http:
            await sign_in(http, server, org["token"])
            ws = await http.ws_connect(f"{server.http}/ws/streams/{stream['id']}", params={"name": "Ruth"})
            client = Client(ws)
            await client.expect("chat:history")
            joined = await client.expect("stream:join")
            assert joined["role"] == "moderator"
            await ws.close()
            # The same cookie sent from another site's page is not a moderator.
            ws = await http.ws_connect(f"{server.http}/ws/streams/{stream['id']}", params={"name": "Ruth"},
                                       headers={"Origin": "https://evil.example"})
            client = Client(ws)
            await client.expect("chat:history")
            assert (await client.expect("stream:join"))["role"] == "guest"
            await ws.close()
    run(go())
