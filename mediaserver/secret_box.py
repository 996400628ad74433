"""Secrets encrypted at rest (simulcast stream keys): Fernet with a server key kept in the data directory.

The key file (data_dir/secret_box.key, mode 600) is made on first use; losing it makes the stored secrets
unreadable (they must be entered again), which is the point: a copied database alone reveals nothing."""
from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "secret_box.key"


class SecretUnreadable(ValueError):
    """A stored secret doesn't decrypt with this server's key (the key file was replaced or lost)."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> "SecretBox":
        path = Path(data_dir) / KEY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two processes starting at once can't each write a different key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(path.read_bytes().strip())
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except InvalidToken as exc:
            raise SecretUnreadable("the secret does not decrypt with this server's key") from exc
