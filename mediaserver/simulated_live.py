"""Simulated live: a recording re-aired as a live service, its live playlists growing in real time.

At the air time the stream goes LIVE with a Broadcast (mediaserver/sessions.py) whose tracks start empty;
each recorded segment is appended once its media has "happened" on the wall clock (air time + its offset),
so the ordinary live playlist code (DVR window, EXT-X-PROGRAM-DATE-TIME, master) serves it unchanged, and
the recording's own init and segments are served as they are (no re-encode). After the recording's
duration it ends through the manager's normal end, so stream.live / stream.ended fire as for a live service.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from mediaserver.events import Event
from mediaserver.sessions import Broadcast, BroadcastSettings, StreamManager, broadcast_settings
from packager.playlist import RenditionTrack, SegmentEntry
from packager.recording import load_index

log = logging.getLogger(__name__)


class ReairRefused(ValueError):
    """The recording cannot be aired now (with the reason)."""


# -- sans-IO: what is on air at a moment ---------------------------------------------------------------
def rebased(entries: list[SegmentEntry], air_at: float) -> list[SegmentEntry]:
    """The recorded entries dated from the air time: a segment's EXT-X-PROGRAM-DATE-TIME is when it airs."""
    if not entries:
        return []
    origin = entries[0].start
    return [dataclasses.replace(e, program_date_time=air_at + (e.start - origin)) for e in entries]


def aired_count(entries: list[SegmentEntry], elapsed: float) -> int:
    """How many segments are on air `elapsed` seconds after the air time: those whose media has ended
    (as a live encoder publishes a segment once it is complete)."""
    if not entries:
        return 0
    origin = entries[0].start
    count = 0
    for e in entries:
        if e.start - origin + e.duration > elapsed + 1e-6:
            break
        count += 1
    return count


def next_due(entries: list[SegmentEntry], aired: int) -> float | None:
    """Seconds after the air time at which segment `aired` is complete; None when all have aired."""
    if aired >= len(entries):
        return None
    origin = entries[0].start
    return entries[aired].start - origin + entries[aired].duration


@dataclass
class Airing:
    """One scheduled re-air of a recording on its own stream."""

    stream_id: str
    recording_id: str
    air_at: float
    task: asyncio.Task[None] | None = None
    status: str = "SCHEDULED"  # SCHEDULED, LIVE, ENDED, CANCELLED, FAILED

    def view(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id, "recording_id": self.recording_id, "air_at": self.air_at,
                "status": self.status}


class SimulatedLive:
    """The airings of a server: each a task that waits for its air time, then feeds the live playlists."""

    def __init__(self, manager: StreamManager, clock: Callable[[], float] = time.time) -> None:
        self.manager = manager
        self.clock = clock
        self.airings: dict[str, Airing] = {}  # by stream id: one pending or running airing per stream

    def airing(self, stream_id: str) -> Airing | None:
        return self.airings.get(stream_id)

    async def schedule(self, stream_id: str, recording_id: str, air_at: float) -> Airing:
        """Air the stream's recording at `air_at` (unix seconds), replacing a pending airing."""
        db = self.manager.db
        recording = await asyncio.to_thread(db.recording, stream_id, recording_id)
        if recording is None:
            raise ReairRefused("recording not found on this stream")
        if recording["status"] != "READY" or not recording["playlist_key"]:
            raise ReairRefused("the recording is not ready")
        current = self.airings.get(stream_id)
        if current is not None and current.status == "LIVE":
            raise ReairRefused("the stream is already airing a recording")
        if self.manager.has_broadcast(stream_id):
            raise ReairRefused("the stream is live")
        if current is not None and current.task is not None:
            current.task.cancel()
        airing = Airing(stream_id, recording_id, air_at)
        self.airings[stream_id] = airing
        await asyncio.to_thread(db.update_stream, stream_id, scheduled_start=air_at,
                                scheduled_end=air_at + float(recording["duration"] or 0))
        airing.task = asyncio.get_running_loop().create_task(self._run(airing, recording), name=f"reair-{stream_id}")
        return airing

    async def cancel(self, stream_id: str) -> bool:
        airing = self.airings.get(stream_id)
        if airing is None or airing.status != "SCHEDULED" or airing.task is None:
            return False
        airing.task.cancel()
        airing.status = "CANCELLED"
        return True

    async def close(self) -> None:
        tasks = [a.task for a in self.airings.values() if a.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, airing: Airing, recording: dict[str, Any]) -> None:
        try:
            await asyncio.sleep(max(0.0, airing.air_at - self.clock()))
            await self._air(airing, recording)
        except asyncio.CancelledError:
            broadcast = self.manager.broadcasts.get(airing.stream_id)
            if broadcast is not None and broadcast.replay and not broadcast.ended:
                await self.manager.end(airing.stream_id, "server shutting down")
            raise
        except Exception as exc:
            airing.status = "FAILED"
            log.exception("stream %s: re-air of recording %s failed", airing.stream_id, airing.recording_id)
            await asyncio.to_thread(self.manager.db.update_stream, airing.stream_id, error=f"re-air failed: {exc}")

    async def _air(self, airing: Airing, recording: dict[str, Any]) -> None:
        manager = self.manager
        if manager.has_broadcast(airing.stream_id):
            raise ReairRefused("the stream was live at the air time")
        key_prefix = recording["playlist_key"].rsplit("/", 1)[0]
        recorded = [t for t in await asyncio.to_thread(load_index, manager.store, key_prefix) if t.entries]
        if not recorded:
            raise ReairRefused("the recording has no segments")
        air_at = self.clock()  # a late start (server busy) airs from the beginning, dated from now
        full = {t.name: rebased(t.entries, air_at) for t in recorded}
        broadcast = Broadcast(airing.stream_id, recording["broadcast_id"], key_prefix, status="STARTING", replay=True)
        stream = await asyncio.to_thread(manager.db.stream, airing.stream_id)
        org = await asyncio.to_thread(manager.db.org, stream["org_id"]) if stream and stream.get("org_id") else None
        settings = broadcast_settings(manager.config, stream or {}, org)
        # No LL-HLS parts (the recording keeps none); nothing is recorded again at the end.
        broadcast.settings = BroadcastSettings(settings.dvr_window, settings.ladder, recording=False, part_target=None)
        for track in recorded:
            broadcast.tracks[track.name] = RenditionTrack(
                track.name, track.width, track.height, track.codecs, track.frame_rate, track.nominal_bitrate,
                formats=dict(track.formats))
        manager.broadcasts[airing.stream_id] = broadcast
        longest = max(full.values(), key=len)
        aired = 0
        while True:
            count = aired_count(longest, self.clock() - air_at)
            if count > aired:
                for name, entries in full.items():
                    shown = aired_count(entries, self.clock() - air_at)
                    broadcast.tracks[name].entries[:] = entries[:shown]
                broadcast.version += 1
                for name in full:
                    await broadcast.edge.notify(name)
                if aired == 0:
                    await self._go_live(broadcast, air_at)
                    airing.status = "LIVE"
                aired = count
            if broadcast.ended:  # ended by an admin meanwhile
                break
            due = next_due(longest, aired)
            if due is None:
                await manager.end(airing.stream_id, "the recording has aired")
                break
            await asyncio.sleep(max(0.0, air_at + due - self.clock()))
        airing.status = "ENDED"
        log.info("stream %s: re-air of recording %s ended", airing.stream_id, airing.recording_id)

    async def _go_live(self, broadcast: Broadcast, started_at: float) -> None:
        """As the manager's go-live, without touching the recorded broadcast's own row."""
        broadcast.status = "LIVE"
        await asyncio.to_thread(self.manager.db.update_stream, broadcast.stream_id, status="LIVE",
                                actual_start=started_at, actual_end=None, error=None)
        self.manager.bus.publish(Event("stream.live", broadcast.stream_id,
                                       {"broadcast": broadcast.id, "simulated": True,
                                        "recording": self.airings[broadcast.stream_id].recording_id}))
        log.info("stream %s: LIVE (re-airing broadcast %s)", broadcast.stream_id, broadcast.id)
