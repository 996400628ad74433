"""The analytics background task: every `sample_seconds`, record how many watch each live stream (the room's
viewers and the HLS-only ones; for a Mux/IVS stream, the platform's own count when it is larger) and save the
HLS sessions that went idle."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mediaserver.analytics import concurrent_viewers, counts_as_viewer
from mediaserver.analytics_store import AnalyticsStore
from mediaserver.chat.hub import ChatHub
from mediaserver.chat.protocol import device_and_browser
from mediaserver.chat.room import Room
from mediaserver.db import Database
from mediaserver.hls_viewers import HlsViewerTracker
from mediaserver.platform_viewers import PlatformViewers

log = logging.getLogger(__name__)

ON_AIR = ("LIVE", "ENDING")  # ENDING: the reconnect window, viewers still waiting


def room_identities(room: Room | None) -> set[str]:
    if room is None:
        return set()
    return {v.identity for v in room.viewers.values() if counts_as_viewer({"role": v.role})}


def room_rows(room: Room | None, now: float) -> list[dict[str, Any]]:
    """The room's viewers now, as session rows ending now (a live report counts them before they leave)."""
    if room is None:
        return []
    rows = []
    for v in room.viewers.values():
        device, browser = device_and_browser(v.user_agent)
        rows.append({"id": v.id, "stream_id": room.stream_id, "role": v.role, "joined_at": v.joined_at, "left_at": now,
                     "watch_seconds": now - v.joined_at, "device": device, "browser": browser, "viewer": v.identity})
    return rows


def current_viewers(chat: ChatHub, tracker: HlsViewerTracker, stream_id: str, now: float) -> int:
    return concurrent_viewers(room_identities(chat.rooms.get(stream_id)), tracker.active_viewers(stream_id, now))


class AnalyticsSampler:
    def __init__(self, store: AnalyticsStore, tracker: HlsViewerTracker, db: Database, chat: ChatHub,
                 interval: float = 15.0, platform: PlatformViewers | None = None) -> None:
        self.store, self.tracker, self.db, self.chat, self.interval = store, tracker, db, chat, interval
        self.platform = platform  # Mux/IVS streams: the platform's own count (its CDN's viewers)
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> None:
        rows = await asyncio.to_thread(self.db.query_streams, f"status IN {ON_AIR!r}", [], "id", 10_000, 0)
        now = time.time()
        platform = await self._platform_counts(rows)
        for row in rows:
            own = current_viewers(self.chat, self.tracker, row["id"], now)
            # Viewers on our page are in both counts: the larger is the better floor, never the sum.
            self.store.sample(row["id"], now, max(own, platform.get(row["id"]) or 0))
        self.store.hls_sessions(self.tracker.sweep(now))

    async def _platform_counts(self, rows: list[dict[str, Any]]) -> dict[str, int | None]:
        if self.platform is None:
            return {}
        cloud = [row for row in rows if self.platform.covers(row)]
        self.platform.forget_except({row["id"] for row in cloud})
        counts = await asyncio.gather(*(self.platform.poll(row) for row in cloud))
        return {row["id"]: count for row, count in zip(cloud, counts)}

    async def start(self) -> None:
        async def run() -> None:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    await self.tick()
                except Exception:  # one bad pass must not end sampling for the rest of the service
                    log.exception("analytics: sampling failed")
        self._task = asyncio.get_running_loop().create_task(run(), name="analytics-sampler")

    async def stop(self) -> None:
        """Stop sampling; the HLS sessions still open end at their last request and are saved."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.store.hls_sessions(self.tracker.sweep(everything=True))
        await self.store.stop()
