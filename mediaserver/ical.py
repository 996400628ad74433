"""An iCalendar (RFC 5545) feed of services that Google Calendar and Apple Calendar subscribe to.

CRLF lines, TEXT escaping, and folding at 75 octets without splitting a UTF-8 character.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence


@dataclass(frozen=True, slots=True)
class CalendarEvent:
    uid: str
    title: str
    start: datetime
    end: datetime
    description: str = ""
    url: str = ""
    status: str = "CONFIRMED"


def escape_text(value: str) -> str:
    return (value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n"))


def fold(line: str) -> str:
    """Lines longer than 75 octets continue on the next line after CRLF + space."""
    data = line.encode()
    if len(data) <= 75:
        return line
    pieces: list[str] = []
    current = ""
    limit = 75
    for ch in line:
        if len((current + ch).encode()) > limit:
            pieces.append(current)
            current = ch
            limit = 74  # continuation lines start with a space
        else:
            current += ch
    pieces.append(current)
    return "\r\n ".join(pieces)


def utc(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def render_calendar(name: str, events: Sequence[CalendarEvent], *, now: datetime | None = None) -> str:
    stamp = utc(now or datetime.now(timezone.utc))
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//mediaserver//services//EN", "CALSCALE:GREGORIAN",
             "METHOD:PUBLISH", f"X-WR-CALNAME:{escape_text(name)}"]
    for e in events:
        lines += ["BEGIN:VEVENT", f"UID:{e.uid}", f"DTSTAMP:{stamp}", f"DTSTART:{utc(e.start)}", f"DTEND:{utc(e.end)}",
                  f"SUMMARY:{escape_text(e.title)}"]
        if e.description:
            lines.append(f"DESCRIPTION:{escape_text(e.description)}")
        if e.url:
            lines.append(f"URL:{e.url}")
        lines += [f"STATUS:{e.status}", "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return "\r\n".join(fold(line) for line in lines) + "\r\n"
