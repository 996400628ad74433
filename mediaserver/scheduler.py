"""The scheduler: keeps recurring series materialized as streams, announces services starting soon,
and cancels services that never started. One pass every `schedule.interval` seconds, off the event loop.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable

from mediaserver.config import ScheduleConfig
from mediaserver.db import Database
from mediaserver.events import Event, LocalEventBus
from mediaserver.schedule import SeriesRule, occurrences

log = logging.getLogger(__name__)


def rule_of(series: dict[str, Any]) -> SeriesRule:
    return SeriesRule(
        rrule=series["rrule"], start_time=series["start_time"], duration_minutes=int(series["duration"]),
        timezone=series["timezone"], dtstart_date=date.fromisoformat(series["dtstart_date"]),
    )


def materialize(db: Database, series: dict[str, Any], now: float, weeks: int) -> list[str]:
    """Create the streams of the series' occurrences from now to `weeks` ahead that don't exist yet.
    An occurrence edited or cancelled by hand keeps its row, so it is never recreated."""
    start = datetime.fromtimestamp(now, tz=timezone.utc)
    end = start + timedelta(weeks=weeks)
    if series["until_date"]:
        end = min(end, datetime.combine(date.fromisoformat(series["until_date"]), datetime.min.time(), tzinfo=timezone.utc))
    existing = db.series_occurrence_indexes(series["id"])
    template = json.loads(series["template"] or "{}")
    if series.get("backend") and series["backend"] != "builtin":  # a cloud series: its one platform live stream
        template.update(backend=series["backend"], backend_ref=series.get("backend_ref"))
    created = []
    for occ in occurrences(rule_of(series), start, end):
        if occ.index in existing:
            continue
        row, _ = db.create_stream(
            series["title"], series["org_id"], key_hash=series["key_hash"],
            scheduled_start=occ.start.timestamp(), scheduled_end=occ.end.timestamp(),
            timezone=series["timezone"], series_id=series["id"], occurrence_index=occ.index, **template,
        )
        created.append(row["id"])
    return created


class Scheduler:
    def __init__(self, config: ScheduleConfig, db: Database, bus: LocalEventBus,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.db = db
        self.bus = bus
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler pass failed; trying again next time")
            await asyncio.sleep(self.config.interval)

    async def tick(self) -> None:
        now = self.clock()
        for series in await asyncio.to_thread(self.db.all_series):
            created = await asyncio.to_thread(materialize, self.db, series, now, self.config.materialize_weeks)
            for stream_id in created:
                self.bus.publish(Event("stream.created", stream_id, {"series_id": series["id"]}))
        soon = now + self.config.starting_soon_minutes * 60
        rows = await asyncio.to_thread(
            self.db.query_streams,
            "status = 'SCHEDULED' and starting_soon_sent = 0 and scheduled_start is not null "
            "and scheduled_start > ? and scheduled_start <= ?", [now, soon], "scheduled_start", 500, 0,
        )
        for row in rows:
            await asyncio.to_thread(self.db.update_stream, row["id"], starting_soon_sent=1)
            self.bus.publish(Event("stream.starting_soon", row["id"], {"scheduled_start": row["scheduled_start"]}))
        late = now - self.config.auto_cancel_minutes * 60
        rows = await asyncio.to_thread(
            self.db.query_streams, "status = 'SCHEDULED' and scheduled_start is not null and scheduled_start < ?",
            [late], "scheduled_start", 500, 0,
        )
        for row in rows:
            if await asyncio.to_thread(self.db.transition, row["id"], ("SCHEDULED",), "CANCELLED"):
                log.info("stream %s: never started; cancelled", row["id"])
                self.bus.publish(Event("stream.cancelled", row["id"], {"reason": "never started"}))
