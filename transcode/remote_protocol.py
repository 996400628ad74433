"""The handshake of the remote transcode protocol (docs/transcode-protocol.md), sans IO: message lines and the
HMAC proofs both sides compute. The sockets live in remote_server.py (worker box) and remote_client.py (origin).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

PROTOCOL = "mediaserver-transcode/1"
NONCE_BYTES = 32
MAX_LINE = 1 << 20  # a job line is a few kB; anything longer is not ours


class ProtocolError(ValueError):
    """A handshake line that is not what the protocol says at this step."""


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def proof(secret: bytes, role: str, nonce: str) -> str:
    """HMAC-SHA256 over the role ("client" or "server") and the other side's nonce: a proof can't be
    replayed in the other direction or on another connection."""
    return hmac.new(secret, f"{role}:{nonce}".encode(), hashlib.sha256).hexdigest()


def check_proof(secret: bytes, role: str, nonce: str, answer: object) -> bool:
    return isinstance(answer, str) and hmac.compare_digest(proof(secret, role, nonce), answer)


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def parse_line(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"not a JSON line: {data[:80]!r}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"not a JSON object: {data[:80]!r}")
    return message


def read_secret(path: str | Path) -> bytes:
    """The shared secret: the file's content without surrounding whitespace; at least 16 bytes."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the shared secret file {path}: {exc.strerror or exc}") from exc
    if len(secret) < 16:
        raise ValueError(f"{path}: the shared secret must be at least 16 bytes (e.g. `openssl rand -hex 32`)")
    return secret
