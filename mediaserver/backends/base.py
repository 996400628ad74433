"""The video-platform interface a stream runs on: `builtin` (this server's own engine), `mux` or `ivs`.

Everything else (the API, the console, schedules, chat, giving moments, webhooks out, analytics, the sermon
library) talks to a stream the same way whichever back-end carries its video. A back-end only answers what a
video platform does: make and remove the live stream, say where the encoder sends (and with which key), where
viewers play (signed for private streams with the platform's own scheme), rotate the key, and turn the
platform's own notifications into the lifecycle events below. What a platform can't do, its Capabilities say,
and the API refuses it with that reason instead of pretending.

Sans-IO where it can be: parse_notification() gets the raw request (headers, body, now) and returns events.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

BACKENDS = ("builtin", "mux", "ivs")


class BackendError(RuntimeError):
    """The platform refused or failed a call; the message says which call and the platform's reason."""


class Unsupported(BackendError):
    """The platform can't do what was asked (e.g. a DVR window on IVS); the message says so in plain words."""


class NotificationRejected(ValueError):
    """An incoming platform notification that must not be trusted (unsigned, forged, stale); the message says
    why. The HTTP endpoint answers 400/401 with it and logs it."""


class StaleNotification(NotificationRejected):
    """A correctly signed notification that is too old (or dated too far ahead): a replay. Answered 400, where
    a missing or forged signature is 401."""


@dataclass(frozen=True)
class Capabilities:
    latency_modes: tuple[str, ...]      # of "standard", "low", "realtime"
    dvr_window: bool                    # viewers can rewind a live stream
    recording: bool                     # a live stream becomes a VOD asset/recording
    srt_ingest: bool
    rtmps_ingest: bool
    simulcast: bool                     # the platform pushes to other RTMP targets itself
    signed_playback: str                # "token" (ours), "jwt" (Mux), "ivs-token" (IVS playback authorization)
    notes: tuple[str, ...] = ()         # what a church should know (e.g. "no DVR window on IVS")


@dataclass(frozen=True)
class StreamSpec:
    """What a back-end needs to create a live stream for one of our streams."""
    stream_id: str
    title: str
    latency: str                        # "standard" | "low" | "realtime"
    private: bool                       # playback must be signed
    record: bool
    dvr_window: float                   # seconds; 0 = live edge only


@dataclass
class Ingest:
    rtmp_url: str | None
    rtmps_url: str | None
    srt_url: str | None
    stream_key: str | None              # None when the platform keeps it secret after creation


@dataclass
class RemoteStream:
    """The platform's side of one of our streams, stored on the stream row as JSON (`backend_ref`).
    Secrets (stream keys) are not kept here in clear: see mediaserver/secret_box.py."""
    backend: str
    remote_id: str                      # Mux live stream id, IVS channel ARN
    playback_id: str | None = None      # Mux playback id, IVS playback URL
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LifecycleEvent:
    """A platform notification, in our words. `kind`: "connected" (encoder in), "live", "disconnected",
    "ended", "recording_ready" (asset playable: `asset` has its id/playback), "failed", "simulcast" (a target the
    platform pushes to changed: `detail` is our target status, `target` has the platform's target id,
    passthrough and error)."""
    kind: str
    remote_id: str
    event_id: str                       # the platform's id for this notification: handled once (idempotent)
    at: float                           # when it happened (unix seconds), per the platform
    asset: dict[str, Any] | None = None
    detail: str = ""
    target: dict[str, Any] | None = None


class StreamBackend(Protocol):
    name: str
    capabilities: Capabilities

    async def create(self, spec: StreamSpec) -> tuple[RemoteStream, Ingest]: ...
    async def delete(self, remote: RemoteStream) -> None: ...
    async def rotate_key(self, remote: RemoteStream) -> Ingest: ...
    async def end(self, remote: RemoteStream) -> None:
        """End the broadcast now (Mux: complete the live stream; IVS: stop the stream)."""
        ...
    async def add_simulcast_target(self, remote: RemoteStream, url: str, key: str, passthrough: str) -> str:
        """Have the platform push the stream to url with key too; returns the platform's target id. passthrough
        (our target's id) comes back in the platform's notifications. Unsupported where the platform can't."""
        ...
    async def remove_simulcast_target(self, remote: RemoteStream, target_id: str) -> None:
        """Stop and remove a platform's target (already gone: done)."""
        ...
    def playback_url(self, remote: RemoteStream, *, private: bool, ttl_seconds: int) -> str:
        """Where viewers play; signed with the platform's scheme when private (short-lived)."""
        ...
    def recording_playback_url(self, remote: RemoteStream, asset: Mapping[str, Any], *, private: bool,
                               ttl_seconds: int) -> str: ...
    def parse_notification(self, headers: Mapping[str, str], body: bytes, now: float) -> list[LifecycleEvent]:
        """Verify (signature, age) and translate a platform notification; raise NotificationRejected."""
        ...
    async def check(self) -> list[str]:
        """Problems with the configured credentials or endpoint, in plain words (empty: all good).
        `mediaserver backends check` prints them."""
        ...
