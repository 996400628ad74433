"""Viewers counted from their playlist and segment requests, for players that never open the chat room
(VLC, a smart TV, ffmpeg) as well as the built-in one. Sans-IO: the web layer hands in each request.

A viewer is the built-in page's signed viewer id when the browser sent its cookie (written as the room
writes a guest's identity, `guest:<id>`, so the two can be matched), a member token's name (as the room
writes it), else a hash of address, User-Agent and playback token: a congregation shares one address.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from mediaserver.chat.protocol import device_and_browser

log = logging.getLogger(__name__)

# Keys of viewers known only by their requests start with this; every other key is an identity the
# built-in page (or the room) gave them.
ANONYMOUS_PREFIX = "hls:"


def viewer_key(*, viewer_id: str | None = None, member: str | None = None, address: str = "",
               user_agent: str = "", token: str | None = None) -> str:
    """The key one viewer's requests share: `member` (the room's member identity), else `guest:<viewer id>`,
    else a hash of what a plain player sends with every request."""
    if member:
        return member
    if viewer_id:
        return f"guest:{viewer_id}"
    digest = hashlib.blake2b(f"{address}\0{user_agent}\0{token or ''}".encode(), digest_size=12).hexdigest()
    return ANONYMOUS_PREFIX + digest


def built_in(key: str) -> bool:
    """Whether a viewer key came from the built-in page (cookie or member token), not a plain player."""
    return not key.startswith(ANONYMOUS_PREFIX)


@dataclass(slots=True)
class HlsSession:
    stream_id: str
    viewer: str
    joined_at: float
    last_seen: float
    user_agent: str
    bytes: int = 0
    requests: int = 0

    def row(self) -> dict[str, Any]:
        """The closed session as stored (watch time runs from the first request to the last)."""
        device, browser = device_and_browser(self.user_agent)
        return {"stream_id": self.stream_id, "viewer": self.viewer, "joined_at": self.joined_at,
                "left_at": self.last_seen, "watch_seconds": round(self.last_seen - self.joined_at, 3),
                "device": device, "browser": browser, "bytes": self.bytes, "source": "hls"}


class HlsViewerTracker:
    """Open sessions by (stream, viewer). A session closes after `idle_seconds` without a request;
    `sweep` hands back the closed ones as rows. At most `max_sessions` are open at once: past that, new
    viewers are not tracked (logged once per burst) rather than letting a flood of keys grow memory."""

    def __init__(self, idle_seconds: float = 30.0, max_sessions: int = 50_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self.clock = clock
        self._open: dict[tuple[str, str], HlsSession] = {}
        self.refused = 0  # new sessions not tracked because the cap was reached (since the last log line)
        self._replaced: list[HlsSession] = []  # idle sessions a returning viewer ended before a sweep took them

    def __len__(self) -> int:
        return len(self._open)

    def seen(self, stream_id: str, viewer: str, user_agent: str = "", nbytes: int = 0,
             now: float | None = None) -> None:
        """One served playlist, segment or part. Cheap: a dict lookup and two additions."""
        now = self.clock() if now is None else now
        session = self._open.get((stream_id, viewer))
        if session is not None and now - session.last_seen > self.idle_seconds:
            session = None  # idle past the limit but not swept yet: it ends; a new one starts below
        if session is None:
            if len(self._open) >= self.max_sessions:
                if self.refused == 0:
                    log.warning("HLS viewer tracking is full (%d open sessions): new viewers are not counted "
                                "until some leave", self.max_sessions)
                self.refused += 1
                return
            old = self._open.pop((stream_id, viewer), None)
            if old is not None:
                self._replaced.append(old)
            session = self._open[(stream_id, viewer)] = HlsSession(stream_id, viewer, now, now, user_agent[:400])
        session.last_seen = max(session.last_seen, now)
        session.bytes += nbytes
        session.requests += 1

    def active_viewers(self, stream_id: str, now: float | None = None) -> set[str]:
        """Keys of the stream's viewers seen within idle_seconds."""
        now = self.clock() if now is None else now
        return {s.viewer for s in self._open.values()
                if s.stream_id == stream_id and now - s.last_seen <= self.idle_seconds}

    def streams(self) -> set[str]:
        """Streams with an open session."""
        return {s.stream_id for s in self._open.values()}

    def active(self, stream_id: str, now: float | None = None) -> int:
        """How many viewers fetched the stream's playlists or segments within idle_seconds."""
        return len(self.active_viewers(stream_id, now))

    def open_rows(self, stream_id: str) -> list[dict[str, Any]]:
        """The stream's sessions not yet swept, as rows ending at their last request (for a report now)."""
        return [s.row() for s in (*self._replaced, *self._open.values()) if s.stream_id == stream_id]

    def sweep(self, now: float | None = None, *, everything: bool = False) -> list[dict[str, Any]]:
        """Close the sessions idle for longer than idle_seconds (all of them with everything=True, at
        shutdown) and return their rows."""
        now = self.clock() if now is None else now
        closed = [key for key, s in self._open.items() if everything or now - s.last_seen > self.idle_seconds]
        rows = [s.row() for s in self._replaced]
        self._replaced.clear()
        rows += [self._open.pop(key).row() for key in closed]
        if self.refused and len(self._open) < self.max_sessions:
            log.warning("HLS viewer tracking: %d new viewers were not counted while it was full", self.refused)
            self.refused = 0
        return rows
