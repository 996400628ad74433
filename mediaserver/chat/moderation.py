"""Chat moderation rules, sans-IO: blocked words on word boundaries (ignoring case, accents, look-alike
letters, invisible characters and letter-by-letter spelling), a link filter that knows every public
suffix, length limits, slow mode and rate limits. Decisions in, no sockets or database here.
"""
from __future__ import annotations

import re
import time
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from publicsuffixlist import PublicSuffixList

from mediaserver.chat.text import BIDI_CONTROLS, fold, strip_marks, skeleton, visible

__all__ = ["BlockedWords", "ModerationPolicy", "RateLimit", "Verdict", "find_link", "fold", "match_text"]


def match_text(text: str) -> str:
    """Text as blocked words are matched: visible letters only (fold), and every character that is
    neither a letter, a mark nor a digit read as a space ("b-a-d", "b.a.d" -> "b a d")."""
    spaced = "".join(ch if unicodedata.category(ch)[0] in "LMN" else " " for ch in visible(text).casefold())
    return strip_marks(skeleton(spaced)).casefold()


# Three or more single letters in a row: "b a d w o r d" (after match_text), read squashed as well.
_SPELLED = re.compile(r"(?<!\S)(?:\w\s+){2,}\w(?!\S)")


@dataclass
class BlockedWords:
    words: list[str]
    _pattern: re.Pattern[str] | None = field(init=False, default=None)
    _squashed: re.Pattern[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        keys = sorted({" ".join(match_text(w).split()) for w in self.words if w.strip()} - {""}, key=len, reverse=True)
        if keys:
            # Boundaries that also work next to non-ASCII letters: no word character either side.
            alternatives = "|".join(r"\s+".join(re.escape(part) for part in k.split()) for k in keys)
            self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
            self._squashed = re.compile("|".join(re.escape(k.replace(" ", "")) for k in keys))

    def find(self, text: str) -> str | None:
        if self._pattern is None or self._squashed is None:
            return None
        key = match_text(text)
        match = self._pattern.search(key)
        if match:
            return match.group(0)
        for spelled in _SPELLED.finditer(key):
            inner = self._squashed.search("".join(spelled.group(0).split()))
            if inner:
                return inner.group(0)
        return None


@lru_cache(maxsize=1)
def _suffixes() -> PublicSuffixList:
    # The list ships inside the package (no download); unknown endings are not suffixes ("end.Then").
    return PublicSuffixList(accept_unknown=False)


_SCHEME = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
# label(.label)+ where a label is letters, digits and inner hyphens; the last label is the candidate suffix.
_HOST = re.compile(r"(?<![\w.-])(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})(?![\w-])",
                   re.IGNORECASE)


def find_link(text: str) -> str | None:
    """A URL, a bare host name that ends in a real public suffix ("scam.ru/win", "grace.church",
    "x.github.io", the host of an e-mail address), or an IPv4 address; None for "end.Then" or "3.14"."""
    plain = visible(text)
    for pattern in (_SCHEME, _IPV4):
        match = pattern.search(plain)
        if match:
            return match.group(0)
    for match in _HOST.finditer(plain):
        host = match.group(0).casefold()
        if _suffixes().privatesuffix(host) is not None:
            return match.group(0)
    return None


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

    def idle(self, now: float | None = None) -> bool:
        """Nothing inside the window: the limiter can be forgotten."""
        now = time.monotonic() if now is None else now
        return not self._times or self._times[-1] <= now - self.per


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str          # "allow", "hold" (review queue), "reject"
    reason: str = ""


def refuse_text(text: str) -> str | None:
    """Why a message can't be shown at all: nothing visible, or bidi controls that reorder it."""
    if not visible(text).strip():
        return "empty message" if not text.strip() else "message has no visible characters"
    if any(ch in BIDI_CONTROLS for ch in text):
        return "bidi override characters are not allowed"
    return None


@dataclass
class ModerationPolicy:
    blocked: BlockedWords = field(default_factory=lambda: BlockedWords([]))
    link_filter: bool = True
    max_length: int = 500
    slow_mode_seconds: float = 0.0
    hold_for_review: bool = False
    hold_links: bool = True  # links from guests go to the review queue instead of being rejected

    @classmethod
    def from_settings(cls, org_settings: dict[str, Any]) -> "ModerationPolicy":
        """The policy an organization's `settings.chat` asks for (PATCH /api/orgs/{org})."""
        chat = org_settings.get("chat") or {}
        return cls(blocked=BlockedWords([str(w) for w in chat.get("blocked_words") or []]),
                   link_filter=bool(chat.get("link_filter", True)),
                   slow_mode_seconds=float(chat.get("slow_mode_seconds") or 0),
                   hold_for_review=bool(chat.get("hold_for_review", False)))

    def judge(self, text: str, *, privileged: bool, last_sent: float | None, now: float,
              trusted: bool = False) -> Verdict:
        """privileged: staff, never filtered; trusted: members, who skip the hold-everything queue."""
        stripped = text.strip()
        refused = refuse_text(stripped)
        if refused:
            return Verdict("reject", refused)
        if len(stripped) > self.max_length:
            return Verdict("reject", f"message longer than {self.max_length} characters")
        if privileged:
            return Verdict("allow")
        if self.slow_mode_seconds and last_sent is not None and now - last_sent < self.slow_mode_seconds:
            wait = self.slow_mode_seconds - (now - last_sent)
            return Verdict("reject", f"slow mode: wait {wait:.0f} s")
        if self.blocked.find(stripped) is not None:
            return Verdict("hold", "blocked word")
        if self.link_filter and find_link(stripped):
            return Verdict("hold" if self.hold_links else "reject", "links are held for review")
        if self.hold_for_review and not trusted:
            return Verdict("hold", "held for review")
        return Verdict("allow")
