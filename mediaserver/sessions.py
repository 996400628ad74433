"""Stream sessions: the lifecycle of every broadcast, from the encoder's publish to the recording.

SCHEDULED -> STARTING (encoder connected) -> LIVE (first segment) -> ENDING (encoder gone, reconnect
window open) -> ENDED, or FAILED. A reconnect inside the window continues the broadcast after an
EXT-X-DISCONTINUITY; every ingest protocol (RTMP, RTMPS, SRT, WHIP) ends up here through
`authorize_publish` and a PublishConnection, the Publisher of ingest/media.py.

What a broadcast does follows its stream's and organization's settings (BroadcastSettings): the DVR
window (dvr_enabled, the org's dvr_window_minutes), the ladder (the org's default_ladder) and whether a
recording is made (recording_enabled; without one, the segments are deleted when the broadcast ends).
"""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ingest.media import (
    ARRIVAL_CLOCK, AccessUnit, MediaItem, PublishRefused, SourceMetadata, StreamBusy, StreamUnavailable, TrackInfo, UnknownKey, encode_item,
)
from mediaserver.config import Config
from mediaserver.db import Database
from mediaserver.events import Event, LocalEventBus
from mediaserver.ingest_health import IngestHealth
from mediaserver.live_edge import LiveEdge, LivePart, PartUri
from packager.playlist import (
    LowLatency,
    RenditionReport,
    RenditionTrack,
    current_period,
    producing_now,
    render_master,
    render_media,
    window,
)
from packager.recording import complete_rungs, entry_from_event, load_index, mp4_source, write_mp4, write_vod
from packager.thumbnails import write_thumbnails
from packager.live_storyboard import LiveStoryboard
from packager.playlist import SegmentEntry
from mediaserver.live_storyboard import LiveTiler
from storage.local import LocalStore
from transcode.job import RenditionSpec, TranscodeJob, WorkerEvent
from transcode.process import WorkerGone, WorkerProcess
from transcode.remote_client import RemotePool, start_worker_process

log = logging.getLogger(__name__)
# How often the worker is told when media arrived: it dates segments from that (transcode/worker.py _pdt).
CLOCK_EVERY = 0.25

MEDIA_ROOT = "media"
# Seconds a publish waits for the same key's previous connection to finish closing (its worker flushing
# the last segments) before it is refused.
CLOSING_WAIT = 15.0


@dataclass
class BroadcastSettings:
    """What a broadcast does, from its stream's and organization's settings and the server config."""

    dvr_window: float                 # seconds of rewind in the live playlists; 0 = the live edge only
    ladder: list[RenditionSpec]       # the renditions its encoder connections are transcoded to
    recording: bool = True            # VOD playlists + MP4 at the end; False: segments deleted at the end
    part_target: float | None = None  # Low-Latency HLS parts (the stream's low_latency); None: standard HLS


def org_settings(org: dict[str, Any] | None) -> dict[str, Any]:
    if org is None:
        return {}
    try:
        settings = json.loads(org["settings"] or "{}")
    except (KeyError, TypeError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def dvr_window_for(config: Config, stream: dict[str, Any], org: dict[str, Any] | None) -> float:
    """Seconds of rewind for this stream: 0 when dvr_enabled is off, else its organization's
    dvr_window_minutes, else hls.dvr_window. (The watch page should use the same number.)"""
    if not stream.get("dvr_enabled", 1):
        return 0.0
    minutes = org_settings(org).get("dvr_window_minutes")
    if isinstance(minutes, int) and not isinstance(minutes, bool) and minutes >= 0:
        return minutes * 60.0
    return config.hls.dvr_window


def ladder_for(config: Config, org: dict[str, Any] | None) -> list[RenditionSpec]:
    """The organization's default_ladder (a repeated name: the first rung wins), else transcode.renditions."""
    ladder: list[RenditionSpec] = []
    for rung in org_settings(org).get("default_ladder") or []:
        try:
            spec = RenditionSpec(str(rung["name"]), int(rung["height"]), int(rung["video_bitrate"]),
                                 bool(rung.get("passthrough", False)))
        except (KeyError, TypeError, ValueError):
            continue
        if all(r.name != spec.name for r in ladder):
            ladder.append(spec)
    return ladder or [RenditionSpec(r.name, r.height, r.video_bitrate, r.passthrough) for r in config.transcode.renditions]


def broadcast_settings(config: Config, stream: dict[str, Any], org: dict[str, Any] | None) -> BroadcastSettings:
    part_target = config.hls.part_target if stream.get("low_latency") else None
    return BroadcastSettings(dvr_window_for(config, stream, org), ladder_for(config, org),
                             bool(stream.get("recording_enabled", 1)), part_target)


class EndedByServer(ConnectionAbortedError):
    """Raised into the ingest connection when an admin ends the broadcast or the worker failed."""


@dataclass
class Broadcast:
    """One broadcast of a stream; spans every reconnect inside the reconnect window."""

    stream_id: str
    id: str
    key_prefix: str
    status: str = "STARTING"
    period: int = -1
    tracks: dict[str, RenditionTrack] = field(default_factory=dict)
    connection: "PublishConnection | None" = None
    end_timer: asyncio.TimerHandle | None = None
    finalizing: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    error: str | None = None
    auto_publish: bool = True
    previewing: bool = False  # segments are coming but an admin has not put it live yet
    settings: BroadcastSettings | None = None
    edge: LiveEdge = field(default_factory=LiveEdge)  # the newest media, served from memory
    # Rendered live playlists, by (rendition, skip, version, ended); version grows with every new part,
    # segment or rendition, so a cached text is never stale.
    playlists: dict[tuple[str, bool, int, bool], str] = field(default_factory=dict)
    version: int = 0
    # Per rendition, as its worker reported it: passthrough or encoded, and why.
    modes: dict[str, tuple[bool, str]] = field(default_factory=dict)
    connections: int = 0  # encoder connections so far (reconnects = connections - 1)
    replay: bool = False  # a recording re-aired (mediaserver/simulated_live.py): its media is the recording's
    tiler: LiveTiler | None = None  # the live storyboard of the DVR window (mediaserver/live_storyboard.py)

    @property
    def ended(self) -> bool:
        return self.status in ("ENDED", "FAILED")

    def next_position(self) -> tuple[int, float]:
        """Where the next connection continues: media sequence and timeline seconds."""
        ends = [t.entries[-1] for t in self.tracks.values() if t.entries]
        if not ends:
            return 0, 0.0
        sequence = max(e.sequence for e in ends) + 1
        offset = max(e.start + e.duration for e in ends)
        return sequence, offset

    def published_tracks(self) -> list[RenditionTrack]:
        return sorted((t for t in self.tracks.values() if t.entries), key=lambda t: t.height, reverse=True)


class PublishConnection:
    """The Publisher (ingest/media.py) for one encoder connection, whatever its protocol: media items into
    its transcode worker, as the item stream of ingest/media.py."""

    def __init__(self, manager: "StreamManager", broadcast: Broadcast, peer: str, protocol: str = "rtmp") -> None:
        self.manager = manager
        self.broadcast = broadcast
        self.peer = peer
        self.protocol = protocol
        self.worker: WorkerProcess | None = None
        self.restarts = 0
        self.aborted: str | None = None
        self.closed = asyncio.Event()
        self.closing = False  # the encoder has gone; the worker is flushing
        self._on_close_called = False
        # Replayed into a restarted worker: each track's parameters and the encoder's metadata.
        self._tracks: dict[str, TrackInfo] = {}
        self._metadata: SourceMetadata | None = None
        self._stamped_at = 0.0  # when the worker was last told an arrival time
        self._await_keyframe = False
        self.health = IngestHealth(protocol, peer, time.monotonic())

    @property
    def stream_id(self) -> str:
        return self.broadcast.stream_id

    async def on_media(self, item: MediaItem) -> None:
        if self.aborted:
            raise EndedByServer(self.aborted)
        self.health.feed(item, time.monotonic())
        for tap in self.manager.media_taps:
            tap(self.broadcast.stream_id, item)
        if isinstance(item, TrackInfo):
            self._tracks[item.kind] = item
        elif isinstance(item, SourceMetadata):
            self._metadata = item
        elif self._await_keyframe and isinstance(item, AccessUnit) and item.kind == "video":
            if not item.keyframe:
                return
            self._await_keyframe = False
        assert self.worker is not None
        try:
            if isinstance(item, AccessUnit) and (now := time.time()) - self._stamped_at >= CLOCK_EVERY:
                self._stamped_at = now
                await self.worker.write(encode_item(SourceMetadata({ARRIVAL_CLOCK: now})))
            await self.worker.write(encode_item(item))
        except WorkerGone as exc:
            await self._worker_died(str(exc))

    async def reject_source(self, message: str) -> None:
        """The encoder sends what we can't take (a codec): the broadcast fails with the reason, at once."""
        self.aborted = f"the encoder's media can't be used: {message}"
        await self.manager.fail(self.broadcast, self.aborted)
        raise EndedByServer(self.aborted)

    async def _worker_died(self, reason: str) -> None:
        assert self.worker is not None
        await self.worker.finish(timeout=5)
        reason = self.worker.last_error or reason
        # A worker that declared the source unusable (an unsupported codec) is not restarted: it would fail again.
        if not self.worker.retry or self.restarts >= self.manager.config.transcode.max_restarts:
            self.aborted = f"transcoding failed: {reason}"
            await self.manager.fail(self.broadcast, self.aborted)
            raise EndedByServer(self.aborted)
        self.restarts += 1
        log.warning("stream %s: transcode worker died (%s); restarting it", self.broadcast.stream_id, reason)
        self.worker = await self.manager.start_worker(self.broadcast)
        replay = [self._metadata, *self._tracks.values()]
        self._await_keyframe = True
        await self.worker.write(b"".join(encode_item(item) for item in replay if item is not None))

    async def on_close(self, reason: str) -> None:
        if self._on_close_called:
            return
        self._on_close_called = True
        self.closing = True
        try:
            await self.manager.connection_closed(self, reason)
        finally:
            self.closed.set()


class StreamManager:
    def __init__(self, config: Config, db: Database, store: LocalStore, bus: LocalEventBus, *,
                 closing_wait: float = CLOSING_WAIT) -> None:
        self.config = config
        self.db = db
        self.store = store
        self.bus = bus
        self.closing_wait = closing_wait
        self.broadcasts: dict[str, Broadcast] = {}
        # Called with (stream_id, item) for every item an encoder sends (simulcast); must not block.
        self.media_taps: list[Callable[[str, MediaItem], None]] = []
        # Called with (stream_id, rendition, height, bytes) for each rung's init segment (height set) and media
        # segment (height None) as its worker reports it (simulcast of a chosen rendition); must not block.
        self.rendition_taps: list[Callable[[str, str, int | None, bytes], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # One claim at a time per stream: two publishes with one key can't both start a broadcast.
        self._claims: dict[str, tuple[asyncio.Lock, int]] = {}
        # Worker boxes ([transcode] remote_workers), or None: every worker runs on this server.
        self.remote_workers = RemotePool.from_settings(
            config.transcode.remote_workers, config.transcode.remote_secret_file,
            config.transcode.remote_fallback_local, config.transcode.remote_cooldown)

    # -- ingest side ---------------------------------------------------------------------------
    async def authorize(self, app: str, key: str, peer: str) -> PublishConnection:
        """RTMP's authorize: the application name, then the stream key."""
        if app != self.config.rtmp.app:
            raise PublishRefused(f"unknown application {app!r}; use /{self.config.rtmp.app}")
        return await self.authorize_publish(key, peer, "rtmp")

    async def authorize_publish(self, key: str, peer: str, protocol: str) -> PublishConnection:
        """Every protocol's way in: checks the stream key and claims the stream for this one publisher
        (PublishRefused with the reason otherwise)."""
        stream = await self._publishable(key)
        stream_id = stream["id"]
        lock, users = self._claims.get(stream_id) or (asyncio.Lock(), 0)
        self._claims[stream_id] = (lock, users + 1)
        try:
            async with lock:
                return await self._claim(stream, key, peer, protocol)
        finally:
            lock, users = self._claims[stream_id]
            if users <= 1:
                del self._claims[stream_id]
            else:
                self._claims[stream_id] = (lock, users - 1)

    async def _publishable(self, key: str) -> dict[str, Any]:
        stream = await asyncio.to_thread(self.db.stream_by_key, key)
        if stream is None:
            raise UnknownKey("unknown stream key")
        if not stream["enabled"]:
            raise StreamUnavailable("stream is disabled")
        if stream["status"] == "CANCELLED":
            raise StreamUnavailable("this stream was cancelled")
        return stream

    async def _claim(self, stream: dict[str, Any], key: str, peer: str, protocol: str) -> PublishConnection:
        """Check and take the stream for this encoder; runs under the stream's claim lock."""
        stream_id = stream["id"]
        broadcast = self.broadcasts.get(stream_id)
        if broadcast is not None and broadcast.replay and not broadcast.ended:
            raise StreamBusy("this stream is airing a recording")
        if broadcast is not None and broadcast.connection is not None:
            previous = broadcast.connection
            if not previous.closing:
                raise StreamBusy("this stream already has a live encoder")
            # The last encoder stopped a moment ago and its worker is still flushing: wait for it, then
            # continue the broadcast as a reconnect does.
            try:
                await asyncio.wait_for(previous.closed.wait(), self.closing_wait)
            except TimeoutError:
                raise StreamBusy("the previous connection is still closing; try again in a moment") from None
            stream = await self._publishable(key)  # the key may have been retired meanwhile (auto_rotate_key)
            broadcast = self.broadcasts.get(stream_id)
        if broadcast is not None and broadcast.ended:
            # Ended (no reconnect window, or an admin ended it): once its end is written, a new broadcast
            # starts; the old one's recording is saved alongside.
            async with broadcast.lock:
                pass
            stream = await self._publishable(key)  # auto_rotate_key retires the key as a broadcast ends
            broadcast = None
        org = await asyncio.to_thread(self.db.org, stream["org_id"]) if stream.get("org_id") else None
        settings = broadcast_settings(self.config, stream, org)
        if broadcast is None:
            row = await asyncio.to_thread(self.db.create_broadcast, stream_id, MEDIA_ROOT)
            broadcast = Broadcast(stream_id, row["id"], row["key_prefix"], settings=settings)
            self.broadcasts[stream_id] = broadcast
            log.info("stream %s: encoder %s connected over %s; broadcast %s starts", stream_id, peer, protocol,
                     broadcast.id)
        else:
            if broadcast.end_timer is not None:
                broadcast.end_timer.cancel()
                broadcast.end_timer = None
            # The ladder stays the broadcast's own (rung names must not change under a player).
            ladder = broadcast.settings.ladder if broadcast.settings else settings.ladder
            # LL-HLS stays as the broadcast started: a player's playlist must not lose its parts mid-service.
            part_target = broadcast.settings.part_target if broadcast.settings else settings.part_target
            broadcast.settings = BroadcastSettings(settings.dvr_window, ladder, settings.recording, part_target)
            log.info("stream %s: encoder %s reconnected over %s inside the window", stream_id, peer, protocol)
        broadcast.auto_publish = bool(stream["auto_publish"])
        connection = PublishConnection(self, broadcast, peer, protocol)
        broadcast.connection = connection
        broadcast.connections += 1
        try:
            connection.worker = await self.start_worker(broadcast)
        except Exception:
            broadcast.connection = None
            raise
        if broadcast.status != "LIVE":
            broadcast.status = "STARTING"
            await self._set_status(broadcast, "STARTING", error=None)
        else:
            await asyncio.to_thread(self.db.update_stream, stream_id, error=None)
        self.bus.publish(Event("stream.connected", stream_id,
                               {"broadcast": broadcast.id, "peer": peer, "protocol": protocol}))
        return connection

    async def start_worker(self, broadcast: Broadcast) -> WorkerProcess:
        broadcast.period += 1
        sequence, offset = broadcast.next_position()
        tc = self.config.transcode
        job = TranscodeJob(
            stream_id=broadcast.stream_id,
            store_root=str(self.store.root),
            key_prefix=broadcast.key_prefix,
            renditions=list(broadcast.settings.ladder) if broadcast.settings else [
                RenditionSpec(r.name, r.height, r.video_bitrate, r.passthrough) for r in tc.renditions],
            segment_duration=self.config.hls.segment_duration,
            first_sequence=sequence,
            period=broadcast.period,
            time_offset=offset,
            preset=tc.preset,
            tune=tc.tune,
            audio_bitrate=tc.audio_bitrate,
            audio_sample_rate=tc.audio_sample_rate,
            reserve_bytes=int(self.config.storage.reserve_mb * 1024 * 1024),
            part_target=broadcast.settings.part_target if broadcast.settings else None,
            top_rung=tc.top_rung,
        )
        period = broadcast.period

        async def on_event(event: WorkerEvent) -> None:
            await self._on_worker_event(broadcast, period, event)

        return await start_worker_process(job, on_event, self.remote_workers)

    async def _on_worker_event(self, broadcast: Broadcast, period: int, event: WorkerEvent) -> None:
        data = event.data
        if event.event == "stats":  # the worker's own measurements, for the ingest health: no playlist changes
            if broadcast.connection is not None:
                broadcast.connection.health.on_stats(data, time.monotonic())
            return
        broadcast.version += 1
        if event.event == "rendition":
            name = str(data["name"])
            track = broadcast.tracks.setdefault(name, RenditionTrack(name))
            track.set_format(period, int(data["width"]), int(data["height"]), str(data["codecs"]),
                             float(data["frame_rate"]), int(data["bitrate"]))
            broadcast.modes[name] = (bool(data.get("passthrough")), str(data.get("note") or ""))
            if event.payload is not None:
                broadcast.edge.rendition(name).add_init(str(data["init"]).rsplit("/", 1)[-1], event.payload)
                for rendition_tap in self.rendition_taps:
                    rendition_tap(broadcast.stream_id, name, int(data["height"]), event.payload)
        elif event.event == "part":
            broadcast.edge.rendition(str(data["rendition"])).add_part(LivePart(
                int(data["sequence"]), int(data["index"]), float(data["duration"]), bool(data["independent"]),
                event.payload or b""))
            await broadcast.edge.notify(str(data["rendition"]))
        elif event.event == "segment":
            track = broadcast.tracks.setdefault(str(data["rendition"]), RenditionTrack(str(data["rendition"])))
            entry = entry_from_event(data, broadcast.key_prefix, period, track.entries[-1] if track.entries else None)
            track.entries.append(entry)
            if broadcast.connection is not None:  # published how long after its last frame came in
                broadcast.connection.health.on_segment(
                    track.name, time.time() - float(data["pdt"]) - float(data["duration"]))
            broadcast.edge.rendition(track.name).add_segment(entry.sequence, event.payload)
            self._offer_tile(broadcast, track, entry, event.payload)
            if event.payload is not None:
                for rendition_tap in self.rendition_taps:
                    rendition_tap(broadcast.stream_id, track.name, None, event.payload)
            await broadcast.edge.notify(track.name)
            if broadcast.status == "STARTING" and not broadcast.auto_publish:
                broadcast.previewing = True
            elif broadcast.status == "STARTING":
                await self._go_live(broadcast, entry.program_date_time)
        elif event.event == "warning":
            message = str(data.get("message"))
            broadcast.error = message
            await self._write(self.db.update_stream, broadcast.stream_id, error=message)
            self.bus.publish(Event("stream.warning", broadcast.stream_id, dict(data)))
        elif event.event == "error":
            log.error("stream %s: worker error: %s", broadcast.stream_id, data.get("message"))

    def _offer_tile(self, broadcast: Broadcast, track: RenditionTrack, entry: SegmentEntry,
                    segment: bytes | None) -> None:
        """A thumbnail of the DVR window now and then (returns at once; the tile is made in a thread)."""
        if broadcast.tiler is None:
            broadcast.tiler = LiveTiler(LiveStoryboard(self.config.hls.storyboard_interval),
                                        lambda rung: self.live_window_start(broadcast.stream_id, broadcast.id, rung))
        init = broadcast.edge.rendition(track.name).inits.get(entry.init_uri.rsplit("/", 1)[-1])
        broadcast.tiler.offer(broadcast.tracks, track, entry, segment, init, self.store, broadcast.key_prefix)

    async def _go_live(self, broadcast: Broadcast, started_at: float) -> None:
        broadcast.status = "LIVE"
        broadcast.previewing = False
        stream = await asyncio.to_thread(self.db.stream, broadcast.stream_id)
        fields: dict[str, object] = {"status": "LIVE"}
        if stream is not None and (stream["actual_start"] is None or stream["status"] in ("ENDED", "FAILED", "SCHEDULED", "STARTING")):
            fields["actual_start"] = started_at
            fields["actual_end"] = None
        await self._write(self.db.update_stream, broadcast.stream_id, **fields)
        await self._write(self.db.update_broadcast, broadcast.id, status="LIVE")
        self.bus.publish(Event("stream.live", broadcast.stream_id, {"broadcast": broadcast.id}))
        log.info("stream %s: LIVE", broadcast.stream_id)

    async def go_live(self, stream_id: str) -> bool:
        """Put a previewed broadcast (auto_publish off) live."""
        broadcast = self.broadcasts.get(stream_id)
        if broadcast is None or broadcast.status != "STARTING" or not broadcast.published_tracks():
            return False
        await self._go_live(broadcast, time.time())
        return True

    def has_broadcast(self, stream_id: str) -> bool:
        broadcast = self.broadcasts.get(stream_id)
        return broadcast is not None and not broadcast.ended

    async def disconnect(self, stream_id: str, reason: str) -> bool:
        """Cut the encoder (e.g. after a key rotation); the reconnect window then runs as usual."""
        broadcast = self.broadcasts.get(stream_id)
        if broadcast is None or broadcast.connection is None:
            return False
        broadcast.connection.aborted = reason
        return True

    def bus_publish(self, name: str, stream_id: str, data: dict[str, Any]) -> None:
        self.bus.publish(Event(name, stream_id, data))

    async def connection_closed(self, connection: PublishConnection, reason: str) -> None:
        broadcast = connection.broadcast
        if connection.worker is not None:
            code = await connection.worker.finish()
            if code != 0 and not connection.aborted:
                log.warning("stream %s: worker exited with %s", broadcast.stream_id, code)
        async with broadcast.lock:
            if broadcast.connection is connection:
                broadcast.connection = None
            if broadcast.ended:
                return
            log.info("stream %s: encoder gone (%s)", broadcast.stream_id, reason)
            self.bus.publish(Event("stream.disconnected", broadcast.stream_id, {"reason": reason}))
            window_s = self.config.stream.reconnect_window
            if not broadcast.published_tracks():
                # Nothing was ever published: there is no broadcast to keep open.
                await self._finalize_locked(broadcast, "ENDED")
                return
            broadcast.status = "ENDING"
            await self._set_status(broadcast, "ENDING")
            if window_s <= 0:
                await self._finalize_locked(broadcast, "ENDED")
                return
            loop = asyncio.get_running_loop()
            broadcast.end_timer = loop.call_later(window_s, lambda: self._spawn(self._window_closed(broadcast)))

    async def _window_closed(self, broadcast: Broadcast) -> None:
        async with broadcast.lock:
            if broadcast.connection is None and not broadcast.ended:
                log.info("stream %s: reconnect window passed; ending", broadcast.stream_id)
                await self._finalize_locked(broadcast, "ENDED")

    # -- admin side ----------------------------------------------------------------------------
    async def end(self, stream_id: str, reason: str = "ended by an admin") -> bool:
        """End the broadcast at once: disconnect the encoder, skip the reconnect window."""
        broadcast = self.broadcasts.get(stream_id)
        if broadcast is None or broadcast.ended:
            return False
        await self._end_now(broadcast, reason)
        return True

    async def _end_now(self, broadcast: Broadcast, reason: str) -> None:
        connection = broadcast.connection
        if connection is not None:
            connection.aborted = reason
            if connection.worker is not None:
                await connection.worker.finish()
        async with broadcast.lock:
            if broadcast.end_timer is not None:
                broadcast.end_timer.cancel()
            if not broadcast.ended:
                await self._finalize_locked(broadcast, "ENDED")

    async def fail(self, broadcast: Broadcast, message: str) -> None:
        log.error("stream %s: FAILED: %s", broadcast.stream_id, message)
        broadcast.error = message
        async with broadcast.lock:
            if not broadcast.ended:
                await self._finalize_locked(broadcast, "FAILED")

    # -- ending --------------------------------------------------------------------------------
    async def _write(self, fn: Any, *args: Any, **fields: Any) -> None:
        """A state write that must not stop the lifecycle: on a full disk the broadcast still ends
        and its recording is still attempted; the error is logged."""
        try:
            await asyncio.to_thread(fn, *args, **fields)
        except (sqlite3.Error, OSError) as exc:
            log.error("database write %s failed: %s", getattr(fn, "__name__", fn), exc)

    async def _set_status(self, broadcast: Broadcast, status: str, **fields: object) -> None:
        await self._write(self.db.update_stream, broadcast.stream_id, status=status, **fields)

    async def _finalize_locked(self, broadcast: Broadcast, status: str) -> None:
        broadcast.status = status
        await broadcast.edge.end()  # waiting playlist requests get the final playlist now
        now = time.time()
        await self._set_status(broadcast, status, actual_end=now, error=broadcast.error)
        if not broadcast.replay:  # a re-air's id is the recorded broadcast's: its row stays as recorded
            await self._write(self.db.update_broadcast, broadcast.id, status=status, ended_at=now)
        self.bus.publish(Event(f"stream.{status.lower()}", broadcast.stream_id, {"broadcast": broadcast.id}))
        stream = await asyncio.to_thread(self.db.stream, broadcast.stream_id)
        if stream is not None and broadcast.settings is not None:
            broadcast.settings.recording = bool(stream["recording_enabled"])  # as the stream says at its end
        if stream is not None and stream["auto_rotate_key"]:
            # The used key dies with the broadcast; an admin takes a fresh one with rotate-key.
            await self._write(self.db.rotate_key, broadcast.stream_id)
            log.info("stream %s: key rotated after the broadcast (auto_rotate_key)", broadcast.stream_id)
        broadcast.finalizing = self._spawn(self._record(broadcast))

    async def _record(self, broadcast: Broadcast) -> None:
        try:
            tracks = broadcast.published_tracks()
            if broadcast.replay:
                pass  # the media is an existing recording's: neither recorded again nor deleted
            elif broadcast.settings is not None and not broadcast.settings.recording:
                await self._discard_media(broadcast.stream_id, broadcast.key_prefix)
            elif tracks:
                await save_recording(self.db, self.store, self.config, broadcast.stream_id, broadcast.id,
                                     broadcast.key_prefix, tracks, self.bus)
        finally:
            if self.broadcasts.get(broadcast.stream_id) is broadcast:
                del self.broadcasts[broadcast.stream_id]

    async def _discard_media(self, stream_id: str, key_prefix: str) -> None:
        """recording_enabled off: no recording; the broadcast's segments go once it has ended."""
        try:
            freed = await asyncio.to_thread(self.store.delete_prefix, key_prefix)
        except OSError as exc:
            log.error("stream %s: cannot delete the segments of %s: %s", stream_id, key_prefix, exc)
            return
        log.info("stream %s: recording off; %s deleted (%d bytes)", stream_id, key_prefix, freed)

    def _spawn(self, coro) -> asyncio.Task[None]:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- start-up and shutdown -----------------------------------------------------------------
    async def recover(self) -> None:
        """Broadcasts a previous run left open (crash, power cut) are ended and recorded from their index."""
        for row in await asyncio.to_thread(self.db.open_broadcasts):
            log.warning("stream %s: broadcast %s was left open by a previous run; saving it", row["stream_id"], row["id"])
            tracks = await asyncio.to_thread(load_index, self.store, row["key_prefix"])
            now = time.time()
            await asyncio.to_thread(self.db.update_broadcast, row["id"], status="ENDED", ended_at=now)
            await asyncio.to_thread(self.db.update_stream, row["stream_id"], status="ENDED", actual_end=now)
            stream = await asyncio.to_thread(self.db.stream, row["stream_id"])
            if stream is not None and not stream["recording_enabled"]:
                await self._discard_media(row["stream_id"], row["key_prefix"])
            elif any(t.entries for t in tracks):
                await save_recording(self.db, self.store, self.config, row["stream_id"], row["id"],
                                     row["key_prefix"], [t for t in tracks if t.entries], self.bus)

    async def shutdown(self) -> None:
        for broadcast in list(self.broadcasts.values()):
            await self._end_now(broadcast, "server shutting down")
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- playlists -----------------------------------------------------------------------------
    def live_master(self, stream_id: str) -> str | None:
        broadcast = self.broadcasts.get(stream_id)
        # A previewed broadcast (auto_publish off) stays hidden until an admin puts it live.
        if broadcast is None or broadcast.previewing or not broadcast.published_tracks():
            return None
        key = ("", False, broadcast.version, broadcast.ended)  # rendered once per change, as media playlists
        cached = broadcast.playlists.get(key)
        if cached is not None:
            return cached
        # Only the rungs the encoder's current connection produces: a reconnect at another size may drop some.
        tracks = producing_now(broadcast.published_tracks())
        period = current_period(tracks)
        assert period is not None
        text = render_master([t.live_variant(f"{t.name}.m3u8", period) for t in tracks])
        broadcast.playlists[key] = text
        return text

    def live_renditions(self, stream_id: str) -> list[dict[str, Any]]:
        """The renditions the stream's broadcast makes now, tallest first, each saying whether it copies
        the source (passthrough) or is encoded, and why."""
        broadcast = self.broadcasts.get(stream_id)
        if broadcast is None or broadcast.ended:
            return []
        tracks = producing_now(broadcast.published_tracks()) or list(broadcast.tracks.values())
        return [{"name": t.name, "width": t.width, "height": t.height,
                 "passthrough": broadcast.modes.get(t.name, (False, ""))[0],
                 "note": broadcast.modes.get(t.name, (False, ""))[1]}
                for t in sorted(tracks, key=lambda t: t.height, reverse=True)]

    def ingest_health(self, stream_id: str) -> dict[str, Any] | None:
        """What the connected encoder sends, measured (mediaserver/ingest_health.py), with the reconnects of
        this broadcast; None while no encoder is connected."""
        broadcast = self.broadcasts.get(stream_id)
        connection = broadcast.connection if broadcast is not None else None
        if broadcast is None or connection is None or broadcast.ended:
            return None
        return {**connection.health.snapshot(time.monotonic()), "reconnects": max(0, broadcast.connections - 1)}

    def live_broadcast(self, stream_id: str) -> Broadcast | None:
        """The broadcast whose live playlists viewers may see (not a held preview)."""
        broadcast = self.broadcasts.get(stream_id)
        return None if broadcast is None or broadcast.previewing else broadcast

    def live_media(self, stream_id: str, rendition: str, *, skip: bool = False) -> str | None:
        broadcast = self.live_broadcast(stream_id)
        if broadcast is None:
            return None
        track = broadcast.tracks.get(rendition)
        if track is None or not track.entries:
            return None
        # Every viewer asks for the same playlist: it is rendered once per change of the broadcast.
        key = (rendition, skip, broadcast.version, broadcast.ended)
        cached = broadcast.playlists.get(key)
        if cached is not None:
            return cached
        hls = self.config.hls
        entries = window(track.entries, self.dvr_window(broadcast), hls.live_edge_segments)
        prefix = f"{broadcast.id}/"
        text = render_media(
            entries,
            all_entries=track.entries,
            configured_target=hls.segment_duration,
            ended=broadcast.ended,
            uri_prefix=prefix,
            low_latency=self._low_latency(broadcast, track),
            skip=skip,
            blocks=track.blocks(prefix)[len(track.entries) - len(entries):],
        )
        if len(broadcast.playlists) > 64:
            broadcast.playlists.clear()
        broadcast.playlists[key] = text
        return text

    def _low_latency(self, broadcast: Broadcast, track: RenditionTrack) -> LowLatency | None:
        part_target = broadcast.settings.part_target if broadcast.settings else None
        if part_target is None or broadcast.ended:
            return None
        edge = broadcast.edge.rendition(track.name)
        # Parts of the segments that end within three target durations of the playlist's end (RFC 8216bis
        # 4.4.4.9), and of the open segment.
        horizon = 3 * self.config.hls.segment_duration
        end = track.entries[-1].start + track.entries[-1].duration
        recent = [e.sequence for e in track.entries[-12:] if end - (e.start + e.duration) < horizon]
        since = recent[0] if recent else track.entries[-1].sequence + 1
        sequence, index = edge.next_part(self.config.hls.segment_duration, part_target)
        reports = []
        for other in producing_now(broadcast.published_tracks()):
            if other.name == track.name:
                continue
            newest = broadcast.edge.rendition(other.name).newest_part()
            if newest is not None:
                reports.append(RenditionReport(f"{other.name}.m3u8", newest[0], newest[1]))
        return LowLatency(part_target, edge.part_entries(since, PartUri(track.name)),
                          f"{PartUri(track.name)(sequence, index)}", reports)

    def blocking_target(self, stream_id: str, rendition: str) -> tuple[LiveEdge, int, float] | None:
        """For a blocking playlist reload: the broadcast's live edge, the newest complete media sequence
        and the longest a request may wait (three target durations). None when the stream has no LL-HLS."""
        broadcast = self.live_broadcast(stream_id)
        if broadcast is None or broadcast.settings is None or broadcast.settings.part_target is None:
            return None
        track = broadcast.tracks.get(rendition)
        if track is None or not track.entries:
            return None
        return broadcast.edge, track.entries[-1].sequence, 3 * self.config.hls.segment_duration

    def live_file(self, stream_id: str, broadcast_id: str, rendition: str, name: str) -> bytes | None:
        """An init or media segment of a live broadcast from memory, if it is still held there."""
        broadcast = self.broadcasts.get(stream_id)
        if broadcast is None or broadcast.id != broadcast_id:
            return None
        edge = broadcast.edge.renditions.get(rendition)
        if edge is None:
            return None
        if name.startswith("seg-"):
            return edge.segments.get(int(name[4:-4]))
        return edge.inits.get(name)

    def live_edge(self, stream_id: str, broadcast_id: str) -> LiveEdge | None:
        broadcast = self.broadcasts.get(stream_id)
        return broadcast.edge if broadcast is not None and broadcast.id == broadcast_id else None

    def previewing(self, stream_id: str, broadcast_id: str) -> bool:
        """True while this broadcast is held as a preview (auto_publish off, not yet put live)."""
        broadcast = self.broadcasts.get(stream_id)
        return broadcast is not None and broadcast.id == broadcast_id and broadcast.previewing

    def live_window_start(self, stream_id: str, broadcast_id: str, rendition: str) -> int | None:
        """First media sequence still in the DVR window, while that broadcast is live."""
        broadcast = self.broadcasts.get(stream_id)
        if broadcast is None or broadcast.id != broadcast_id or broadcast.ended:
            return None
        track = broadcast.tracks.get(rendition)
        if track is None or not track.entries:
            return None
        return window(track.entries, self.dvr_window(broadcast), self.config.hls.live_edge_segments)[0].sequence

    def dvr_window(self, broadcast: Broadcast) -> float:
        return broadcast.settings.dvr_window if broadcast.settings is not None else self.config.hls.dvr_window


async def save_recording(
    db: Database, store: LocalStore, config: Config, stream_id: str, broadcast_id: str,
    key_prefix: str, tracks: list[RenditionTrack], bus: LocalEventBus,
) -> None:
    """VOD playlists first (quick), then the MP4 of the top rendition; both recorded in SQLite."""
    complete = complete_rungs(tracks) or tracks
    duration = sum(e.duration for e in complete[0].entries)
    hls_size = sum(e.size for t in tracks for e in t.entries)
    try:
        await asyncio.to_thread(write_vod, store, key_prefix, tracks, config.hls.segment_duration)
    except OSError as exc:
        log.error("stream %s: cannot write the VOD playlists: %s", stream_id, exc)
        await asyncio.to_thread(db.update_stream, stream_id, error=f"recording not saved: {exc}")
        return
    recording = await asyncio.to_thread(
        db.add_recording, stream_id=stream_id, broadcast_id=broadcast_id, duration=duration, size=hls_size,
        mp4_size=None, playlist_key=f"{key_prefix}/master.m3u8", mp4_key=None, status="PROCESSING", error=None,
    )
    log.info("stream %s: recording %s: %.1f s, VOD playlists written", stream_id, recording["id"], duration)
    try:  # poster, sprite sheet and storyboard: extras, the recording stands without them
        await asyncio.to_thread(write_thumbnails, store, key_prefix, tracks)
    except Exception:
        log.exception("stream %s: thumbnails of the recording failed", stream_id)
    source = mp4_source(tracks)
    if source is None:
        message = "MP4 not made: the picture size changed at a reconnect; the HLS recording has every part"
        log.warning("stream %s: %s", stream_id, message)
        await asyncio.to_thread(db.update_recording, recording["id"], status="READY", error=message)
        bus.publish(Event("recording.ready", stream_id, {"recording": recording["id"], "broadcast": broadcast_id}))
        return
    try:
        mp4_key = await asyncio.to_thread(write_mp4, store, key_prefix, source)
        path = store.local_path(mp4_key)
        mp4_size = path.stat().st_size if path else None
        await asyncio.to_thread(db.update_recording, recording["id"], mp4_key=mp4_key, mp4_size=mp4_size, status="READY")
    except Exception as exc:  # the HLS recording stands even if the MP4 could not be made
        log.exception("stream %s: MP4 of the recording failed", stream_id)
        await asyncio.to_thread(db.update_recording, recording["id"], status="READY", error=f"MP4 not made: {exc}")
    bus.publish(Event("recording.ready", stream_id, {"recording": recording["id"], "broadcast": broadcast_id}))
