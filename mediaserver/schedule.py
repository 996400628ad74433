"""Recurring services: occurrences of an iCal RRULE at a local wall-clock time in an IANA time zone.

The rule runs on naive local times and each occurrence gets its zone afterwards, so 10:30 stays 10:30
local on both sides of a daylight-saving change. Pure functions, no I/O.

Time-zone rules (see `localize`):
- a local time that doesn't exist (inside a spring-forward gap, e.g. 02:30 on the US March change) moves
  forward by the length of the gap (02:30 -> 03:30 local), the way a wall clock would read it;
- an ambiguous local time (fall-back, e.g. 01:30 on the US November change) takes its first instant
  (fold=0, daylight time), so the service happens once.

UNTIL in the rule may be a local date-time (20261231T235959), a UTC one (20261231T120000Z, converted to
the series' zone) or a date (20261231, meaning "through the end of that local day").
"""
from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrule as RRule, rrulestr

MAX_ITERATIONS = 20_000   # occurrences walked from the series' start per query (a daily rule: ~55 years)
MAX_COUNT = 1000
MAX_INTERVAL = 1000
ALLOWED_FREQS = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
# The parts a service series may use. BYHOUR/BYMINUTE/BYSECOND are left out on purpose: start_time sets
# the time, and services are at most daily. BYYEARDAY/BYWEEKNO/BYEASTER are rare and slow to check.
ALLOWED_PARTS = ("FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "BYMONTH", "BYSETPOS", "WKST")
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_UNTIL_RE = re.compile(r"^(\d{8})(?:T(\d{6})(Z?))?$")
_BYDAY_RE = re.compile(r"^([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")


class ScheduleError(ValueError):
    """A bad series definition; the message starts with the field's name ("rrule: ...")."""


@dataclass(frozen=True, slots=True)
class SeriesRule:
    """A recurring service: RRULE (without DTSTART), local start time, duration, zone, first date."""

    rrule: str             # may start with "RRULE:"
    start_time: str        # "HH:MM" local
    duration_minutes: int  # 1 .. 1440
    timezone: str          # IANA name
    dtstart_date: date

    @property
    def rule_text(self) -> str:
        """The rule without the "RRULE:" prefix, upper-cased."""
        text = self.rrule.strip().upper()
        return text[6:] if text.startswith("RRULE:") else text

    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ScheduleError(f"timezone: unknown time zone {self.timezone!r}") from None

    def parts(self) -> dict[str, str]:
        """The rule's NAME=VALUE parts in their order; ScheduleError on anything not allowed."""
        if not isinstance(self.rrule, str) or not self.rule_text:
            raise ScheduleError(f"rrule: {self.rrule!r} is not a rule like FREQ=WEEKLY;BYDAY=SU")
        text = self.rule_text
        if "DTSTART" in text:
            raise ScheduleError("rrule: must not contain DTSTART (the series' start date and time set it)")
        if any(c in text for c in "\r\n:"):
            raise ScheduleError(f"rrule: one RRULE line only, got {self.rrule!r}")
        parts: dict[str, str] = {}
        for item in text.split(";"):
            name, eq, value = item.partition("=")
            name, value = name.strip(), value.strip()
            if not eq or not name or not value:
                raise ScheduleError(f"rrule: {item!r} is not NAME=VALUE")
            if name not in ALLOWED_PARTS:
                raise ScheduleError(f"rrule: {name} is not supported for services (use {', '.join(ALLOWED_PARTS)})")
            if name in parts:
                raise ScheduleError(f"rrule: {name} given twice")
            parts[name] = value
        return parts

    def validate(self) -> None:
        """ScheduleError (naming the field) unless this is a series we can schedule."""
        if not isinstance(self.start_time, str) or not _TIME_RE.match(self.start_time):
            raise ScheduleError(f"start_time: {self.start_time!r} is not a local time like 10:30")
        d = self.duration_minutes
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 24 * 60:
            raise ScheduleError(f"duration: {d!r} must be a whole number of minutes from 1 to 1440")
        if not isinstance(self.dtstart_date, date):
            raise ScheduleError(f"dtstart_date: {self.dtstart_date!r} is not a date")
        self.zone()
        parts = self.parts()
        freq = parts.get("FREQ")
        if freq is None:
            raise ScheduleError("rrule: FREQ is missing")
        if freq in ("SECONDLY", "MINUTELY", "HOURLY"):
            raise ScheduleError(f"rrule: FREQ={freq} is too frequent for services (at most DAILY)")
        if freq not in ALLOWED_FREQS:
            raise ScheduleError(f"rrule: FREQ={freq} is not one of {', '.join(ALLOWED_FREQS)}")
        for name, top in (("COUNT", MAX_COUNT), ("INTERVAL", MAX_INTERVAL)):
            if name in parts and not (parts[name].isdigit() and 1 <= int(parts[name]) <= top):
                raise ScheduleError(f"rrule: {name}={parts[name]} must be 1 to {top}")
        if "COUNT" in parts and "UNTIL" in parts:
            raise ScheduleError("rrule: COUNT and UNTIL together (RFC 5545 allows one or the other)")
        if "WKST" in parts and parts["WKST"] not in _WEEKDAYS:
            raise ScheduleError(f"rrule: WKST={parts['WKST']} is not a weekday like MO")
        for day in parts.get("BYDAY", "").split(",") if "BYDAY" in parts else ():
            m = _BYDAY_RE.match(day)
            if m is None:
                raise ScheduleError(f"rrule: BYDAY value {day!r} is not like SU or 1SU")
            if m.group(1) and freq not in ("MONTHLY", "YEARLY"):
                raise ScheduleError(f"rrule: BYDAY={day} (an ordinal weekday) needs FREQ=MONTHLY or YEARLY")
            if m.group(1) and not 1 <= abs(int(m.group(1))) <= (5 if freq == "MONTHLY" else 53):
                raise ScheduleError(f"rrule: BYDAY={day} never happens")
        if "BYMONTHDAY" in parts and freq == "WEEKLY":
            raise ScheduleError("rrule: BYMONTHDAY can't be used with FREQ=WEEKLY (RFC 5545)")
        if "BYSETPOS" in parts:
            most = {"WEEKLY": 7, "MONTHLY": 31, "YEARLY": 366}.get(freq)
            if most is None:
                raise ScheduleError("rrule: BYSETPOS needs FREQ=WEEKLY, MONTHLY or YEARLY")
            for pos in parts["BYSETPOS"].split(","):
                if not (pos.lstrip("+-").isdigit() and 1 <= abs(int(pos)) <= most):
                    raise ScheduleError(f"rrule: BYSETPOS={pos} must be 1 to {most} (or -1 to -{most})")
        if freq == "DAILY" and "BYDAY" in parts and int(parts.get("INTERVAL", "1")) % 7 == 0:
            weekday = _WEEKDAYS[self.dtstart_date.weekday()]
            if weekday not in parts["BYDAY"].split(","):
                raise ScheduleError(f"rrule: every {parts['INTERVAL']} days from a {weekday} never falls on {parts['BYDAY']}")
        try:
            self._until_local(parts)
            pattern = self._build({k: v for k, v in parts.items() if k not in ("COUNT", "UNTIL")})
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:  # UNTIL=99991231T235959Z east of UTC
            raise ScheduleError(f"rrule: {exc}") from None
        _check_month_days(parts)
        # A pattern that never matches would make dateutil scan to the year 9999 on every query.
        if next(iter(pattern), None) is None:
            raise ScheduleError(f"rrule: {self.rule_text} never produces a date")

    # -- internals ---------------------------------------------------------------------------------

    def local_dtstart(self) -> datetime:
        """The naive local date-time of the series' start."""
        hour, minute = (int(x) for x in self.start_time.split(":"))
        return datetime.combine(self.dtstart_date, time(hour, minute))

    def _until_local(self, parts: dict[str, str]) -> datetime | None:
        """UNTIL as a naive local date-time (see the module docstring for the forms accepted)."""
        value = parts.get("UNTIL")
        if value is None:
            return None
        m = _UNTIL_RE.match(value)
        if m is None:
            raise ValueError(f"UNTIL={value} is not like 20261231, 20261231T235959 or 20261231T235959Z")
        day = datetime.strptime(m.group(1), "%Y%m%d")
        if m.group(2) is None:
            return day.replace(hour=23, minute=59, second=59)
        moment = datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S")
        if m.group(3):
            return moment.replace(tzinfo=timezone.utc).astimezone(self.zone()).replace(tzinfo=None)
        return moment

    def _build(self, parts: dict[str, str]) -> RRule:
        text = ";".join(f"{k}={v}" for k, v in parts.items() if k != "UNTIL")
        rule = rrulestr(text, dtstart=self.local_dtstart())
        assert isinstance(rule, RRule)
        until = self._until_local(parts)
        return rule.replace(until=until) if until is not None else rule

    def naive_starts(self) -> Iterator[datetime]:
        """The series' naive local start times, in order (call validate() first)."""
        return iter(self._build(self.parts()))


@dataclass(frozen=True, slots=True)
class Occurrence:
    index: int             # 0-based position in the series: a stable id for editing one occurrence
    local_start: datetime  # aware, in the series' zone
    start: datetime        # aware UTC
    end: datetime          # aware UTC


def localize(naive: datetime, zone: ZoneInfo) -> datetime:
    """Attach the zone. A time inside a spring-forward gap moves forward by the gap (02:30 -> 03:30);
    an ambiguous fall-back time takes its first occurrence (fold=0).

    How: with fold=0 zoneinfo reads a non-existent time with the offset in force before the gap, and the
    round trip through UTC turns it into the real wall-clock time after the gap."""
    aware = naive.replace(tzinfo=zone, fold=0)
    return aware.astimezone(timezone.utc).astimezone(zone)


def occurrences(rule: SeriesRule, start: datetime, end: datetime, *, limit: int = 500,
                max_iterations: int = MAX_ITERATIONS) -> list[Occurrence]:
    """Occurrences whose UTC start is in [start, end) (aware datetimes), at most `limit` of them.
    Indexes count from the series' first occurrence, whatever the window; the walk from the series'
    start stops after `max_iterations` occurrences."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("occurrences: start and end must be timezone-aware")
    rule.validate()
    zone = rule.zone()
    duration = timedelta(minutes=rule.duration_minutes)
    out: list[Occurrence] = []
    if limit <= 0 or end <= start:
        return out
    for index, naive in enumerate(rule.naive_starts()):
        if index >= max_iterations:
            break
        try:
            local = localize(naive, zone)
            utc = local.astimezone(timezone.utc)
            finish = utc + duration
        except OverflowError:  # past the year 9999 in UTC: no later occurrence exists either
            break
        if utc >= end:
            break
        if utc >= start:
            out.append(Occurrence(index, local, utc, finish))
            if len(out) >= limit:
                break
    return out


def split_series(rule: SeriesRule, from_date: date) -> tuple[SeriesRule, SeriesRule]:
    """Edit a series from a date on: (the old rule, ending before from_date via UNTIL; the new rule).

    The new rule starts on the date of the first occurrence on or after from_date (not from_date itself
    when that is not an occurrence), so INTERVAL phases and the weekday or day of month that a rule
    takes from its start carry on unchanged; a COUNT becomes the number left. Together the two rules
    give exactly the original's occurrences."""
    rule.validate()
    if from_date < rule.dtstart_date:
        raise ScheduleError(f"from_date: {from_date} is before the series begins ({rule.dtstart_date})")
    parts = rule.parts()
    before = 0
    first_after: datetime | None = None
    for index, naive in enumerate(rule.naive_starts()):
        if naive.date() >= from_date:
            first_after = naive
            break
        before = index + 1
        if before >= MAX_ITERATIONS:
            raise ScheduleError(f"from_date: {from_date} is too far into the series")
    if first_after is None:
        raise ScheduleError(f"from_date: the series has no occurrence on or after {from_date}")

    cut = datetime.combine(from_date, time(0, 0)) - timedelta(seconds=1)
    old_until = rule._until_local(parts)
    if old_until is not None:
        cut = min(cut, old_until)
    old_parts = {k: v for k, v in parts.items() if k not in ("COUNT", "UNTIL")}
    old_parts["UNTIL"] = cut.strftime("%Y%m%dT%H%M%S")
    new_parts = dict(parts)
    if "COUNT" in parts:
        new_parts["COUNT"] = str(int(parts["COUNT"]) - before)
    old = replace(rule, rrule=_join(old_parts))
    new = replace(rule, rrule=_join(new_parts), dtstart_date=first_after.date())
    return old, new


def _join(parts: dict[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in parts.items())


def _check_month_days(parts: dict[str, str]) -> None:
    """Reject BYMONTH + BYMONTHDAY combinations with no real date (e.g. 30 February) up front."""
    if "BYMONTH" not in parts or "BYMONTHDAY" not in parts:
        return
    try:
        months = [int(m) for m in parts["BYMONTH"].split(",")]
        days = [int(d) for d in parts["BYMONTHDAY"].split(",")]
    except ValueError:
        raise ScheduleError("rrule: BYMONTH and BYMONTHDAY take numbers") from None
    longest = {m: calendar.monthrange(2024, m)[1] for m in range(1, 13)}  # 2024: a leap year
    if not any(1 <= m <= 12 and (1 <= d <= longest[m] or -longest[m] <= d <= -1) for m in months for d in days):
        raise ScheduleError(f"rrule: BYMONTH={parts['BYMONTH']} with BYMONTHDAY={parts['BYMONTHDAY']} never happens")
