"""Local-disk store: atomic writes (temporary name, fsync-free rename) under one root folder.

A reader never sees half a file; a full disk raises StorageFullError and leaves nothing behind.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from storage.store import InvalidKeyError, StorageError, StorageFullError


def check_key(key: str) -> list[str]:
    """Split a key into safe path parts or raise InvalidKeyError."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKeyError(f"invalid storage key {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKeyError(f"invalid storage key {key!r}")
    return parts


class LocalStore:
    """Files under `root`; keys map to relative paths."""

    def __init__(self, root: str | os.PathLike[str], reserve_bytes: int = 0) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        # Free space kept back for the database and for finishing recordings.
        self.reserve_bytes = reserve_bytes

    def path_for(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    def write(self, key: str, data: bytes, *, use_reserve: bool = False) -> None:
        """use_reserve: this write finishes a recording and may dip into the reserved space."""
        path = self.path_for(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        if not use_reserve and self.reserve_bytes and shutil.disk_usage(self.root).free - len(data) < self.reserve_bytes:
            raise StorageFullError(errno.ENOSPC, f"disk full writing {key}: less than the reserved space is free")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(exc.errno, f"disk full writing {key}") from exc
            raise StorageError(exc.errno, f"cannot write {key}: {exc.strerror}") from exc

    def read(self, key: str) -> bytes:
        return self.path_for(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)

    def ensure_local(self, key: str) -> Path:
        """A file path holding the key's bytes, for code that needs a file (PyAV, ffmpeg): here, where it is."""
        return self.path_for(key)

    def delete_prefix(self, prefix: str, *, keep: tuple[str, ...] = ()) -> int:
        """Delete every file under prefix (a folder key) except the keys in keep, then the emptied folders.
        Returns the bytes freed. A missing folder frees 0."""
        base = self.path_for(prefix)
        if not base.is_dir():
            return 0
        kept = {self.path_for(key) for key in keep}
        freed = 0
        for path in sorted(base.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path in kept:
                continue
            try:
                if path.is_dir() and not path.is_symlink():
                    if not any(path.iterdir()):
                        path.rmdir()
                else:
                    freed += path.lstat().st_size
                    path.unlink()
            except FileNotFoundError:
                pass
        if not kept and base.is_dir() and not any(base.iterdir()):
            base.rmdir()
        return freed

    def usage(self, prefix: str) -> int:
        """Bytes of the files under prefix (a directory walk: call it off the event loop)."""
        base = self.path_for(prefix)
        if not base.is_dir():
            return 0
        total = 0
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    pass
        return total

    def list(self, prefix: str) -> list[str]:
        base = self.path_for(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def local_path(self, key: str) -> Path | None:
        return self.path_for(key)
