"""What media is kept, and for how long: a stream's media goes with it, old recordings shed their HLS segments
(the MP4 stays) after `storage.keep_segments_days` and vanish after `storage.keep_recordings_days`.

The bytes a stream keeps are summed from the recordings' sizes in SQLite, so reading them costs no disk walk.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from mediaserver.config import StorageConfig
from mediaserver.db import Database
from mediaserver.sessions import MEDIA_ROOT
from storage.store import Store

log = logging.getLogger(__name__)

DAY = 86400.0
# Set on a recording whose segments and playlists were deleted: it plays as its MP4 from then on.
SEGMENTS_DELETED = "segments_deleted_at"


class RecordingBusyError(RuntimeError):
    """The recording is still being written (its MP4 is PROCESSING); it can't be deleted yet."""


def recording_prefix(recording: dict[str, Any]) -> str:
    """The folder key of a recording: media/STREAM/BROADCAST."""
    return str(recording["playlist_key"]).rsplit("/", 1)[0]


def plays_as_mp4(recording: dict[str, Any]) -> bool:
    """The recording's segments were deleted by retention: only the MP4 is left."""
    return bool(recording.get(SEGMENTS_DELETED)) and bool(recording.get("mp4_key"))


def delete_recording(db: Database, store: Store, row: dict[str, Any]) -> int:
    """Delete one recording: its folder (segments, playlists, MP4) and its row. The bytes freed."""
    if row["status"] == "PROCESSING":
        raise RecordingBusyError(f"recording {row['id']} is still being saved")
    freed = store.delete_prefix(recording_prefix(row))
    db.delete_recording(row["id"])
    log.info("stream %s: recording %s deleted (%d bytes freed)", row["stream_id"], row["id"], freed)
    return freed


def delete_stream_media(db: Database, store: Store, stream_id: str) -> int:
    """Delete everything a deleted stream kept: media/STREAM and its broadcast and recording rows."""
    freed = store.delete_prefix(f"{MEDIA_ROOT}/{stream_id}")
    db.delete_media_rows(stream_id)
    log.info("stream %s: media deleted (%d bytes freed)", stream_id, freed)
    return freed


def drop_segments(db: Database, store: Store, row: dict[str, Any], now: float) -> int | None:
    """Delete a finished recording's HLS segments and playlists, keeping its MP4. None if it has no MP4 stored
    (on disk or, with storage.backend "s3", in the bucket: then the segments are all there is, and they stay)."""
    mp4_key = row.get("mp4_key")
    if not mp4_key or not store.exists(mp4_key):
        return None
    freed = store.delete_prefix(recording_prefix(row), keep=(mp4_key,))
    db.update_recording(row["id"], size=0, **{SEGMENTS_DELETED: now})
    log.info("stream %s: recording %s: segments deleted, the MP4 stays (%d bytes freed)",
             row["stream_id"], row["id"], freed)
    return freed


@dataclass
class RetentionReport:
    segments_dropped: list[str] = field(default_factory=list)  # recording ids now playing as their MP4
    recordings_deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0


def apply_retention(db: Database, store: Store, config: StorageConfig, now: float) -> RetentionReport:
    """One retention pass over every saved recording (blocking: run it in a thread)."""
    report = RetentionReport()
    if config.keep_recordings_days > 0:
        cutoff = now - config.keep_recordings_days * DAY
        rows = db.recordings_where("created_at < ? and status != 'PROCESSING'", [cutoff])
        for row in rows:
            report.bytes_freed += delete_recording(db, store, row)
            report.recordings_deleted.append(row["id"])
    if config.keep_segments_days > 0:
        cutoff = now - config.keep_segments_days * DAY
        rows = db.recordings_where(
            f"created_at < ? and status = 'READY' and mp4_key is not null and {SEGMENTS_DELETED} is null", [cutoff])
        for row in rows:
            freed = drop_segments(db, store, row, now)
            if freed is not None:
                report.bytes_freed += freed
                report.segments_dropped.append(row["id"])
    return report


class RetentionTask:
    """Runs a retention pass at start and every `retention_interval` seconds; `clock` is replaceable in tests."""

    def __init__(self, config: StorageConfig, db: Database, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.db = db
        self.store = store
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def run_once(self, now: float | None = None) -> RetentionReport:
        return await asyncio.to_thread(apply_retention, self.db, self.store, self.config,
                                       self.clock() if now is None else now)

    async def _loop(self) -> None:
        while True:
            try:
                report = await self.run_once()
                if report.bytes_freed or report.recordings_deleted:
                    log.info("retention: %d recordings now MP4 only, %d deleted, %d bytes freed",
                             len(report.segments_dropped), len(report.recordings_deleted), report.bytes_freed)
            except Exception:  # a failed pass is retried at the next interval; the server goes on
                log.exception("retention pass failed")
            await asyncio.sleep(self.config.retention_interval)
