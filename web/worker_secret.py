"""The secret a web worker on another host shares with its origin: sent in one header on every request the
worker forwards (and on its admission calls), compared in constant time; without it a request is a client's."""
from __future__ import annotations

import hmac
from pathlib import Path

from aiohttp import web

from mediaserver.config import ConfigError

HEADER = "X-Mediaserver-Worker-Secret"
# At least this long: the secret is the only thing between a client and the origin's trust in X-Forwarded-For.
MIN_LENGTH = 16

WORKER_SECRET = web.AppKey("worker_secret", str)


class SecretError(ConfigError):
    """A worker secret file that can't be used (missing, unreadable or too short)."""


def read_secret(path: str | Path) -> str:
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        raise SecretError(f"worker secret file {path}: {exc.strerror or exc}") from exc
    if len(secret) < MIN_LENGTH:
        raise SecretError(f"worker secret in {path} is shorter than {MIN_LENGTH} characters")
    return secret


def presented_secret_ok(request: web.Request) -> bool:
    """The request carries this origin's worker secret (False when the origin has none configured)."""
    secret = request.app.get(WORKER_SECRET)
    presented = request.headers.get(HEADER)
    if not secret or presented is None:
        return False
    return hmac.compare_digest(presented.encode(), secret.encode())
