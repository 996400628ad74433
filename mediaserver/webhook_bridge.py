"""Feeds stream events from the event bus into the webhook queue, one at a time so order is kept."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from mediaserver.db import Database
from mediaserver.events import Event, LocalEventBus
from mediaserver.webhooks import EVENT_TYPES, WebhookSender, WebhookStore

log = logging.getLogger(__name__)


def _iso(ts: float | None) -> str | None:
    from web.api import iso  # one timestamp format for the API and the webhooks

    return iso(ts)


class WebhookBridge:
    def __init__(self, db: Database, store: WebhookStore, sender: WebhookSender, bus: LocalEventBus) -> None:
        self.db, self.store, self.sender = db, store, sender
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe = bus.subscribe(self._on_event)

    async def _on_event(self, event: Event) -> None:
        if event.name in EVENT_TYPES:
            self._queue.put_nowait(event)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook-bridge")

    async def stop(self) -> None:
        self._unsubscribe()
        # Events already on the bus still go into the durable queue before we stop.
        while not self._queue.empty():
            await self._enqueue(self._queue.get_nowait())
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._enqueue(event)
            except Exception:
                log.exception("webhook event %s for %s not queued", event.name, event.stream_id)

    async def _enqueue(self, event: Event) -> None:
        row = await asyncio.to_thread(self.db.stream, event.stream_id)
        if row is None:
            return
        data: dict[str, Any] = {
            "stream_id": row["id"], "title": row["title"], "status": row["status"], "slug": row["slug"],
            "scheduled_start": _iso(row["scheduled_start"]), "actual_start": _iso(row["actual_start"]),
            "actual_end": _iso(row["actual_end"]), "series_id": row["series_id"], **event.data,
        }
        ids = await asyncio.to_thread(self.store.enqueue, row["org_id"], event.name, data)
        if ids:
            self.sender.wake()
