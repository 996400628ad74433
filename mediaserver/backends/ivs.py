"""AWS IVS (Interactive Video Service) as a stream back-end, through boto3's "ivs" client.

One of our streams is one IVS channel (its ARN is the remote id). IVS ingest is RTMPS on port 443 (and SRT on
channels that offer it); playback is IVS's own HLS URL, and a private stream's channel is `authorized`, so each
viewer URL carries a playback authorization token: a JWT signed ES384 with a key pair whose public half is
imported into IVS. IVS has no DVR window and no real-time mode on channels (that is IVS Real-Time, a
different product): create() refuses both with the reason. Recording needs an IVS recording configuration (it
names the S3 bucket).

State comes from EventBridge ("IVS Stream State Change", "IVS Recording State Change") through an API
destination to POST /hooks/ivs; its connection sends a shared secret header (API-key auth) or Basic auth with
the secret as password. parse_notification() is sans-IO: it checks the secret, refuses events older than
five minutes and returns events keyed by the envelope id (the lifecycle handles each id once).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from mediaserver.backends.base import (
    BackendError, Capabilities, Ingest, LifecycleEvent, NotificationRejected, RemoteStream, StaleNotification,
    StreamSpec, Unsupported,
)
from mediaserver.config import IvsConfig

PRIVATE_KEY_ENV = "MEDIASERVER_IVS_PLAYBACK_PRIVATE_KEY"
SECRET_ENV = "MEDIASERVER_IVS_NOTIFICATION_SECRET"
MAX_EVENT_AGE = 300.0       # seconds: EventBridge retries for up to a day; older deliveries are replays
KEY_PAIR_NAME = "mediaserver-playback"
LATENCY_MODES = {"low": "LOW", "standard": "NORMAL"}
CHANNEL_TYPES = ("BASIC", "STANDARD", "ADVANCED_SD", "ADVANCED_HD")

# IVS channels only deliver to their own viewers; restreaming needs something else (e.g. a MediaLive channel).
NO_SIMULCAST = ("IVS can't simulcast: an IVS channel has no restreaming to YouTube, Facebook or other RTMP "
                "servers. Run this stream on the built-in engine or Mux, or send to those platforms from the encoder")

CAPABILITIES = Capabilities(
    latency_modes=("standard", "low"),
    dvr_window=False,
    recording=True,
    srt_ingest=True,
    rtmps_ingest=True,
    simulcast=False,
    signed_playback="ivs-token",
    notes=(
        "IVS has no DVR window: viewers of a live IVS channel can't rewind (set dvr_window to 0).",
        "IVS real-time is a different product (IVS Real-Time stages); IVS channels offer low or standard latency.",
        "Recording needs [ivs] recording_configuration_arn (an IVS recording configuration writing to your S3 "
        "bucket); recordings play from [ivs] recording_base_url.",
        "Ingest is RTMPS (rtmps://…:443/app/) or SRT; IVS refuses plain RTMP unless the channel allows it.",
        "Ending a broadcast stops the IVS stream, but an encoder that reconnects starts it again: stop the encoder "
        "too, or rotate the key.",
    ),
)


# -- sans-IO: playback authorization tokens ---------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """The P-384 private key IVS playback authorization needs; a plain ValueError says what is wrong."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the IVS playback private key is not a readable unencrypted PEM key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
        raise ValueError("the IVS playback private key must be an ECDSA P-384 (secp384r1) key")
    return key


def public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def playback_token(key: ec.EllipticCurvePrivateKey, channel_arn: str, *, origin: str, expires: int) -> str:
    """An IVS playback authorization token: a compact JWS, ES384 (raw r||s, 48 bytes each, per RFC 7518 3.4)."""
    header = {"alg": "ES384", "typ": "JWT"}
    claims = {"aws:channel-arn": channel_arn, "aws:access-control-allow-origin": origin, "exp": expires}
    signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + _b64url(json.dumps(claims, separators=(",", ":")).encode()))
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA384())))
    return signing_input + "." + _b64url(r.to_bytes(48, "big") + s.to_bytes(48, "big"))


# -- sans-IO: EventBridge notifications -----------------------------------------------------------------

def _header(headers: Mapping[str, str], name: str) -> str | None:
    lower = name.lower()
    for key, value in headers.items():
        if key.lower() == lower:
            return value
    return None


def check_secret(headers: Mapping[str, str], header_name: str, secret: str) -> None:
    """The API destination's connection authenticates with our secret: as the configured header (API-key
    auth) or as the password of Basic auth. Compared in constant time."""
    if not secret:
        raise NotificationRejected("IVS notifications are off: set [ivs] notification_secret")
    offered = _header(headers, header_name)
    if offered is None:
        auth = _header(headers, "Authorization") or ""
        if auth[:6].lower() == "basic ":
            try:
                offered = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8").partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                offered = None
    if offered is None:
        raise NotificationRejected(f"IVS notification without the {header_name} secret")
    if not hmac.compare_digest(offered.encode("utf-8"), secret.encode("utf-8")):
        raise NotificationRejected("IVS notification with a wrong secret")


def _event_time(text: Any) -> float:
    if not isinstance(text, str):
        raise NotificationRejected("IVS notification without a time")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise NotificationRejected(f"IVS notification with an unreadable time {text!r}") from None
    if moment.tzinfo is None:
        raise NotificationRejected(f"IVS notification time without a zone {text!r}")
    return moment.timestamp()


def recording_asset(detail: Mapping[str, Any]) -> dict[str, Any]:
    prefix = str(detail.get("recording_s3_key_prefix") or "").strip("/")
    duration = detail.get("recording_duration_ms")
    return {
        "id": prefix,       # one recording session, one prefix: the lifecycle keeps one recording per id
        "bucket": detail.get("recording_s3_bucket_name"),
        "prefix": prefix,
        # IVS writes the HLS rendition of a recording here (see "Auto-Record to Amazon S3" in the IVS guide).
        "playlist": f"{prefix}/media/hls/master.m3u8",
        "duration": duration / 1000 if isinstance(duration, (int, float)) else None,
        "session": detail.get("recording_session_id"),
    }


def translate_event(envelope: Mapping[str, Any]) -> list[LifecycleEvent]:
    """One EventBridge event in our words (an unknown or uninteresting event gives none)."""
    event_id = envelope.get("id")
    resources = envelope.get("resources")
    detail = envelope.get("detail")
    if envelope.get("source") != "aws.ivs" or not isinstance(event_id, str) or not event_id:
        raise NotificationRejected("not an IVS EventBridge event (source aws.ivs with an id)")
    if not isinstance(resources, list) or not resources or not isinstance(resources[0], str):
        raise NotificationRejected("IVS event without its channel ARN in resources")
    if not isinstance(detail, dict):
        raise NotificationRejected("IVS event without detail")
    at = _event_time(envelope.get("time"))
    arn = resources[0]
    kind_of = envelope.get("detail-type")
    name = detail.get("event_name") or detail.get("recording_status")
    reason = str(detail.get("event_reason") or detail.get("recording_status_reason") or "")
    kind: str | None = None
    asset: dict[str, Any] | None = None
    if kind_of == "IVS Stream State Change":
        # "Session Ended" follows "Stream End" for the same broadcast: the end is already known.
        kind = {"Session Created": "connected", "Stream Start": "live", "Stream End": "ended",
                "Stream Failure": "failed"}.get(str(name))
    elif kind_of == "IVS Recording State Change" and name == "Recording End":
        kind, asset = "recording_ready", recording_asset(detail)
    if kind is None:
        return []
    return [LifecycleEvent(kind=kind, remote_id=arn, event_id=event_id, at=at, asset=asset,
                           detail=reason or str(name))]


def parse_events(headers: Mapping[str, str], body: bytes, now: float, *, header_name: str,
                 secret: str) -> list[LifecycleEvent]:
    check_secret(headers, header_name, secret)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise NotificationRejected("IVS notification body is not JSON") from None
    envelopes = data if isinstance(data, list) else [data]
    events: list[LifecycleEvent] = []
    for envelope in envelopes:
        if not isinstance(envelope, dict):
            raise NotificationRejected("IVS notification is not an EventBridge event")
        found = translate_event(envelope)
        at = _event_time(envelope.get("time"))
        if abs(now - at) > MAX_EVENT_AGE:
            raise StaleNotification(f"stale IVS notification {envelope.get('id')} from {envelope.get('time')} "
                                       f"(more than {MAX_EVENT_AGE:.0f} s from now)")
        events.extend(found)
    return events


# -- the back-end -------------------------------------------------------------------------------------

def _channel_name(stream_id: str) -> str:
    # IVS names: letters, digits, - and _, at most 128.
    return ("mediaserver-" + re.sub(r"[^A-Za-z0-9_-]", "-", stream_id))[:128]


class IvsBackend:
    name = "ivs"
    capabilities = CAPABILITIES

    def __init__(self, config: IvsConfig, *, client: Any | None = None) -> None:
        self.config = config
        self._client = client
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._key_pair_arn: str | None = None

    # boto3 is blocking: every call runs in a thread, off the event loop.
    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config
            # Short timeouts and few retries: these calls sit behind API requests a person waits on.
            kwargs: dict[str, Any] = {"region_name": self.config.region, "config": Config(
                connect_timeout=5, read_timeout=20, retries={"max_attempts": 2, "mode": "standard"})}
            if self.config.endpoint_url:
                kwargs["endpoint_url"] = self.config.endpoint_url
            if self.config.access_key_id:
                kwargs["aws_access_key_id"] = self.config.access_key_id
                kwargs["aws_secret_access_key"] = self.config.secret_access_key
            self._client = boto3.client("ivs", **kwargs)
        return self._client

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            result: dict[str, Any] = await asyncio.to_thread(getattr(self.client, operation), **params)
            return result
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise BackendError(f"IVS {operation}: {error.get('Code', '?')}: {error.get('Message', '')}") from exc
        except BotoCoreError as exc:
            raise BackendError(f"IVS {operation}: {exc}") from exc

    @staticmethod
    def _code(exc: BackendError) -> str:
        cause = exc.__cause__
        response = getattr(cause, "response", None)
        return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""

    # -- playback key ----------------------------------------------------------------------------------
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        if self._key is None:
            pem = os.environ.get(PRIVATE_KEY_ENV, "").encode()
            if not pem and self.config.playback_private_key_file:
                try:
                    pem = Path(self.config.playback_private_key_file).read_bytes()
                except OSError as exc:
                    raise Unsupported(f"can't read [ivs] playback_private_key_file: {exc}") from exc
            if not pem:
                raise Unsupported("private streams on IVS need a playback key: set [ivs] playback_private_key_file "
                                  f"(a P-384 PEM private key) or ${PRIVATE_KEY_ENV}")
            try:
                self._key = load_private_key(pem)
            except ValueError as exc:
                raise Unsupported(str(exc)) from exc
        return self._key

    def key_pair_name(self) -> str:
        # IVS never gives back an imported public key, so the pair's name says which key it is.
        der = self.private_key().public_key().public_bytes(serialization.Encoding.DER,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"{KEY_PAIR_NAME}-{hashlib.sha256(der).hexdigest()[:16]}"

    async def ensure_key_pair(self) -> str:
        """The ARN of the IVS playback key pair for our private key, imported on first use (IVS accepts a
        token signed by any key pair imported in the account and region)."""
        if self._key_pair_arn:
            return self._key_pair_arn
        name = self.key_pair_name()
        listing = await self._call("list_playback_key_pairs")
        for summary in listing.get("keyPairs", []):
            if summary.get("name") == name:
                self._key_pair_arn = str(summary["arn"])
                return self._key_pair_arn
        pair = (await self._call("import_playback_key_pair", publicKeyMaterial=public_pem(self.private_key()),
                                 name=name))["keyPair"]
        self._key_pair_arn = str(pair["arn"])
        return self._key_pair_arn

    # -- StreamBackend ---------------------------------------------------------------------------------
    def refuse(self, spec: StreamSpec) -> None:
        """What IVS can't do for this stream, raised as Unsupported before anything is created."""
        if spec.latency == "realtime":
            raise Unsupported("IVS channels have no real-time mode (that is IVS Real-Time stages, a different "
                              "product): choose low or standard latency")
        if spec.latency not in LATENCY_MODES:
            raise Unsupported(f"IVS has no {spec.latency!r} latency: choose low or standard")
        if spec.dvr_window > 0:
            raise Unsupported("IVS has no DVR window: viewers can't rewind a live IVS channel; set dvr_window to 0")
        if spec.record and not self.config.recording_configuration_arn:
            raise Unsupported("recording on IVS needs [ivs] recording_configuration_arn (an IVS recording "
                              "configuration that writes to your S3 bucket)")
        if self.config.channel_type not in CHANNEL_TYPES:
            raise Unsupported(f"[ivs] channel_type must be one of {', '.join(CHANNEL_TYPES)}")

    async def create(self, spec: StreamSpec) -> tuple[RemoteStream, Ingest]:
        self.refuse(spec)
        if spec.private:
            await self.ensure_key_pair()
        params: dict[str, Any] = {
            "name": _channel_name(spec.stream_id), "latencyMode": LATENCY_MODES[spec.latency],
            "type": self.config.channel_type, "authorized": spec.private,
            "tags": {"mediaserver:stream": spec.stream_id},
        }
        if spec.record:
            params["recordingConfigurationArn"] = self.config.recording_configuration_arn
        created = await self._call("create_channel", **params)
        channel, key = created["channel"], created["streamKey"]
        remote = RemoteStream(backend=self.name, remote_id=channel["arn"], playback_id=channel["playbackUrl"],
                              extra={"ingest_endpoint": channel["ingestEndpoint"], "latency": spec.latency,
                                     "authorized": bool(channel.get("authorized")),
                                     "srt_endpoint": (channel.get("srt") or {}).get("endpoint")})
        return remote, self._ingest(remote, key["value"], channel)

    def _ingest(self, remote: RemoteStream, key: str, channel: Mapping[str, Any] | None = None) -> Ingest:
        srt = (channel or {}).get("srt") or {}
        srt_url = None
        if srt.get("endpoint"):
            # IVS SRT: the stream key is the streamid, the channel's passphrase encrypts (port 9000).
            srt_url = (f"srt://{srt['endpoint']}:9000?"
                       + urlencode({"streamid": key, "passphrase": srt.get("passphrase", "")}))
        return Ingest(rtmp_url=None, rtmps_url=f"rtmps://{remote.extra['ingest_endpoint']}:443/app/",
                      srt_url=srt_url, stream_key=key)

    async def delete(self, remote: RemoteStream) -> None:
        try:
            await self._call("delete_channel", arn=remote.remote_id)     # its stream keys go with it
        except BackendError as exc:
            if self._code(exc) != "ResourceNotFoundException":
                raise

    async def rotate_key(self, remote: RemoteStream) -> Ingest:
        # A channel holds one stream key (an IVS quota): remove the old one, then make the new one.
        keys = await self._call("list_stream_keys", channelArn=remote.remote_id)
        for summary in keys.get("streamKeys", []):
            await self._call("delete_stream_key", arn=summary["arn"])
        key = (await self._call("create_stream_key", channelArn=remote.remote_id))["streamKey"]
        channel = (await self._call("get_channel", arn=remote.remote_id))["channel"]
        return self._ingest(remote, key["value"], channel)

    async def end(self, remote: RemoteStream) -> None:
        try:
            await self._call("stop_stream", channelArn=remote.remote_id)
        except BackendError as exc:
            if self._code(exc) != "ChannelNotBroadcasting":
                raise

    async def set_private(self, remote: RemoteStream, private: bool) -> RemoteStream:
        """Public <-> private after creation: the channel's `authorized` flag. IVS keeps the playback URL; once
        authorized its edge refuses that URL without a token signed by an imported key pair, so the pair is
        imported first (a channel never turns authorized with no key to verify its viewers' tokens)."""
        if private:
            await self.ensure_key_pair()
        channel = (await self._call("update_channel", arn=remote.remote_id, authorized=private))["channel"]
        if bool(channel.get("authorized")) != private:
            raise BackendError(f"IVS update_channel: the channel is still authorized={channel.get('authorized')}")
        return RemoteStream(remote.backend, remote.remote_id, channel.get("playbackUrl") or remote.playback_id,
                            {**remote.extra, "authorized": private})

    async def set_asset_private(self, asset: Mapping[str, Any], private: bool) -> dict[str, Any]:
        """An IVS recording is S3 objects, nothing at IVS: the flag is kept on the asset, and
        recording_playback_url refuses a private one (no unsigned bucket URL for it)."""
        return {**asset, "private": private}

    async def add_simulcast_target(self, remote: RemoteStream, url: str, key: str, passthrough: str) -> str:
        raise Unsupported(NO_SIMULCAST)

    async def remove_simulcast_target(self, remote: RemoteStream, target_id: str) -> None:
        raise Unsupported(NO_SIMULCAST)

    def playback_url(self, remote: RemoteStream, *, private: bool, ttl_seconds: int) -> str:
        url = remote.playback_id or ""
        if not private:
            return url
        token = playback_token(self.private_key(), remote.remote_id, origin=self.config.playback_origin or "*",
                               expires=int(time.time()) + ttl_seconds)
        return url + ("&" if "?" in url else "?") + urlencode({"token": token})

    def recording_playback_url(self, remote: RemoteStream, asset: Mapping[str, Any], *, private: bool,
                               ttl_seconds: int) -> str:
        if private or asset.get("private"):     # a recording made private stays so whatever the caller says
            raise Unsupported("IVS playback authorization covers live channels only; a private IVS recording "
                              "needs its bucket behind CloudFront signed URLs, which this server doesn't make")
        if not self.config.recording_base_url:
            raise Unsupported("IVS recordings play from your S3 bucket: set [ivs] recording_base_url "
                              "(e.g. the CloudFront address in front of it)")
        return f"{self.config.recording_base_url.rstrip('/')}/{str(asset['playlist']).lstrip('/')}"

    def notification_secret(self) -> str:
        return os.environ.get(SECRET_ENV) or self.config.notification_secret

    def parse_notification(self, headers: Mapping[str, str], body: bytes, now: float) -> list[LifecycleEvent]:
        return parse_events(headers, body, now, header_name=self.config.notification_header,
                            secret=self.notification_secret())

    async def check(self) -> list[str]:
        problems: list[str] = []
        try:
            await self._call("list_channels", maxResults=1)
        except BackendError as exc:
            problems.append(f"IVS in {self.config.region} doesn't answer with these credentials: {exc}")
        except Exception as exc:    # no credentials at all, a bad endpoint: say it, don't crash the check
            problems.append(f"IVS can't be reached: {exc}")
        if self.config.channel_type not in CHANNEL_TYPES:
            problems.append(f"[ivs] channel_type must be one of {', '.join(CHANNEL_TYPES)}")
        if not self.notification_secret():
            problems.append("[ivs] notification_secret is empty: IVS state changes (live, ended, recordings) "
                            "will be refused")
        if os.environ.get(PRIVATE_KEY_ENV) or self.config.playback_private_key_file:
            try:
                self.private_key()
            except Unsupported as exc:
                problems.append(str(exc))
        return problems
