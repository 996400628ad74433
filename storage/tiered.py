"""The local disk for live work, an S3 store for finished recordings (storage.backend = "s3").

Everything is written to the local disk first (the worker, packager, clips and thumbnails need files);
offload() then moves a finished recording's folder to S3. Reads, listings, usage and deletes see both.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from storage.local import LocalStore
from storage.s3 import S3Store
from storage.store import StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OffloadReport:
    files: int
    bytes: int
    local_removed: bool


class TieredStore(LocalStore):
    """A LocalStore (so path_for/local_path keep working for live media) with a remote tier behind it."""

    def __init__(self, root: str | os.PathLike[str], remote: S3Store, reserve_bytes: int = 0,
                 keep_local: bool = False) -> None:
        super().__init__(root, reserve_bytes)
        self.remote = remote
        self.keep_local = keep_local

    def read(self, key: str) -> bytes:
        try:
            return super().read(key)
        except FileNotFoundError:
            return self.remote.read(key)

    def ensure_local(self, key: str) -> Path:
        """The key's file on the local disk, brought back from S3 first if the recording moved there (making a
        clip of an old service needs its segments as files)."""
        path = self.path_for(key)
        if not path.exists():
            self.write(key, self.remote.read(key), use_reserve=False)
        return path

    def exists(self, key: str) -> bool:
        return super().exists(key) or self.remote.exists(key)

    def delete(self, key: str) -> None:
        super().delete(key)
        self.remote.delete(key)

    def list(self, prefix: str) -> list[str]:
        return sorted(set(super().list(prefix)) | set(self.remote.list(prefix)))

    def delete_prefix(self, prefix: str, *, keep: tuple[str, ...] = ()) -> int:
        return super().delete_prefix(prefix, keep=keep) + self.remote.delete_prefix(prefix, keep=keep)

    def usage(self, prefix: str) -> int:
        """Local bytes plus S3 bytes (a kept local copy counts twice: it takes space in both places)."""
        return super().usage(prefix) + self.remote.usage(prefix)

    def remote_size(self, key: str) -> int | None:
        return self.remote.size(key)

    def offload(self, prefix: str) -> OffloadReport:
        """Upload every file of a finished recording's folder, check each object's size (and the ETag of
        single-part uploads against the local MD5), then remove the local folder unless keep_local.
        Blocking. On any failure the local copy stays and StorageError says why."""
        keys = super().list(prefix)
        if not keys:  # nothing here (already moved, or another host's recording on a shared bus)
            return OffloadReport(0, 0, False)
        total = 0
        for key in keys:
            path = self.path_for(key)
            self.remote.upload_file(key, path)
            total += path.stat().st_size
        listed = {key: (size, etag) for key, size, etag in self.remote.objects(prefix)}
        for key in keys:
            local_size = self.path_for(key).stat().st_size
            remote = listed.get(key)
            if remote is None or remote[0] != local_size:
                raise StorageError(errno.EIO, f"offload of {key} not verified: local {local_size} bytes, "
                                      f"S3 {remote[0] if remote else 'missing'}")
            if "-" not in remote[1] and remote[1] != _md5(self.path_for(key)):
                raise StorageError(errno.EIO, f"offload of {key} not verified: ETag {remote[1]} differs from the local MD5")
        removed = False
        if not self.keep_local:
            super().delete_prefix(prefix)
            removed = True
        log.info("%s: %d files (%d bytes) stored in S3%s", prefix, len(keys), total,
                 "; local copy removed" if removed else "; local copy kept")
        return OffloadReport(len(keys), total, removed)


def _md5(path: os.PathLike[str]) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
