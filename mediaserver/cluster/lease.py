"""A room's owner: one process holds a Redis key (SET NX PX) and renews it; the key expires if it dies."""
from __future__ import annotations

from redis.asyncio import Redis

# Renew or release only while the key is still ours (another process may have taken it after a pause).
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class Lease:
    """The lease on one key for this process (`owner`), `seconds` long unless renewed."""

    def __init__(self, redis: Redis, key: str, owner: str, seconds: float) -> None:
        self.redis, self.key, self.owner = redis, key, owner
        self.ms = int(seconds * 1000)

    async def holder(self) -> str | None:
        value = await self.redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    async def acquire(self) -> bool:
        return bool(await self.redis.set(self.key, self.owner, nx=True, px=self.ms))

    async def renew(self) -> bool:
        return bool(await self.redis.eval(_RENEW, 1, self.key, self.owner, str(self.ms)))  # type: ignore[misc]

    async def release(self) -> None:
        await self.redis.eval(_RELEASE, 1, self.key, self.owner)  # type: ignore[misc]
