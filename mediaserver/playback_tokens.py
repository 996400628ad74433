"""Signed playback tokens for private and members-only streams: HMAC-SHA256 over stream, expiry, viewer.

Format: base64url(JSON payload) "." base64url(signature); checked on playlists and segments alike.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path


class TokenError(ValueError):
    """A token that is malformed, forged, for another stream, or expired; the message says which."""


@dataclass(frozen=True, slots=True)
class PlaybackGrant:
    stream_id: str
    expires_at: float
    viewer_id: str | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# Exactly what issue() writes: two unpadded base64url parts. Anything else (padding, whitespace, a
# playlist line smuggled after the signature) is refused, since a token is copied into playlists.
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,2048}\.[A-Za-z0-9_-]{43}")


def _unb64(text: str) -> bytes:
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # non-canonical trailing bits: another spelling of the same bytes
        raise ValueError("non-canonical base64")
    return data


class PlaybackSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the playback secret must be at least 16 bytes")
        self._secret = secret

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> "PlaybackSigner":
        """The server's signing secret, made once and kept in data/playback_secret (mode 600)."""
        path = data_dir / "playback_secret"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return cls(bytes.fromhex(path.read_text().strip()))

    def issue(self, stream_id: str, ttl: float, viewer_id: str | None = None) -> tuple[str, float]:
        expires = int(time.time() + ttl)
        payload = json.dumps({"s": stream_id, "e": expires, "v": viewer_id}, separators=(",", ":")).encode()
        signature = hmac.new(self._secret, payload, hashlib.sha256).digest()
        return f"{_b64(payload)}.{_b64(signature)}", float(expires)

    def check(self, token: str, stream_id: str, now: float | None = None) -> PlaybackGrant:
        if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
            raise TokenError("malformed playback token")
        try:
            payload_text, signature_text = token.split(".", 1)
            payload, signature = _unb64(payload_text), _unb64(signature_text)
        except (ValueError, TypeError):
            raise TokenError("malformed playback token") from None
        expected = hmac.new(self._secret, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            raise TokenError("invalid playback token")
        try:
            data = json.loads(payload)
            grant = PlaybackGrant(str(data["s"]), float(data["e"]), data.get("v"))
        except (ValueError, KeyError, TypeError):
            raise TokenError("malformed playback token") from None
        if grant.stream_id != stream_id:
            raise TokenError("playback token is for another stream")
        if grant.expires_at < (time.time() if now is None else now):
            raise TokenError("playback token has expired")
        return grant
