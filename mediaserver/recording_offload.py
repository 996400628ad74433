"""Moves each finished recording to S3 (storage.backend = "s3") once everything made from it is made.

recording.ready comes after the VOD playlists, thumbnails and MP4; the library's auto-publisher makes the
podcast audio from the local MP4 on the same event, so the upload waits for that event's other subscribers.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from mediaserver.config import Config, ConfigError
from mediaserver.db import Database
from mediaserver.events import Event, LocalEventBus
from storage.local import LocalStore
from storage.s3 import S3Settings, S3Store
from storage.store import StorageError
from storage.tiered import TieredStore

log = logging.getLogger(__name__)


class RecordingOffloader:
    def __init__(self, db: Database, store: TieredStore, bus: LocalEventBus,
                 wait_for_others: float = 600.0) -> None:
        self.db, self.store, self.bus = db, store, bus
        # The longest the upload waits for the event's other subscribers (podcast audio of a long service).
        self.wait_for_others = wait_for_others
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()  # prefixes being uploaded (an event and the catch-up may meet)
        self._catch_up: asyncio.Task[None] | None = None
        self._unsubscribe = bus.subscribe(self._on_event)

    async def _on_event(self, event: Event) -> None:
        if event.name != "recording.ready":
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._settle(task)
            await self.offload(event.stream_id, str(event.data["recording"]))
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _settle(self, me: asyncio.Task[None] | None) -> None:
        """Let the other subscribers of this event (delivered in their own tasks, started with ours) finish;
        other uploads are not waited for (two recordings ready at once would wait on each other)."""
        await asyncio.sleep(0)  # every delivery task of the event has started its first step
        others = [t for t in list(getattr(self.bus, "_tasks", ())) if t is not me and t not in self._tasks and not t.done()]
        if others:
            await asyncio.wait(others, timeout=self.wait_for_others)

    async def offload(self, stream_id: str, recording_id: str) -> None:
        recording = await asyncio.to_thread(self.db.recording, stream_id, recording_id)
        if recording is None:
            return  # deleted meanwhile
        prefix = str(recording["playlist_key"]).rsplit("/", 1)[0]
        if prefix in self._busy:
            return
        self._busy.add(prefix)
        try:
            report = await asyncio.to_thread(self.store.offload, prefix)
        except (StorageError, OSError) as exc:
            # The local copy stays and keeps serving; the next start-up tries again (catch_up).
            log.error("stream %s: recording %s not stored in S3, kept on the local disk: %s",
                      stream_id, recording_id, exc)
            return
        finally:
            self._busy.discard(prefix)
        log.info("stream %s: recording %s stored in S3 (%d files, %d bytes)", stream_id, recording_id,
                 report.files, report.bytes)

    async def start_catch_up(self) -> None:
        """At start-up, before recovery: recordings READY but still only on the local disk (the bucket was
        down, or the server stopped mid-upload) go in the background. Taken before recovery, so a recording
        recovery saves now goes through recording.ready (after its podcast audio) and not here."""
        rows = await asyncio.to_thread(self.db.recordings_where, "status = 'READY'", [])
        self._catch_up = asyncio.get_running_loop().create_task(self._catch_up_rows(rows))

    async def _catch_up_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            prefix = str(row["playlist_key"]).rsplit("/", 1)[0]
            try:
                pending = await asyncio.to_thread(self._pending, prefix, str(row["playlist_key"]))
            except (StorageError, OSError) as exc:
                log.error("cannot check recording %s in S3: %s", row["id"], exc)
                return
            if pending:
                await self.offload(str(row["stream_id"]), str(row["id"]))

    def _pending(self, prefix: str, playlist_key: str) -> bool:
        local = LocalStore.list(self.store, prefix)
        return bool(local) and (not self.store.keep_local or not self.store.remote.exists(playlist_key))

    async def stop(self) -> None:
        """Let uploads under way finish (a half-done one keeps its local copy anyway)."""
        self._unsubscribe()
        if self._catch_up is not None:
            self._catch_up.cancel()  # the rest waits for the next start
        await asyncio.sleep(0)  # deliveries of a recording.ready published just now register first
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def build_store(config: Config) -> LocalStore:
    """The server's store from [storage]: a LocalStore, or with backend "s3" a TieredStore whose bucket
    has been checked to answer (ConfigError with the reason otherwise, before anything listens)."""
    reserve = int(config.storage.reserve_mb * 1024 * 1024)
    if config.storage.backend != "s3":
        return LocalStore(config.data_path, reserve)
    s = config.storage
    remote = S3Store(S3Settings(bucket=s.s3_bucket, endpoint_url=s.s3_endpoint_url, region=s.s3_region,
                                prefix=s.s3_prefix, access_key_id=s.s3_access_key_id,
                                secret_access_key=s.s3_secret_access_key))
    try:
        await asyncio.to_thread(remote.check)
    except StorageError as exc:
        raise ConfigError(f"storage.backend = \"s3\": {exc.strerror or exc}") from exc
    return TieredStore(config.data_path, remote, reserve, keep_local=s.s3_keep_local)
