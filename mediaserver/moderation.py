"""Chat moderation rules, sans-IO: blocked words on word boundaries (case- and accent-insensitive),
a link filter, length limits, slow mode and rate limits. Decisions in, no sockets or database here.
"""
from __future__ import annotations

import re
import time
import unicodedata
from collections import deque
from dataclasses import dataclass, field

LINK_RE = re.compile(r"(https?://|www\.)\S+|\b[a-z0-9-]+\.(com|org|net|io|ly|co|me|tv|gg|app|info|xyz)\b", re.IGNORECASE)


def fold(text: str) -> str:
    """Lowercase without accents: 'Pécheur' and 'PECHEUR' compare equal."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@dataclass
class BlockedWords:
    words: list[str]
    _pattern: re.Pattern[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        folded = sorted({fold(w).strip() for w in self.words if w.strip()}, key=len, reverse=True)
        if folded:
            # \b-style boundaries that also work next to non-ASCII letters: no word character either side.
            alternatives = "|".join(re.escape(w) for w in folded)
            self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")

    def find(self, text: str) -> str | None:
        if self._pattern is None:
            return None
        match = self._pattern.search(fold(text))
        return match.group(0) if match else None


@dataclass
class RateLimit:
    """At most `count` events per `per` seconds (sliding window)."""

    count: int
    per: float
    _times: deque[float] = field(default_factory=deque)

    def allow(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        while self._times and self._times[0] <= now - self.per:
            self._times.popleft()
        if len(self._times) >= self.count:
            return False
        self._times.append(now)
        return True


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str          # "allow", "hold" (review queue), "reject"
    reason: str = ""


@dataclass
class ModerationPolicy:
    blocked: BlockedWords = field(default_factory=lambda: BlockedWords([]))
    link_filter: bool = True
    max_length: int = 500
    slow_mode_seconds: float = 0.0
    hold_for_review: bool = False
    hold_links: bool = True  # links from guests go to the review queue instead of being rejected

    def judge(self, text: str, *, privileged: bool, last_sent: float | None, now: float,
              trusted: bool = False) -> Verdict:
        """privileged: staff, never filtered; trusted: members, who skip the hold-everything queue."""
        stripped = text.strip()
        if not stripped:
            return Verdict("reject", "empty message")
        if len(stripped) > self.max_length:
            return Verdict("reject", f"message longer than {self.max_length} characters")
        if privileged:
            return Verdict("allow")
        if self.slow_mode_seconds and last_sent is not None and now - last_sent < self.slow_mode_seconds:
            wait = self.slow_mode_seconds - (now - last_sent)
            return Verdict("reject", f"slow mode: wait {wait:.0f} s")
        word = self.blocked.find(stripped)
        if word is not None:
            return Verdict("hold", "blocked word")
        if self.link_filter and LINK_RE.search(stripped):
            return Verdict("hold" if self.hold_links else "reject", "links are held for review")
        if self.hold_for_review and not trusted:
            return Verdict("hold", "held for review")
        return Verdict("allow")
