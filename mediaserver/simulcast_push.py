"""Pushes a live stream to its simulcast targets without encoding anything: the source as received, or a ladder
rung as the transcode worker already encoded it.

The session hands every media item to SimulcastHub.feed (a tap on PublishConnection.on_media) and every rung's
init and media segment to SimulcastHub.feed_rendition (read back into items by mediaserver/simulcast_fmp4.py);
each target's TargetPusher re-muxes the items it asked for into FLV (FlvMuxer, sans-IO: H.264 + AAC, the codecs
classic RTMP carries) and pipes it into one `ffmpeg -c copy` process that publishes to the target. A source FLV
can't carry (HEVC, AV1, Opus) is replaced by the tallest H.264 rung, and the target's status detail says so.
A slow or failing target only ever loses its own bounded queue: it is restarted with backoff (RECONNECTING) and
never blocks the session. Destinations on private networks are refused unless the config allows them."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from ingest.flv import TAG_AUDIO, TAG_VIDEO, FlvTag, encode_tag, flv_header
from ingest.media import AccessUnit, MediaItem, TrackInfo
from mediaserver.net_guard import RefusedDestination, check_address, check_literal_host, system_lookup
from mediaserver.simulcast import SOURCE, PushState
from mediaserver.simulcast_fmp4 import Fmp4Error, Fmp4Track, read_init, read_segment
from transcode.pipeline import codec_name

log = logging.getLogger(__name__)

FFMPEG = "ffmpeg"
QUEUE_BYTES = 16 * 1024 * 1024  # a target further behind than this is restarted (it can't keep up)
STOP_WAIT = 5.0                 # seconds ffmpeg gets to flush and close the publish when the stream ends
PUSHABLE = {"video": "h264", "audio": "aac"}
FRAME_GAP_MS = 33  # between the last tag before a timestamp reset and the first after it


class FlvMuxer:
    """MediaItems -> FLV bytes for one push: the header and sequence headers first, then access units from
    the first video keyframe on, with timestamps starting at 0. Sans-IO."""

    # A track's source timestamp going back, or jumping this far ahead, is a new encoder connection (a reconnect inside the
    # broadcast's window): the push goes on from its own last timestamp, at the new connection's first keyframe.
    JUMP_MS = 5000
    JITTER_MS = 1000  # a track's timestamps may step back this little (jitter of an RTP source) and go on

    def __init__(self, tracks: dict[str, TrackInfo]) -> None:
        self.tracks = {kind: t for kind, t in tracks.items() if PUSHABLE.get(kind) == t.codec}
        self._base: int | None = None
        self._last_dts: dict[str, int] = {}  # the source's, of each track's last unit passed on
        self._last_ts = -FRAME_GAP_MS      # ours, of the last tag written

    def start(self) -> bytes:
        out = flv_header(has_audio="audio" in self.tracks, has_video="video" in self.tracks)
        for track in self.tracks.values():
            out += self._sequence_header(track)
        return out

    @staticmethod
    def _sequence_header(track: TrackInfo) -> bytes:
        if track.kind == "video":
            return encode_tag(FlvTag(TAG_VIDEO, 0, b"\x17\x00\x00\x00\x00" + track.extradata))
        return encode_tag(FlvTag(TAG_AUDIO, 0, b"\xaf\x00" + track.extradata))

    def feed(self, item: MediaItem) -> bytes:
        if isinstance(item, TrackInfo):
            if PUSHABLE.get(item.kind) != item.codec or self.tracks.get(item.kind) == item:
                return b""
            self.tracks[item.kind] = item
            return self._sequence_header(item)
        if not isinstance(item, AccessUnit) or item.kind not in self.tracks:
            return b""
        last = self._last_dts.get(item.kind)
        if self._base is not None and last is not None:
            jump = ((item.dts_ms - last + 2**31) % 2**32) - 2**31  # RTMP's clock wraps at 2**32 ms
            if not -self.JITTER_MS < jump < self.JUMP_MS:
                self._base = None
                self._last_dts.clear()
        if self._base is None:
            # Start where a receiver can decode: a video keyframe (audio-only: the first frame).
            if "video" in self.tracks and not (item.kind == "video" and item.keyframe):
                return b""
            self._base = item.dts_ms - (self._last_ts + FRAME_GAP_MS)
        ts = (item.dts_ms - self._base) & 0xFFFFFFFF
        if ts > 0x7FFFFFFF:
            return b""  # an audio frame from before the first keyframe
        self._last_dts[item.kind], self._last_ts = item.dts_ms, max(self._last_ts, ts)
        if item.kind == "video":
            head = bytes([0x17 if item.keyframe else 0x27, 1]) + (item.cts_ms & 0xFFFFFF).to_bytes(3, "big")
            return encode_tag(FlvTag(TAG_VIDEO, ts, head + item.data))
        return encode_tag(FlvTag(TAG_AUDIO, ts, b"\xaf\x01" + item.data))


@dataclass
class PushTarget:
    id: str
    stream_id: str
    name: str
    url: str  # with the key: never logged or announced
    tls_verify: bool
    rendition: str = SOURCE  # SOURCE or a ladder rung's name


def check_push_destination(url: str) -> None:
    """Blocking (a name lookup): raises RefusedDestination when the URL's host is, or resolves to, an address that
    is not public (every address: ffmpeg may connect to any of them), OSError when it can't be resolved."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    check_literal_host(host)
    for address in system_lookup(host, parts.port or (443 if parts.scheme == "rtmps" else 1935)):
        check_address(address)


def ffmpeg_command(target: PushTarget) -> list[str]:
    tls = ["-tls_verify", "1" if target.tls_verify else "0"] if target.url.startswith("rtmps://") else []
    return [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1",
            "-f", "flv", "-analyzeduration", "1000000", "-i", "pipe:0", "-map", "0", "-c", "copy",
            *tls, "-flvflags", "no_duration_filesize", "-f", "flv", target.url]


StatusListener = Callable[[PushTarget, PushState], None]


class TargetPusher:
    """One target's push: an ffmpeg process fed from a bounded queue, restarted with backoff."""

    def __init__(self, target: PushTarget, tracks: dict[str, TrackInfo], on_status: StatusListener,
                 state: PushState | None = None, *, feed_name: str = SOURCE,
                 allow_private_networks: bool = False) -> None:
        self.target = target
        self.feed_name = feed_name  # what is pushed: SOURCE or the rung whose segments feed this pusher
        self.allow_private_networks = allow_private_networks
        self.state = state or PushState()
        self._tracks = dict(tracks)
        self._on_status = on_status
        self._muxer: FlvMuxer | None = None
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queued = 0
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._failure: str | None = None  # why this push was cut short by us (queue full)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"simulcast-{self.target.id}")

    def feed(self, item: MediaItem) -> None:
        if isinstance(item, TrackInfo):
            self._tracks[item.kind] = item
        if self._muxer is None:
            return
        data = self._muxer.feed(item)
        if not data:
            return
        if self._queued + len(data) > QUEUE_BYTES:
            self._abort("the target can't keep up with the stream (queue full)")
            return
        self._queued += len(data)
        self._queue.put_nowait(data)

    def _abort(self, reason: str) -> None:
        self._muxer = None
        self._failure = reason
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

    def _announce(self, changed: bool) -> None:
        if changed:
            self._on_status(self.target, self.state)

    async def stop(self) -> None:
        self._stopping = True
        self._muxer = None
        self._queue.put_nowait(b"")  # wakes the writer: end of input
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT + 1)
            except asyncio.TimeoutError:
                # ffmpeg stuck connecting doesn't read its input, so the end of it may never arrive: kill it.
                if self._process is not None and self._process.returncode is None:
                    self._process.kill()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            except asyncio.CancelledError:
                pass
        self._announce(self.state.stopped(time.time()))

    async def _run(self) -> None:
        while not self._stopping:
            error = await self._push_once()
            if self._stopping:
                break
            if error.startswith("refused: "):
                self._announce(self.state.refused(error, time.time()))
                log.warning("stream %s: simulcast target %s %s", self.target.stream_id, self.target.name, error)
                return
            delay = self.state.failed(error, time.time())
            self._on_status(self.target, self.state)
            log.warning("stream %s: simulcast target %s stopped (%s)", self.target.stream_id, self.target.name, error)
            if delay is None:
                return
            await self._sleep_unless_stopped(delay)

    async def _sleep_unless_stopped(self, delay: float) -> None:
        deadline = time.monotonic() + delay
        while not self._stopping and time.monotonic() < deadline:
            await asyncio.sleep(min(0.2, deadline - time.monotonic()))

    async def _push_once(self) -> str:
        """Run one ffmpeg publish until it exits; the reason it stopped."""
        self._failure = None
        self._announce(self.state.connecting(time.time()))
        self._queue = asyncio.Queue()
        self._queued = 0
        if not self.allow_private_networks:
            try:
                await asyncio.to_thread(check_push_destination, self.target.url)
            except RefusedDestination as exc:
                return f"{exc} (set [simulcast] allow_private_networks to push there)"
            except (OSError, UnicodeError) as exc:
                return f"can't resolve the target's host: {exc}"
        try:
            process = await asyncio.create_subprocess_exec(
                *ffmpeg_command(self.target), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            return f"ffmpeg can't start: {exc}"
        self._process = process
        self._muxer = FlvMuxer(self._tracks)
        self._queue.put_nowait(self._muxer.start())
        errors: list[str] = []
        tasks = [asyncio.ensure_future(self._write(process)), asyncio.ensure_future(self._progress(process)),
                 asyncio.ensure_future(self._stderr(process, errors))]
        code = await process.wait()
        self._muxer = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._process = None
        if self._failure:
            return self._failure
        message = errors[-1] if errors else f"ffmpeg exited with code {code}"
        # ffmpeg's messages may quote the URL, key included.
        return message.replace(self.target.url, self.target.url.rsplit("/", 1)[0] + "/…")

    async def _write(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin is not None
        try:
            while True:
                data = await self._queue.get()
                self._queued -= len(data)
                if not data:  # the stream ended: let ffmpeg flush and close the publish
                    process.stdin.close()
                    try:
                        await asyncio.wait_for(process.wait(), STOP_WAIT)
                    except asyncio.TimeoutError:
                        process.kill()
                    return
                process.stdin.write(data)
                await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return  # ffmpeg is exiting; its exit code and stderr say why

    async def _progress(self, process: asyncio.subprocess.Process) -> None:
        """ffmpeg's -progress blocks: once it has written media to the target, the push is LIVE."""
        assert process.stdout is not None
        async for raw in process.stdout:
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            if key == "total_size" and value.isdigit() and int(value) > 0:
                self._announce(self.state.live(time.time()))

    async def _stderr(self, process: asyncio.subprocess.Process, errors: list[str]) -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").strip()
            if line:
                errors.append(line[:300])
                del errors[:-5]


Emit = Callable[[str, dict[str, Any]], None]
TargetsLoader = Callable[[str], Awaitable[list[PushTarget]]]


@dataclass
class _Rung:
    """A ladder rung as its worker reported it: height (0: audio only) and its init segment's tracks."""

    height: int
    tracks: list[Fmp4Track]

    def infos(self) -> dict[str, TrackInfo]:
        return {t.info.kind: t.info for t in self.tracks}


@dataclass
class _StreamPush:
    tracks: dict[str, TrackInfo] = field(default_factory=dict)
    live: bool = False
    pushers: dict[str, TargetPusher] = field(default_factory=dict)
    rungs: dict[str, _Rung] = field(default_factory=dict)


def choose_feed(rendition: str, source: dict[str, TrackInfo], rungs: dict[str, int]) -> tuple[str, str | None]:
    """What to push for a target asking for `rendition`, given the source's tracks and the rungs made (name ->
    height): SOURCE or a rung's name, and a sentence when that isn't what was asked. Sans-IO."""
    tallest = max((name for name, height in rungs.items() if height > 0), key=lambda n: rungs[n], default=None)
    if rendition == SOURCE:
        unfit = [t for t in source.values() if PUSHABLE.get(t.kind) not in (None, t.codec)]
        if not unfit or tallest is None:
            return SOURCE, None
        what = " and ".join(f"{codec_name(t.codec)} {t.kind}" for t in unfit)
        return tallest, f"the source is {what}, which RTMP can't carry; pushing the {tallest} rendition (H.264, AAC)"
    if rendition in rungs or tallest is None:
        return rendition, None
    return tallest, f"{rendition} is not made for this source; pushing {tallest}"


class SimulcastHub:
    """Every stream's pushes: started when the stream goes LIVE (and for a target added or enabled while it is),
    stopped when it ends (or the target is disabled or deleted). `emit` announces each status change."""

    def __init__(self, load_targets: TargetsLoader, emit: Emit, *, allow_private_networks: bool = False) -> None:
        self._load = load_targets
        self._emit = emit
        self.allow_private_networks = allow_private_networks
        self._streams: dict[str, _StreamPush] = {}
        self.states: dict[str, PushState] = {}  # target id -> its state, for the API

    def feed(self, stream_id: str, item: MediaItem) -> None:
        """The session's tap: called for every item an encoder sends; never blocks."""
        push = self._streams.get(stream_id)
        if push is None:
            if not isinstance(item, TrackInfo):
                return
            push = self._streams[stream_id] = _StreamPush()
        if isinstance(item, TrackInfo):
            push.tracks[item.kind] = item
        for pusher in push.pushers.values():
            if pusher.feed_name == SOURCE:
                pusher.feed(item)

    def feed_rendition(self, stream_id: str, rendition: str, height: int | None, payload: bytes) -> None:
        """The session's tap on the worker's output: a rung's init segment (height given) or media segment
        (height None). Read back into items only for the pushers that send this rung."""
        push = self._streams.setdefault(stream_id, _StreamPush()) if height is not None else self._streams.get(stream_id)
        if push is None:  # a segment flushed after the broadcast ended: no push wants it
            return
        try:
            if height is not None:
                rung = push.rungs[rendition] = _Rung(height, read_init(payload))
                items: list[MediaItem] = list(rung.infos().values())
            elif (known := push.rungs.get(rendition)) is not None and any(
                    p.feed_name == rendition for p in push.pushers.values()):
                items = list(read_segment(payload, known.tracks))
            else:
                return
        except (Fmp4Error, IndexError, ValueError) as exc:
            log.error("stream %s: rendition %s can't be read back for simulcast: %s", stream_id, rendition, exc)
            return
        for pusher in push.pushers.values():
            if pusher.feed_name == rendition:
                for item in items:
                    pusher.feed(item)

    def _announce(self, target: PushTarget, state: PushState) -> None:
        self._emit(target.stream_id, {"target_id": target.id, "name": target.name, "status": state.status,
                                      "error": state.error, "detail": state.detail})

    async def stream_live(self, stream_id: str) -> None:
        push = self._streams.setdefault(stream_id, _StreamPush())
        push.live = True
        for target in await self._load(stream_id):
            self.start_target(target)

    def start_target(self, target: PushTarget) -> None:
        push = self._streams.get(target.stream_id)
        if push is None or not push.live or target.id in push.pushers:
            return
        state = self.states.setdefault(target.id, PushState())
        state.stopped(time.time())
        feed_name, state.detail = choose_feed(target.rendition, push.tracks,
                                              {name: rung.height for name, rung in push.rungs.items()})
        tracks = push.tracks if feed_name == SOURCE else push.rungs[feed_name].infos() if feed_name in push.rungs else {}
        pusher = TargetPusher(target, tracks, self._announce, state, feed_name=feed_name,
                              allow_private_networks=self.allow_private_networks)
        push.pushers[target.id] = pusher
        pusher.start()

    async def stop_target(self, stream_id: str, target_id: str) -> None:
        push = self._streams.get(stream_id)
        pusher = push.pushers.pop(target_id, None) if push else None
        if pusher is not None:
            await pusher.stop()

    async def stream_ended(self, stream_id: str) -> None:
        push = self._streams.pop(stream_id, None)
        if push is not None:
            await asyncio.gather(*(p.stop() for p in push.pushers.values()))

    def forget(self, target_id: str) -> None:
        self.states.pop(target_id, None)

    def is_live(self, stream_id: str) -> bool:
        push = self._streams.get(stream_id)
        return push is not None and push.live

    async def shutdown(self) -> None:
        await asyncio.gather(*(self.stream_ended(s) for s in list(self._streams)))
