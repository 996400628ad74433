"""Access decided in one place: private streams stay private on every page, tokens are canonical,
the bad-token throttle never locks out a correct token, and password guessing can't stall playback."""
from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest

from mediaserver.access import ANONYMOUS, AccessPolicy, Caller, Role
from mediaserver.playback_tokens import PlaybackSigner, TokenError
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config
from web.auth import THROTTLE
from web.guard import ACCESS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    config = small_config(tmp_path_factory.mktemp("access") / "data")
    config.server.trusted_proxies = ["127.0.0.1"]  # lets the tests speak for many client addresses
    handle = run_server(config)
    yield handle
    handle.stop()


def request(server: ServerHandle, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
            token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.http + path, data=data, method=method, headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def make_stream(server: ServerHandle, **fields: Any) -> dict[str, Any]:
    status, body = server.api("POST", "/api/streams", {"title": "Sunday Service", **fields})
    assert status == 201, body
    return body


def page_config(html_text: str) -> dict[str, Any]:
    match = re.search(r'<script id="player-config" type="application/json">(.*?)</script>', html_text, re.S)
    assert match, html_text[:500]
    return json.loads(match.group(1))


# -- the policy itself (sans-IO) -------------------------------------------------------------------
def test_policy_decides_every_role() -> None:
    signer = PlaybackSigner(b"k" * 32)
    orgs = {"org-token": "grace"}
    policy = AccessPolicy(signer, "admin-token", orgs.get)
    public = {"id": "s1", "org_id": "grace", "visibility": "PUBLIC"}
    private = {"id": "s2", "org_id": "grace", "visibility": "PRIVATE"}
    members = {"id": "s3", "org_id": "grace", "visibility": "MEMBERS_ONLY"}
    elsewhere = {"id": "s4", "org_id": "hope", "visibility": "PRIVATE"}
    member_token, _ = signer.issue("member:grace", 60, "Ruth")
    viewer_token, _ = signer.issue("s2", 60)

    def watch(stream: dict[str, Any], **creds: Any) -> tuple[bool, int]:
        decision = policy.may_watch(policy.stream_caller(stream, **creds), stream)
        return decision.allowed, decision.status

    assert watch(public) == (True, 200)
    assert watch(private) == (False, 401)
    assert watch(private, token="forged.token") == (False, 403)
    assert watch(private, token=viewer_token) == (True, 200)
    assert watch(elsewhere, token=viewer_token) == (False, 403)  # a token is for one stream
    assert watch(private, api_token="org-token") == (True, 200)
    assert watch(elsewhere, api_token="org-token") == (False, 403)  # another church's staff
    assert watch(elsewhere, api_token="admin-token") == (True, 200)
    assert watch(members, token=member_token) == (True, 200)
    assert watch(private, token=member_token) == (False, 403)  # members-only is not private
    # A staff token where a viewer token goes counts only where the route allows it (the room).
    assert watch(private, token="org-token") == (False, 403)
    assert watch(private, token="org-token", token_may_be_api=True) == (True, 200)
    assert policy.may_see_preview(Caller(Role.STAFF, org_id="grace"), public)
    assert not policy.may_see_preview(ANONYMOUS, public)
    assert not policy.may_see_preview(Caller(Role.VIEWER), private)
    token, viewer_id = policy.new_viewer_token()
    assert policy.viewer_id(token) == viewer_id and policy.viewer_id(viewer_token) is None


def test_only_canonical_tokens_verify() -> None:
    signer = PlaybackSigner(b"k" * 32)
    token, _ = signer.issue("s1", 60)
    signer.check(token, "s1")
    for bad in (token + "==\n#EXTINF:1,\nhttp://evil/x", token + "=", token + "\n", " " + token, token + "#",
                token.replace(".", ".."), token + ".x"):
        with pytest.raises(TokenError):
            signer.check(bad, "s1")


# -- pages -----------------------------------------------------------------------------------------
def test_home_lists_public_streams_only_per_organization(server: ServerHandle) -> None:
    db = server.server.db
    hope = db.org("hope") or db.create_org("hope", "Hope Chapel")
    shown = make_stream(server, title="Morning Worship")
    hidden = make_stream(server, title="Elders Prayer Meeting", visibility="PRIVATE")
    members = make_stream(server, title="Members Assembly", visibility="MEMBERS_ONLY")
    _row, hope_token = db.create_token(hope["id"], "test")
    status, other = server.api("POST", "/api/streams", {"title": "Hope Evening Service"}, token=hope_token)
    assert status == 201
    for sid in (shown["id"], hidden["id"], members["id"], other["id"]):
        db.update_stream(sid, status="LIVE")
    status, _, body = request(server, "GET", "/")
    text = body.decode()
    assert status == 200 and "Morning Worship" in text and "Hope Evening Service" in text
    assert "Elders Prayer Meeting" not in text and hidden["id"] not in text
    assert "Members Assembly" not in text and members["id"] not in text
    assert "Hope Chapel" in text  # grouped under each organization's name
    assert text.index("Hope Chapel") < text.index("Hope Evening Service")


def test_private_watch_page_shows_nothing_without_a_token(server: ServerHandle) -> None:
    stream = make_stream(server, title="Counselling Session 4411", visibility="PRIVATE",
                         giving_url="https://give.example.org/secret-fund")
    sid = stream["id"]
    status, headers, body = request(server, "GET", f"/watch/{sid}")
    text = body.decode()
    assert status == 200
    assert "Counselling Session 4411" not in text and "secret-fund" not in text
    assert page_config(text)["locked"] is True and "private" in headers["Cache-Control"]
    status, _, body = request(server, "GET", f"/watch/{sid}?token=forged.token")
    assert "Counselling Session 4411" not in body.decode()
    status, grant = server.api("POST", f"/api/streams/{sid}/playback-tokens", {"ttl": 600})
    assert status == 201
    status, _, body = request(server, "GET", f"/watch/{sid}?token={grant['token']}")
    config = page_config(body.decode())
    assert config["locked"] is False and config["title"] == "Counselling Session 4411"
    assert config["giving_url"] == "https://give.example.org/secret-fund"
    assert config["playback_url"].endswith(f"?token={grant['token']}")


def test_watch_page_gives_each_browser_a_signed_viewer_id(server: ServerHandle) -> None:
    stream = make_stream(server)
    _, headers, _ = request(server, "GET", f"/watch/{stream['id']}")
    cookie = headers.get("Set-Cookie", "")
    assert cookie.startswith("ms_viewer=") and "HttpOnly" in cookie
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    policy = server.server.runner.app[ACCESS]
    assert policy.viewer_id(value)
    # A browser that has one keeps it.
    _, headers, _ = request(server, "GET", f"/watch/{stream['id']}", headers={"Cookie": f"ms_viewer={value}"})
    assert "Set-Cookie" not in headers


def test_injected_token_is_refused_not_copied_into_playlists(server: ServerHandle) -> None:
    stream = make_stream(server, visibility="PRIVATE")
    sid = stream["id"]
    _, grant = server.api("POST", f"/api/streams/{sid}/playback-tokens", {"ttl": 600})
    evil = urllib.request.quote(grant["token"] + "==\n#EXTINF:1,\nhttp://evil/x", safe="")
    for path in (f"/hls/{sid}/master.m3u8?token={evil}", f"/hls/{sid}/180p.m3u8?token={evil}",
                 f"/watch/{sid}?token={evil}"):
        status, _, body = request(server, "GET", path)
        assert b"evil" not in body, path
        if path.startswith("/hls"):
            assert status == 403, path


# -- the API token throttle ------------------------------------------------------------------------
def test_requests_without_a_token_never_lock_out_the_staff(server: ServerHandle) -> None:
    throttle = server.server.runner.app[THROTTLE]
    throttle._failures.clear()
    for _ in range(60):  # a congregation's browsers or a scanner, none sending a token
        assert request(server, "GET", "/api/streams")[0] == 401
    assert request(server, "GET", "/api/streams", token=ADMIN_TOKEN)[0] == 200


def test_bad_tokens_are_throttled_but_a_correct_token_still_works(server: ServerHandle) -> None:
    throttle = server.server.runner.app[THROTTLE]
    throttle._failures.clear()
    throttle.free_failures, throttle.block_after, throttle.max_delay = 2, 6, 0.05
    try:
        codes = [request(server, "GET", "/api/streams", token="guess")[0] for _ in range(8)]
        assert codes[:6] == [401] * 6 and codes[6:] == [429, 429]
        # Same address (a church's NAT): the staff's correct token is not refused.
        assert request(server, "GET", "/api/streams", token=ADMIN_TOKEN)[0] == 200
        # Behind the configured trusted proxy, each forwarded client is counted on its own.
        for _ in range(7):
            request(server, "GET", "/api/streams", token="guess", headers={"X-Forwarded-For": "198.51.100.7"})
        assert request(server, "GET", "/api/streams", token="guess",
                       headers={"X-Forwarded-For": "198.51.100.7"})[0] == 429
        assert request(server, "GET", "/api/streams", token="guess",
                       headers={"X-Forwarded-For": "198.51.100.8"})[0] == 401
        # A client can't pick its own address by prepending entries: the proxy's own entry counts.
        assert request(server, "GET", "/api/streams", token="guess",
                       headers={"X-Forwarded-For": "203.0.113.1, 198.51.100.7"})[0] == 429
    finally:
        throttle._failures.clear()
        throttle.free_failures, throttle.block_after, throttle.max_delay = 5, 30, 5.0


# -- password unlocks ------------------------------------------------------------------------------
def unlock(server: ServerHandle, sid: str, password: str, address: str) -> int:
    return request(server, "POST", f"/watch/{sid}/unlock", {"password": password},
                   headers={"X-Forwarded-For": address, "Content-Type": "application/json"})[0]


def test_password_guessing_is_limited_per_address(server: ServerHandle) -> None:
    stream = make_stream(server, visibility="PRIVATE", password="grace123")
    codes = [unlock(server, stream["id"], f"guess{n}", "192.0.2.10") for n in range(12)]
    assert codes[:10] == [403] * 10 and codes[10:] == [429, 429]
    assert unlock(server, stream["id"], "grace123", "192.0.2.10") == 429  # this address waits
    assert unlock(server, stream["id"], "grace123", "192.0.2.11") == 200  # another viewer is not held up


def test_a_burst_of_unlocks_does_not_hold_up_playback(server: ServerHandle) -> None:
    """Playlist checks and database calls must not queue behind scrypt: order of answers, not timing."""
    locked = make_stream(server, visibility="PRIVATE", password="grace123")
    private = make_stream(server, visibility="PRIVATE")
    _, grant = server.api("POST", f"/api/streams/{private['id']}/playback-tokens", {"ttl": 600})
    done: list[tuple[str, float]] = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        status = unlock(server, locked["id"], f"wrong{n}", f"192.0.2.{100 + n % 60}")
        with lock:
            done.append((f"unlock{status}", time.monotonic()))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(60)]
    for t in threads:
        t.start()
    time.sleep(0.05)  # let the burst reach the server first
    status, _, _ = request(server, "GET", f"/api/streams/{private['id']}", token=ADMIN_TOKEN)
    playlist_status = request(server, "GET", f"/hls/{private['id']}/master.m3u8?token={grant['token']}")[0]
    with lock:
        done.append(("playback", time.monotonic()))
    for t in threads:
        t.join(60)
    order = [name for name, _ in sorted(done, key=lambda item: item[1])]
    assert status == 200 and playlist_status == 404  # offline stream, but checked and answered
    checked_before = order[:order.index("playback")].count("unlock403")
    assert checked_before < 20, order  # answered while most of the guesses were still waiting for scrypt
    assert {name for name in order if name != "playback"} <= {"unlock403", "unlock429"}


def test_calendar_feed_lists_public_services_only(server: ServerHandle) -> None:
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 7 * 86400))
    make_stream(server, title="Open Vespers", scheduled_start=start)
    make_stream(server, title="Deacons Closed Meeting", scheduled_start=start, visibility="PRIVATE")
    make_stream(server, title="Covenant Members Night", scheduled_start=start, visibility="MEMBERS_ONLY")
    status, _, body = request(server, "GET", "/api/orgs/default/calendar.ics")
    text = body.decode()
    assert status == 200 and "Open Vespers" in text
    assert "Deacons Closed Meeting" not in text and "Covenant Members Night" not in text


def test_password_settings_act_on_the_checker() -> None:
    """[access] password_workers bounds the threads scrypt runs on; unlock_attempts_per_minute the guesses."""
    import asyncio
    import threading as th

    from mediaserver.passwords import PasswordChecker, TooManyAttempts, hash_password

    stored = hash_password("grace123")
    running, most = [0], [0]
    lock = th.Lock()
    import mediaserver.passwords as passwords
    real = passwords.check_password

    def counting(password: str, stored_hash: str) -> bool:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real(password, stored_hash)
        finally:
            with lock:
                running[0] -= 1

    async def scenario(workers: int, per_minute: int) -> tuple[int, int]:
        checker = PasswordChecker(workers=workers, per_minute=per_minute)
        refused = 0

        async def one(n: int) -> None:
            nonlocal refused
            try:
                await checker.check("192.0.2.1" if n < 4 else f"192.0.2.{n}", "wrong", stored)
            except TooManyAttempts:
                refused += 1

        await asyncio.gather(*(one(n) for n in range(8)))
        checker.close()
        return refused, most[0]

    passwords.check_password = counting
    try:
        refused, concurrent = asyncio.run(scenario(workers=1, per_minute=3))
        assert refused == 1 and concurrent == 1  # 4 guesses from one address, 3 allowed; one thread
        most[0] = 0
        refused, concurrent = asyncio.run(scenario(workers=3, per_minute=10))
        assert refused == 0 and concurrent >= 2  # more threads, and the guesses run side by side
    finally:
        passwords.check_password = real
