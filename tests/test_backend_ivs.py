"""The AWS IVS back-end against a local IVS stand-in (moto in server mode, extended in tests/ivs_fixture.py), over
HTTP through boto3, checked with a second, independent boto3 client: what our server asked IVS to do is read
back from IVS's side, not from our return values. Private playback tokens are verified with PyJWT and the public
key IVS holds. EventBridge-shaped notifications: good, wrong secret, missing secret, stale, repeated."""
from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from mediaserver.backends.base import NotificationRejected, RemoteStream, StreamSpec, Unsupported
from mediaserver.backends.ivs import IvsBackend
from mediaserver.config import IvsConfig
from mediaserver.webhooks import verify
from tests.ivs_fixture import ACCESS, free_port, imported_public_keys, ivs_client, moto_ivs, post_event, recording_end, stopped_channels, stream_state
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config

pytestmark = pytest.mark.timeout(120)

SECRET = "ivs-eventbridge-secret-123"
RECORDING_ARN = "arn:aws:ivs:us-east-1:123456789012:recording-configuration/AbCdEf123456"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_ivs() as url:
        yield url


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = ec.generate_private_key(ec.SECP384R1())
    path = tmp_path_factory.mktemp("ivs") / "playback.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def backend(endpoint: str, key_file: Path | None = None, **overrides: Any) -> IvsBackend:
    settings: dict[str, Any] = dict(region=ACCESS["region_name"], access_key_id=ACCESS["aws_access_key_id"],
                                    secret_access_key=ACCESS["aws_secret_access_key"], endpoint_url=endpoint,
                                    recording_configuration_arn=RECORDING_ARN, notification_secret=SECRET,
                                    recording_base_url="https://recordings.example.org",
                                    playback_origin="https://stream.example.org",
                                    playback_private_key_file=str(key_file or ""))
    settings.update(overrides)
    return IvsBackend(IvsConfig(**settings))


def spec(stream_id: str, **overrides: Any) -> StreamSpec:
    values: dict[str, Any] = dict(stream_id=stream_id, title="Sunday Service", latency="low", private=False,
                                  record=False, dvr_window=0.0)
    values.update(overrides)
    return StreamSpec(**values)


def test_create_makes_the_channel_ivs_holds(endpoint: str, key_file: Path) -> None:
    aws = ivs_client(endpoint)
    ours = backend(endpoint, key_file)
    remote, ingest = asyncio.run(ours.create(spec("st_create", latency="low", private=True, record=True)))
    channel = aws.get_channel(arn=remote.remote_id)["channel"]
    assert channel["name"] == "mediaserver-st_create"
    assert channel["latencyMode"] == "LOW" and channel["type"] == "STANDARD"
    assert channel["authorized"] is True
    assert channel["recordingConfigurationArn"] == RECORDING_ARN
    assert remote.playback_id == channel["playbackUrl"]
    assert ingest.rtmps_url == f"rtmps://{channel['ingestEndpoint']}:443/app/"
    assert ingest.rtmp_url is None       # IVS ingest is RTMPS
    srt = urlsplit(ingest.srt_url or "")
    assert (srt.scheme, srt.netloc) == ("srt", f"{channel['srt']['endpoint']}:9000")
    assert parse_qs(srt.query) == {"streamid": [ingest.stream_key], "passphrase": [channel["srt"]["passphrase"]]}
    keys = aws.list_stream_keys(channelArn=remote.remote_id)["streamKeys"]
    assert len(keys) == 1
    assert aws.get_stream_key(arn=keys[0]["arn"])["streamKey"]["value"] == ingest.stream_key

    public, _ = asyncio.run(ours.create(spec("st_public", latency="standard")))
    channel = aws.get_channel(arn=public.remote_id)["channel"]
    assert channel["latencyMode"] == "NORMAL" and channel["authorized"] is False
    assert not channel["recordingConfigurationArn"]
    assert ours.playback_url(public, private=False, ttl_seconds=60) == channel["playbackUrl"]


def test_private_playback_url_carries_a_token_ivs_would_accept(endpoint: str, key_file: Path) -> None:
    aws = ivs_client(endpoint)
    ours = backend(endpoint, key_file)
    remote, _ = asyncio.run(ours.create(spec("st_private", private=True)))
    other, _ = asyncio.run(ours.create(spec("st_private2", private=True)))
    # The public key IVS verifies with: the one imported into IVS (once, though two channels were made).
    pairs = aws.list_playback_key_pairs()["keyPairs"]
    assert len(pairs) == 1
    public_pem = imported_public_keys()[pairs[0]["name"]]
    public_key = public_pem      # PyJWT reads the PEM itself

    before = time.time()
    url = ours.playback_url(remote, private=True, ttl_seconds=600)
    parts = urlsplit(url)
    channel = aws.get_channel(arn=remote.remote_id)["channel"]
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == channel["playbackUrl"]
    token = parse_qs(parts.query)["token"][0]
    assert jwt.get_unverified_header(token)["alg"] == "ES384"
    claims = jwt.decode(token, public_key, algorithms=["ES384"])     # raises on a bad signature
    assert claims["aws:channel-arn"] == channel["arn"]
    assert claims["aws:access-control-allow-origin"] == "https://stream.example.org"
    assert before + 590 <= claims["exp"] <= time.time() + 610
    # Another channel's token names the other channel; a token with a changed claim fails verification.
    other_token = parse_qs(urlsplit(ours.playback_url(other, private=True, ttl_seconds=60)).query)["token"][0]
    assert jwt.decode(other_token, public_key, algorithms=["ES384"])["aws:channel-arn"] == other.remote_id
    head, body, signature = token.split(".")
    forged = dict(claims, **{"aws:channel-arn": other.remote_id})
    forged_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{head}.{forged_body}.{signature}", public_key, algorithms=["ES384"])


def test_private_stream_without_a_playback_key_is_refused_before_anything_is_made(endpoint: str) -> None:
    aws = ivs_client(endpoint)
    count = len(aws.list_channels()["channels"])
    with pytest.raises(Unsupported, match="playback_private_key_file"):
        asyncio.run(backend(endpoint).create(spec("st_nokey", private=True)))
    assert len(aws.list_channels()["channels"]) == count


def test_rotate_key_replaces_the_channels_key(endpoint: str) -> None:
    aws = ivs_client(endpoint)
    ours = backend(endpoint)
    remote, first = asyncio.run(ours.create(spec("st_rotate")))
    old_arn = aws.list_stream_keys(channelArn=remote.remote_id)["streamKeys"][0]["arn"]
    rotated = asyncio.run(ours.rotate_key(remote))
    keys = aws.list_stream_keys(channelArn=remote.remote_id)["streamKeys"]
    assert len(keys) == 1 and keys[0]["arn"] != old_arn
    assert rotated.stream_key and rotated.stream_key != first.stream_key
    assert aws.get_stream_key(arn=keys[0]["arn"])["streamKey"]["value"] == rotated.stream_key
    with pytest.raises(ClientError):
        aws.get_stream_key(arn=old_arn)
    assert rotated.rtmps_url == first.rtmps_url


def test_end_stops_the_stream_and_delete_removes_the_channel(endpoint: str) -> None:
    aws = ivs_client(endpoint)
    ours = backend(endpoint)
    remote, _ = asyncio.run(ours.create(spec("st_delete")))
    asyncio.run(ours.end(remote))       # IVS answers ChannelNotBroadcasting for an idle channel: not an error
    assert stopped_channels(endpoint).count(remote.remote_id) == 1
    asyncio.run(ours.delete(remote))
    with pytest.raises(ClientError) as missing:
        aws.get_channel(arn=remote.remote_id)
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert remote.remote_id not in [c["arn"] for c in aws.list_channels()["channels"]]
    asyncio.run(ours.delete(remote))    # deleting again (a retry) is fine


@pytest.mark.parametrize("overrides, reason", [
    ({"dvr_window": 3600.0}, "no DVR window"),
    ({"latency": "realtime"}, "Real-Time stages"),
])
def test_what_ivs_cant_do_is_refused_with_its_reason(endpoint: str, overrides: dict[str, Any], reason: str) -> None:
    aws = ivs_client(endpoint)
    count = len(aws.list_channels()["channels"])
    ours = backend(endpoint)
    with pytest.raises(Unsupported, match=reason):
        asyncio.run(ours.create(spec("st_refused", **overrides)))
    assert len(aws.list_channels()["channels"]) == count
    assert ours.capabilities.dvr_window is False and "realtime" not in ours.capabilities.latency_modes


def test_recording_needs_a_recording_configuration(endpoint: str) -> None:
    with pytest.raises(Unsupported, match="recording_configuration_arn"):
        asyncio.run(backend(endpoint, recording_configuration_arn="").create(spec("st_norec", record=True)))


def notify(ours: IvsBackend, event: dict[str, Any], headers: dict[str, str] | None = None,
           now: float | None = None) -> list[Any]:
    sent = {"content-type": "application/json", "x-mediaserver-secret": SECRET} if headers is None else headers
    return ours.parse_notification(sent, json.dumps(event).encode(), time.time() if now is None else now)


def test_eventbridge_notifications_become_lifecycle_events(endpoint: str) -> None:
    ours = backend(endpoint)
    arn = "arn:aws:ivs:us-east-1:123456789012:channel/AbCdef1G2hij"
    start = stream_state(arn, "Stream Start")
    [live] = notify(ours, start)
    assert (live.kind, live.remote_id, live.event_id) == ("live", arn, start["id"])
    assert abs(live.at - datetime.strptime(start["time"], "%Y-%m-%dT%H:%M:%SZ")
               .replace(tzinfo=timezone.utc).timestamp()) < 1
    # A repeated delivery carries the same envelope id: the lifecycle handles that id once.
    assert [e.event_id for e in notify(ours, start)] == [start["id"]]
    assert [e.kind for e in notify(ours, stream_state(arn, "Session Created"))] == ["connected"]
    assert [e.kind for e in notify(ours, stream_state(arn, "Stream End"))] == ["ended"]
    assert notify(ours, stream_state(arn, "Session Ended")) == []
    prefix = "ivs/v1/123456789012/AbCdef1G2hij/2026/12/1/10/30/j8Z9O91ndcVs"
    [ready] = notify(ours, recording_end(arn, prefix))
    assert ready.kind == "recording_ready" and ready.asset is not None
    assert ready.asset["playlist"] == prefix + "/media/hls/master.m3u8"
    assert ready.asset["duration"] == 5432.0 and ready.asset["bucket"] == "church-recordings"
    # Recording URLs: public ones from the configured base, private ones refused with the reason.
    remote = RemoteStream(backend="ivs", remote_id=arn)
    assert ours.recording_playback_url(remote, ready.asset, private=False, ttl_seconds=60) == \
        f"https://recordings.example.org/{prefix}/media/hls/master.m3u8"
    with pytest.raises(Unsupported, match="CloudFront"):
        ours.recording_playback_url(remote, ready.asset, private=True, ttl_seconds=60)
    # Basic auth with the secret as password (the other EventBridge connection type) is accepted too.
    basic = "Basic " + base64.b64encode(f"eventbridge:{SECRET}".encode()).decode()
    assert [e.kind for e in notify(ours, stream_state(arn, "Stream Start"), {"Authorization": basic})] == ["live"]


def test_untrusted_notifications_are_refused(endpoint: str) -> None:
    ours = backend(endpoint)
    arn = "arn:aws:ivs:us-east-1:123456789012:channel/AbCdef1G2hij"
    with pytest.raises(NotificationRejected, match="wrong secret"):
        notify(ours, stream_state(arn, "Stream Start"), {"X-Mediaserver-Secret": SECRET + "x"})
    with pytest.raises(NotificationRejected, match="without"):
        notify(ours, stream_state(arn, "Stream Start"), {})
    basic = "Basic " + base64.b64encode(b"eventbridge:guess").decode()
    with pytest.raises(NotificationRejected, match="wrong secret"):
        notify(ours, stream_state(arn, "Stream Start"), {"Authorization": basic})
    stale = stream_state(arn, "Stream Start", at=datetime.now(timezone.utc) - timedelta(minutes=6))
    with pytest.raises(NotificationRejected, match="stale"):
        notify(ours, stale)
    with pytest.raises(NotificationRejected, match="not JSON"):
        ours.parse_notification({"X-Mediaserver-Secret": SECRET}, b"{not json", time.time())
    # With no secret configured, nothing is trusted, whatever it carries.
    with pytest.raises(NotificationRejected, match="notification_secret"):
        notify(backend(endpoint, notification_secret=""), stream_state(arn, "Stream Start"))


def test_check_says_whether_ivs_answers(endpoint: str, key_file: Path) -> None:
    assert asyncio.run(backend(endpoint, key_file).check()) == []
    dead = f"http://127.0.0.1:{free_port()}"     # nothing listens there
    problems = asyncio.run(backend(dead, notification_secret="").check())
    assert any("doesn't answer" in p or "can't be reached" in p for p in problems), problems
    assert any("notification_secret" in p for p in problems), problems
    bad_key = key_file.parent / "rsa.pem"
    bad_key.write_text("not a key")
    assert any("PEM" in p for p in asyncio.run(backend(endpoint, bad_key).check()))



# -- through our server: the API, POST /hooks/ivs, the lifecycle and our webhooks out -------------------------

HOOK_SECRET = "our-webhooks-out-secret-123"


class Receiver:
    """A real HTTP endpoint in its own thread recording our signed webhooks out."""

    def __init__(self) -> None:
        self.port = free_port()
        self.events: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if verify(HOOK_SECRET, request.headers.get("Webhook-Signature", ""), body):
            self.events.append(json.loads(body))
        return web.Response(status=204)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def types(self, stream_id: str) -> list[str]:
        return [e["type"] for e in self.events if e["data"].get("stream_id") == stream_id]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(endpoint: str, key_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    config = small_config(tmp_path_factory.mktemp("ivs-server"))
    config.webhooks.allow_private_networks = True
    config.ivs = IvsConfig(enabled=True, region=ACCESS["region_name"], access_key_id=ACCESS["aws_access_key_id"],
                           secret_access_key=ACCESS["aws_secret_access_key"], endpoint_url=endpoint,
                           recording_configuration_arn=RECORDING_ARN, notification_secret=SECRET,
                           recording_base_url="https://recordings.example.org",
                           playback_private_key_file=str(key_file))
    handle = run_server(config)
    try:
        yield handle
    finally:
        handle.stop()


def post_hook(server: ServerHandle, event: dict[str, Any], secret: str | None = SECRET) -> tuple[int, Any]:
    return post_event(server.http + "/hooks/ivs", event, secret)


def test_an_ivs_stream_through_the_api_and_eventbridge(server: ServerHandle, endpoint: str) -> None:
    aws = ivs_client(endpoint)
    receiver = Receiver()
    try:
        status, hook = server.api("POST", "/api/webhooks", {"url": f"http://127.0.0.1:{receiver.port}/hook",
                                                            "secret": HOOK_SECRET, "events": ["*"]})
        assert status == 201, hook
        status, stream = server.api("POST", "/api/streams", {
            "title": "Sunday on IVS", "backend": "ivs", "visibility": "PRIVATE", "latency": "low"})
        assert status == 201, stream
        sid = stream["id"]
        [channel] = [c for c in aws.list_channels()["channels"] if c["name"] == f"mediaserver-{sid}"]
        channel = aws.get_channel(arn=channel["arn"])["channel"]
        assert channel["authorized"] is True and channel["latencyMode"] == "LOW"
        assert stream["backend"] == "ivs" and stream["rtmps_url"] == f"rtmps://{channel['ingestEndpoint']}:443/app/"
        keys = aws.list_stream_keys(channelArn=channel["arn"])["streamKeys"]
        assert aws.get_stream_key(arn=keys[0]["arn"])["streamKey"]["value"] == stream["stream_key"]
        public_key = next(iter(imported_public_keys().values()))
        url = urlsplit(stream["playback_url"])
        assert f"{url.scheme}://{url.netloc}{url.path}" == channel["playbackUrl"]
        claims = jwt.decode(parse_qs(url.query)["token"][0], public_key, algorithms=["ES384"])
        assert claims["aws:channel-arn"] == channel["arn"]

        # The key rotates at IVS: one key on the channel, not the old one.
        status, rotated = server.api("POST", f"/api/streams/{sid}/rotate-key")
        assert status == 200 and rotated["stream_key"] != stream["stream_key"]
        keys = aws.list_stream_keys(channelArn=channel["arn"])["streamKeys"]
        assert [aws.get_stream_key(arn=k["arn"])["streamKey"]["value"] for k in keys] == [rotated["stream_key"]]

        # EventBridge: untrusted deliveries change nothing.
        start = stream_state(channel["arn"], "Stream Start")
        assert post_hook(server, start, secret=None)[0] == 401
        assert post_hook(server, start, secret="wrong-secret")[0] == 401
        stale = stream_state(channel["arn"], "Stream Start", at=datetime.now(timezone.utc) - timedelta(minutes=6))
        assert post_hook(server, stale)[0] == 400
        assert server.api("GET", f"/api/streams/{sid}")[1]["status"] == "SCHEDULED"

        status, answer = post_hook(server, start)
        assert status == 200 and answer["handled"][0]["result"] == "applied"
        assert server.api("GET", f"/api/streams/{sid}")[1]["status"] == "LIVE"
        wait_until(lambda: "stream.live" in receiver.types(sid), "stream.live at the receiver")
        # The same delivery again (EventBridge retries): handled once.
        status, answer = post_hook(server, start)
        assert status == 200 and answer["handled"][0]["result"] == "repeat"

        assert post_hook(server, stream_state(channel["arn"], "Stream End"))[0] == 200
        assert server.api("GET", f"/api/streams/{sid}")[1]["status"] == "ENDED"
        prefix = f"ivs/v1/123456789012/{channel['arn'].rsplit('/', 1)[1]}/2026/12/1/10/30/abc"
        assert post_hook(server, recording_end(channel["arn"], prefix))[0] == 200
        wait_until(lambda: receiver.types(sid)[-1:] == ["recording.ready"], "recording.ready at the receiver")
        assert receiver.types(sid) == ["stream.created", "stream.live", "stream.ended", "recording.ready"]
        recording = server.api("GET", f"/api/streams/{sid}")[1]["recording"]
        assert recording["status"] == "READY" and recording["duration"] == 5432.0
        # A private IVS recording: refused with its reason, not served unsigned.
        assert "CloudFront" in (recording.get("error") or "")

        status, _ = server.api("DELETE", f"/api/streams/{sid}")
        assert status in (200, 204)
        assert channel["arn"] not in [c["arn"] for c in aws.list_channels()["channels"]]
    finally:
        receiver.stop()


def test_the_api_refuses_what_ivs_cant_do(server: ServerHandle, endpoint: str) -> None:
    count = len(ivs_client(endpoint).list_channels()["channels"])
    status, body = server.api("POST", "/api/streams", {"title": "Rewind", "backend": "ivs", "dvr_enabled": True})
    assert status == 400 and "no DVR window" in body["details"]["dvr_enabled"], body
    status, body = server.api("POST", "/api/streams", {"title": "Instant", "backend": "ivs", "latency": "realtime"})
    assert status == 400 and "realtime" in body["details"]["latency"], body
    assert len(ivs_client(endpoint).list_channels()["channels"]) == count


def test_backends_check_from_the_shell(endpoint: str, key_file: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from mediaserver.cli import main

    def run(ivs_endpoint: str) -> tuple[int, str]:
        config = tmp_path / "config.toml"
        config.write_text(f"""[server]
data_dir = "{tmp_path / 'data'}"
[ivs]
enabled = true
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
endpoint_url = "{ivs_endpoint}"
notification_secret = "{SECRET}"
playback_private_key_file = "{key_file}"
""")
        code = main(["backends", "check", "--config", str(config)])
        return code, capsys.readouterr().out

    code, out = run(endpoint)
    assert code == 0 and "ivs: ok" in out, out
    code, out = run(f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "ivs: problems" in out and "IVS" in out, out


def test_an_ivs_stream_is_its_orgs_alone_and_its_key_is_not_stored(server: ServerHandle, endpoint: str) -> None:
    status, created = server.api("POST", "/api/streams", {"title": "Ours on IVS", "backend": "ivs"})
    assert status == 201, created
    status, rotated = server.api("POST", f"/api/streams/{created['id']}/rotate-key")
    assert status == 200
    org = server.server.db.create_org("other-church-ivs", "Other")
    _row, token = server.server.db.create_token(org["id"])
    for method, path in (("GET", ""), ("POST", "/rotate-key"), ("POST", "/end"), ("POST", "/playback-tokens"),
                         ("DELETE", "")):
        assert server.api(method, f"/api/streams/{created['id']}{path}", token=token)[0] == 404
    aws = ivs_client(endpoint)
    [channel] = [c for c in aws.list_channels()["channels"] if c["name"] == f"mediaserver-{created['id']}"]
    assert len(aws.list_stream_keys(channelArn=channel["arn"])["streamKeys"]) == 1    # the other org changed nothing
    stored = b"".join(p.read_bytes() for p in Path(server.server.config.server.data_dir).glob("mediaserver.db*"))
    assert len(stored) > 10_000
    for secret in (created["stream_key"], rotated["stream_key"], SECRET):
        assert secret.encode() not in stored


# -- public <-> private after creation: the channel's `authorized` flag at IVS ---------------------------------

def watch_config(server: ServerHandle, stream_id: str, token: str | None = None) -> dict[str, Any]:
    """The player configuration a watch page embeds (a signed-in volunteer's page when token is given)."""
    request = urllib.request.Request(f"{server.http}/watch/{stream_id}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    marker = '<script id="player-config" type="application/json">'
    start = text.index(marker) + len(marker)
    return dict(json.loads(text[start:text.index("</script>", start)]))


def signed_claims(url: str, channel: dict[str, Any]) -> dict[str, Any]:
    """url is the channel's playback URL with a token IVS's edge would accept: ES384, verified with a public
    key IVS holds (read from the stand-in, not from our server), naming this channel."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == channel["playbackUrl"], url
    token = parse_qs(parts.query)["token"][0]
    for pem in imported_public_keys().values():
        try:
            claims: dict[str, Any] = jwt.decode(token, pem, algorithms=["ES384"])
        except jwt.InvalidSignatureError:
            continue
        assert claims["aws:channel-arn"] == channel["arn"] and claims["exp"] > time.time()
        return claims
    raise AssertionError("no key pair imported at IVS verifies the token")


def test_an_ivs_stream_turns_private_and_public_again(server: ServerHandle, endpoint: str) -> None:
    aws = ivs_client(endpoint)
    status, created = server.api("POST", "/api/streams", {"title": "Open, then members only", "backend": "ivs"})
    assert status == 201, created
    sid = created["id"]
    [summary] = [c for c in aws.list_channels()["channels"] if c["name"] == f"mediaserver-{sid}"]
    channel = aws.get_channel(arn=summary["arn"])["channel"]
    public_url = channel["playbackUrl"]
    assert channel["authorized"] is False and created["playback_url"] == public_url
    assert watch_config(server, sid)["playback_url"] == public_url
    # A past broadcast's recording (S3 objects, nothing at IVS) follows the stream too.
    prefix = f"ivs/v1/123456789012/{channel['arn'].rsplit('/', 1)[1]}/2026/12/2/9/0/priv"
    assert post_hook(server, stream_state(channel["arn"], "Stream Start"))[0] == 200
    assert post_hook(server, stream_state(channel["arn"], "Stream End"))[0] == 200
    assert post_hook(server, recording_end(channel["arn"], prefix))[0] == 200
    recording_url = f"https://recordings.example.org/{prefix}/media/hls/master.m3u8"
    assert server.api("GET", f"/api/streams/{sid}")[1]["recording"]["playback_url"] == recording_url

    status, view = server.api("PATCH", f"/api/streams/{sid}", {"visibility": "PRIVATE"})
    assert status == 200, view
    channel = aws.get_channel(arn=channel["arn"])["channel"]
    assert channel["authorized"] is True          # IVS's edge now refuses the bare URL
    signed_claims(view["playback_url"], channel)
    assert public_url != view["playback_url"]
    # The recording: its bare bucket URL is handed out nowhere any more (IVS can't sign it: the view says why,
    # unless this server plays its own copy of it instead).
    assert recording_url not in json.dumps(view)
    assert view["recording"]["playback_url"] or "CloudFront" in view["recording"]["error"]
    # Pages: the broadcast is over, so they play the recording: a stranger's watch page names no URL, a
    # signed-in volunteer's never the bare recording or the bare channel.
    assert watch_config(server, sid)["playback_url"] == ""
    assert watch_config(server, sid, ADMIN_TOKEN)["playback_url"] not in (recording_url, public_url)
    status, grant = server.api("POST", f"/api/streams/{sid}/playback-tokens", {"ttl": 600})
    assert status == 201 and signed_claims(grant["playback_url"], channel)["aws:channel-arn"] == channel["arn"]

    status, view = server.api("PATCH", f"/api/streams/{sid}", {"visibility": "PUBLIC"})
    assert status == 200, view
    assert aws.get_channel(arn=channel["arn"])["channel"]["authorized"] is False
    assert view["playback_url"] == public_url and "token" not in view["playback_url"]
    assert view["recording"]["playback_url"] == recording_url
    assert watch_config(server, sid)["playback_url"] == recording_url     # the broadcast is over: its recording


def test_a_password_makes_an_ivs_stream_private_too(server: ServerHandle, endpoint: str) -> None:
    aws = ivs_client(endpoint)
    status, created = server.api("POST", "/api/streams", {"title": "Family service", "backend": "ivs"})
    assert status == 201, created
    [summary] = [c for c in aws.list_channels()["channels"] if c["name"] == f"mediaserver-{created['id']}"]
    status, view = server.api("PATCH", f"/api/streams/{created['id']}", {"password": "grace-and-peace"})
    assert status == 200, view
    channel = aws.get_channel(arn=summary["arn"])["channel"]
    assert channel["authorized"] is True
    signed_claims(view["playback_url"], channel)
    # Not broadcast yet, so the pages show the live channel: signed, never the bare URL (a public stream with a
    # password opens its page to anyone, as on the built-in engine; the platform URL is signed all the same).
    for token in (None, ADMIN_TOKEN):
        signed_claims(watch_config(server, created["id"], token)["playback_url"], channel)
    status, view = server.api("PATCH", f"/api/streams/{created['id']}", {"password": None})
    assert status == 200, view
    assert aws.get_channel(arn=summary["arn"])["channel"]["authorized"] is False
    assert view["playback_url"] == channel["playbackUrl"]


def test_set_private_imports_the_playback_key_before_authorizing(endpoint: str, tmp_path: Path) -> None:
    """Straight at the back-end: a channel never turns authorized without a key pair IVS can verify with."""
    aws = ivs_client(endpoint)
    fresh = tmp_path / "fresh.pem"
    key = ec.generate_private_key(ec.SECP384R1())
    fresh.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    ours = backend(endpoint, fresh)
    remote, _ingest = asyncio.run(ours.create(spec("st_flip")))
    assert pem not in imported_public_keys().values()
    private = asyncio.run(ours.set_private(remote, True))
    assert pem in imported_public_keys().values()
    assert aws.get_channel(arn=remote.remote_id)["channel"]["authorized"] is True
    assert private.remote_id == remote.remote_id and private.extra["authorized"] is True
    # Without a playback key at all: refused with the reason, the channel left as it was.
    keyless = backend(endpoint)
    with pytest.raises(Unsupported, match="playback_private_key_file"):
        asyncio.run(keyless.set_private(asyncio.run(keyless.create(spec("st_keyless")))[0], True))
    [channel] = [c for c in aws.list_channels()["channels"] if c["name"] == "mediaserver-st_keyless"]
    assert channel["authorized"] is False
    asset = {"id": "p", "playlist": "p/media/hls/master.m3u8"}
    marked = asyncio.run(ours.set_asset_private(asset, True))
    with pytest.raises(Unsupported):
        ours.recording_playback_url(remote, marked, private=False, ttl_seconds=60)
    assert ours.recording_playback_url(remote, asyncio.run(ours.set_asset_private(marked, False)), private=False,
                                       ttl_seconds=60).endswith("/p/media/hls/master.m3u8")
