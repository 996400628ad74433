"""The in-process event bus: stream state changes and later chat, reactions and viewer counts.

An interface small enough that a networked bus (Redis, NATS) can stand behind it later.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    name: str                 # e.g. "stream.live"
    stream_id: str
    data: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[Event], Awaitable[None]]


class EventBus(Protocol):
    def publish(self, event: Event) -> None: ...
    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]: ...


class LocalEventBus:
    """Delivers each event to every subscriber in its own task, so a slow one delays nobody."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.history: list[Event] = []  # the last events, for debugging and tests
        self.history_size = 200

    def publish(self, event: Event) -> None:
        self.history.append(event)
        del self.history[: -self.history_size]
        for subscriber in list(self._subscribers):
            task = asyncio.get_running_loop().create_task(self._deliver(subscriber, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, subscriber: Subscriber, event: Event) -> None:
        try:
            await subscriber(event)
        except Exception:
            log.exception("event subscriber failed on %s", event.name)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)
