"""The room's wire protocol, sans-IO: every limit of a room, frames in (size in UTF-8 bytes, JSON shape)
and frames out (serialized once per event), and what a message looks like to clients.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MESSAGE_TYPES = ("MESSAGE", "PRAYER_REQUEST", "QUESTION", "ANNOUNCEMENT")
REACTIONS = ("LIKE", "LOVE", "PRAY", "AMEN", "CLAP", "RAISED_HANDS")
STAFF = ("moderator", "admin")
# Kept with each message for moderation, never sent to clients.
PRIVATE_FIELDS = ("author_viewer", "author_address")
CLOSE_TOO_LARGE = 1009
CLOSE_AUTH_REQUIRED = 4401   # no (valid) credentials for a private room
CLOSE_FORBIDDEN = 4403       # credentials that don't reach this stream (any more)


@dataclass(frozen=True)
class ChatLimits:
    """Every limit of a room; (count, seconds) pairs are sliding windows."""

    max_frame_bytes: int = 4096               # larger frames: chat:error too_large, connection kept
    close_frame_bytes: int = 64 * 1024        # larger: chat:error too_large, then close 1009
    hard_frame_bytes: int = 1024 * 1024       # larger: the WebSocket layer closes 1009 by itself
    messages_per_identity: tuple[int, float] = (5, 10.0)
    # Sized for a room full of people on one church network: the per-identity limit does the real work.
    messages_per_address: tuple[int, float] = (200, 10.0)
    reactions_per_identity: tuple[int, float] = (10, 5.0)
    typing_per_viewer: tuple[int, float] = (5, 10.0)
    typing_interval: float = 1.0              # at most one chat:typing per room per interval
    auth_timeout: float = 10.0                # a private room waits this long for the auth frame
    auth_frames: tuple[int, float] = (5, 60.0)  # auth frames per connection
    history: int = 50
    send_queue: int = 256
    held_queue: int = 500                     # the review queue keeps at most this many messages


MAX_FRAME = ChatLimits.max_frame_bytes
HISTORY = ChatLimits.history


def device_and_browser(user_agent: str) -> tuple[str, str]:
    """A coarse reading of the User-Agent, enough for "how many watched on phones"."""
    ua = user_agent.lower()
    device = "tablet" if ("ipad" in ua or "tablet" in ua) else "mobile" if ("mobi" in ua or "iphone" in ua or "android" in ua) \
        else "tv" if ("smart-tv" in ua or "tizen" in ua or "roku" in ua) else "desktop" if ua else "unknown"
    for name, token in (("Edge", "edg/"), ("Opera", "opr/"), ("Chrome", "chrome/"), ("Firefox", "firefox/"),
                        ("Safari", "safari/")):
        if token in ua:
            return device, name
    return device, "other" if ua else "unknown"


def frame(event: str, data: dict[str, Any]) -> bytes:
    """The UTF-8 payload of one text frame, ready for every socket."""
    return json.dumps({"event": event, "data": data}, separators=(",", ":"), ensure_ascii=False).encode()


def public(message: dict[str, Any]) -> dict[str, Any]:
    """A message as clients see it: without who wrote it beyond the name and role."""
    return {k: v for k, v in message.items() if k not in PRIVATE_FIELDS}


class FrameError(ValueError):
    """A frame the room refuses: `code` for chat:error; `close` set when the connection must end."""

    def __init__(self, code: str, message: str, close: int | None = None) -> None:
        super().__init__(message)
        self.code, self.close = code, close


def parse_frame(raw: str, limits: ChatLimits) -> tuple[str, dict[str, Any]]:
    """(event, data) from one text frame; sizes are UTF-8 bytes, not characters."""
    size = len(raw) if raw.isascii() else len(raw.encode("utf-8", "surrogatepass"))
    if size > limits.close_frame_bytes:
        raise FrameError("too_large", f"frames are limited to {limits.max_frame_bytes} bytes; closing",
                         CLOSE_TOO_LARGE)
    if size > limits.max_frame_bytes:
        raise FrameError("too_large", f"frames are limited to {limits.max_frame_bytes} bytes")
    try:
        message = json.loads(raw)
        event, data = message["event"], message.get("data") or {}
        if not isinstance(event, str) or not isinstance(data, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise FrameError("bad_frame", 'send JSON like {"event": "chat:message", "data": {...}}') from None
    return event, data
