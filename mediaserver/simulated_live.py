"""Simulated live: a recording re-aired as a live service, its live playlists growing in real time.

At the air time the stream goes LIVE with a Broadcast (mediaserver/sessions.py) whose tracks start empty;
each recorded segment is appended once its media has "happened" on the wall clock (air time + its offset),
so the ordinary live playlist code (DVR window, EXT-X-PROGRAM-DATE-TIME, master) serves it unchanged, and
the recording's own init and segments are served as they are (no re-encode). After the recording's
duration it ends through the manager's normal end, so stream.live / stream.ended fire as for a live service.

A re-air is kept on the stream's row (simulated_recording_id + scheduled_start), so it survives a restart
and a series' template can carry it to every occurrence: `sync` arms every SCHEDULED row that has one. An
air time that passed while the server was down airs joined in progress, at the offset the wall clock says
(as a live service would be), while the recording would still be airing; one whose recording would have
ended is left to the scheduler's auto-cancel, like any service that never started.

A server that died while a re-air was LIVE (the row still says LIVE; a re-air opens no broadcast row, so
`StreamManager.recover` leaves it alone) resumes it at start-up as the same broadcast, dated from the same air
time: the wall clock decides where viewers are, as if nothing had happened, and it ends at its scheduled end
(at once, with stream.ended, if that passed while the server was down). stream.live is not sent again.

A recording deleted, or whose media went missing on disk, is refused when the re-air is scheduled through
the API (`media_problem`); if that happens after scheduling, the stream turns FAILED at the air time with the
reason in its `error` (and stream.failed), and a log line; the server carries on.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from mediaserver.db import Database
from mediaserver.events import Event
from mediaserver.sessions import Broadcast, BroadcastSettings, StreamManager, broadcast_settings
from packager.playlist import RenditionTrack, SegmentEntry
from packager.recording import load_index
from storage.local import LocalStore

log = logging.getLogger(__name__)


class ReairRefused(ValueError):
    """The recording cannot be aired now (with the reason)."""


def recording_problem(db: Database, org_id: str, recording_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """The recording if a stream of `org_id` may re-air it (a READY recording of any stream of the same
    organization), else why not. Another organization's recording is "not found", as everywhere."""
    recording = db.recording_by_id(recording_id)
    owner = db.stream(recording["stream_id"]) if recording is not None else None
    if recording is None or owner is None or owner["org_id"] != org_id:
        return None, "recording not found in this organization"
    if recording["status"] != "READY" or not recording["playlist_key"] or recording.get("segments_deleted_at"):
        return None, "the recording is not ready (or its segments were deleted)"
    return recording, None


def media_problem(store: LocalStore, recording: dict[str, Any]) -> str | None:
    """Why the recording's HLS media can't be aired from disk (its index, init or segment files gone), else
    None. Blocking: run it in a thread."""
    prefix = str(recording["playlist_key"]).rsplit("/", 1)[0]
    try:
        tracks = [t for t in load_index(store, prefix) if t.entries]
        present = set(store.list(prefix))
    except (OSError, ValueError, KeyError) as exc:
        return f"the recording's media cannot be read ({prefix}: {exc})"
    if not tracks:
        return f"the recording's media is missing on disk ({prefix}: no segments)"
    missing = [f"{prefix}/{uri}" for t in tracks for e in t.entries for uri in (e.uri, e.init_uri)
               if f"{prefix}/{uri}" not in present]
    if missing:
        return f"the recording's media is missing on disk ({len(set(missing))} files, e.g. {missing[0]})"
    return None


def airable_problem(db: Database, store: LocalStore, org_id: str, recording_id: str) -> str | None:
    """Why this recording can't be re-aired (not this organization's, not ready, media gone), else None.
    Blocking: run it in a thread."""
    recording, problem = recording_problem(db, org_id, recording_id)
    if problem or recording is None:
        return problem or "no such recording"
    return media_problem(store, recording)


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
    resumed: bool = False  # taken over after a crash while it was LIVE: stream.live was sent already

    def view(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id, "recording_id": self.recording_id, "air_at": self.air_at,
                "status": self.status}


class SimulatedLive:
    """The airings of a server: each a task that waits for its air time, then feeds the live playlists."""

    def __init__(self, manager: StreamManager, clock: Callable[[], float] = time.time) -> None:
        self.manager = manager
        self.clock = clock
        self.airings: dict[str, Airing] = {}  # by stream id: one pending or running airing per stream
        self._changed: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def airing(self, stream_id: str) -> Airing | None:
        return self.airings.get(stream_id)

    async def start(self) -> None:
        """Resume the re-airs a crash interrupted, arm the ones stored before a restart, then follow every
        change of a stream row (an API edit, a series materializing occurrences) so ones set there are armed too."""
        loop = asyncio.get_running_loop()
        changed = self._changed = asyncio.Event()
        def on_change(_stream_id: str) -> None:  # in the writing thread: only hand the news to the loop
            loop.call_soon_threadsafe(changed.set)

        self._unsubscribe = self.manager.db.on_stream_change(on_change)
        await self.resume()
        await self.sync()
        self._watcher = loop.create_task(self._watch(changed), name="reair-sync")

    async def _watch(self, changed: asyncio.Event) -> None:
        while True:
            await changed.wait()
            await asyncio.sleep(0.2)  # a burst of writes (a series materializing) makes one pass
            changed.clear()
            try:
                await self.sync()
            except Exception:
                log.exception("re-air sync failed; trying again at the next change")

    async def resume(self) -> None:
        """Re-airs a previous run left LIVE (killed mid-air): on again where the wall clock says, or ended now
        if the recording would have finished meanwhile. Runs once, after the manager's own recovery."""
        db = self.manager.db
        rows = await asyncio.to_thread(
            db.query_streams, "status = 'LIVE' and simulated_recording_id is not null", [], "scheduled_start", 100_000, 0)
        for row in rows:
            if self.manager.has_broadcast(row["id"]):
                continue
            air_at = float(row["actual_start"] or row["scheduled_start"] or self.clock())
            recording, problem = await asyncio.to_thread(recording_problem, db, row["org_id"], row["simulated_recording_id"])
            if recording is None:
                await self._fail(row["id"], row["simulated_recording_id"], problem or "recording not found", ("LIVE",))
                continue
            end_at = air_at + float(recording["duration"] or 0)
            if self.clock() >= end_at:
                log.warning("stream %s: the re-air of recording %s ended while the server was down; ending it",
                            row["id"], recording["id"])
                if await asyncio.to_thread(db.transition, row["id"], ("LIVE",), "ENDED", actual_end=end_at):
                    self.manager.bus.publish(Event("stream.ended", row["id"], {"broadcast": recording["broadcast_id"]}))
                continue
            log.warning("stream %s: resuming the re-air of recording %s interrupted by a restart (%.1f s in)",
                        row["id"], recording["id"], self.clock() - air_at)
            airing = self._arm(row["id"], recording["id"], air_at)
            airing.resumed, airing.status = True, "LIVE"  # not pending: `sync` and `cancel` leave it alone

    async def sync(self) -> None:
        """Arm each SCHEDULED stream's stored re-air (or re-arm it if its time or recording changed); drop
        pending airings whose row no longer asks for them."""
        db = self.manager.db
        rows = await asyncio.to_thread(
            db.query_streams, "status = 'SCHEDULED' and simulated_recording_id is not null and scheduled_start is not null",
            [], "scheduled_start", 100_000, 0)
        wanted = {row["id"]: row for row in rows}
        for stream_id, airing in list(self.airings.items()):
            if airing.status == "SCHEDULED" and stream_id not in wanted:
                await self.cancel(stream_id, persist=False)
        for row in rows:
            current = self.airings.get(row["id"])
            if current is not None and current.status in ("SCHEDULED", "LIVE") and \
                    current.recording_id == row["simulated_recording_id"] and current.air_at == row["scheduled_start"]:
                continue
            if current is not None and current.status == "LIVE":
                continue
            if current is not None and current.status == "FAILED" and current.recording_id == row["simulated_recording_id"] \
                    and current.air_at == row["scheduled_start"]:
                continue  # already reported on the row; an edit (new time or recording) arms it again
            recording, problem = await asyncio.to_thread(recording_problem, db, row["org_id"], row["simulated_recording_id"])
            if recording is None:
                # Armed all the same: at its air time it turns FAILED with the reason (not a silent no-show).
                log.warning("stream %s: cannot re-air recording %s: %s", row["id"], row["simulated_recording_id"], problem)
            elif self.clock() > row["scheduled_start"] + float(recording["duration"] or 0):
                continue  # it would have ended already: the scheduler's auto-cancel deals with it
            self._arm(row["id"], row["simulated_recording_id"], row["scheduled_start"])

    async def schedule(self, stream_id: str, recording_id: str, air_at: float) -> Airing:
        """Air the recording (of any stream of the stream's organization) at `air_at` (unix seconds),
        replacing a pending airing; stored on the stream's row so it survives a restart."""
        db = self.manager.db
        stream = await asyncio.to_thread(db.stream, stream_id)
        if stream is None:
            raise ReairRefused("stream not found")
        recording, problem = await asyncio.to_thread(recording_problem, db, stream["org_id"], recording_id)
        if recording is None:
            log.warning("stream %s: re-air of recording %s refused: %s", stream_id, recording_id, problem)
            raise ReairRefused(problem or "recording not found")
        problem = await asyncio.to_thread(media_problem, self.manager.store, recording)
        if problem is not None:
            log.warning("stream %s: re-air of recording %s refused: %s", stream_id, recording_id, problem)
            raise ReairRefused(problem)
        current = self.airings.get(stream_id)
        if current is not None and current.status == "LIVE":
            raise ReairRefused("the stream is already airing a recording")
        if self.manager.has_broadcast(stream_id):
            raise ReairRefused("the stream is live")
        airing = self._arm(stream_id, recording_id, air_at)
        # A past service airs again: it is upcoming until the air time (in the same write, so `sync` sees it armed).
        again = {"status": "SCHEDULED"} if stream["status"] in ("ENDED", "FAILED") else {}
        await asyncio.to_thread(db.update_stream, stream_id, simulated_recording_id=recording_id, scheduled_start=air_at,
                                scheduled_end=air_at + float(recording["duration"] or 0), starting_soon_sent=0,
                                error=None, **again)
        return airing

    def _arm(self, stream_id: str, recording_id: str, air_at: float) -> Airing:
        current = self.airings.get(stream_id)
        if current is not None and current.task is not None and current.status == "SCHEDULED":
            current.task.cancel()
        airing = Airing(stream_id, recording_id, air_at)
        self.airings[stream_id] = airing
        airing.task = asyncio.get_running_loop().create_task(self._run(airing), name=f"reair-{stream_id}")
        return airing

    async def cancel(self, stream_id: str, persist: bool = True) -> bool:
        airing = self.airings.get(stream_id)
        if airing is None or airing.status != "SCHEDULED" or airing.task is None:
            return False
        airing.task.cancel()
        airing.status = "CANCELLED"
        if persist:
            await asyncio.to_thread(self.manager.db.update_stream, stream_id, simulated_recording_id=None)
        return True

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        tasks = [a.task for a in self.airings.values() if a.task is not None]
        if self._watcher is not None:
            tasks.append(self._watcher)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, airing: Airing) -> None:
        try:
            await asyncio.sleep(max(0.0, airing.air_at - self.clock()))
            # Checked again now: the recording may have been deleted, or its files lost, since it was scheduled.
            db = self.manager.db
            stream = await asyncio.to_thread(db.stream, airing.stream_id)
            recording, problem = await asyncio.to_thread(
                recording_problem, db, stream["org_id"] if stream else "", airing.recording_id)
            if recording is not None:
                problem = await asyncio.to_thread(media_problem, self.manager.store, recording)
            if recording is None or problem is not None:
                raise ReairRefused(problem or "recording not found")
            await self._air(airing, recording)
        except asyncio.CancelledError:
            broadcast = self.manager.broadcasts.get(airing.stream_id)
            if broadcast is not None and broadcast.replay and not broadcast.ended:
                await self.manager.end(airing.stream_id, "server shutting down")
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ReairRefused) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, ReairRefused):
                log.exception("stream %s: re-air of recording %s failed", airing.stream_id, airing.recording_id)
            airing.status = "FAILED"
            broadcast = self.manager.broadcasts.get(airing.stream_id)
            if broadcast is not None and broadcast.replay and not broadcast.ended:
                await self.manager.fail(broadcast, f"re-air failed: {reason}")
            else:
                await self._fail(airing.stream_id, airing.recording_id, reason, ("SCHEDULED", "LIVE"))

    async def _fail(self, stream_id: str, recording_id: str, reason: str, from_states: tuple[str, ...]) -> None:
        """A re-air that cannot go on air: the stream FAILED with the reason, stream.failed, a log line."""
        log.error("stream %s: re-air of recording %s FAILED: %s", stream_id, recording_id, reason)
        if await asyncio.to_thread(self.manager.db.transition, stream_id, from_states, "FAILED",
                                   error=f"re-air failed: {reason}", actual_end=self.clock()):
            self.manager.bus.publish(Event("stream.failed", stream_id, {"recording": recording_id, "error": reason}))

    async def _air(self, airing: Airing, recording: dict[str, Any]) -> None:
        manager = self.manager
        if manager.has_broadcast(airing.stream_id):
            raise ReairRefused("the stream was live at the air time")
        key_prefix = recording["playlist_key"].rsplit("/", 1)[0]
        recorded = [t for t in await asyncio.to_thread(load_index, manager.store, key_prefix) if t.entries]
        if not recorded:
            raise ReairRefused("the recording has no segments")
        # Dated from the scheduled time: a late start (a restart past the air time) joins in progress.
        air_at = airing.air_at
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
                    await self._go_live(broadcast, airing)
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

    async def _go_live(self, broadcast: Broadcast, airing: Airing) -> None:
        """As the manager's go-live, without touching the recorded broadcast's own row. A resumed re-air
        (after a crash) was LIVE already: no second stream.live."""
        broadcast.status = "LIVE"
        await asyncio.to_thread(self.manager.db.update_stream, broadcast.stream_id, status="LIVE",
                                actual_start=airing.air_at, actual_end=None, error=None)
        if airing.resumed:
            log.info("stream %s: LIVE again (re-airing broadcast %s, resumed)", broadcast.stream_id, broadcast.id)
            return
        self.manager.bus.publish(Event("stream.live", broadcast.stream_id,
                                       {"broadcast": broadcast.id, "simulated": True,
                                        "recording": airing.recording_id}))
        log.info("stream %s: LIVE (re-airing broadcast %s)", broadcast.stream_id, broadcast.id)
