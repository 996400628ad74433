"""The event bus across processes: publish() sends the event to one Redis channel, and every process
delivers every event it hears there (its own too) to its local subscribers, so all see the same order."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from mediaserver.cluster.publisher import Publisher
from mediaserver.events import Event, LocalEventBus

log = logging.getLogger(__name__)

CHANNEL = "ms:events"


def encode_event(event: Event) -> bytes:
    return json.dumps({"name": event.name, "stream_id": event.stream_id, "data": event.data},
                      separators=(",", ":"), default=str).encode()


def decode_event(data: bytes) -> Event | None:
    try:
        value: Any = json.loads(data)
        if isinstance(value, dict) and isinstance(value.get("name"), str) and isinstance(value.get("stream_id"), str):
            return Event(value["name"], value["stream_id"], value.get("data") or {})
    except ValueError:
        pass
    log.warning("ignoring a malformed event on %s: %r", CHANNEL, data[:80])
    return None


class RedisEventBus(LocalEventBus):
    """A LocalEventBus whose publish goes round Redis first (delivery to subscribers is the local bus's)."""

    def __init__(self, redis: Redis, channel: str = CHANNEL) -> None:
        super().__init__()
        self.redis, self.channel = redis, channel
        self._publisher = Publisher(redis)
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.channel)
        self._publisher.start()
        self._reader = asyncio.get_running_loop().create_task(self._read(pubsub))

    async def stop(self) -> None:
        await self._publisher.stop()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    def publish(self, event: Event) -> None:
        self._publisher.publish(self.channel, encode_event(event))

    async def _read(self, pubsub: Any) -> None:
        try:
            while True:
                try:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                except (RedisError, OSError) as exc:
                    log.warning("event bus lost Redis (%s); retrying", exc)
                    await asyncio.sleep(1.0)
                    continue
                if message is None or message.get("type") != "message":
                    continue
                event = decode_event(message["data"])
                if event is not None:
                    super().publish(event)
        finally:
            await pubsub.aclose()
