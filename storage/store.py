"""The store interface every storage back-end fills.

Keys are '/'-separated relative paths such as 'media/<stream>/<broadcast>/720p/seg-3.m4s'.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol


class StorageError(OSError):
    """A write or read the store could not carry out, with the key it was for."""


class StorageFullError(StorageError):
    """The disk (or quota) is full: the write did not happen, nothing half-written is left."""


class InvalidKeyError(ValueError):
    """A key that would escape the store (absolute, '..', empty parts)."""


class Store(Protocol):
    def write(self, key: str, data: bytes, *, use_reserve: bool = False) -> None: ...
    def read(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool:
        """A file is stored under this key (wherever the store keeps it)."""
        ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str, *, keep: tuple[str, ...] = ()) -> int:
        """Delete everything under a folder key except `keep`; the bytes freed."""
        ...
    def usage(self, prefix: str) -> int:
        """Bytes stored under a folder key."""
        ...
    def local_path(self, key: str) -> Path | None:
        """A file path a web server may send directly, or None for remote stores."""
        ...
