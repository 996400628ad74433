"""Joining this process to a cluster (config [cluster] redis_url): the Redis client, the event bus over it,
and chat rooms shared through it."""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from mediaserver.chat.hub import ChatHub
from mediaserver.cluster.chat_relay import ClusterChat
from mediaserver.cluster.redis_bus import RedisEventBus
from mediaserver.config import ClusterConfig


@dataclass
class Cluster:
    redis: Redis
    bus: RedisEventBus
    process_id: str
    config: ClusterConfig
    chat: ClusterChat | None = None

    @classmethod
    async def connect(cls, config: ClusterConfig) -> "Cluster":
        """Connect and start the bus (a Redis that can't be reached stops the start here, with its error)."""
        redis = Redis.from_url(config.redis_url, decode_responses=False)
        await redis.ping()
        bus = RedisEventBus(redis)
        await bus.start()
        return cls(redis, bus, config.process_id or secrets.token_hex(4), config)

    async def share_chat(self, hub: ChatHub, *, preferred_owner: bool = False, defer_seconds: float = 0.0) -> None:
        """preferred_owner / defer_seconds: see ClusterChat (the origin and web workers of `serve --workers`)."""
        self.chat = ClusterChat(self.redis, self.process_id, hub.open_owned, hub.close_owned, limits=hub.limits,
                                room_owner=self.config.room_owner, lease_seconds=self.config.lease_seconds,
                                renew_seconds=self.config.renew_seconds, idle_close=hub.idle_close,
                                preferred_owner=preferred_owner, defer_seconds=defer_seconds)
        await self.chat.start()
        hub.cluster = self.chat

    async def stop(self) -> None:
        """After the chat hub stopped (it stops the relay and gives up the rooms it owned)."""
        await self.bus.stop()
        await self.redis.aclose()
