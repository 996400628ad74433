"""The same stream lifecycle on every back-end: builtin (a real RTMP publish to this server) and Mux (the local
stand-in in tests/mux_standin.py, which serves the API mux-python calls and sends signed webhooks as Mux does).

create -> key shown once -> live (our stream.live webhook at a real receiver, stream:live in chat) -> end
(stream.ended both ways) -> recording ready and playable URL -> private playback signed with the platform's
scheme (checked independently) -> key rotation (the old key no longer works) -> delete.
Plus, for Mux: forged, unsigned, tampered, stale and repeated webhooks; realtime and a DVR window refused with
their reasons; no credential or stream key in the database file; `mediaserver backends check`.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import urllib.request
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.chat_client import connect
from tests.media_source import PublishError, publish, start_publisher
from tests.ivs_fixture import Ivs, IvsStandIn
from tests.mux_standin import MuxStandIn
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config
from tests.waiting import until
from tests.webhook_receiver import WebhookReceiver

MUX_TOKEN_ID, MUX_TOKEN_SECRET = "standin-token-id", "standin-token-secret-9f8e7d"
MUX_WEBHOOK_SECRET = "standin-webhook-secret-1a2b3c"
MUX_SIGNING_KEY_ID = "standin-signing-key-id"
HOOK_SECRET = "receiver-secret-0123456789"


Receiver = WebhookReceiver


class Env:
    def __init__(self, server: ServerHandle, standin: MuxStandIn, receiver: Receiver, signing_key: rsa.RSAPrivateKey,
                 data_dir: Path) -> None:
        self.server, self.standin, self.receiver = server, standin, receiver
        self.signing_key, self.data_dir = signing_key, data_dir


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    standin = MuxStandIn(MUX_TOKEN_ID, MUX_TOKEN_SECRET, MUX_WEBHOOK_SECRET).start()
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
    data_dir = tmp_path_factory.mktemp("backends")
    config = small_config(data_dir)
    config.webhooks.allow_private_networks = True  # the receiver is on loopback
    config.mux.token_id, config.mux.token_secret = MUX_TOKEN_ID, MUX_TOKEN_SECRET
    config.mux.webhook_secret, config.mux.base_url = MUX_WEBHOOK_SECRET, standin.url
    config.mux.signing_key_id = MUX_SIGNING_KEY_ID
    config.mux.signing_private_key = base64.b64encode(pem).decode()  # as Mux's dashboard gives it
    ivs = IvsStandIn(tmp_path_factory.mktemp("ivs")).start()  # moto's IVS (tests/ivs_fixture.py)
    config.ivs = ivs.config()
    server = run_server(config)
    receiver = Receiver()
    status, _ = server.api("POST", "/api/webhooks", {"url": receiver.url, "secret": HOOK_SECRET, "events": ["*"]})
    assert status == 201
    try:
        yield Env(server, standin, receiver, signing_key, data_dir)
    finally:
        server.stop()
        standin.stop()
        ivs.stop()
        receiver.http.shutdown()


# -- one driver per back-end: what "an encoder goes live" etc. means there ------------------------------
class Builtin:
    name = "builtin"

    def __init__(self, env: Env) -> None:
        self.env = env
        self.publisher: Any = None

    def check_created(self, created: dict[str, Any]) -> None:
        assert created["rtmp_url"].startswith("rtmp://") and created["stream_key"].startswith("sk_")

    def go_live(self, stream: dict[str, Any], key: str) -> None:
        self.publisher = start_publisher(self.env.server.rtmp_url(key), seconds=30)

    def after_end(self, stream: dict[str, Any]) -> None:
        self.publisher.join(timeout=30)  # cut by the end: it reports the drop, which is expected here

    def check_recording(self, stream: dict[str, Any], recording: dict[str, Any]) -> None:
        status, _headers, body = self.env.server.get(recording["playback_url"])
        assert status == 200 and body.startswith(b"#EXTM3U"), (status, body[:80])

    def check_private(self, stream_id: str) -> None:
        server = self.env.server
        status, view = server.api("PATCH", f"/api/streams/{stream_id}", {"visibility": "PRIVATE"})
        assert status == 200
        playlist = view["recording"]["playback_url"]
        assert server.get(playlist)[0] in (401, 403)  # private: nothing without a token
        status, grant = server.api("POST", f"/api/streams/{stream_id}/playback-tokens", {"ttl": 300})
        assert status == 201
        status, _headers, body = server.get(f"{playlist}?token={grant['token']}")
        assert status == 200 and body.startswith(b"#EXTM3U")

    def check_rotation(self, stream: dict[str, Any], old_key: str, new_key: str) -> None:
        with pytest.raises(PublishError):  # the old key is refused by our RTMP ingest
            publish(self.env.server.rtmp_url(old_key), seconds=1, realtime=False)


class Mux:
    name = "mux"

    def __init__(self, env: Env) -> None:
        self.env = env

    @property
    def hook(self) -> str:
        return f"{self.env.server.http}/hooks/mux"

    def remote(self, stream_id: str) -> str:
        """Mux's live stream for our stream: found by the passthrough Mux was given, on the stand-in's side."""
        found = [sid for sid, s in self.env.standin.streams.items() if s.data.get("passthrough") == stream_id]
        assert len(found) == 1, found
        return found[0]

    def check_created(self, created: dict[str, Any]) -> None:
        live = self.env.standin.streams[self.remote(created["id"])]
        assert created["stream_key"] == live.data["stream_key"]  # Mux's key, shown once
        assert created["rtmp_url"] == "rtmp://global-live.mux.com:5222/app"
        assert created["srt_url"].startswith("srt://global-live.mux.com:6001?streamid=" + live.data["stream_key"])
        assert created["playback_url"] == f"https://stream.mux.com/{live.data['playback_ids'][0]['id']}.m3u8"

    def go_live(self, stream: dict[str, Any], key: str) -> None:
        standin = self.env.standin
        remote = self.remote(stream["id"])
        standin.encoder_connects(remote)
        for kind in ("video.live_stream.connected", "video.live_stream.active"):
            status, _ = standin.send(self.hook, standin.event(kind, standin.streams[remote].data))
            assert status == 200
        # The live asset is playable while live: that is not the recording yet.
        status, answer = standin.send(self.hook, standin.event("video.asset.ready", standin.streams[remote].asset or {}))
        assert status == 200 and answer["handled"] == []

    def after_end(self, stream: dict[str, Any]) -> None:
        standin = self.env.standin
        remote = self.remote(stream["id"])
        assert [c.method for c in standin.calls if c.path == f"/video/v1/live-streams/{remote}/complete"] == ["PUT"]
        asset = standin.asset_completed(remote, 42.5)
        for kind in ("video.live_stream.idle", "video.asset.live_stream_completed", "video.asset.ready"):
            data = asset if kind.startswith("video.asset") else standin.streams[remote].data
            status, _ = standin.send(self.hook, standin.event(kind, data))
            assert status == 200

    def check_recording(self, stream: dict[str, Any], recording: dict[str, Any]) -> None:
        asset = self.env.standin.streams[self.remote(stream["id"])].asset
        assert asset is not None
        assert recording["playback_url"] == f"https://stream.mux.com/{asset['playback_ids'][0]['id']}.m3u8"
        assert recording["duration"] == 42.5

    def check_private(self, stream_id: str) -> None:
        server, standin = self.env.server, self.env.standin
        status, created = server.api("POST", "/api/streams", {"title": "Members' evening", "backend": "mux",
                                                              "visibility": "PRIVATE"})
        assert status == 201
        live = standin.streams[self.remote(created["id"])]
        create_call = [c for c in standin.calls if c.method == "POST" and c.path == "/video/v1/live-streams"][-1]
        assert create_call.body["playback_policy"] == ["signed"]
        playback_id = live.data["playback_ids"][0]["id"]
        before = int(time.time())
        status, grant = server.api("POST", f"/api/streams/{created['id']}/playback-tokens", {"ttl": 600})
        assert status == 201
        assert grant["playback_url"] == f"https://stream.mux.com/{playback_id}.m3u8?token={grant['token']}"
        header, claims = verify_rs256(grant["token"], self.env.signing_key.public_key())
        assert header == {"alg": "RS256", "typ": "JWT", "kid": MUX_SIGNING_KEY_ID}
        assert claims["sub"] == playback_id and claims["aud"] == "v"
        assert before + 600 <= claims["exp"] <= int(time.time()) + 600

    def check_rotation(self, stream: dict[str, Any], old_key: str, new_key: str) -> None:
        live = self.env.standin.streams[self.remote(stream["id"])]
        assert [c.method for c in self.env.standin.calls
                if c.path == f"/video/v1/live-streams/{live.data['id']}/reset-stream-key"] == ["POST"]
        assert live.keys == [old_key, new_key]  # the platform's key changed to the one we were given


def config_of(page: bytes) -> dict[str, Any]:
    """The player's configuration embedded in a watch page."""
    text = page.decode()
    start = text.index('<script id="player-config" type="application/json">') + len(
        '<script id="player-config" type="application/json">')
    return dict(json.loads(text[start:text.index("</script>", start)]))


def page_config(server: Any, path: str) -> dict[str, Any]:
    status, _headers, body = server.get(path)
    assert status == 200, body[:300]
    return config_of(body)


def verify_rs256(token: str, public_key: rsa.RSAPublicKey) -> tuple[dict[str, Any], dict[str, Any]]:
    """A JWT checked independently of the server's code: RS256 signature over header.payload."""
    def unb64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    head, body, signature = token.split(".")
    public_key.verify(unb64(signature), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return json.loads(unb64(head)), json.loads(unb64(body))


DRIVERS: dict[str, Callable[[Env], Any]] = {"builtin": Builtin, "mux": Mux, "ivs": Ivs}


@pytest.mark.parametrize("backend", ["builtin", "mux", "ivs"])
def test_lifecycle(env: Env, backend: str) -> None:
    driver = DRIVERS[backend](env)
    server, receiver = env.server, env.receiver
    status, created = server.api("POST", "/api/streams", {"title": f"Sunday on {backend}", "backend": backend})
    assert status == 201 and created["backend"] == backend and created["status"] == "SCHEDULED"
    driver.check_created(created)
    stream_id, key = created["id"], created["stream_key"]
    status, read = server.api("GET", f"/api/streams/{stream_id}")
    assert status == 200 and "stream_key" not in read and key not in json.dumps(read)  # shown once

    async def watch() -> list[str]:
        async with aiohttp.ClientSession() as session:
            chat = await connect(session, server, stream_id)
            await asyncio.to_thread(driver.go_live, created, key)
            await chat.expect("stream:live", lambda d: d["stream_id"] == stream_id, timeout=30)
            await asyncio.to_thread(until, lambda: receiver.of("stream.live", stream_id), 30, "stream.live webhook")
            status, ended = await asyncio.to_thread(server.api, "POST", f"/api/streams/{stream_id}/end")
            assert status == 200, ended
            await chat.expect("stream:ended", lambda d: d["stream_id"] == stream_id, timeout=30)
            return [str(ended["status"])]

    assert asyncio.run(asyncio.wait_for(watch(), 90)) == ["ENDED"]
    until(lambda: receiver.of("stream.ended", stream_id), 30, "stream.ended webhook")
    driver.after_end(created)
    until(lambda: receiver.of("recording.ready", stream_id), 60, "recording.ready webhook")
    status, view = server.api("GET", f"/api/streams/{stream_id}")
    assert view["status"] == "ENDED" and view["actual_start"] and view["actual_end"]
    assert view["recording"]["status"] == "READY"
    driver.check_recording(view, view["recording"])
    assert len(receiver.of("stream.live", stream_id)) == 1 and len(receiver.of("stream.ended", stream_id)) == 1
    assert len(receiver.of("recording.ready", stream_id)) == 1  # asset.ready after completion changed nothing

    driver.check_private(stream_id)

    status, rotated = server.api("POST", f"/api/streams/{stream_id}/rotate-key")
    assert status == 200 and rotated["stream_key"] != key
    driver.check_rotation(created, key, rotated["stream_key"])

    status, _ = server.api("DELETE", f"/api/streams/{stream_id}")
    assert status == 204 and server.api("GET", f"/api/streams/{stream_id}")[0] == 404
    if backend == "mux":
        assert not [s for s in env.standin.streams.values() if s.data.get("passthrough") == stream_id]


# -- Mux only ---------------------------------------------------------------------------------------------
def test_mux_webhooks_forged_stale_unsigned_and_repeated(env: Env) -> None:
    server, standin, receiver = env.server, env.standin, env.receiver
    driver = Mux(env)
    status, created = server.api("POST", "/api/streams", {"title": "Webhook checks", "backend": "mux"})
    assert status == 201
    remote = driver.remote(created["id"])
    active = standin.event("video.live_stream.active", standin.streams[remote].data)
    hook = driver.hook
    assert standin.send(hook, active, signed=False)[0] == 401
    assert standin.send(hook, active, secret="not-the-webhook-secret")[0] == 401
    assert standin.send(hook, active, tamper=True)[0] == 401
    status, answer = standin.send(hook, active, timestamp=int(time.time()) - 600)
    assert status == 400 and "old" in answer["error"]
    assert server.api("GET", f"/api/streams/{created['id']}")[1]["status"] == "SCHEDULED"  # none got through

    status, first = standin.send(hook, active)
    assert status == 200 and first["handled"][0]["result"] == "applied"
    status, again = standin.send(hook, active)  # Mux retries: the same event id
    assert status == 200 and again["handled"][0]["result"] == "repeat"
    assert server.api("POST", f"/api/streams/{created['id']}/end")[0] == 200
    until(lambda: receiver.of("stream.ended", created["id"]), 30, "stream.ended")
    # Deliveries go out in order: once stream.ended is in, a second stream.live would be too.
    assert len(receiver.of("stream.live", created["id"])) == 1


def test_mux_refuses_what_it_cannot_do(env: Env) -> None:
    server, standin = env.server, env.standin
    creates = len([c for c in standin.calls if c.method == "POST" and c.path == "/video/v1/live-streams"])
    status, answer = server.api("POST", "/api/streams", {"title": "Too fast", "backend": "mux", "latency": "realtime"})
    assert status == 400 and "real-time" in answer["details"]["latency"]
    status, answer = server.api("POST", "/api/streams", {"title": "Rewind", "backend": "mux", "dvr_enabled": True})
    assert status == 400 and "DVR" in answer["details"]["dvr_enabled"]
    assert len([c for c in standin.calls if c.method == "POST" and c.path == "/video/v1/live-streams"]) == creates
    status, low = server.api("POST", "/api/streams", {"title": "Low", "backend": "mux", "latency": "low"})
    assert status == 201 and low["dvr_enabled"] is False and low["low_latency"] is True
    assert standin.calls[-1].body["latency_mode"] == "low"
    assert server.api("POST", f"/api/streams/{low['id']}/go-live")[0] == 409


def test_mux_stream_of_another_org_is_not_found(env: Env) -> None:
    server = env.server
    status, created = server.api("POST", "/api/streams", {"title": "Ours", "backend": "mux"})
    assert status == 201
    org = server.server.db.create_org("other-church", "Other")
    _row, token = server.server.db.create_token(org["id"])
    for method, path in (("GET", ""), ("POST", "/rotate-key"), ("POST", "/end"), ("POST", "/playback-tokens"),
                         ("DELETE", "")):
        assert server.api(method, f"/api/streams/{created['id']}{path}", token=token)[0] == 404


def test_no_credentials_or_keys_in_the_database(env: Env) -> None:
    server, standin = env.server, env.standin
    status, created = server.api("POST", "/api/streams", {"title": "Secret keeping", "backend": "mux"})
    assert status == 201
    status, rotated = server.api("POST", f"/api/streams/{created['id']}/rotate-key")
    assert status == 200
    pem = base64.b64decode(server.server.config.mux.signing_private_key)
    secrets = [MUX_TOKEN_SECRET, MUX_WEBHOOK_SECRET, created["stream_key"], rotated["stream_key"],
               server.server.config.mux.signing_private_key[:40], pem.splitlines()[1].decode()]
    secrets += [s.data["stream_key"] for s in standin.streams.values()]
    stored = b"".join(p.read_bytes() for p in env.data_dir.glob("mediaserver.db*"))
    assert len(stored) > 10_000
    for secret in secrets:
        assert secret.encode() not in stored, secret[:12]


def test_backends_check_names_the_problem(env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mediaserver.cli import main

    config = tmp_path / "config.toml"
    # This stand-in serves no Mux Data: the viewer counts' question is turned off (tests/test_platform_viewers.py
    # shows the check asking it).
    config.write_text(f'[server]\ndata_dir = "{tmp_path}"\n[mux]\ntoken_id = "{MUX_TOKEN_ID}"\n'
                      f'token_secret = "wrong"\nwebhook_secret = "x"\nbase_url = "{env.standin.url}"\n'
                      'data_viewers = false\n')
    assert main(["backends", "check", "--config", str(config)]) == 1
    assert "Mux refused the access token (401)" in capsys.readouterr().out
    key = base64.b64encode(env.signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption())).decode()
    config.write_text(config.read_text().replace('"wrong"', f'"{MUX_TOKEN_SECRET}"')
                      + f'signing_key_id = "k"\nsigning_private_key = "{key}"\n')
    assert main(["backends", "check", "--config", str(config)]) == 0
    assert "mux: ok" in capsys.readouterr().out


def test_org_default_and_switching_back_end(env: Env) -> None:
    server, standin = env.server, env.standin
    driver = Mux(env)
    assert server.api("PATCH", "/api/orgs/default", {"settings": {"backend": "mux"}})[0] == 200
    try:
        status, created = server.api("POST", "/api/streams", {"title": "By default on Mux"})
        assert status == 201 and created["backend"] == "mux"
        assert created["stream_key"] == standin.streams[driver.remote(created["id"])].data["stream_key"]
    finally:
        assert server.api("PATCH", "/api/orgs/default", {"settings": {"backend": "builtin"}})[0] == 200
    # Back to this server: Mux's live stream is removed, and a key of ours is given once.
    remote = driver.remote(created["id"])
    status, moved = server.api("PATCH", f"/api/streams/{created['id']}", {"backend": "builtin"})
    assert status == 200 and moved["backend"] == "builtin" and moved["stream_key"].startswith("sk_")
    assert remote not in standin.streams
    assert moved["rtmp_url"].startswith("rtmp://127.0.0.1")
    # And onto Mux again: a new live stream there, its key in the answer.
    status, again = server.api("PATCH", f"/api/streams/{created['id']}", {"backend": "mux"})
    assert status == 200 and again["stream_key"] == standin.streams[driver.remote(created["id"])].data["stream_key"]


def test_mux_signature_parser_refuses_garbage_cleanly() -> None:
    """Random and mangled Mux-Signature headers and bodies: always NotificationRejected, never another error."""
    import random

    from mediaserver.backends.base import NotificationRejected
    from mediaserver.backends.mux import MuxBackend
    from mediaserver.config import MuxConfig

    backend = MuxBackend(MuxConfig(token_id="t", token_secret="s", webhook_secret=MUX_WEBHOOK_SECRET))
    standin = MuxStandIn(MUX_TOKEN_ID, MUX_TOKEN_SECRET, MUX_WEBHOOK_SECRET)  # only its signer is used
    now = int(time.time())
    good_body = json.dumps({"type": "video.live_stream.active", "id": "e1", "data": {"id": "ls1"}}).encode()
    good = standin.signature(good_body, now)
    assert [e.kind for e in backend.parse_notification({"Mux-Signature": good}, good_body, now)] == ["live"]
    rng = random.Random(15)
    alphabet = "t=v1,0123456789abcdef ;=\x00é"
    for i in range(300):
        header = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 90)))
        if i % 3 == 0:  # a good header, one character changed
            j = rng.randrange(len(good))
            header = good[:j] + rng.choice(alphabet) + good[j + 1:]
        body = good_body if i % 2 else bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        if header == good and body == good_body:
            continue
        with pytest.raises(NotificationRejected):
            backend.parse_notification({"Mux-Signature": header}, body, now)
    # Signed, but not an event we can read: refused, not a crash.
    for body in (b"[]", b"not json", b'{"type": "video.live_stream.active", "data": {"id": "x"}}'):
        with pytest.raises(NotificationRejected):
            backend.parse_notification({"Mux-Signature": standin.signature(body, now)}, body, now)


def test_mux_stream_turned_private_stops_its_public_urls(env: Env) -> None:
    server, standin = env.server, env.standin
    driver = Mux(env)
    status, created = server.api("POST", "/api/streams", {"title": "Public, then private", "backend": "mux"})
    assert status == 201
    remote = driver.remote(created["id"])
    live = standin.streams[remote]
    public_id = live.data["playback_ids"][0]["id"]
    assert created["playback_url"] == f"https://stream.mux.com/{public_id}.m3u8"
    # The watch page plays the platform's stream, not this server's /hls.
    assert page_config(server, f"/watch/{created['id']}")["playback_url"] == f"https://stream.mux.com/{public_id}.m3u8"
    standin.encoder_connects(remote)  # a broadcast, so there is a recording (a Mux asset) to turn private too
    assert standin.send(driver.hook, standin.event("video.live_stream.active", live.data))[0] == 200
    asset = standin.asset_completed(remote, 10.0)
    assert standin.send(driver.hook, standin.event("video.asset.live_stream_completed", asset))[0] == 200
    public_asset_id = asset["playback_ids"][0]["id"]

    status, view = server.api("PATCH", f"/api/streams/{created['id']}", {"visibility": "PRIVATE"})
    assert status == 200, view
    # On Mux's side: only signed playback ids are left, for the live stream and its recording, and new
    # recordings will be signed too.
    assert [p["policy"] for p in live.data["playback_ids"]] == ["signed"]
    assert [p["policy"] for p in asset["playback_ids"]] == ["signed"]
    assert live.data["new_asset_settings"]["playback_policies"] == ["signed"]
    assert public_id not in json.dumps(view) and public_asset_id not in json.dumps(view)
    # A signed-in volunteer's watch page (this server decides who may watch) plays the signed URL; a stranger's
    # page is locked and names no URL.
    request = urllib.request.Request(f"{server.http}/watch/{created['id']}",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        staff_page = config_of(response.read())
    assert page_config(server, f"/watch/{created['id']}")["playback_url"] == ""
    for url, playback_id in ((view["playback_url"], live.data["playback_ids"][0]["id"]),
                             (staff_page["playback_url"], live.data["playback_ids"][0]["id"]),
                             (view["recording"]["playback_url"], asset["playback_ids"][0]["id"])):
        base, _, token = url.partition("?token=")
        assert base == f"https://stream.mux.com/{playback_id}.m3u8"
        assert verify_rs256(token, env.signing_key.public_key())[1]["sub"] == playback_id


# -- simulcast targets on a cloud back-end: the platform pushes, never this server -------------------------------
def test_mux_simulcast_target_is_made_followed_and_removed_at_mux(env: Env) -> None:
    server, standin, receiver = env.server, env.standin, env.receiver
    driver = Mux(env)
    status, created = server.api("POST", "/api/streams", {"title": "Sunday, also on YouTube", "backend": "mux"})
    assert status == 201
    stream_id, remote = created["id"], driver.remote(created["id"])
    youtube_key = "yt4x-9k2m-qq7r-" + base64.b32encode(os.urandom(10)).decode()
    path = f"/api/streams/{stream_id}/simulcast-targets"
    status, target = server.api("POST", path, {"kind": "youtube", "key": youtube_key, "name": "YouTube"})
    assert status == 201, target
    # Mux got the create, with YouTube's ingest URL and the key; its passthrough is our target's id.
    creates = [c for c in standin.calls
               if c.method == "POST" and c.path == f"/video/v1/live-streams/{remote}/simulcast-targets"]
    assert [c.body for c in creates] == [{"url": "rtmp://a.rtmp.youtube.com/live2", "stream_key": youtube_key,
                                          "passthrough": target["id"]}]
    (mux_target_id, mux_target), = standin.streams[remote].simulcast_targets.items()
    assert mux_target["stream_key"] == youtube_key
    assert target["status"] == "PENDING" and youtube_key not in json.dumps(target)
    # Mux pushes the source only: a chosen rendition is refused with that reason.
    status, answer = server.api("PATCH", f"{path}/{target['id']}", {"rendition": "360p"})
    assert status == 400 and "rendition" in answer["details"], answer

    # Mux has no off switch for a target: disabling removes it there, enabling makes it again (same key).
    status, off = server.api("PATCH", f"{path}/{target['id']}", {"enabled": False})
    assert status == 200 and off["enabled"] is False and standin.streams[remote].simulcast_targets == {}
    status, on = server.api("PATCH", f"{path}/{target['id']}", {"enabled": True})
    assert status == 200 and on["enabled"] is True
    (mux_target_id, mux_target), = standin.streams[remote].simulcast_targets.items()
    assert (mux_target["stream_key"], mux_target["passthrough"]) == (youtube_key, target["id"])

    # The broadcast starts: Mux reports the target starting, then broadcasting.
    standin.encoder_connects(remote)
    assert standin.send(driver.hook, standin.event("video.live_stream.active", standin.streams[remote].data))[0] == 200
    for mux_status in ("starting", "broadcasting"):
        event = standin.event(f"video.live_stream.simulcast_target.{mux_status}",
                              standin.simulcast_status(remote, mux_target_id, mux_status))
        status, answer = standin.send(driver.hook, event)
        assert status == 200 and answer["handled"][0]["result"] == "applied", answer
    status, again = standin.send(driver.hook, event)  # Mux retries: handled once
    assert status == 200 and again["handled"][0]["result"] == "repeat"
    listed = server.api("GET", path)[1]["targets"]
    assert [(t["id"], t["status"], t["error"]) for t in listed] == [(target["id"], "LIVE", None)]
    until(lambda: [e for e in receiver.of("simulcast.status", stream_id) if e["data"]["status"] == "LIVE"], 30,
          "simulcast.status LIVE webhook")
    assert [e["data"]["status"] for e in receiver.of("simulcast.status", stream_id)] == ["CONNECTING", "LIVE"]
    assert all(e["data"]["target_id"] == target["id"] for e in receiver.of("simulcast.status", stream_id))
    # YouTube refuses mid-broadcast: FAILED with Mux's reason.
    errored = standin.event("video.live_stream.simulcast_target.errored",
                            standin.simulcast_status(remote, mux_target_id, "errored", error_severity="fatal"))
    assert standin.send(driver.hook, errored)[0] == 200
    (failed,) = server.api("GET", path)[1]["targets"]
    assert failed["status"] == "FAILED" and "fatal" in failed["error"]
    # This server never pushed: no pusher of ours knows the target.
    from web.simulcast_api import SIMULCAST_HUB
    assert target["id"] not in server.server.runner.app[SIMULCAST_HUB].states
    # A target added during the broadcast: Mux refuses (idle streams only) and nothing is kept here.
    status, answer = server.api("POST", path, {"kind": "rtmp", "url": "rtmp://live.example.org/app", "key": "k-2"})
    assert status == 502 and "idle" in answer["details"]["backend"], answer
    assert len(server.api("GET", path)[1]["targets"]) == 1
    # The key is in no answer and not in the database file.
    assert youtube_key not in json.dumps(server.api("GET", path)[1])
    stored = b"".join(p.read_bytes() for p in env.data_dir.glob("mediaserver.db*"))
    assert youtube_key.encode() not in stored and mux_target_id.encode() in stored

    # Deleted here -> deleted at Mux.
    status, _ = server.api("DELETE", f"{path}/{target['id']}")
    assert status == 204
    assert [c.method for c in standin.calls
            if c.path == f"/video/v1/live-streams/{remote}/simulcast-targets/{mux_target_id}"] == ["DELETE"]
    assert standin.streams[remote].simulcast_targets == {}
    assert server.api("GET", path)[1]["targets"] == []


def test_ivs_stream_refuses_simulcast_targets_with_its_reason(env: Env) -> None:
    server = env.server
    status, created = server.api("POST", "/api/streams", {"title": "On IVS", "backend": "ivs"})
    assert status == 201, created
    path = f"/api/streams/{created['id']}/simulcast-targets"
    status, answer = server.api("POST", path, {"kind": "youtube", "key": "abcd-efgh-ijkl"})
    assert status == 409 and "IVS can't simulcast" in answer["error"], answer
    assert server.api("GET", path)[1]["targets"] == []
