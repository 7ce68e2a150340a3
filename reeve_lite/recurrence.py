"""Cron recurrence evaluated on the wall clock of an IANA time zone, using croniter.

Expressions have the classic 5 fields, ``minute hour day-of-month month day-of-week``
(``30 9 * * 1-5``), or one of croniter's aliases (``@hourly``, ``@daily``, ``@weekly``,
``@monthly``, ``@yearly``, ``@annually``, ``@midnight``). Seconds/years fields and the
hashed/random ``H``/``R`` forms are rejected (random ones change on every evaluation).

Fire times are computed on naive local wall-clock times and only then placed on the
time line, so every local wall-clock occurrence fires once across DST changes:

* When clocks go back (02:30 happens twice), a time in the repeated hour fires once, at
  its first occurrence (fold=0). An hourly job therefore does not fire again in the
  repeated hour. croniter's own aware-datetime mode would fire twice.
* When clocks go forward (02:30 does not exist), the times of the skipped interval fire
  once, together, at the moment the clocks jump: ``30 2 * * *`` in Europe/Berlin fires at
  03:00 CEST on 2026-03-29, and an hourly job's 02:00 and 03:00 are one fire time. Unlike
  a one-off time in ``reeve_lite.timeparse`` the skipped time is not shifted by the size
  of the gap: for a recurring schedule that would put the shifted times between the real
  ones after the gap (Lord Howe Island's gap is 30 minutes) and fire times out of order.

This keeps fire times in the order of their wall-clock times, so ``next_occurrences`` is
exactly what calling ``next_occurrence`` on each previous result gives.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "RecurrenceError",
    "load_zone",
    "next_occurrence",
    "next_occurrences",
    "occurrences_between",
    "validate_cron",
]

_CRON_FORMAT = "'minute hour day-of-month month day-of-week', e.g. '30 9 * * 1-5'"
# croniter's hashed ("H") and random ("R") field values, possibly with a range or step.
_HASH_OR_RANDOM_RE = re.compile(r"[hr](?:\(|/|$)", re.IGNORECASE)
_ZONE_NAME_RE = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*", re.ASCII)


class RecurrenceError(ValueError):
    """Bad cron expression or time zone; `field` is "cron" or "timezone"; str() is user-facing."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def load_zone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name like 'Europe/Berlin' or 'UTC'; RecurrenceError otherwise."""
    error = RecurrenceError(
        f"unknown time zone {name[:60]!r}: use an IANA name like 'Europe/Berlin' or 'UTC'",
        field="timezone",
    )
    # Screening the shape first keeps paths ('../etc', '/etc/passwd') away from the file system.
    if not _ZONE_NAME_RE.fullmatch(name):
        raise error
    try:
        return ZoneInfo(name)
    except Exception as exc:
        # ZoneInfoNotFoundError, ValueError, IsADirectoryError, ... depending on the name.
        raise error from exc


def validate_cron(expr: str) -> str:
    """The whitespace-collapsed 5-field cron expression (or alias); RecurrenceError otherwise."""
    fields = expr.split()
    normalised = " ".join(fields)
    shown = repr(normalised[:60] + ("…" if len(normalised) > 60 else ""))
    if len(fields) == 1 and normalised.startswith("@"):
        normalised = normalised.lower()
    elif len(fields) != 5:
        raise RecurrenceError(
            f"cron expression {shown} has {len(fields)} field{'' if len(fields) == 1 else 's'}, "
            f"but 5 fields are expected: {_CRON_FORMAT}",
            field="cron",
        )
    elif any(_HASH_OR_RANDOM_RE.match(part) for field in fields for part in field.split(",")):
        raise RecurrenceError(
            f"cron expression {shown} uses hashed or random values ('H', 'R'), "
            "which are not supported",
            field="cron",
        )
    # Imported at first use: a daemon without cron pulses starts without it.
    from croniter import croniter

    # strict=True also rejects dates that never occur, such as '0 0 30 2 *'.
    if not croniter.is_valid(normalised, strict=True):
        raise RecurrenceError(
            f"invalid cron expression {shown}: the fields are {_CRON_FORMAT}", field="cron"
        )
    return normalised


def next_occurrence(expr: str, zone: ZoneInfo, after: datetime) -> datetime:
    """First fire time strictly after the aware `after`, on `zone`'s wall clock, in UTC."""
    return next(_fire_times(expr, zone, after))


def next_occurrences(expr: str, zone: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times strictly after `after` (aware UTC, strictly increasing)."""
    fire_times = _fire_times(expr, zone, after)
    return [next(fire_times) for _ in range(count)]


# With more occurrences than counted, `occurrences_between` keeps the first and this
# many of the last (enough for any catch-up).
TAIL = 100


def occurrences_between(
    expr: str, zone: ZoneInfo, after: datetime, until: datetime, cap: int
) -> tuple[list[datetime], int | None]:
    """Fire times strictly after `after` and at or before `until`, and how many.

    Past `cap` of them the count is None and the list holds the first fire time
    and the last `TAIL` ones (found walking back from `until`), so that the range
    and the most recent occurrences are still exact.
    """
    found: list[datetime] = []
    for fire in _fire_times(expr, zone, after):
        if fire > until:
            return found, len(found)
        if len(found) == cap:
            break
        found.append(fire)
    tail = _walk_back(validate_cron(expr), zone, until, TAIL)
    return [found[0], *(t for t in tail if t > found[0])], None


def _walk_back(expr: str, zone: ZoneInfo, until: datetime, count: int) -> list[datetime]:
    """The last `count` fire times at or before `until`, oldest first."""
    from croniter import croniter

    schedule = croniter(expr, until.astimezone(zone).replace(tzinfo=None) + timedelta(seconds=1))
    found: set[datetime] = set()
    while len(found) < count:
        wall: datetime = schedule.get_prev(datetime)
        fire = _resolve(wall, zone)
        if fire <= until:
            found.add(fire)
    return sorted(found)


def _fire_times(expr: str, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    # Checked here rather than in the generator so that bad input fails even for count=0.
    if after.utcoffset() is None:
        raise ValueError("after must be a timezone-aware datetime")
    return _walk(validate_cron(expr), zone, after.astimezone(UTC))


def _walk(expr: str, zone: ZoneInfo, last: datetime) -> Iterator[datetime]:
    from croniter import CroniterBadDateError, croniter

    # Naive local times make croniter step through the wall clock without any DST logic.
    schedule = croniter(expr, last.astimezone(zone).replace(tzinfo=None))
    while True:
        try:
            wall: datetime = schedule.get_next(datetime)
        except CroniterBadDateError as exc:
            raise RecurrenceError(
                f"cron expression {expr!r} has no fire time in the next 50 years", field="cron"
            ) from exc
        fire = _resolve(wall, zone)
        # Repeated wall times resolve to instants at or before `last`, and several skipped
        # ones resolve to the same instant: either way that instant has been used already.
        if fire > last:
            last = fire
            yield fire


def _resolve(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive wall-clock time in `zone` (see the module docstring)."""
    while True:
        # fold=0 picks the first of two repeated times.
        instant = wall.replace(tzinfo=zone).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            return instant
        # A skipped time: the first minute that exists is the one the clocks jumped to.
        wall += timedelta(minutes=1)
