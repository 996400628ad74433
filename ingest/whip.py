"""WHIP ingest (RFC 9725) over aiortc: an SDP offer in, a receive-only answer out, and the browser's
encoded H.264/VP8 video and Opus audio handed to the session as AccessUnits (no decoding here).

aiortc has no encoded-frame API: RTCRtpReceiver depayloads and reassembles RTP into encoded frames, then
a thread (`decoder_worker`) decodes them with a decoder from `get_decoder`, looked up as a global of the
module `aiortc.rtcrtpreceiver`, and RemoteStreamTrack.recv() returns what that decoder produced. The
transcode worker decodes once, so `install_encoded_frame_tap()` swaps that one global for `_tap_decoder`,
whose `PassthroughDecoder.decode()` returns the encoded frame itself (an EncodedFrame: depayloaded bytes,
RTP timestamp, arrival time). Everything else in aiortc (jitter buffer, NACK, RTX, RTCP) is untouched.
The swap is process-wide: any aiortc receiver in this process yields EncodedFrames, which is right for
mediaserver (it receives WebRTC only here). Codecs we never offer still get aiortc's own decoder.

Keyframe requests use RTCRtpReceiver._send_rtcp_pli (aiortc's own PLI sender; private, but stable since
1.0): once when the first video frame is not a keyframe, then every `keyframe_interval` seconds.

Timestamps: each track's RTP clock (90 kHz, 48 kHz) starts at 0 at its first frame (aiortc's
TimestampMapper). A track's timeline is `rtp_seconds + offset`, where offset = the smallest
(arrival - rtp_seconds) seen over the first `settle` seconds (frames are held, then released at once,
so no lasting latency is added): the least-delayed frame of each track sets its anchor. Both tracks come
from one capture clock, so A/V sync is then off only by the difference of the two tracks' smallest
capture-to-arrival delays (encoder and packetizing latency, aiortc's audio jitter buffer prefetch):
typically 20-80 ms, never growing over the broadcast. RTCP sender reports would remove that error, but
aiortc keeps their RTP timestamps private. A track that starts after the settle window is anchored on its
first frame alone (its error then includes that frame's queueing delay).
"""
from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

import aiortc.rtcrtpreceiver
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.codecs.base import Decoder
from aiortc.exceptions import InvalidStateError, OperationError
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.sdp import SessionDescription

from ingest.media import AccessUnit, Publisher, TrackInfo, TrackKind

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024
# RTP clock rates and the FFmpeg decoder names of the codecs we accept (aiortc's codec names as keys).
CLOCK_RATES = {"H264": 90000, "VP8": 90000, "opus": 48000}
FFMPEG_CODECS = {"H264": "h264", "VP8": "vp8", "opus": "opus"}


class OfferError(ValueError):
    """The SDP offer can't be answered; the text says why (sent back with a 400)."""


class TooManySessions(Exception):
    """whip.max_sessions WHIP sessions are open already."""


# -- encoded frames out of aiortc --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """What RemoteStreamTrack.recv() returns once the tap is installed: one depayloaded frame."""

    codec: str        # aiortc's codec name: "H264", "VP8", "opus"
    data: bytes       # H.264: Annex B; VP8: the frame; Opus: one packet
    timestamp: int    # RTP ticks since the track's first frame (aiortc unwraps)
    arrival: float    # time.monotonic() when the frame left the jitter buffer


class PassthroughDecoder(Decoder):
    """A 'decoder' that decodes nothing: it hands the reassembled frame on as an EncodedFrame."""

    def __init__(self, codec: RTCRtpCodecParameters) -> None:
        self.codec = codec.name

    def decode(self, encoded_frame: JitterFrame) -> list[EncodedFrame]:  # type: ignore[override]
        return [EncodedFrame(self.codec, encoded_frame.data, encoded_frame.timestamp, time.monotonic())]


_aiortc_get_decoder: Callable[[RTCRtpCodecParameters], Decoder] = aiortc.rtcrtpreceiver.get_decoder


def _tap_decoder(codec: RTCRtpCodecParameters) -> Decoder:
    if codec.name in CLOCK_RATES:
        return PassthroughDecoder(codec)
    return _aiortc_get_decoder(codec)


def install_encoded_frame_tap() -> None:
    """Make aiortc receivers in this process yield EncodedFrames for H.264, VP8 and Opus (idempotent)."""
    aiortc.rtcrtpreceiver.get_decoder = _tap_decoder  # type: ignore[attr-defined]


def is_keyframe(codec: str, data: bytes) -> bool:
    """H.264 (Annex B): the access unit holds an IDR slice (NAL type 5). VP8: the frame tag's P bit is 0.
    Audio is always a random access point."""
    if codec == "H264":
        for match in re.finditer(b"\x00\x00\x01", data):
            if match.end() < len(data) and data[match.end()] & 0x1F == 5:
                return True
        return False
    if codec == "VP8":
        return bool(data) and data[0] & 0x01 == 0
    return True


# -- the offer ---------------------------------------------------------------------------------------
def check_offer(sdp: str) -> list[str]:
    """Refuse what we can't answer before anything is allocated: one audio and/or one video section, each
    sending, with ICE credentials, a DTLS fingerprint and a codec we take (H.264 packetization-mode 1 or
    VP8; Opus)."""
    if len(sdp) > MAX_OFFER_BYTES:
        raise OfferError(f"the offer is {len(sdp)} bytes; the limit is {MAX_OFFER_BYTES}")
    if not sdp.startswith("v=0"):
        raise OfferError("the body is not an SDP offer (it must start with v=0)")
    try:
        description = SessionDescription.parse(sdp)
    except (ValueError, IndexError, KeyError) as exc:
        raise OfferError(f"the SDP does not parse: {exc}") from None
    kinds = [m.kind for m in description.media]
    if not kinds:
        raise OfferError("the offer has no media section")
    other = [k for k in kinds if k not in ("audio", "video")]
    if other:
        raise OfferError(f"the offer has a {other[0]} section; only audio and video are taken")
    for kind in ("audio", "video"):
        if kinds.count(kind) > 1:
            raise OfferError(f"the offer has {kinds.count(kind)} {kind} sections; send one at most")
    for media in description.media:
        if media.direction not in ("sendonly", "sendrecv", None):
            raise OfferError(f"the {media.kind} section is {media.direction}; a WHIP offer sends")
        ice = media.ice
        if ice is None or not ice.usernameFragment or not ice.password:
            raise OfferError(f"the {media.kind} section has no ICE username fragment or password")
        if media.dtls is None or not media.dtls.fingerprints:
            raise OfferError(f"the {media.kind} section has no DTLS fingerprint")
        names = {c.name.upper() for c in media.rtp.codecs if c.name.upper() != "RTX"}
        if media.kind == "video" and not any(
            c.name.upper() == "VP8" or (c.name.upper() == "H264" and str(c.parameters.get("packetization-mode")) == "1")
            for c in media.rtp.codecs
        ):
            raise OfferError(f"no video codec we take (H.264 packetization-mode=1 or VP8) among {sorted(names)}")
        if media.kind == "audio" and "OPUS" not in names:
            raise OfferError(f"no audio codec we take (Opus) among {sorted(names)}")
    return kinds


def _preferences(kind: str) -> list[RTCRtpCodecCapability]:
    """H.264 first, then VP8 (with RTX for both); Opus alone for audio."""
    capabilities = RTCRtpReceiver.getCapabilities(kind)
    assert capabilities is not None
    codecs = capabilities.codecs
    if kind == "audio":
        return [c for c in codecs if c.name == "opus"]
    return ([c for c in codecs if c.name == "H264"] + [c for c in codecs if c.name == "VP8"]
            + [c for c in codecs if c.name == "rtx"])


# -- timestamps --------------------------------------------------------------------------------------
@dataclass
class _Track:
    kind: TrackKind
    offset: float | None = None         # seconds: timeline = rtp_seconds + offset (None while settling)
    best: float = float("inf")          # smallest arrival - rtp_seconds seen while settling
    last_dts: int = -1
    codec: str = ""                     # the codec whose TrackInfo was sent last
    waiting_keyframe: bool = True


class Timeline:
    """Puts both tracks' frames on one millisecond timeline (see the module docstring). Sans-IO: frames in,
    (kind, dts_ms, frame) out, in the order they should reach the session."""

    def __init__(self, origin: float, settle: float) -> None:
        self.origin = origin
        self.settle_until: float | None = None
        self.settle = settle
        self.tracks: dict[str, _Track] = {"video": _Track("video"), "audio": _Track("audio")}
        self.held: list[tuple[TrackKind, EncodedFrame]] = []

    def add(self, kind: TrackKind, frame: EncodedFrame) -> list[tuple[TrackKind, int, EncodedFrame]]:
        track = self.tracks[kind]
        rtp_seconds = frame.timestamp / CLOCK_RATES.get(frame.codec, 90000)
        if self.settle_until is None:
            self.settle_until = frame.arrival + self.settle
        if track.offset is None:
            track.best = min(track.best, frame.arrival - rtp_seconds)
        if frame.arrival < self.settle_until:
            self.held.append((kind, frame))
            return []
        out: list[tuple[TrackKind, int, EncodedFrame]] = []
        if self.held:
            for t in self.tracks.values():
                if t.offset is None and t.best != float("inf"):
                    t.offset = t.best
            held, self.held = self.held, []
            out = sorted((self._place(k, f) for k, f in held), key=lambda item: item[1])
        if track.offset is None:
            track.offset = track.best  # a track that started after the settle window
        out.append(self._place(kind, frame))
        return out

    def _place(self, kind: TrackKind, frame: EncodedFrame) -> tuple[TrackKind, int, EncodedFrame]:
        track = self.tracks[kind]
        assert track.offset is not None
        seconds = frame.timestamp / CLOCK_RATES.get(frame.codec, 90000) + track.offset - self.origin
        dts = max(0, round(seconds * 1000), track.last_dts + 1)  # never backwards, never equal
        track.last_dts = dts
        return kind, dts, frame


# -- one WHIP session --------------------------------------------------------------------------------
@dataclass
class WhipLimits:
    """Per-session settings (from config.whip)."""

    keyframe_interval: float = 2.0   # seconds between keyframe requests (PLI); 0 = only when needed
    settle: float = 1.0              # seconds of frames held at the start to anchor the timeline
    max_lag: float = 10.0            # a frame older than this when we get it: the session is stalled
    stun_server: str = ""            # e.g. "stun:stun.l.google.com:19302" behind NAT; empty: host candidates


class WhipSession:
    """One WHIP publish: its RTCPeerConnection, the receive loops and the session's Publisher."""

    def __init__(self, session_id: str, stream_id: str, key: str, peer: str, limits: WhipLimits,
                 on_closed: Callable[["WhipSession"], None]) -> None:
        self.id = session_id
        self.stream_id = stream_id
        self.key = key
        self.peer = peer
        self.limits = limits
        self.publisher: Publisher | None = None
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._on_closed = on_closed
        ice_servers = [RTCIceServer(limits.stun_server)] if limits.stun_server else []
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers))
        self._tasks: list[asyncio.Task[None]] = []
        self._send_lock = asyncio.Lock()
        self._timeline = Timeline(time.monotonic(), limits.settle)
        self._closing = False
        self._last_pli = 0.0
        self._last_frame = time.monotonic()

        @self._pc.on("connectionstatechange")
        def state_changed() -> None:
            state = self._pc.connectionState
            if state in ("failed", "closed") and not self._closing:
                self._spawn(self.close(f"WebRTC connection {state}"))

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    def idle_for(self) -> float:
        """Seconds since the last frame arrived (since the session opened, before any)."""
        return time.monotonic() - self._last_frame

    async def negotiate(self, offer: str) -> str:
        """The receive-only answer to an offer; ICE candidates are gathered before it returns."""
        for kind in check_offer(offer):  # a transceiver per offered section, in the offer's order
            transceiver = self._pc.addTransceiver(kind, direction="recvonly")
            transceiver.setCodecPreferences(_preferences(kind))
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await self._pc.setLocalDescription(await self._pc.createAnswer())
        except (ValueError, LookupError, InvalidStateError, OperationError) as exc:
            raise OfferError(f"the offer can't be answered: {exc}") from None
        return self._pc.localDescription.sdp

    def start(self, publisher: Publisher) -> None:
        """Media flows to the publisher from now on."""
        self.publisher = publisher
        for transceiver in self._pc.getTransceivers():
            if transceiver.receiver.track is not None and transceiver.currentDirection in ("recvonly", None):
                kind: TrackKind = "video" if transceiver.kind == "video" else "audio"
                self._spawn(self._receive(kind, transceiver.receiver))
        if self.limits.keyframe_interval > 0:
            self._spawn(self._keyframe_requests())

    async def _receive(self, kind: TrackKind, receiver: RTCRtpReceiver) -> None:
        track = receiver.track
        reason = f"the {kind} track ended"
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, EncodedFrame):  # the tap is not installed: a bug, not the peer's fault
                    raise RuntimeError("aiortc returned a decoded frame; call install_encoded_frame_tap()")
                self._last_frame = frame.arrival
                lag = time.monotonic() - frame.arrival
                if lag > self.limits.max_lag:
                    reason = f"ingest fell {lag:.0f} s behind the browser"
                    break
                async with self._send_lock:
                    for placed_kind, dts, placed in self._timeline.add(kind, frame):
                        await self._deliver(placed_kind, dts, placed)
        except MediaStreamError:
            pass
        except ConnectionError as exc:  # EndedByServer: an admin ended it, or the worker failed
            reason = str(exc) or "ended by the server"
        except asyncio.CancelledError:
            return
        except Exception as exc:
            log.exception("stream %s: WHIP %s track failed", self.stream_id, kind)
            reason = f"WHIP {kind} track failed: {exc}"
        self._spawn(self.close(reason))

    async def _deliver(self, kind: TrackKind, dts: int, frame: EncodedFrame) -> None:
        assert self.publisher is not None
        track = self._timeline.tracks[kind]
        keyframe = is_keyframe(frame.codec, frame.data)
        if kind == "video" and track.waiting_keyframe:
            if not keyframe:
                if time.monotonic() - self._last_pli > 0.5:
                    await self.request_keyframe()
                return
            track.waiting_keyframe = False
        if frame.codec != track.codec:
            track.codec = frame.codec
            if kind == "video":
                await self.publisher.on_media(TrackInfo("video", FFMPEG_CODECS[frame.codec]))
            else:
                await self.publisher.on_media(TrackInfo("audio", "opus", sample_rate=48000, channels=2))
        await self.publisher.on_media(AccessUnit(kind, dts, 0, keyframe, frame.data))

    async def request_keyframe(self) -> None:
        """Send a PLI to the video sender (aiortc's own RTCP path)."""
        receiver = next((t.receiver for t in self._pc.getTransceivers() if t.kind == "video"), None)
        if receiver is None:
            return
        self._last_pli = time.monotonic()
        for source in receiver.getSynchronizationSources():
            await receiver._send_rtcp_pli(source.source)

    async def _keyframe_requests(self) -> None:
        """WebRTC encoders send keyframes only when asked; the segmenter wants them regularly."""
        while True:
            await asyncio.sleep(self.limits.keyframe_interval)
            await self.request_keyframe()

    async def close(self, reason: str) -> None:
        """Tear the peer connection down and tell the session, once; safe to call from anywhere."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        self.close_reason = reason
        current = asyncio.current_task()
        try:
            for task in self._tasks:
                if task is not current:
                    task.cancel()
            await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
            await self._pc.close()  # stops the receivers and joins their threads
        finally:
            self._on_closed(self)
            if self.publisher is not None:
                log.info("stream %s: WHIP session from %s closed: %s", self.stream_id, self.peer, reason)
                try:
                    await self.publisher.on_close(reason)
                except Exception:
                    log.exception("stream %s: closing the WHIP publish failed", self.stream_id)
            self.closed.set()


class WhipSessions:
    """Every open WHIP session, bounded by max_sessions; closes them all at shutdown."""

    def __init__(self, max_sessions: int = 10, limits: WhipLimits | None = None) -> None:
        install_encoded_frame_tap()
        self.max_sessions = max_sessions
        self.limits = limits or WhipLimits()
        self.sessions: dict[str, WhipSession] = {}

    def open(self, stream_id: str, key: str, peer: str) -> WhipSession:
        if len(self.sessions) >= self.max_sessions:
            raise TooManySessions(f"{self.max_sessions} WHIP sessions are open; try again later")
        session = WhipSession(secrets.token_urlsafe(18), stream_id, key, peer, self.limits, self._forget)
        self.sessions[session.id] = session
        return session

    def _forget(self, session: WhipSession) -> None:
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]

    async def close_all(self, reason: str = "server shutting down") -> None:
        await asyncio.gather(*(s.close(reason) for s in list(self.sessions.values())), return_exceptions=True)
