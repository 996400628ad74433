"""Recurring services: occurrences of an iCal RRULE at a local wall-clock time in an IANA time zone.

The rule runs on naive local times and each occurrence gets its zone afterwards, so 10:30 stays 10:30
local on both sides of a daylight-saving change. Pure functions, no I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from typing import Any

from dateutil.rrule import rrulestr

MAX_ITERATIONS = 20_000
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class ScheduleError(ValueError):
    """A bad series definition; the message starts with the field's name."""


@dataclass(frozen=True, slots=True)
class SeriesRule:
    rrule: str
    start_time: str
    duration_minutes: int
    timezone: str
    dtstart_date: date

    @property
    def rule_text(self) -> str:
        text = self.rrule.strip()
        return text[6:] if text.upper().startswith("RRULE:") else text

    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f"timezone: unknown time zone {self.timezone!r}") from None

    def validate(self) -> None:
        if not _TIME_RE.match(self.start_time):
            raise ScheduleError(f"start_time: {self.start_time!r} is not a local time like 10:30")
        if not 1 <= int(self.duration_minutes) <= 24 * 60:
            raise ScheduleError(f"duration: {self.duration_minutes} must be 1 to 1440 minutes")
        self.zone()
        text = self.rule_text.upper()
        if "DTSTART" in text:
            raise ScheduleError("rrule: must not contain DTSTART (the series' start date and time set it)")
        freq = re.search(r"FREQ=([A-Z]+)", text)
        if freq is None:
            raise ScheduleError("rrule: FREQ is missing")
        if freq.group(1) in ("SECONDLY", "MINUTELY", "HOURLY"):
            raise ScheduleError(f"rrule: FREQ={freq.group(1)} is too frequent for services (at most DAILY)")
        count = re.search(r"COUNT=(\d+)", text)
        if count and int(count.group(1)) > 1000:
            raise ScheduleError("rrule: COUNT above 1000")
        try:
            self._rule()
        except (ValueError, TypeError) as exc:
            raise ScheduleError(f"rrule: {exc}") from None

    def _local_start(self) -> datetime:
        hour, minute = (int(x) for x in self.start_time.split(":"))
        return datetime.combine(self.dtstart_date, time(hour, minute))

    def _rule(self) -> Any:
        return rrulestr(self.rule_text, dtstart=self._local_start())


@dataclass(frozen=True, slots=True)
class Occurrence:
    index: int
    local_start: datetime  # aware, in the series' zone
    start: datetime        # aware UTC
    end: datetime          # aware UTC


def localize(naive: datetime, zone: ZoneInfo) -> datetime:
    """Attach the zone. A time inside a spring-forward gap moves forward by the gap (02:30 -> 03:30);
    an ambiguous fall-back time takes its first occurrence (fold=0)."""
    aware = naive.replace(tzinfo=zone, fold=0)
    round_trip = aware.astimezone(timezone.utc).astimezone(zone)
    if round_trip.replace(tzinfo=None) != naive:  # didn't exist: normalize through UTC
        return round_trip
    return aware


def occurrences(rule: SeriesRule, start: datetime, end: datetime, *, limit: int = 500) -> list[Occurrence]:
    """Occurrences whose UTC start is in [start, end), with indexes counted from the series' first."""
    rule.validate()
    zone = rule.zone()
    duration = timedelta(minutes=int(rule.duration_minutes))
    out: list[Occurrence] = []
    naive: datetime
    for index, naive in enumerate(rule._rule()):
        if index >= MAX_ITERATIONS:
            break
        local = localize(naive, zone)
        utc = local.astimezone(timezone.utc)
        if utc >= end:
            break
        if utc >= start:
            out.append(Occurrence(index, local, utc, utc + duration))
            if len(out) >= limit:
                break
    return out


def split_series(rule: SeriesRule, from_date: date) -> tuple[SeriesRule, SeriesRule]:
    """(the rule ending before from_date, the rule carrying on from from_date)."""
    if from_date < rule.dtstart_date:
        raise ScheduleError("from: before the series begins")
    parts = [p for p in rule.rule_text.split(";") if not p.upper().startswith(("UNTIL=", "COUNT="))]
    until = (datetime.combine(from_date, time(0, 0)) - timedelta(seconds=1)).strftime("%Y%m%dT%H%M%S")
    old = replace(rule, rrule=";".join(parts + [f"UNTIL={until}"]))
    new = replace(rule, rrule=";".join(parts), dtstart_date=from_date)
    return old, new
