"""Stream passwords: scrypt hashing on a small pool of its own, with a per-address attempt limit.

scrypt costs ~50 ms of CPU and 16 MiB per check on purpose; run on the default thread pool (which also
serves every database call and playlist check), a burst of guesses would stall live playback.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor

SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **SCRYPT)
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


class TooManyAttempts(Exception):
    """This address used up its attempts, or the pool is saturated; the message says which."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PasswordChecker:
    """Checks passwords on `workers` threads of its own; at most `per_minute` attempts per address and
    `max_queued` waiting in all (beyond that callers are refused at once rather than queued)."""

    def __init__(self, workers: int = 2, per_minute: int = 10, max_queued: int = 32,
                 max_addresses: int = 10_000) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="password")
        self.per_minute, self.max_queued, self.max_addresses = per_minute, max_queued, max_addresses
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()
        self._queued = 0

    def _admit(self, address: str, now: float) -> None:
        attempts = self._attempts.pop(address, None) or deque()
        while attempts and attempts[0] <= now - 60.0:
            attempts.popleft()
        self._attempts[address] = attempts  # most recently used last
        while len(self._attempts) > self.max_addresses:
            self._attempts.popitem(last=False)
        if len(attempts) >= self.per_minute:
            raise TooManyAttempts("too many password attempts from this address; wait a minute",
                                  60.0 - (now - attempts[0]))
        if self._queued >= self.max_queued:
            raise TooManyAttempts("too many password checks at once; try again in a moment", 2.0)
        attempts.append(now)

    async def check(self, address: str, password: str, stored: str) -> bool:
        self._admit(address, time.monotonic())
        self._queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, check_password, password, stored)
        finally:
            self._queued -= 1

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, hash_password, password)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
