"""Publishes to Redis channels in the order asked, from synchronous code (the Room is not async): one task
drains a queue into pipelines, so a burst costs one round trip and order holds per channel."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

Receivers = Callable[[int], None]  # told how many subscribers got the message (0: nobody listens)


class Publisher:
    def __init__(self, redis: Redis, batch: int = 500) -> None:
        self.redis = redis
        self.batch = batch
        self._queue: asyncio.Queue[tuple[str, bytes, Receivers | None]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def publish(self, channel: str, data: bytes, on_sent: Receivers | None = None) -> None:
        self._queue.put_nowait((channel, data, on_sent))

    async def drain(self) -> None:
        """Wait until everything queued so far went out (for a clean stop)."""
        await self._queue.join()

    async def stop(self) -> None:
        if self._task is not None:
            try:
                await asyncio.wait_for(self.drain(), 2.0)
            except asyncio.TimeoutError:
                pass
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            items = [await self._queue.get()]
            while len(items) < self.batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                pipe = self.redis.pipeline(transaction=False)
                for channel, data, _ in items:
                    pipe.publish(channel, data)
                counts = await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("redis publish of %d messages failed: %s", len(items), exc)
                counts = [0] * len(items)
            for (_, _, on_sent), count in zip(items, counts):
                if on_sent is not None:
                    try:
                        on_sent(int(count))
                    except Exception:
                        log.exception("publish callback failed")
            for _ in items:
                self._queue.task_done()
