"""An iCalendar (RFC 5545) feed of services that Google Calendar and Apple Calendar subscribe to.

CRLF lines, TEXT escaping, and folding at 75 octets without splitting a UTF-8 character. Pure text, no I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

PRODID = "-//mediaserver//services//EN"
STATUSES = ("CONFIRMED", "TENTATIVE", "CANCELLED")
LINE_OCTETS = 75
# RFC 5545 forbids control characters other than HTAB in values; CR and LF are escaped or dropped first.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class CalendarEvent:
    """One service in the feed. start and end are aware datetimes (written out in UTC)."""

    uid: str
    title: str
    start: datetime
    end: datetime
    description: str = ""
    url: str = ""
    status: str = "CONFIRMED"  # or "CANCELLED" (or "TENTATIVE")


def escape_text(value: str) -> str:
    """A TEXT value: backslash, semicolon and comma escaped, any newline written as \\n."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")
    return _CONTROL.sub("", value)


def _plain(value: str) -> str:
    """A non-TEXT value (UID, URL): no line breaks or control characters, which could forge properties."""
    return _CONTROL.sub("", value.replace("\r", "").replace("\n", ""))


def fold(line: str, octets: int = LINE_OCTETS) -> str:
    """Split a content line into lines of at most `octets` UTF-8 bytes (the leading space of a
    continuation line included), joined by CRLF + space; never inside a multi-byte character."""
    if len(line.encode()) <= octets:
        return line
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    room = octets
    for ch in line:
        size = len(ch.encode())
        if used + size > room:
            pieces.append("".join(current))
            current, used, room = [], 0, octets - 1  # continuation lines start with a space
        current.append(ch)
        used += size
    pieces.append("".join(current))
    return "\r\n ".join(pieces)


def utc_stamp(dt: datetime) -> str:
    """A UTC DATE-TIME value like 20260308T163000Z; the datetime must be aware."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"ical: {dt!r} has no time zone")
    return dt.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def render_calendar(name: str, events: Sequence[CalendarEvent], *, now: datetime | None = None) -> str:
    """The whole VCALENDAR text (METHOD:PUBLISH) with one VEVENT per event; `now` sets DTSTAMP.
    Empty descriptions and URLs are left out."""
    stamp = utc_stamp(now or datetime.now(timezone.utc))
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:{PRODID}", "CALSCALE:GREGORIAN",
             "METHOD:PUBLISH", f"X-WR-CALNAME:{escape_text(name)}"]
    for e in events:
        if e.status not in STATUSES:
            raise ValueError(f"ical: status {e.status!r} is not one of {', '.join(STATUSES)}")
        lines += ["BEGIN:VEVENT", f"UID:{_plain(e.uid)}", f"DTSTAMP:{stamp}", f"DTSTART:{utc_stamp(e.start)}",
                  f"DTEND:{utc_stamp(e.end)}", f"SUMMARY:{escape_text(e.title)}"]
        if e.description:
            lines.append(f"DESCRIPTION:{escape_text(e.description)}")
        if e.url:
            lines.append(f"URL:{_plain(e.url)}")
        lines += [f"STATUS:{e.status}", "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return "\r\n".join(fold(line) for line in lines) + "\r\n"
