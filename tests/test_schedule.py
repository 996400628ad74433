"""Recurring services across daylight-saving changes, series splitting, and the iCalendar feed."""
from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from mediaserver.ical import CalendarEvent, fold, render_calendar
from mediaserver.schedule import ScheduleError, SeriesRule, localize, occurrences, split_series

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def sunday_rule(tz: str = "America/Chicago", at: str = "10:30", rrule: str = "FREQ=WEEKLY;BYDAY=SU",
                first: date = date(2026, 1, 4), minutes: int = 90) -> SeriesRule:
    return SeriesRule(rrule=rrule, start_time=at, duration_minutes=minutes, timezone=tz, dtstart_date=first)


YEAR = (utc(2026, 1, 1), utc(2027, 1, 1))


# -- daylight saving ---------------------------------------------------------------------------------

def test_chicago_sundays_keep_local_time_across_both_changes() -> None:
    occ = occurrences(sunday_rule(), *YEAR)
    assert len(occ) == 52
    assert {o.local_start.strftime("%H:%M") for o in occ} == {"10:30"}
    assert all(o.local_start.weekday() == 6 for o in occ)
    starts = {o.local_start.date(): o.start for o in occ}
    # US spring forward 2026-03-08: 16:30Z in winter, 15:30Z in summer
    assert starts[date(2026, 3, 1)] == utc(2026, 3, 1, 16, 30)
    assert starts[date(2026, 3, 8)] == utc(2026, 3, 8, 15, 30)
    assert starts[date(2026, 3, 15)] == utc(2026, 3, 15, 15, 30)
    # US fall back 2026-11-01 (at 02:00, before the service)
    assert starts[date(2026, 10, 25)] == utc(2026, 10, 25, 15, 30)
    assert starts[date(2026, 11, 1)] == utc(2026, 11, 1, 16, 30)
    assert starts[date(2026, 11, 8)] == utc(2026, 11, 8, 16, 30)
    for o in occ:
        assert o.start.tzinfo == UTC and o.end - o.start == timedelta(minutes=90)
        assert o.local_start.tzinfo == ZoneInfo("America/Chicago")
        assert o.local_start == o.start


def test_london_sundays() -> None:
    occ = occurrences(sunday_rule("Europe/London"), *YEAR)
    starts = {o.local_start.date(): o.start for o in occ}
    assert {o.local_start.strftime("%H:%M") for o in occ} == {"10:30"}
    assert starts[date(2026, 3, 22)] == utc(2026, 3, 22, 10, 30)   # GMT
    assert starts[date(2026, 3, 29)] == utc(2026, 3, 29, 9, 30)    # BST from 29 March
    assert starts[date(2026, 10, 18)] == utc(2026, 10, 18, 9, 30)
    assert starts[date(2026, 10, 25)] == utc(2026, 10, 25, 10, 30)  # GMT again from 25 October


def test_sydney_sundays_southern_hemisphere() -> None:
    occ = occurrences(sunday_rule("Australia/Sydney", at="10:00"), *YEAR)
    starts = {o.local_start.date(): o.start for o in occ}
    assert {o.local_start.strftime("%H:%M") for o in occ} == {"10:00"}
    assert starts[date(2026, 3, 29)] == utc(2026, 3, 28, 23, 0)    # AEDT, UTC+11
    assert starts[date(2026, 4, 5)] == utc(2026, 4, 5, 0, 0)       # AEST from 5 April, UTC+10
    assert starts[date(2026, 9, 27)] == utc(2026, 9, 27, 0, 0)
    assert starts[date(2026, 10, 4)] == utc(2026, 10, 3, 23, 0)    # AEDT again from 4 October


def test_time_in_spring_forward_gap_moves_forward_by_the_gap() -> None:
    rule = sunday_rule(at="02:30", rrule="FREQ=DAILY", first=date(2026, 3, 6))
    occ = occurrences(rule, utc(2026, 3, 6), utc(2026, 3, 11))
    local = [o.local_start for o in occ]
    assert [t.strftime("%d %H:%M") for t in local] == ["06 02:30", "07 02:30", "08 03:30", "09 02:30", "10 02:30"]
    assert occ[2].start == utc(2026, 3, 8, 8, 30)   # 03:30 CDT
    assert occ[1].start == utc(2026, 3, 7, 8, 30)   # 02:30 CST: same instant of day, a day earlier
    assert localize(datetime(2026, 3, 8, 2, 30), ZoneInfo("America/Chicago")).utcoffset() == timedelta(hours=-5)


def test_ambiguous_fall_back_time_happens_once_at_its_first_instant() -> None:
    rule = sunday_rule(at="01:30", rrule="FREQ=DAILY", first=date(2026, 10, 30))
    occ = occurrences(rule, utc(2026, 11, 1), utc(2026, 11, 2))
    assert len(occ) == 1
    assert occ[0].start == utc(2026, 11, 1, 6, 30)  # 01:30 CDT (fold=0), not 07:30 (CST)
    assert occ[0].local_start.strftime("%H:%M") == "01:30"
    week = occurrences(rule, utc(2026, 10, 30), utc(2026, 11, 5))
    assert len({o.local_start.date() for o in week}) == len(week) == 6  # 30 Oct .. 4 Nov, once a day


# -- windows, indexes, limits ------------------------------------------------------------------------

def test_indexes_are_stable_whatever_the_window() -> None:
    rule = sunday_rule()
    whole = occurrences(rule, *YEAR)
    assert [o.index for o in whole] == list(range(52))
    part = occurrences(rule, utc(2026, 6, 1), utc(2026, 7, 1))
    assert part and all(whole[o.index] == o for o in part)
    assert occurrences(rule, utc(2027, 1, 1), utc(2027, 1, 8))[0].index == 52
    # a window that starts before the series: indexes still begin at 0
    assert occurrences(rule, utc(2020, 1, 1), utc(2026, 1, 5))[0].index == 0


def test_limit_and_half_open_windows() -> None:
    rule = sunday_rule()
    assert [o.index for o in occurrences(rule, *YEAR, limit=3)] == [0, 1, 2]
    assert occurrences(rule, *YEAR, limit=0) == []
    exact = utc(2026, 3, 8, 15, 30)
    assert [o.start for o in occurrences(rule, exact, exact + timedelta(seconds=1))] == [exact]  # start included
    assert occurrences(rule, exact - timedelta(days=1), exact) == []                             # end excluded
    assert occurrences(rule, exact, exact) == []
    with pytest.raises(ValueError):
        occurrences(rule, datetime(2026, 1, 1), datetime(2026, 2, 1))


def test_rrule_prefix_count_and_until_forms() -> None:
    assert len(occurrences(sunday_rule(rrule="RRULE:FREQ=WEEKLY;BYDAY=SU;COUNT=5"), *YEAR)) == 5
    assert len(occurrences(sunday_rule(rrule="freq=weekly;byday=su;count=5"), *YEAR)) == 5
    # a date UNTIL includes its own day; a UTC one is converted to local time
    dated = occurrences(sunday_rule(rrule="FREQ=WEEKLY;BYDAY=SU;UNTIL=20260125"), *YEAR)
    assert dated[-1].local_start.date() == date(2026, 1, 25)
    exact_utc = occurrences(sunday_rule(rrule="FREQ=WEEKLY;BYDAY=SU;UNTIL=20260125T163000Z"), *YEAR)
    assert exact_utc[-1].start == utc(2026, 1, 25, 16, 30)
    before = occurrences(sunday_rule(rrule="FREQ=WEEKLY;BYDAY=SU;UNTIL=20260125T102959"), *YEAR)
    assert before[-1].local_start.date() == date(2026, 1, 18)


def test_first_sunday_monthly_and_fortnightly() -> None:
    monthly = occurrences(sunday_rule(rrule="FREQ=MONTHLY;BYDAY=1SU"), *YEAR)
    assert len(monthly) == 12 and all(o.local_start.day <= 7 for o in monthly)
    fortnight = occurrences(sunday_rule(rrule="FREQ=WEEKLY;INTERVAL=2;BYDAY=SU"), *YEAR)
    assert all(b.local_start - a.local_start == timedelta(days=14)
               for a, b in zip(fortnight, fortnight[1:]) if a.local_start.utcoffset() == b.local_start.utcoffset())


# -- validation --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "field"), [
    ({"rrule": "not a rule"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=XX"}, "rrule"),
    ({"rrule": "FREQ=FORTNIGHTLY"}, "rrule"),
    ({"rrule": "BYDAY=SU"}, "rrule"),
    ({"rrule": ""}, "rrule"),
    ({"rrule": "FREQ=HOURLY"}, "rrule"),
    ({"rrule": "FREQ=MINUTELY"}, "rrule"),
    ({"rrule": "FREQ=DAILY;BYHOUR=9,18"}, "rrule"),
    ({"rrule": "DTSTART:20260104T103000\nRRULE:FREQ=WEEKLY"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;DTSTART=20260104T103000"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;COUNT=1001"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;COUNT=0"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;INTERVAL=0"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;UNTIL=2026"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;COUNT=3;UNTIL=20261231"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=1SU"}, "rrule"),
    ({"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}, "rrule"),
    ({"rrule": "FREQ=MONTHLY;BYDAY=SU;BYSETPOS=32"}, "rrule"),
    ({"rrule": "FREQ=DAILY;BYSETPOS=1"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;BYMONTHDAY=-1;BYSETPOS=3"}, "rrule"),
    ({"rrule": "FREQ=MONTHLY;BYDAY=6SU"}, "rrule"),
    ({"rrule": "FREQ=DAILY;INTERVAL=7;BYDAY=TU"}, "rrule"),  # from a Sunday, never a Tuesday
    ({"rrule": "FREQ=WEEKLY\nEXDATE:20260111T103000"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;BYYEARDAY=1"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=SU;BYDAY=MO"}, "rrule"),
    ({"start_time": "25:00"}, "start_time"),
    ({"start_time": "10:3"}, "start_time"),
    ({"start_time": "10:30:00"}, "start_time"),
    ({"timezone": "Mars/Base"}, "timezone"),
    ({"timezone": "../../etc/passwd"}, "timezone"),
    ({"duration_minutes": 0}, "duration"),
    ({"duration_minutes": 24 * 60 + 1}, "duration"),
    ({"duration_minutes": "60"}, "duration"),
    ({"duration_minutes": True}, "duration"),
])
def test_validate_names_the_bad_field(changes: dict[str, object], field: str) -> None:
    fields: dict[str, object] = {"rrule": "FREQ=WEEKLY;BYDAY=SU", "start_time": "10:30", "duration_minutes": 60,
                                 "timezone": "America/Chicago", "dtstart_date": date(2026, 1, 4), **changes}
    rule = SeriesRule(**fields)  # type: ignore[arg-type]
    t0 = time.monotonic()
    with pytest.raises(ScheduleError) as info:
        rule.validate()
    assert str(info.value).startswith(f"{field}: ")
    assert time.monotonic() - t0 < 0.5  # rejected up front, not by scanning to the year 9999
    with pytest.raises(ScheduleError):
        occurrences(rule, *YEAR)


def test_valid_rules_pass() -> None:
    for text in ("FREQ=WEEKLY;BYDAY=SU", "RRULE:FREQ=WEEKLY;BYDAY=SU,WE", "FREQ=DAILY;COUNT=1000",
                 "FREQ=MONTHLY;BYDAY=-1FR", "FREQ=YEARLY;BYMONTH=12;BYMONTHDAY=24", "FREQ=MONTHLY;BYDAY=SU;BYSETPOS=-1",
                 "FREQ=WEEKLY;WKST=SU;INTERVAL=2;BYDAY=SU;UNTIL=20271231T235959Z"):
        sunday_rule(rrule=text).validate()


# -- split_series ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["FREQ=WEEKLY;BYDAY=SU", "FREQ=WEEKLY;INTERVAL=2;BYDAY=SU", "FREQ=WEEKLY;INTERVAL=3",
                                  "FREQ=MONTHLY;BYDAY=1SU", "FREQ=WEEKLY;BYDAY=SU,WE;COUNT=60",
                                  "FREQ=WEEKLY;BYDAY=SU;UNTIL=20260901"])
def test_split_series_union_is_the_original(text: str) -> None:
    rule = sunday_rule(rrule=text, first=date(2026, 1, 7))  # a Wednesday
    cut = date(2026, 6, 10)
    old, new = split_series(rule, cut)
    old.validate()
    new.validate()
    before = occurrences(old, *YEAR)
    after = occurrences(new, *YEAR)
    assert before and after
    assert before[-1].local_start.date() < cut <= after[0].local_start.date()
    assert new.dtstart_date >= cut
    original = [o.start for o in occurrences(rule, *YEAR)]
    assert [o.start for o in before] + [o.start for o in after] == original
    assert "UNTIL=" in old.rrule and "COUNT=" not in old.rrule


def test_split_series_count_and_errors() -> None:
    rule = sunday_rule(rrule="FREQ=WEEKLY;BYDAY=SU;COUNT=10")  # 4 Jan .. 8 Mar
    old, new = split_series(rule, date(2026, 2, 1))
    assert len(occurrences(old, *YEAR)) == 4 and "COUNT=6" in new.rrule
    assert new.dtstart_date == date(2026, 2, 1)
    with pytest.raises(ScheduleError, match="^from_date: "):
        split_series(rule, date(2025, 12, 31))
    with pytest.raises(ScheduleError, match="^from_date: "):
        split_series(rule, date(2026, 6, 1))  # the series is over by then
    old, new = split_series(sunday_rule(), date(2026, 1, 4))  # from the very first date: old is empty
    assert occurrences(old, *YEAR) == [] and occurrences(new, *YEAR)[0].start == utc(2026, 1, 4, 16, 30)


# -- iCalendar ---------------------------------------------------------------------------------------

def unfold(text: str) -> list[str]:
    return text.replace("\r\n ", "").split("\r\n")


def parse_events(text: str) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    for line in unfold(text):
        if line == "BEGIN:VEVENT":
            events.append({})
        elif events and line != "END:VEVENT" and ":" in line and "END:VCALENDAR" != line:
            name, _, value = line.partition(":")
            events[-1].setdefault(name, value)
    return events


def unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append("\n" if value[i + 1] in "nN" else value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


LONG = ("Morning worship — Pastor José preaches on Psalm 23; bring a friend, and a smile 😀🙏. " * 6
        + "\nSecond line, with \\ backslash")
EVENTS = [
    CalendarEvent(uid="s1@mediaserver", title="Sunday Service, 10:30; main hall", start=utc(2026, 3, 8, 15, 30),
                  end=utc(2026, 3, 8, 17, 0), description=LONG, url="https://example.org/watch/s1"),
    CalendarEvent(uid="s2@mediaserver", title="Évensong 🎶", start=datetime(2026, 3, 15, 18, 0, tzinfo=ZoneInfo("America/Chicago")),
                  end=utc(2026, 3, 15, 23, 59), status="CANCELLED"),
]


def test_calendar_lines_folding_and_escaping() -> None:
    text = render_calendar("First Church, Springfield", EVENTS, now=utc(2026, 3, 1, 12))
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    lines = text.split("\r\n")[:-1]
    assert all(len(line.encode()) <= 75 for line in lines)
    assert any(line.startswith(" ") for line in lines)  # the description was folded
    for line in lines:
        line.encode().decode("utf-8")  # every physical line is valid UTF-8 on its own
    assert lines[:6] == ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//mediaserver//services//EN",
                         "CALSCALE:GREGORIAN", "METHOD:PUBLISH", "X-WR-CALNAME:First Church\\, Springfield"]
    first, second = parse_events(text)
    assert first["UID"] == "s1@mediaserver" and first["DTSTAMP"] == "20260301T120000Z"
    assert first["DTSTART"] == "20260308T153000Z" and first["DTEND"] == "20260308T170000Z"
    assert first["SUMMARY"] == "Sunday Service\\, 10:30\\; main hall"
    assert unescape(first["SUMMARY"]) == EVENTS[0].title
    assert unescape(first["DESCRIPTION"]) == LONG
    assert first["URL"] == "https://example.org/watch/s1" and first["STATUS"] == "CONFIRMED"
    assert second["DTSTART"] == "20260315T230000Z"  # 18:00 CDT (UTC-5), written in UTC
    assert second["STATUS"] == "CANCELLED" and "DESCRIPTION" not in second
    assert unescape(second["SUMMARY"]) == "Évensong 🎶"
    assert text.count("BEGIN:VEVENT") == text.count("END:VEVENT") == 2


def test_fold_never_splits_a_character() -> None:
    for width in range(1, 5):
        line = "DESCRIPTION:" + "x" * width + "é😀漢" * 40
        folded = fold(line)
        parts = folded.split("\r\n")
        assert all(len(p.encode()) <= 75 for p in parts)
        assert all(p.startswith(" ") for p in parts[1:])
        assert folded.replace("\r\n ", "") == line
    assert fold("SUMMARY:short") == "SUMMARY:short"


def test_no_property_injection_and_bad_input() -> None:
    sneaky = CalendarEvent(uid="x\r\nSTATUS:CANCELLED", title="a\rb\nc\x07", start=utc(2026, 1, 1),
                           end=utc(2026, 1, 1, 1), url="https://e.org/\r\nX-EVIL:1")
    text = render_calendar("c", [sneaky], now=utc(2026, 1, 1))
    assert "X-EVIL" not in unfold(text)[0] and not any(l.startswith(("X-EVIL", "STATUS:CANCELLED")) for l in unfold(text))
    assert parse_events(text)[0]["SUMMARY"] == "a\\nb\\nc"
    with pytest.raises(ValueError):
        render_calendar("c", [CalendarEvent("u", "t", datetime(2026, 1, 1), datetime(2026, 1, 1, 1))])
    with pytest.raises(ValueError):
        render_calendar("c", [CalendarEvent("u", "t", utc(2026, 1, 1), utc(2026, 1, 1, 1), status="MAYBE")])


def test_icalendar_library_reads_the_feed() -> None:
    import icalendar  # a real iCalendar parser (a test dependency) reads our feed back
    cal = icalendar.Calendar.from_ical(render_calendar("First Church", EVENTS, now=utc(2026, 3, 1)))
    events = cal.walk("VEVENT")
    assert [str(e["SUMMARY"]) for e in events] == [EVENTS[0].title, EVENTS[1].title]
    assert events[0].decoded("DTSTART") == EVENTS[0].start
    assert str(events[0]["DESCRIPTION"]) == LONG
