"""Cron parsing and fire times (API.md §6.1), checked against independent oracles.

No clock is involved: every computation takes the instant to start from, so two years of
fires are computed in well under a second of real time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from task_framework.services.cron import CronError, CronSpec, load_zone, parse_cron
from task_framework.services.scheduler import CronTimes

START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2028, 1, 1, tzinfo=UTC)
ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe")


def fires(
    spec: CronSpec, zone: ZoneInfo, start: datetime = START, end: datetime = END
) -> list[datetime]:
    return list(spec.fires(start, end, zone))


def wall_clock_oracle(
    zone: ZoneInfo,
    start: datetime,
    end: datetime,
    step: timedelta,
    wanted: Callable[[datetime], bool],
) -> list[datetime]:
    """Walk UTC instants on a grid fine enough for every offset of ``zone``; keep the first
    instant that shows each wanted wall time (a wall time never shown does not exist)."""
    seen: set[datetime] = set()
    found = []
    instant = start
    while instant <= end:
        wall = instant.astimezone(zone).replace(tzinfo=None)
        if wanted(wall) and wall not in seen:
            seen.add(wall)
            found.append(instant)
        instant += step
    return found


def transitions(zone: ZoneInfo, start: datetime, end: datetime) -> Iterator[datetime]:
    """UTC instants (to the quarter hour) at which the zone's offset changes."""
    step = timedelta(minutes=15)
    instant, offset = start, start.astimezone(zone).utcoffset()
    while instant <= end:
        current = instant.astimezone(zone).utcoffset()
        if current != offset:
            yield instant
            offset = current
        instant += step


# -- two years in three zones -------------------------------------------------------------


@pytest.mark.parametrize("zone_name", ZONES)
def test_every_half_hour_for_two_years_follows_the_wall_clock(zone_name: str) -> None:
    zone = load_zone(zone_name)
    expected = wall_clock_oracle(
        zone,
        START,
        END,
        timedelta(minutes=15),  # Lord Howe sits at +10:30 / +11:00
        lambda wall: wall.minute in (0, 30),
    )
    actual = fires(parse_cron("*/30 * * * *"), zone)
    assert actual == expected
    # Both transitions happen twice in two years: 4 changes of offset.
    assert len(list(transitions(zone, START, END))) == 4
    days = (END - START).days
    shift = 0.5 if zone_name == "Australia/Lord_Howe" else 1.0
    # Every aligned UTC instant shows a new wall time except in the two repeated
    # (fall-back) periods, each 2 x shift half hours long; the end instant is included.
    assert len(actual) == days * 48 + 1 - round(2 * 2 * shift)


@pytest.mark.parametrize(
    ("zone_name", "cron", "hour", "minute", "skipped", "repeated"),
    [
        # Berlin: 02:00 -> 03:00 on the last Sunday of March, 03:00 -> 02:00 in October.
        ("Europe/Berlin", "30 2 * * *", 2, 30, {date(2026, 3, 29), date(2027, 3, 28)}, 2),
        # New York: 02:00 -> 03:00 in March; 02:00 -> 01:00 in November.
        ("America/New_York", "30 2 * * *", 2, 30, {date(2026, 3, 8), date(2027, 3, 14)}, 0),
        ("America/New_York", "30 1 * * *", 1, 30, set(), 2),
        # Lord Howe: 02:00 -> 02:30 in October; 02:00 -> 01:30 in April (30 minutes).
        ("Australia/Lord_Howe", "15 2 * * *", 2, 15, {date(2026, 10, 4), date(2027, 10, 3)}, 0),
        ("Australia/Lord_Howe", "45 1 * * *", 1, 45, set(), 2),
        ("Australia/Lord_Howe", "40 2 * * *", 2, 40, set(), 0),
    ],
)
def test_daily_fire_across_both_transitions(
    zone_name: str, cron: str, hour: int, minute: int, skipped: set[date], repeated: int
) -> None:
    zone = load_zone(zone_name)
    actual = fires(parse_cron(cron), zone)
    local = [f.astimezone(zone) for f in actual]
    assert all((w.hour, w.minute) == (hour, minute) for w in local)
    fired_days = [w.date() for w in local]
    assert len(fired_days) == len(set(fired_days)), "a repeated wall time fired twice"
    all_days = {
        START.astimezone(zone).date() + timedelta(days=i) for i in range((END - START).days + 1)
    }
    in_range = {d for d in all_days if START <= _first_instant(d, hour, minute, zone) <= END}
    assert set(fired_days) == in_range - skipped
    # The ambiguous days fire at the first occurrence (the earlier UTC instant, fold=0).
    ambiguous = [w for w in local if w.fold == 0 and w.replace(fold=1).utcoffset() != w.utcoffset()]
    assert len(ambiguous) == repeated
    for wall in ambiguous:
        assert wall.astimezone(UTC) < wall.replace(fold=1).astimezone(UTC)


def _first_instant(day: date, hour: int, minute: int, zone: ZoneInfo) -> datetime:
    wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
    return wall.astimezone(UTC)


def test_lord_howe_spring_gap_is_half_an_hour() -> None:
    zone = load_zone("Australia/Lord_Howe")
    spec = parse_cron("*/10 2 4 10 *")  # 4 October 2026: 02:00 -> 02:30
    walls = [f.astimezone(zone).strftime("%H:%M") for f in fires(spec, zone)[:3]]
    assert walls == ["02:30", "02:40", "02:50"]


def test_new_york_fall_back_every_15_minutes_no_duplicates() -> None:
    zone = load_zone("America/New_York")
    spec = parse_cron("*/15 * * * *")
    start = datetime(2026, 11, 1, 4, 50, tzinfo=UTC)  # 00:50 EDT
    got = [
        f.astimezone(zone).isoformat()[11:]
        for f in fires(spec, zone, start, start + timedelta(hours=3))
    ]
    assert got[:6] == [
        "01:00:00-04:00",
        "01:15:00-04:00",
        "01:30:00-04:00",
        "01:45:00-04:00",
        "02:00:00-05:00",  # the repeated hour (01:00-01:59 EST) does not fire again
        "02:15:00-05:00",
    ]


# -- parsing and day rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("* * * *", "expected 5 fields"),
        ("* * * * * *", "got 6"),
        ("", "got 0"),
        ("60 * * * *", "minute value 60 out of range 0-59"),
        ("* 24 * * *", "hour value 24 out of range 0-23"),
        ("* * 0 * *", "day-of-month value 0 out of range 1-31"),
        ("* * * 13 *", "month value 13 out of range 1-12"),
        ("* * * * 8", "day-of-week value 8 out of range 0-7"),
        ("* * * * funday", "day-of-week value 'funday' is not a number"),
        ("*/0 * * * *", "step '0' must be a number 1-60"),
        ("1-2/ * * * *", "step '' must be a number 1-60"),
        ("*/99999999999999999999 * * * *", "minute step '99999999999999999999' must be a number"),
        ("* */25 * * *", "hour step '25' must be a number 1-24"),
        ("*/² * * * *", "step '²' must be a number"),
        ("١ * * * *", "minute value '١' is not a number"),
        ("5-1 * * * *", "range '5-1' is reversed"),
        ("1,,2 * * * *", "empty list item"),
        ("* * last * *", None),
        ("* * * last *", "month value 'last' is not a number"),
        ("0 0 30 2 *", "never name an existing day"),
        ("0 0 31 4,6 *", "never name an existing day"),
        ("-1 * * * *", "is not a number"),
        ("0 0 1 1 " + ",".join(["1"] * 200), "longer than 255 characters"),
    ],
)
def test_validation_messages(cron: str, message: str | None) -> None:
    if message is None:
        parse_cron(cron)
        return
    with pytest.raises(CronError, match=message.replace("(", r"\(").replace("*", r"\*")):
        parse_cron(cron)


def test_day_of_week_zero_and_seven_are_sunday_and_names_work() -> None:
    zone = load_zone("UTC")
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    sundays = fires(parse_cron("0 12 * * 0"), zone, start, end)
    assert sundays == fires(parse_cron("0 12 * * 7"), zone, start, end)
    assert sundays == fires(parse_cron("0 12 * * SUN"), zone, start, end)
    assert {f.isoweekday() for f in sundays} == {7}
    assert {f.isoweekday() for f in fires(parse_cron("0 12 * * 1-5"), zone, start, end)} == {
        1,
        2,
        3,
        4,
        5,
    }
    assert {f.isoweekday() for f in fires(parse_cron("0 12 * * mon-fri"), zone, start, end)} == {
        1,
        2,
        3,
        4,
        5,
    }
    assert {f.isoweekday() for f in fires(parse_cron("0 12 * * 5-7"), zone, start, end)} == {
        5,
        6,
        7,
    }
    assert {f.month for f in fires(parse_cron("0 0 1 jan,FEB *"), zone, start, end)} == {1, 2}


def test_day_of_month_and_day_of_week_match_either_when_both_restricted() -> None:
    zone = load_zone("UTC")
    start, end = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 28, 23, tzinfo=UTC)
    either = fires(parse_cron("0 0 13 * 5"), zone, start, end)  # the 13th or any Friday
    assert [f.day for f in either] == [6, 13, 20, 27]  # Feb 2026: Fridays 6, 13, 20, 27
    either = fires(parse_cron("0 0 1,15 * mon"), zone, start, end)
    assert [f.day for f in either] == [1, 2, 9, 15, 16, 23]
    # A star (even stepped) day-of-month leaves day-of-week alone in charge, and vice versa.
    assert [f.day for f in fires(parse_cron("0 0 * * mon"), zone, start, end)] == [2, 9, 16, 23]
    assert [f.day for f in fires(parse_cron("0 0 1,15 * *"), zone, start, end)] == [1, 15]
    assert [f.day for f in fires(parse_cron("0 0 */10 * mon"), zone, start, end)] == []


def test_last_day_of_month() -> None:
    zone = load_zone("UTC")
    got = fires(parse_cron("0 18 last * *"), zone, START, datetime(2028, 12, 31, tzinfo=UTC))
    assert [f.date() for f in got][:3] == [date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31)]
    assert date(2028, 2, 29) in [f.date() for f in got]
    assert fires(
        parse_cron("0 0 15,last 2 *"), zone, START, datetime(2026, 12, 31, tzinfo=UTC)
    ) == [
        datetime(2026, 2, 15, tzinfo=UTC),
        datetime(2026, 2, 28, tzinfo=UTC),
    ]


def test_steps_ranges_lists() -> None:
    zone = load_zone("UTC")
    day = (datetime(2026, 5, 5, tzinfo=UTC), datetime(2026, 5, 5, 23, 59, tzinfo=UTC))
    assert [f.hour for f in fires(parse_cron("0 */6 * * *"), zone, *day)] == [0, 6, 12, 18]
    assert [f.hour for f in fires(parse_cron("0 1-10/3 * * *"), zone, *day)] == [1, 4, 7, 10]
    assert [f.hour for f in fires(parse_cron("0 20/2 * * *"), zone, *day)] == [20, 22]
    assert [f.minute for f in fires(parse_cron("5,10,55 3 * * *"), zone, *day)] == [5, 10, 55]


def test_next_after_is_strict_and_leap_day_is_found() -> None:
    zone = load_zone("UTC")
    spec = parse_cron("0 0 29 2 *")
    leap = datetime(2028, 2, 29, tzinfo=UTC)
    assert spec.next_after(datetime(2026, 3, 1, tzinfo=UTC), zone) == leap
    assert spec.next_after(leap, zone) == datetime(2032, 2, 29, tzinfo=UTC)
    assert (
        spec.latest_at_or_before(
            datetime(2031, 1, 1, tzinfo=UTC), zone, not_before=datetime(2020, 1, 1, tzinfo=UTC)
        )
        == leap
    )


def test_seconds_granularity_reads_the_first_field_as_seconds() -> None:
    zone = load_zone("UTC")
    spec = parse_cron("*/20 * * * *", seconds_field=True)
    start = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert [
        f.strftime("%M:%S") for f in fires(spec, zone, start, start + timedelta(minutes=1))
    ] == [
        "00:20",
        "00:40",
        "01:00",
    ]
    with pytest.raises(CronError, match="second value 60"):
        parse_cron("60 * * * *", seconds_field=True)


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "", "../../etc/passwd", "/etc/localtime", "Europe/"]
)
def test_unknown_zones_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        load_zone(name)


def test_apscheduler_trigger_follows_our_rules_with_a_controlled_clock() -> None:
    """The APScheduler trigger asks our cron for times; ``now`` is whatever we pass."""
    zone = load_zone("America/New_York")
    trigger = CronTimes(parse_cron("30 2 * * 0"), zone)  # Sundays 02:30
    now = datetime(2026, 3, 1, tzinfo=UTC)
    first = trigger.get_next_fire_time(None, now)
    assert first is not None
    assert first.astimezone(zone).isoformat() == "2026-03-01T02:30:00-05:00"
    # 8 March 2026 02:30 does not exist in New York: skipped, next is 15 March (EDT).
    second = trigger.get_next_fire_time(first, first)
    assert second is not None
    assert second.astimezone(zone).isoformat() == "2026-03-15T02:30:00-04:00"
    # A stalled loop never makes the trigger hand out a time before ``now``.
    late_now = datetime(2026, 4, 1, tzinfo=UTC)
    later = trigger.get_next_fire_time(first, late_now)
    assert later is not None
    assert later > late_now
