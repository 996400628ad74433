"""Clips of a broadcast (its recording, or the live DVR window): their state, the job that makes each one off the
event loop, and the `clip.ready` event (which the webhooks deliver).

A clip's record is a small JSON file beside its stream's media (clips/<stream>/<clip>.json), its playlist and MP4
sit in the broadcast's own folder (clip-<id>.m3u8, clip-<id>.mp4), so the media routes serve them with the
stream's own access decision, and deleting the stream's media deletes them.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import Any

from mediaserver.events import Event, LocalEventBus
from packager.clip import ClipError, clip_playlist, covering, cut_mp4
from packager.playlist import RenditionTrack
from packager.recording import mp4_source, periods
from storage.local import LocalStore

log = logging.getLogger(__name__)

MAX_CLIP_SECONDS = 3 * 3600.0  # a clip is a moment of the service, not a copy of the whole day
MAX_TITLE = 200


def clip_key(stream_id: str, clip_id: str) -> str:
    return f"clips/{stream_id}/{clip_id}.json"


def new_clip_id() -> str:
    return "clip_" + secrets.token_hex(8)


def timeline_seconds(track: RenditionTrack, wall_clock: float) -> float:
    """A wall-clock time (unix seconds) as seconds of the broadcast's timeline, from its segments' dates."""
    first = track.entries[0]
    return wall_clock - (first.program_date_time - first.start)


def source_track(tracks: list[RenditionTrack]) -> RenditionTrack:
    """The rung a clip is cut from: the recording MP4's rung (tallest with one size), else the tallest."""
    chosen = mp4_source(tracks) or (tracks[0] if tracks else None)
    if chosen is None or not chosen.entries:
        raise ClipError("the broadcast has no media yet")
    return chosen


class ClipStore:
    """Clip records as JSON files in the media store (one writer: the event loop's thread hands them off)."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store

    def save(self, clip: dict[str, Any]) -> None:
        self.store.write(clip_key(clip["stream_id"], clip["id"]), json.dumps(clip).encode())

    def get(self, stream_id: str, clip_id: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.store.read(clip_key(stream_id, clip_id))))
        except (FileNotFoundError, ValueError):
            return None

    def list(self, stream_id: str) -> list[dict[str, Any]]:
        clips = []
        for key in self.store.list(f"clips/{stream_id}"):
            if key.endswith(".json"):
                try:
                    clips.append(dict(json.loads(self.store.read(key))))
                except (FileNotFoundError, ValueError):
                    continue  # deleted meanwhile
        return sorted(clips, key=lambda c: (c["created_at"], c["id"]))

    def delete(self, clip: dict[str, Any]) -> None:
        prefix = f"media/{clip['stream_id']}/{clip['broadcast_id']}"
        for key in (f"{prefix}/{clip['id']}.m3u8", f"{prefix}/{clip['id']}.mp4", clip_key(clip["stream_id"], clip["id"])):
            try:
                self.store.delete(key)
            except FileNotFoundError:
                pass


def make_clip_media(store: LocalStore, key_prefix: str, tracks: list[RenditionTrack], clip: dict[str, Any],
                    segment_duration: float) -> dict[str, Any]:
    """The clip's VOD playlist and exact-frame MP4 (blocking: run in a thread). Returns the fields to update."""
    track = source_track(tracks)
    start, end = float(clip["start"]), float(clip["end"])
    text = clip_playlist(track, start, end, segment_duration)
    store.write(f"{key_prefix}/{clip['id']}.m3u8", text.encode())
    chosen = covering(track.entries, start, end)
    runs = []
    for init_uri, entries in periods(RenditionTrack(track.name, entries=chosen)):
        runs.append((store.ensure_local(f"{key_prefix}/{init_uri}"),
                     [store.ensure_local(f"{key_prefix}/{e.uri}") for e in entries], entries[0].start))
    mp4_key = f"{key_prefix}/{clip['id']}.mp4"
    path = store.path_for(mp4_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = cut_mp4(runs, start, end, path)
    return {"status": "READY", "frames": frames, "mp4_size": path.stat().st_size, "rendition": track.name,
            "error": None}


class ClipMaker:
    """Runs clip jobs one at a time in a thread (each decodes and encodes a little video) and announces them."""

    def __init__(self, store: LocalStore, bus: LocalEventBus, segment_duration: float) -> None:
        self.store, self.bus, self.segment_duration = store, bus, segment_duration
        self.records = ClipStore(store)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def new(self, stream_id: str, broadcast_id: str, recording_id: str | None, title: str, start: float,
            end: float) -> dict[str, Any]:
        return {"id": new_clip_id(), "stream_id": stream_id, "broadcast_id": broadcast_id,
                "recording_id": recording_id, "title": title, "start": start, "end": end, "status": "PROCESSING",
                "error": None, "frames": None, "mp4_size": None, "rendition": None, "created_at": time.time()}

    async def submit(self, clip: dict[str, Any], key_prefix: str, tracks: list[RenditionTrack]) -> None:
        """Save the record and start its job; the caller answers at once with the PROCESSING clip."""
        await asyncio.to_thread(self.records.save, clip)
        # A live broadcast's tracks keep growing: the job works on a copy of the segments as of now.
        frozen = [RenditionTrack(t.name, t.width, t.height, t.codecs, t.frame_rate, t.nominal_bitrate,
                                 list(t.entries), dict(t.formats)) for t in tracks]
        task = asyncio.get_running_loop().create_task(self._run(clip, key_prefix, frozen), name=f"clip-{clip['id']}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, clip: dict[str, Any], key_prefix: str, tracks: list[RenditionTrack]) -> None:
        async with self._lock:
            try:
                fields = await asyncio.to_thread(make_clip_media, self.store, key_prefix, tracks, clip,
                                                 self.segment_duration)
            except Exception as exc:  # a bad cut fails this clip only
                log.exception("clip %s of stream %s failed", clip["id"], clip["stream_id"])
                fields = {"status": "FAILED", "error": str(exc)[:500]}
            current = await asyncio.to_thread(self.records.get, clip["stream_id"], clip["id"])
            if current is None:  # deleted while it was being made
                await asyncio.to_thread(self.records.delete, clip)
                return
            current.update(fields)
            await asyncio.to_thread(self.records.save, current)
        if current["status"] == "READY":
            self.bus.publish(Event("clip.ready", clip["stream_id"], {"clip": {
                k: current[k] for k in ("id", "title", "start", "end", "broadcast_id", "recording_id", "frames")}}))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
