"""The built-in back-end: this server's own engine (RTMP/SRT/WHIP ingest, transcode, LL-HLS, recordings).

Its streams need nothing made elsewhere: the stream row is the stream, the database makes and rotates the key,
and the session manager (mediaserver/sessions.py) drives the lifecycle itself. This class answers what the
interface asks of it so the API can treat every back-end alike: capabilities, ingest and signed playback.
"""
from __future__ import annotations

from typing import Any, Mapping

from mediaserver.backends.base import (Capabilities, Ingest, LifecycleEvent, NotificationRejected, RemoteStream,
                                       StreamSpec, Unsupported)
from mediaserver.config import Config
from mediaserver.playback_tokens import PlaybackSigner

CAPABILITIES = Capabilities(
    latency_modes=("standard", "low"),
    dvr_window=True,
    recording=True,
    srt_ingest=True,
    rtmps_ingest=True,
    simulcast=True,
    signed_playback="token",
    notes=("Real-time (WebRTC) viewing is not offered: WHIP is for ingest; viewers watch LL-HLS (low) or HLS.",),
)


class BuiltinBackend:
    name = "builtin"
    capabilities = CAPABILITIES

    def __init__(self, config: Config, signer: PlaybackSigner) -> None:
        self.config = config
        self.signer = signer

    def _base(self) -> str:
        return self.config.server.base_url() or f"http://127.0.0.1:{self.config.server.http_port}"

    async def create(self, spec: StreamSpec) -> tuple[RemoteStream, Ingest]:
        if spec.latency not in self.capabilities.latency_modes:
            raise Unsupported(f"the built-in engine has no {spec.latency!r} latency mode (only standard or low)")
        host = self.config.server.public_hostname() or "127.0.0.1"
        rtmp = f"rtmp://{host}:{self.config.server.rtmp_port}/{self.config.rtmp.app}"
        # The key is the stream row's own (made and hashed by the database), not known here.
        return RemoteStream(self.name, spec.stream_id), Ingest(rtmp, None, None, None)

    async def delete(self, remote: RemoteStream) -> None:
        return None  # the stream row and its media go with web/api.py delete_stream

    async def rotate_key(self, remote: RemoteStream) -> Ingest:
        raise Unsupported("built-in stream keys are rotated by the database (Database.rotate_key)")

    async def end(self, remote: RemoteStream) -> None:
        raise Unsupported("built-in broadcasts are ended by the session manager (StreamManager.end)")

    async def add_simulcast_target(self, remote: RemoteStream, url: str, key: str, passthrough: str) -> str:
        raise Unsupported("built-in simulcast pushes are run by this server (mediaserver/simulcast_push.py)")

    async def remove_simulcast_target(self, remote: RemoteStream, target_id: str) -> None:
        raise Unsupported("built-in simulcast pushes are run by this server (mediaserver/simulcast_push.py)")

    def playback_url(self, remote: RemoteStream, *, private: bool, ttl_seconds: int) -> str:
        url = f"{self._base()}/hls/{remote.remote_id}/master.m3u8"
        if not private:
            return url
        token, _expires = self.signer.issue(remote.remote_id, float(ttl_seconds), None)
        return f"{url}?token={token}"

    def recording_playback_url(self, remote: RemoteStream, asset: Mapping[str, Any], *, private: bool,
                               ttl_seconds: int) -> str:
        url = f"{self._base()}/hls/{remote.remote_id}/{asset['broadcast_id']}/master.m3u8"
        if not private:
            return url
        token, _expires = self.signer.issue(remote.remote_id, float(ttl_seconds), None)
        return f"{url}?token={token}"

    def parse_notification(self, headers: Mapping[str, str], body: bytes, now: float) -> list[LifecycleEvent]:
        raise NotificationRejected("the built-in engine takes no platform notifications")

    async def check(self) -> list[str]:
        return []
