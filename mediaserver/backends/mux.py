"""The Mux back-end: live streams made, ended and removed through Mux's own SDK (mux-python), private playback
signed with Mux's playback JWTs, and Mux's webhooks (Mux-Signature) read into lifecycle events.

The SDK is synchronous (urllib3): its calls run in a thread. Signing and webhook parsing are plain functions.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from datetime import datetime
from typing import Any, Callable, Mapping, TypeVar

import mux_python
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from mux_python.rest import ApiException
from urllib3.exceptions import HTTPError

from mediaserver.backends.base import (BackendError, Capabilities, Ingest, LifecycleEvent, NotificationRejected,
                                       RemoteStream, StaleNotification, StreamSpec, Unsupported)
from mediaserver.config import MuxConfig

# A signed webhook older than this (or dated this far ahead) is a replay: Mux's own libraries use 5 minutes.
WEBHOOK_TOLERANCE = 300.0
T = TypeVar("T")

CAPABILITIES = Capabilities(
    latency_modes=("standard", "low"),
    dvr_window=False,
    recording=True,
    srt_ingest=True,
    rtmps_ingest=True,
    simulcast=True,
    signed_playback="jwt",
    notes=("Mux has no real-time latency mode: low (about 5 s) or standard.",
           "Mux can rewind a live broadcast only by playing its live asset (DVR mode); this server plays the live "
           "stream at its live edge, so a Mux stream has no DVR window here.",
           "Mux pushes simulcast targets itself, always the stream as it receives it (no chosen rendition), and "
           "takes new targets only while the live stream is idle (not during a broadcast)."),
)

# Mux webhook types -> our lifecycle kinds (https://docs.mux.com/webhook-reference).
LIVE_STREAM_EVENTS = {
    "video.live_stream.connected": "connected",
    "video.live_stream.active": "live",
    "video.live_stream.disconnected": "disconnected",
    "video.live_stream.idle": "ended",
    "video.live_stream.errored": "failed",
}

# Mux simulcast target statuses -> ours (mediaserver/simulcast.py STATUSES).
SIMULCAST_STATUSES = {"idle": "PENDING", "starting": "CONNECTING", "broadcasting": "LIVE", "errored": "FAILED"}
SIMULCAST_EVENT = "video.live_stream.simulcast_target."


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_signing_key(encoded: str) -> rsa.RSAPrivateKey:
    """Mux gives a URL signing key's private half as base64 of a PEM; a plain PEM is taken too."""
    text = encoded.strip()
    pem = text.encode() if text.startswith("-----BEGIN") else base64.b64decode(text)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the Mux signing key is not an RSA key")
    return key


def playback_jwt(key: rsa.RSAPrivateKey, key_id: str, playback_id: str, expires: int, audience: str = "v") -> str:
    """A Mux signed-playback token: RS256, kid = the signing key's id, sub = the playback id, aud "v" (video)."""
    header = {"alg": "RS256", "typ": "JWT", "kid": key_id}
    claims = {"sub": playback_id, "aud": audience, "exp": expires, "kid": key_id}
    signing_input = f"{_b64url(json.dumps(header, separators=(',', ':')).encode())}." \
                    f"{_b64url(json.dumps(claims, separators=(',', ':')).encode())}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def sign_webhook(secret: str, body: bytes, timestamp: int) -> str:
    """The Mux-Signature header value for body at timestamp (what Mux sends; used by tests and the stand-in)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_webhook(secret: str, header: str | None, body: bytes, now: float) -> None:
    """Raise NotificationRejected unless header is a valid Mux-Signature of body, made within the tolerance."""
    if not secret:
        raise NotificationRejected("Mux webhooks are not accepted: [mux] webhook_secret is not configured")
    if not header:
        raise NotificationRejected("no Mux-Signature header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    stamps, signatures = parts.get("t", []), parts.get("v1", [])
    if len(stamps) != 1 or not re.fullmatch(r"[0-9]{1,12}", stamps[0]) or not signatures:
        raise NotificationRejected("Mux-Signature is not t=TIMESTAMP,v1=SIGNATURE")
    timestamp = int(stamps[0])
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")) for given in signatures):
        raise NotificationRejected("Mux-Signature does not match the body (forged, or another webhook secret)")
    if abs(now - timestamp) > WEBHOOK_TOLERANCE:
        raise StaleNotification(f"Mux-Signature timestamp is {now - timestamp:.0f} s old (more than "
                                f"{WEBHOOK_TOLERANCE:.0f} s): refused as a replay")


def _when(text: Any, fallback: float) -> float:
    if not isinstance(text, str):
        return fallback
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return fallback


def _asset(data: Mapping[str, Any]) -> dict[str, Any]:
    ids = data.get("playback_ids") or []
    first = ids[0] if ids and isinstance(ids[0], dict) else {}
    return {"id": data.get("id"), "playback_id": first.get("id"), "policy": first.get("policy"),
            "duration": float(data.get("duration") or 0.0), "status": data.get("status")}


def events_from_webhook(payload: Mapping[str, Any], signed_at: float) -> list[LifecycleEvent]:
    """A verified Mux webhook as lifecycle events (none for the types a stream's lifecycle doesn't need)."""
    kind_name = str(payload.get("type") or "")
    event_id = str(payload.get("id") or "")
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    assert isinstance(data, dict)
    if not event_id:
        raise NotificationRejected("Mux webhook without an id")
    at = _when(payload.get("created_at"), signed_at)
    if kind_name in LIVE_STREAM_EVENTS:
        remote_id = str(data.get("id") or "")
        if not remote_id:
            raise NotificationRejected(f"{kind_name} without data.id")
        return [LifecycleEvent(LIVE_STREAM_EVENTS[kind_name], remote_id, event_id, at,
                               detail=str(data.get("errors") or ""))]
    if kind_name.startswith(SIMULCAST_EVENT):
        return _simulcast_event(kind_name, payload, data, event_id, at)
    if kind_name in ("video.asset.ready", "video.asset.live_stream_completed"):
        live_stream_id = data.get("live_stream_id")
        # video.asset.ready also comes at the start of a broadcast (the live asset is playable while live):
        # the recording is ready only once the live stream is done with it.
        if not live_stream_id or (kind_name == "video.asset.ready" and data.get("is_live")):
            return []
        return [LifecycleEvent("recording_ready", str(live_stream_id), event_id, at, asset=_asset(data))]
    return []


def _simulcast_event(kind_name: str, payload: Mapping[str, Any], data: Mapping[str, Any], event_id: str,
                     at: float) -> list[LifecycleEvent]:
    """video.live_stream.simulcast_target.*: data is the simulcast target (id, status, passthrough = our id)."""
    target_id = str(data.get("id") or "")
    if not target_id:
        raise NotificationRejected(f"{kind_name} without data.id")
    suffix = kind_name[len(SIMULCAST_EVENT):]
    if suffix == "created":
        return []  # our row already knows it: created by our own call
    status = "DELETED" if suffix == "deleted" else SIMULCAST_STATUSES.get(str(data.get("status") or suffix))
    if status is None:
        return []
    error = None
    if status == "FAILED":
        severity = data.get("error_severity") or "unknown"
        error = f"Mux could not push to the target (error severity: {severity})"
    live_stream_id = data.get("live_stream_id") or ""
    return [LifecycleEvent("simulcast", str(live_stream_id), event_id, at, detail=status,
                           target={"id": target_id, "passthrough": data.get("passthrough"), "error": error})]


class MuxBackend:
    """StreamBackend on Mux Video."""
    name = "mux"
    capabilities = CAPABILITIES

    def __init__(self, config: MuxConfig) -> None:
        self.config = config
        configuration = mux_python.Configuration(host=config.base_url.rstrip("/"))
        configuration.username = config.env("token_id")
        configuration.password = config.env("token_secret")
        self._client = mux_python.ApiClient(configuration)
        self._live = mux_python.LiveStreamsApi(self._client)
        self._assets = mux_python.AssetsApi(self._client)
        self._signing_key: rsa.RSAPrivateKey | None = None

    # -- calls to Mux (in a thread: the SDK blocks) -----------------------------------------------
    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            raise BackendError(f"Mux refused {what} ({exc.status}): {_reason(exc)}") from exc
        except (HTTPError, OSError) as exc:
            raise BackendError(f"cannot reach Mux at {self.config.base_url} for {what}: {exc}") from exc

    def _ingest(self, key: str | None, srt_passphrase: str | None) -> Ingest:
        srt = None
        if key:
            srt = f"srt://{self.config.srt_host}?streamid={key}"
            if srt_passphrase:
                srt += f"&passphrase={srt_passphrase}"
        return Ingest(rtmp_url=self.config.rtmp_url, rtmps_url=self.config.rtmps_url, srt_url=srt, stream_key=key)

    async def create(self, spec: StreamSpec) -> tuple[RemoteStream, Ingest]:
        if spec.latency not in self.capabilities.latency_modes:
            raise Unsupported(f"Mux has no {spec.latency!r} latency mode (only standard or low)")
        if spec.dvr_window > 0:
            raise Unsupported("Mux has no DVR window for a live stream here (see the back-end's notes)")
        policy = "signed" if spec.private else "public"
        request = mux_python.CreateLiveStreamRequest(
            playback_policy=[policy],
            new_asset_settings=mux_python.CreateAssetRequest(playback_policy=[policy]) if spec.record else None,
            reconnect_window=self.config.reconnect_window,
            latency_mode=spec.latency,
            passthrough=spec.stream_id,  # our id, seen in every webhook of this live stream
        )
        response = await self._call("creating the live stream", self._live.create_live_stream, request)
        live = response.data
        playback = live.playback_ids[0].id if live.playback_ids else None
        remote = RemoteStream(backend=self.name, remote_id=live.id, playback_id=playback,
                              extra={"policy": policy, "record": spec.record})
        return remote, self._ingest(live.stream_key, live.srt_passphrase)

    async def delete(self, remote: RemoteStream) -> None:
        try:
            await asyncio.to_thread(self._live.delete_live_stream, remote.remote_id)
        except ApiException as exc:
            if exc.status != 404:  # already gone at Mux: nothing left to remove
                raise BackendError(f"Mux refused deleting the live stream ({exc.status}): {_reason(exc)}") from exc
        except (HTTPError, OSError) as exc:
            raise BackendError(f"cannot reach Mux at {self.config.base_url}: {exc}") from exc

    async def rotate_key(self, remote: RemoteStream) -> Ingest:
        response = await self._call("resetting the stream key", self._live.reset_stream_key, remote.remote_id)
        return self._ingest(response.data.stream_key, response.data.srt_passphrase)

    async def end(self, remote: RemoteStream) -> None:
        await self._call("completing the live stream", self._live.signal_live_stream_complete, remote.remote_id)

    async def set_private(self, remote: RemoteStream, private: bool) -> RemoteStream:
        """Public <-> private after creation: a playback id of the new policy replaces the old one (the old URL
        stops playing), and the live stream's future recordings take the new policy too."""
        policy = "signed" if private else "public"
        if remote.extra.get("policy") == policy:
            return remote
        created = await self._call("adding a playback id", self._live.create_live_stream_playback_id,
                                   remote.remote_id, mux_python.CreatePlaybackIDRequest(policy=policy))
        if remote.playback_id:
            await self._call("removing the old playback id", self._live.delete_live_stream_playback_id,
                             remote.remote_id, remote.playback_id)
        if remote.extra.get("record", True):
            await self._call("changing the recordings' playback policy", self._live.update_live_stream,
                             remote.remote_id, mux_python.UpdateLiveStreamRequest(
                                 reconnect_window=self.config.reconnect_window,
                                 new_asset_settings=mux_python.CreateAssetRequest(playback_policy=[policy])))
        return RemoteStream(remote.backend, remote.remote_id, created.data.id, {**remote.extra, "policy": policy})

    async def set_asset_private(self, asset: Mapping[str, Any], private: bool) -> dict[str, Any]:
        """The same for a recording (a Mux asset): its old playback id is removed."""
        policy = "signed" if private else "public"
        if asset.get("policy") == policy:
            return dict(asset)
        created = await self._call("adding a playback id to the recording", self._assets.create_asset_playback_id,
                                   asset["id"], mux_python.CreatePlaybackIDRequest(policy=policy))
        if asset.get("playback_id"):
            await self._call("removing the recording's old playback id", self._assets.delete_asset_playback_id,
                             asset["id"], asset["playback_id"])
        return {**asset, "playback_id": created.data.id, "policy": policy}

    # -- simulcast (Mux pushes; this server never touches the video) ---------------------------------
    async def add_simulcast_target(self, remote: RemoteStream, url: str, key: str, passthrough: str) -> str:
        request = mux_python.CreateSimulcastTargetRequest(url=url, stream_key=key, passthrough=passthrough)
        response = await self._call("adding the simulcast target", self._live.create_live_stream_simulcast_target,
                                    remote.remote_id, request)
        return str(response.data.id)

    async def remove_simulcast_target(self, remote: RemoteStream, target_id: str) -> None:
        try:
            await asyncio.to_thread(self._live.delete_live_stream_simulcast_target, remote.remote_id, target_id)
        except ApiException as exc:
            if exc.status != 404:  # gone at Mux already (or its live stream is): nothing left to remove
                raise BackendError(f"Mux refused removing the simulcast target ({exc.status}): {_reason(exc)}") \
                    from exc
        except (HTTPError, OSError) as exc:
            raise BackendError(f"cannot reach Mux at {self.config.base_url}: {exc}") from exc

    # -- playback -------------------------------------------------------------------------------
    def _signed(self, playback_id: str, ttl_seconds: int) -> str:
        key_id = self.config.env("signing_key_id")
        if not key_id or not self.config.env("signing_private_key"):
            raise Unsupported("private Mux playback needs [mux] signing_key_id and signing_private_key")
        if self._signing_key is None:
            self._signing_key = load_signing_key(self.config.env("signing_private_key"))
        token = playback_jwt(self._signing_key, key_id, playback_id, int(time.time()) + ttl_seconds)
        return f"{self.config.stream_host}/{playback_id}.m3u8?token={token}"

    def playback_url(self, remote: RemoteStream, *, private: bool, ttl_seconds: int) -> str:
        if not remote.playback_id:
            raise BackendError("the Mux live stream has no playback id")
        if private or remote.extra.get("policy") == "signed":
            return self._signed(remote.playback_id, ttl_seconds)
        return f"{self.config.stream_host}/{remote.playback_id}.m3u8"

    def recording_playback_url(self, remote: RemoteStream, asset: Mapping[str, Any], *, private: bool,
                               ttl_seconds: int) -> str:
        playback_id = asset.get("playback_id")
        if not playback_id:
            raise BackendError(f"the Mux asset {asset.get('id')} has no playback id")
        if private or asset.get("policy") == "signed":
            return self._signed(str(playback_id), ttl_seconds)
        return f"{self.config.stream_host}/{playback_id}.m3u8"

    # -- notifications ----------------------------------------------------------------------------
    def parse_notification(self, headers: Mapping[str, str], body: bytes, now: float) -> list[LifecycleEvent]:
        lowered = {k.lower(): v for k, v in headers.items()}
        verify_webhook(self.config.env("webhook_secret"), lowered.get("mux-signature"), body, now)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise NotificationRejected(f"Mux webhook body is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise NotificationRejected("Mux webhook body is not a JSON object")
        return events_from_webhook(payload, now)

    async def check(self) -> list[str]:
        problems: list[str] = []
        try:
            await asyncio.to_thread(self._live.list_live_streams, limit=1)
        except ApiException as exc:
            if exc.status in (401, 403):
                problems.append(f"Mux refused the access token ({exc.status}): check [mux] token_id and token_secret "
                                "(MUX_TOKEN_ID, MUX_TOKEN_SECRET) and that the token has Mux Video read+write")
            else:
                problems.append(f"Mux answered {exc.status} to listing live streams: {_reason(exc)}")
        except (HTTPError, OSError) as exc:
            problems.append(f"cannot reach Mux at {self.config.base_url}: {exc}")
        if not self.config.env("webhook_secret"):
            problems.append("[mux] webhook_secret (MUX_WEBHOOK_SECRET) is not set: Mux's webhooks will be refused, "
                            "so streams never show as live")
        if self.config.env("signing_key_id") or self.config.env("signing_private_key"):
            try:
                load_signing_key(self.config.env("signing_private_key"))
                if not self.config.env("signing_key_id"):
                    raise ValueError("signing_key_id is empty")
            except (ValueError, TypeError) as exc:
                problems.append(f"[mux] signing key unusable ({exc}): private streams can't be played")
        else:
            problems.append("[mux] signing_key_id/signing_private_key not set: private streams can't be played")
        return problems


def _reason(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
        messages = body.get("error", {}).get("messages") or []
        return "; ".join(str(m) for m in messages) or str(exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)
