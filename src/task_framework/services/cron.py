"""Five-field cron expressions with classic semantics, evaluated in an IANA zone.

Pure functions, no I/O (API.md §6.1):

* fields: minute, hour, day-of-month, month, day-of-week; ``*``, numbers, ``a-b``,
  ``*/n``, ``a-b/n``, ``a/n`` (``a`` to the field's end), comma lists, month names
  ``jan``-``dec``, day names ``sun``-``sat`` and ``last`` in day-of-month;
* day-of-week: ``0`` and ``7`` are Sunday, ``1`` Monday ... ``6`` Saturday;
* when both day fields are restricted (neither starts with ``*``), a day matches if
  either matches; otherwise both must (an unrestricted field matches every day);
* fire times are wall-clock times in the zone: a local time that does not exist (spring
  forward) is skipped; a repeated local time (fall back) fires once, at its first
  occurrence (``fold=0``).

``seconds_field=True`` reads the first field as seconds (every minute then matches): a
test-only granularity, enabled by ``TASK_FRAMEWORK_SCHEDULER_TEST_SECONDS``.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
SEARCH_HORIZON_DAYS = 366 * 30
"""How far ahead a next fire is looked for; valid expressions always fire well within."""
_LATEST_WINDOWS = (timedelta(hours=2), timedelta(days=2), timedelta(days=40), timedelta(days=400))
ALL_MINUTES = tuple(range(60))
MAX_EXPRESSION_LENGTH = 255  # the stored column's width
_WALL_MARGIN = timedelta(hours=3)
_HOUR_END = timedelta(minutes=59, seconds=59)


class CronError(ValueError):
    """An invalid expression; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_start: int = 0


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, MONTH_NAMES, 1)
_DOW = _Field("day-of-week", 0, 7, DAY_NAMES, 0)


def _is_number(token: str) -> bool:
    # str.isdigit() also accepts non-ASCII digits ("²", "١"), which int() refuses or reads.
    return token.isascii() and token.isdigit()


def _value(field: _Field, token: str) -> int:
    lowered = token.lower()
    if field.names and lowered in field.names:
        return field.names.index(lowered) + field.names_start
    if not _is_number(token):
        raise CronError(f"{field.name} value '{token}' is not a number")
    number = int(token)
    if not field.low <= number <= field.high:
        raise CronError(f"{field.name} value {number} out of range {field.low}-{field.high}")
    return number


def _parse_field(field: _Field, text: str, *, allow_last: bool = False) -> tuple[set[int], bool]:
    """The values a field allows, and whether it contains ``last``."""
    values: set[int] = set()
    has_last = False
    for item in text.split(","):
        if not item:
            raise CronError(f"{field.name} has an empty list item")
        if allow_last and item.lower() == "last":
            has_last = True
            continue
        base, _, step_text = item.partition("/")
        step = 1
        if step_text or item.endswith("/"):
            span = field.high - field.low + 1
            if not _is_number(step_text) or not 0 < int(step_text) <= span:
                raise CronError(f"{field.name} step '{step_text[:32]}' must be a number 1-{span}")
            step = int(step_text)
        if base == "*":
            low, high = field.low, field.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(field, first), _value(field, last)
            if low > high:
                raise CronError(f"{field.name} range '{base}' is reversed")
        else:
            low = _value(field, base)
            high = field.high if step_text else low
        values.update(range(low, high + 1, step))
    return values, has_last


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed expression. Weekdays use 0 = Sunday (7 folded into 0)."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    last_day: bool
    dom_restricted: bool
    dow_restricted: bool

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom_ok = day.day in self.days or (
            self.last_day and day.day == calendar.monthrange(day.year, day.month)[1]
        )
        dow_ok = (day.isoweekday() % 7) in self.weekdays
        if self.dom_restricted and self.dow_restricted:
            return dom_ok or dow_ok
        return dom_ok and dow_ok

    def next_after(self, after: datetime, zone: ZoneInfo) -> datetime | None:
        """The first fire strictly after ``after`` (aware), as an aware UTC datetime."""
        after_utc = after.astimezone(UTC)
        # Wall times this far before after's own wall time are certainly earlier
        # instants: no zone shifts its offset by that much within a day.
        floor = after_utc.astimezone(zone).replace(tzinfo=None) - _WALL_MARGIN
        day = floor.date()
        for _ in range(SEARCH_HORIZON_DAYS):
            if self.day_matches(day):
                found = self._first_in_day(day, zone, after_utc, floor)
                if found is not None:
                    return found
            day += timedelta(days=1)
        return None

    def _first_in_day(
        self, day: date, zone: ZoneInfo, after: datetime, floor: datetime
    ) -> datetime | None:
        if _latest_instant(datetime.combine(day, time(23, 59, 59)), zone) <= after:
            return None  # every wall time of this day is an earlier instant
        for hour in self.hours:
            start = datetime.combine(day, time(hour))
            end = start + _HOUR_END
            if end < floor:
                continue
            offset = _steady_offset(start, zone)
            if offset is not None:
                base = (start - offset).replace(tzinfo=UTC)
                if base + _HOUR_END <= after:
                    continue
                for minute in self.minutes:
                    for second in self.seconds:
                        instant = base + timedelta(minutes=minute, seconds=second)
                        if instant > after:
                            return instant
                continue
            for minute in self.minutes:
                for second in self.seconds:
                    found = _existing(start.replace(minute=minute, second=second), zone)
                    if found is not None and found > after:
                        return found
        return None

    def fires(self, start: datetime, end: datetime, zone: ZoneInfo) -> Iterator[datetime]:
        """Fires in ``[start, end]``, oldest first."""
        current = self.next_after(start - timedelta(microseconds=1), zone)
        while current is not None and current <= end:
            yield current
            current = self.next_after(current, zone)

    def latest_at_or_before(
        self, instant: datetime, zone: ZoneInfo, *, not_before: datetime
    ) -> datetime | None:
        """The most recent fire in ``[not_before, instant]``, found by widening windows."""
        for window in (*_LATEST_WINDOWS, instant - not_before):
            start = max(instant - window, not_before)
            latest = None
            for fire in self.fires(start, instant, zone):
                latest = fire
            if latest is not None or start <= not_before:
                return latest
        return None


@lru_cache(maxsize=16384)
def _steady_offset(start: datetime, zone: ZoneInfo) -> timedelta | None:
    """The UTC offset of a wall-clock hour without a transition in it, else None."""
    offsets = {
        wall.replace(tzinfo=zone, fold=fold).utcoffset()
        for wall in (start, start + _HOUR_END)
        for fold in (0, 1)
    }
    return offsets.pop() if len(offsets) == 1 else None


@lru_cache(maxsize=4096)
def _latest_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The later of the two readings (fold 0 and 1) of a naive wall time, in UTC."""
    return max(wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1))


def _existing(wall: datetime, zone: ZoneInfo) -> datetime | None:
    """UTC instant of a local wall time (first occurrence), or None if it does not exist."""
    aware = wall.replace(tzinfo=zone, fold=0)
    instant = aware.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != wall:
        return None  # skipped by a spring-forward transition
    return instant


def parse_cron(expression: str, *, seconds_field: bool = False) -> CronSpec:
    """Parse and check an expression; :class:`CronError` says what is wrong."""
    if not isinstance(expression, str):
        raise CronError("expression must be a string")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CronError(f"longer than {MAX_EXPRESSION_LENGTH} characters")
    parts = expression.split()
    if len(parts) != 5:
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    first, hour_text, dom_text, month_text, dow_text = parts
    first_values, _ = _parse_field(_SECOND if seconds_field else _MINUTE, first)
    hours, _ = _parse_field(_HOUR, hour_text)
    days, last_day = _parse_field(_DOM, dom_text, allow_last=True)
    months, _ = _parse_field(_MONTH, month_text)
    weekdays, _ = _parse_field(_DOW, dow_text)
    spec = CronSpec(
        expression=expression,
        seconds=tuple(sorted(first_values)) if seconds_field else (0,),
        minutes=ALL_MINUTES if seconds_field else tuple(sorted(first_values)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(d % 7 for d in weekdays),
        last_day=last_day,
        dom_restricted=not dom_text.startswith("*"),
        dow_restricted=not dow_text.startswith("*"),
    )
    if not (spec.dom_restricted and spec.dow_restricted) and not _some_day_exists(spec):
        raise CronError("the day-of-month and month fields never name an existing day")
    return spec


def _some_day_exists(spec: CronSpec) -> bool:
    """Whether any month allows one of the days (29 February counts)."""
    if spec.last_day:
        return True
    longest = {2: 29, 4: 30, 6: 30, 9: 30, 11: 30}
    return any(d <= longest.get(m, 31) for m in spec.months for d in spec.days)


def load_zone(name: str) -> ZoneInfo:
    """An IANA zone; :class:`ValueError` for anything else."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


__all__ = ["CronError", "CronSpec", "load_zone", "parse_cron"]
