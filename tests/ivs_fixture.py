"""A local stand-in for AWS IVS: moto in server mode, boto3 pointed at it, and EventBridge-shaped events.

moto 5 implements the IVS channel calls (CreateChannel returns the channel's first stream key, GetChannel,
ListChannels, DeleteChannel) but not stream keys, StopStream or playback key pairs. extend_moto_ivs() adds
those to moto's own IVS backend, with IVS's documented behaviour (one stream key per channel: a second
CreateStreamKey is refused with ServiceQuotaExceededException; StopStream on an idle channel answers
ChannelNotBroadcasting; deleting a channel deletes its keys; channels carry an SRT endpoint and passphrase), so the same boto3 calls a church's server makes
against AWS run here over HTTP. What the stand-in can't show: real ingest, real playback authorization by
IVS's edge, real EventBridge delivery.
"""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3

from mediaserver.config import IvsConfig

REGION = "us-east-1"
ACCESS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": REGION}
_EXTENDED = False


def extend_moto_ivs() -> None:
    """Teach moto's IVS backend the stream-key, StopStream and playback-key-pair calls (once per process)."""
    global _EXTENDED
    if _EXTENDED:
        return
    from moto.ivs import urls
    from moto.ivs.exceptions import ResourceNotFoundException
    from moto.ivs.models import IVSBackend
    from moto.ivs.responses import IVSResponse
    from moto.core.exceptions import JsonRESTError
    from moto.moto_api._internal import mock_random

    class Refused(JsonRESTError):
        code = 400

        def __init__(self, kind: str, message: str) -> None:
            super().__init__(kind, message)

    def keys(self: Any) -> dict[str, dict[str, Any]]:
        if not hasattr(self, "_stream_keys"):
            self._stream_keys = {}
            self._key_pairs = {}
            self.stopped = []
        return self._stream_keys  # type: ignore[no-any-return]

    original_create = IVSBackend.create_channel

    def create_channel(self: Any, **kwargs: Any) -> Any:
        channel, key = original_create(self, **kwargs)
        # Real IVS channels also answer SRT ingest (boto3's Channel.srt); moto's don't say so.
        channel["srt"] = {"endpoint": f"{channel['arn'].rsplit('/', 1)[1]}.srt.live-video.net",
                          "passphrase": mock_random.get_random_string(32)}
        keys(self)[key["arn"]] = key
        return channel, key

    def new_key(self: Any, channel_arn: str) -> dict[str, Any]:
        self._find_channel(channel_arn)
        if any(k["channelArn"] == channel_arn for k in keys(self).values()):
            raise Refused("ServiceQuotaExceededException", "a channel has at most 1 stream key")
        arn = f"arn:aws:ivs:{self.region_name}:{self.account_id}:stream-key/{mock_random.get_random_string(12)}"
        key = {"arn": arn, "channelArn": channel_arn, "tags": {},
               "value": f"sk_{self.region_name}_{mock_random.token_urlsafe(32)}"}
        keys(self)[arn] = key
        return key

    def delete_key(self: Any, arn: str) -> None:
        if keys(self).pop(arn, None) is None:
            raise ResourceNotFoundException(f"Resource: {arn} not found")

    original_delete = IVSBackend.delete_channel

    def delete_channel(self: Any, arn: str) -> None:
        original_delete(self, arn)
        for key_arn in [a for a, k in keys(self).items() if k["channelArn"] == arn]:
            del keys(self)[key_arn]

    def stop(self: Any, channel_arn: str) -> None:
        self._find_channel(channel_arn)
        keys(self)
        self.stopped.append(channel_arn)
        raise Refused("ChannelNotBroadcasting", "the channel is not broadcasting")

    def import_pair(self: Any, material: str, name: str) -> dict[str, Any]:
        keys(self)
        if any(p["publicKeyMaterial"] == material for p in self._key_pairs.values()):
            raise Refused("ConflictException", "this public key is already imported")
        arn = f"arn:aws:ivs:{self.region_name}:{self.account_id}:playback-key/{mock_random.get_random_string(12)}"
        pair = {"arn": arn, "name": name, "fingerprint": uuid.uuid4().hex, "publicKeyMaterial": material,
                "tags": {}}
        self._key_pairs[arn] = pair
        return pair

    IVSBackend.create_channel = create_channel  # type: ignore[method-assign,assignment]
    IVSBackend.delete_channel = delete_channel  # type: ignore[method-assign]

    def public_view(pair: dict[str, Any]) -> dict[str, Any]:
        # Like IVS: a key pair's public key material goes in, never comes back out.
        return {k: v for k, v in pair.items() if k != "publicKeyMaterial"}

    def param(resp: Any, name: str) -> Any:
        return resp._get_param(name)

    def r_create_key(resp: Any) -> str:
        return json.dumps({"streamKey": new_key(resp.ivs_backend, param(resp, "channelArn"))})

    def r_list_keys(resp: Any) -> str:
        channel = param(resp, "channelArn")
        resp.ivs_backend._find_channel(channel)
        found = [{k: v for k, v in key.items() if k != "value"}
                 for key in keys(resp.ivs_backend).values() if key["channelArn"] == channel]
        return json.dumps({"streamKeys": found})

    def r_get_key(resp: Any) -> str:
        arn = param(resp, "arn")
        key = keys(resp.ivs_backend).get(arn)
        if key is None:
            raise ResourceNotFoundException(f"Resource: {arn} not found")
        return json.dumps({"streamKey": key})

    def r_delete_key(resp: Any) -> str:
        delete_key(resp.ivs_backend, param(resp, "arn"))
        return "{}"

    def r_stop(resp: Any) -> str:
        stop(resp.ivs_backend, param(resp, "channelArn"))
        return "{}"

    def r_import(resp: Any) -> str:
        return json.dumps({"keyPair": public_view(import_pair(resp.ivs_backend, param(resp, "publicKeyMaterial"),
                                                              param(resp, "name") or ""))})

    def r_list_pairs(resp: Any) -> str:
        keys(resp.ivs_backend)
        return json.dumps({"keyPairs": [public_view(p) for p in resp.ivs_backend._key_pairs.values()]})

    def r_get_pair(resp: Any) -> str:
        keys(resp.ivs_backend)
        pair = resp.ivs_backend._key_pairs.get(param(resp, "arn"))
        if pair is None:
            raise ResourceNotFoundException("no such key pair")
        return json.dumps({"keyPair": public_view(pair)})

    handlers = {"CreateStreamKey": r_create_key, "ListStreamKeys": r_list_keys, "GetStreamKey": r_get_key,
                "DeleteStreamKey": r_delete_key, "StopStream": r_stop, "ImportPlaybackKeyPair": r_import,
                "ListPlaybackKeyPairs": r_list_pairs, "GetPlaybackKeyPair": r_get_pair}
    for operation, handler in handlers.items():
        method = "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
        setattr(IVSResponse, method, handler)
        urls.url_paths["{0}/" + operation] = IVSResponse.dispatch
    _EXTENDED = True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_ivs() -> Iterator[str]:
    """A moto server (IVS extended as above) on a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer
    extend_moto_ivs()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto keeps its state per process, across servers: start from an empty IVS (other services untouched).
    from moto.ivs.models import ivs_backends
    ivs_backends.reset()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def ivs_client(endpoint: str) -> Any:
    """An independent boto3 client on the stand-in: what the tests compare our server's work with."""
    return boto3.client("ivs", endpoint_url=endpoint, **ACCESS)


def stopped_channels(endpoint: str) -> list[str]:
    """The channels StopStream was called on (moto runs in this process, so its state is readable)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ivs.models import ivs_backends
    return list(getattr(ivs_backends[DEFAULT_ACCOUNT_ID][REGION], "stopped", []))


def imported_public_keys() -> dict[str, str]:
    """The public keys imported into the stand-in (name -> PEM), read from moto's state: what IVS's edge would
    verify playback tokens with (IVS's API never returns them)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ivs.models import ivs_backends
    pairs = getattr(ivs_backends[DEFAULT_ACCOUNT_ID][REGION], "_key_pairs", {})
    return {pair["name"]: pair["publicKeyMaterial"] for pair in pairs.values()}


def eventbridge_event(channel_arn: str, detail_type: str, detail: dict[str, Any], *,
                      at: datetime | None = None, event_id: str | None = None) -> dict[str, Any]:
    """An EventBridge envelope as IVS sends it (shape from the IVS user guide, "Using EventBridge with IVS")."""
    moment = at or datetime.now(timezone.utc)
    return {
        "version": "0", "id": event_id or str(uuid.uuid4()), "detail-type": detail_type, "source": "aws.ivs",
        "account": "123456789012", "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"), "region": REGION,
        "resources": [channel_arn], "detail": detail,
    }


def stream_state(channel_arn: str, event_name: str, **kwargs: Any) -> dict[str, Any]:
    return eventbridge_event(channel_arn, "IVS Stream State Change",
                             {"event_name": event_name, "channel_name": "mediaserver",
                              "stream_id": "st-1A2b3c4D5e6F78ab91c2d3e4f5a6b7c8"}, **kwargs)


def recording_end(channel_arn: str, prefix: str, **kwargs: Any) -> dict[str, Any]:
    return eventbridge_event(channel_arn, "IVS Recording State Change", {
        "channel_name": "mediaserver", "stream_id": "st-1A2b3c4D5e6F78ab91c2d3e4f5a6b7c8",
        "recording_status": "Recording End", "recording_status_reason": "",
        "recording_s3_bucket_name": "church-recordings", "recording_s3_key_prefix": prefix,
        "recording_duration_ms": 5_432_000, "recording_session_id": "rs-1",
    }, **kwargs)


NOTIFICATION_SECRET = "ivs-eventbridge-secret-456"
RECORDING_CONFIGURATION = "arn:aws:ivs:us-east-1:123456789012:recording-configuration/StandIn12345"
RECORDINGS_AT = "https://recordings.example.org"


class IvsStandIn:
    """The moto IVS stand-in with start()/stop(), a P-384 playback key and the [ivs] config that points at it."""

    def __init__(self, directory: Path) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        self.key_file = directory / "ivs-playback.pem"
        self.key_file.write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self._context = moto_ivs()
        self.endpoint = ""

    def start(self) -> "IvsStandIn":
        self.endpoint = self._context.__enter__()
        return self

    def stop(self) -> None:
        self._context.__exit__(None, None, None)

    def config(self) -> IvsConfig:
        return IvsConfig(enabled=True, region=REGION, access_key_id=ACCESS["aws_access_key_id"],
                         secret_access_key=ACCESS["aws_secret_access_key"], endpoint_url=self.endpoint,
                         recording_configuration_arn=RECORDING_CONFIGURATION, recording_base_url=RECORDINGS_AT,
                         notification_secret=NOTIFICATION_SECRET, playback_private_key_file=str(self.key_file))


def post_event(url: str, event: dict[str, Any], secret: str | None) -> tuple[int, Any]:
    """Deliver one event as an EventBridge API destination does (API-key auth: the secret in a header)."""
    request = urllib.request.Request(url, data=json.dumps(event).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if secret is not None:
        request.add_header("X-Mediaserver-Secret", secret)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Ivs:
    """tests/test_backends.py's lifecycle driver for IVS: "the encoder goes live" is IVS's EventBridge events to
    POST /hooks/ivs; what our server did at IVS is read back with an independent boto3 client."""
    name = "ivs"

    def __init__(self, env: Any) -> None:
        self.server = env.server
        self.settings: IvsConfig = env.server.server.config.ivs
        self.aws = ivs_client(self.settings.endpoint_url)
        self.prefixes: dict[str, str] = {}

    @property
    def hook(self) -> str:
        return f"{self.server.http}/hooks/ivs"

    def channel(self, stream_id: str) -> dict[str, Any]:
        found = [c for c in self.aws.list_channels()["channels"] if c["name"] == f"mediaserver-{stream_id}"]
        assert len(found) == 1, found
        return self.aws.get_channel(arn=found[0]["arn"])["channel"]  # type: ignore[no-any-return]

    def key_values(self, channel_arn: str) -> list[str]:
        return [self.aws.get_stream_key(arn=k["arn"])["streamKey"]["value"]
                for k in self.aws.list_stream_keys(channelArn=channel_arn)["streamKeys"]]

    def send(self, event: dict[str, Any]) -> Any:
        status, answer = post_event(self.hook, event, self.settings.notification_secret)
        assert status == 200, answer
        return answer

    def check_created(self, created: dict[str, Any]) -> None:
        channel = self.channel(created["id"])
        assert self.key_values(channel["arn"]) == [created["stream_key"]]       # IVS's key, shown once
        assert created["rtmps_url"] == f"rtmps://{channel['ingestEndpoint']}:443/app/"
        assert created["playback_url"] == channel["playbackUrl"] and channel["authorized"] is False

    def go_live(self, stream: dict[str, Any], key: str) -> None:
        arn = self.channel(stream["id"])["arn"]
        for name in ("Session Created", "Stream Start"):
            self.send(stream_state(arn, name))

    def after_end(self, stream: dict[str, Any]) -> None:
        arn = self.channel(stream["id"])["arn"]
        assert stopped_channels(self.settings.endpoint_url).count(arn) == 1      # our end stopped IVS's stream
        assert self.send(stream_state(arn, "Stream End"))["handled"][0]["result"] == "no change"
        prefix = f"ivs/v1/123456789012/{arn.rsplit('/', 1)[1]}/2026/12/6/16/30/{uuid.uuid4().hex[:12]}"
        self.prefixes[stream["id"]] = prefix
        self.send(recording_end(arn, prefix))

    def check_recording(self, stream: dict[str, Any], recording: dict[str, Any]) -> None:
        prefix = self.prefixes[stream["id"]]
        assert recording["playback_url"] == f"{RECORDINGS_AT}/{prefix}/media/hls/master.m3u8"
        assert recording["duration"] == 5432.0

    def check_private(self, stream_id: str) -> None:
        import jwt
        from cryptography.hazmat.primitives import serialization
        status, created = self.server.api("POST", "/api/streams", {"title": "Members' evening", "backend": "ivs",
                                                                   "visibility": "PRIVATE"})
        assert status == 201, created
        channel = self.channel(created["id"])
        assert channel["authorized"] is True
        before = int(time.time())
        status, grant = self.server.api("POST", f"/api/streams/{created['id']}/playback-tokens", {"ttl": 600})
        assert status == 201
        assert grant["playback_url"] == f"{channel['playbackUrl']}?token={grant['token']}"
        private = serialization.load_pem_private_key(Path(self.settings.playback_private_key_file).read_bytes(), None)
        pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        assert pem in imported_public_keys().values()    # IVS holds the public key that verifies the token
        claims = jwt.decode(grant["token"], pem, algorithms=["ES384"])
        assert claims["aws:channel-arn"] == channel["arn"]
        assert before + 600 <= claims["exp"] <= int(time.time()) + 600

    def check_rotation(self, stream: dict[str, Any], old_key: str, new_key: str) -> None:
        assert self.key_values(self.channel(stream["id"])["arn"]) == [new_key]   # the old key is gone at IVS
