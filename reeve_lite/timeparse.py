"""Parse user time expressions ("when should this pulse fire?") and durations.

Grammar of :func:`parse_when` (case-insensitive, surrounding whitespace ignored, internal
whitespace collapsed):

* ``now``
* ``[in] DURATION``: ``in 5 minutes``, ``2h``, ``in 1h30m``. The duration needs a unit here,
  because a bare number ("in 30", "9") could mean seconds, minutes or a clock time.
* ``[at] TIME``: today at TIME, or tomorrow if TIME has already passed (exactly now is today).
* ``today [at] TIME|PERIOD`` and ``this PERIOD``: an error once that time has passed.
* ``tomorrow [[at] TIME|PERIOD]``: bare ``tomorrow`` means tomorrow at 09:00.
* ``tonight``: today at 22:00, or tomorrow at 22:00 once 22:00 has passed.
* ``[on] [next] WEEKDAY [[at] TIME|PERIOD]``: bare weekday means 09:00. Without ``next`` it
  is the first such weekday and time not in the past, which may be today; with ``next`` it
  is strictly after today (on a Monday ``next monday`` is in 7 days, on a Wednesday
  ``next friday`` is still the day after tomorrow).
* ``in an hour``, ``in a minute`` (``a``/``an`` is one), ``+5m`` (``+`` is ``in``), and
  ``next week`` (this time in 7 days).
* ``MONTH DAY [[at] TIME]`` or ``DAY MONTH [[at] TIME]`` (``dec 1 9am``, ``1 december``,
  ``december 1st at 17:30``), with an optional year; bare date means 09:00; without a year
  it is the next such date to come.
* ``yesterday`` and ``last …`` are refused with the reason: a pulse runs at a time to come.
* ISO 8601 date or date-time: with ``Z`` or an offset it is absolute; without one it is a
  wall-clock time in ``tz``; a date alone is local midnight. Past instants are returned
  as given, the caller decides what that means.

TIME is ``9am``, ``9 am``, ``9:30pm``, ``12am`` (00:00), ``12pm`` (12:00), ``noon``,
``midnight``, ``14:30`` or ``14:30:15``. PERIOD is ``morning`` (08:00), ``afternoon``
(14:00), ``evening`` (18:00) or ``night`` (22:00). Dates like "tomorrow" are counted on
the local calendar, so "tomorrow 9am" is 09:00 local even across a DST change.

Wall-clock times are resolved with ``fold=0``: a time that occurs twice when clocks go
back means its first occurrence, and a time skipped when clocks go forward moves forward
by the size of the gap (02:30 on the spring-forward day in Europe/Berlin is 03:30 CEST).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

__all__ = [
    "TimeParseError",
    "format_duration",
    "parse_duration",
    "parse_recurrence",
    "parse_when",
]


class TimeParseError(ValueError):
    """A time or duration string that cannot be understood; str() is a user-facing message."""


_MAX_INPUT_CHARS = 200
_MAX_QUOTE_CHARS = 60
_MAX_SECONDS = timedelta(days=36525).total_seconds()  # 100 years

_WHEN_HINT = (
    "use 'now', 'in 5 minutes' / 'in an hour' / '2h' / '+5m', 'tomorrow at 9am', 'tonight', "
    "'at 17:30', 'monday 9am', 'next week', 'dec 1 9am', or ISO 8601 like "
    "'2026-12-01T09:00:00Z'; to recur: 'every day at 9am', 'every weekday at 8', "
    "'every monday 9:00', 'every 2 hours', 'every 15 minutes'"
)
_EVERY_HINT = (
    "the recurring forms are 'every minute', 'every 15 minutes', 'every hour', "
    "'every 2 hours', 'every day [at TIME]', 'every weekday [at TIME]', "
    "'every weekend [at TIME]', 'every monday [and friday] [at TIME]', 'every morning'; "
    "for anything else give a 5-field cron expression (--cron '30 9 * * 1-5')"
)
_MONTHS = {
    **dict.fromkeys(("january", "jan"), 1),
    **dict.fromkeys(("february", "feb"), 2),
    **dict.fromkeys(("march", "mar"), 3),
    **dict.fromkeys(("april", "apr"), 4),
    **dict.fromkeys(("may",), 5),
    **dict.fromkeys(("june", "jun"), 6),
    **dict.fromkeys(("july", "jul"), 7),
    **dict.fromkeys(("august", "aug"), 8),
    **dict.fromkeys(("september", "sep", "sept"), 9),
    **dict.fromkeys(("october", "oct"), 10),
    **dict.fromkeys(("november", "nov"), 11),
    **dict.fromkeys(("december", "dec"), 12),
}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_MONTH_DAY_RE = re.compile(
    rf"(?:on )?(?:(?P<mon>{_MONTH}) {_DAY}|{_DAY.replace('day>', 'day2>')} (?P<mon2>{_MONTH}))"
    r",?(?: (?P<year>\d{4}))?(?: (?P<rest>.+))?",
    re.ASCII,
)
_DURATION_HINT = "use e.g. '30s', '90 seconds', '5m', '1.5h', '1h30m', '3 days' or '1 week'"

_UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 604800),
}
_NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(_NUMBER, re.ASCII)
# Longest unit names first so that "5 mins" is read as one component, and the lookahead
# stops "5 ms" from being read as "5 m" followed by garbage.
_COMPONENT_RE = re.compile(
    rf"(?P<amount>{_NUMBER}) ?(?P<unit>{'|'.join(sorted(_UNIT_SECONDS, key=len, reverse=True))})"
    r"(?![a-z]) ?",
    re.ASCII,
)

_AMPM_RE = re.compile(r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))? ?(?P<ampm>am|pm)", re.ASCII)
_24H_RE = re.compile(r"(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?", re.ASCII)
_ISO_START_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:$|[t ])", re.ASCII)

_WEEKDAYS = {
    **dict.fromkeys(("monday", "mon"), 0),
    **dict.fromkeys(("tuesday", "tue", "tues"), 1),
    **dict.fromkeys(("wednesday", "wed"), 2),
    **dict.fromkeys(("thursday", "thu", "thur", "thurs"), 3),
    **dict.fromkeys(("friday", "fri"), 4),
    **dict.fromkeys(("saturday", "sat"), 5),
    **dict.fromkeys(("sunday", "sun"), 6),
}
_WEEKDAY_RE = re.compile(
    rf"(?:on )?(?P<next>next )?(?P<day>{'|'.join(_WEEKDAYS)})(?: (?P<rest>.+))?", re.ASCII
)
_PERIODS = {"morning": time(8), "afternoon": time(14), "evening": time(18), "night": time(22)}
_DEFAULT_TIME = time(9)
_ONE_DAY = timedelta(days=1)


def parse_when(text: str, *, now: datetime, tz: ZoneInfo) -> datetime:
    """Return the UTC, timezone-aware instant that `text` names (see the module docstring).

    `now` must be aware; `tz` is the user's zone for wall-clock forms and offset-less ISO.
    """
    if now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    norm = _normalise(text, "time", _WHEN_HINT)
    try:
        when = _parse_when(norm, text, now, tz).astimezone(UTC)
    except OverflowError as exc:
        # Dates near year 1 or 9999 fall off the end of datetime's range.
        raise TimeParseError(f"time {_quote(text)} is out of range") from exc
    if (when - now).total_seconds() > _MAX_SECONDS:
        raise TimeParseError(f"time {_quote(text)} is too far in the future (over 100 years)")
    return when


def parse_duration(text: str) -> float:
    """Seconds in a duration like "30", "30s", "90 seconds", "5m", "1.5h", "3 days", "1h30m".

    A bare number is seconds. Empty, negative or over 100 years is an error.
    """
    norm = _normalise(text, "duration", _DURATION_HINT)
    body = norm.removeprefix("-").lstrip()
    seconds = float(body) if _NUMBER_RE.fullmatch(body) else _duration_seconds(body)
    if seconds is None:
        raise TimeParseError(f"cannot understand duration {_quote(text)}: {_DURATION_HINT}")
    if body != norm:
        raise TimeParseError(f"duration {_quote(text)} is negative")
    if seconds > _MAX_SECONDS:
        raise TimeParseError(f"duration {_quote(text)} is longer than 100 years")
    return seconds


def format_duration(seconds: float) -> str:
    """Short human form with the two largest units: 0s, 45s, 4m12s, 2h5m, 3d4h."""
    total = round(seconds)
    sign = "-" if total < 0 else ""
    days, rest = divmod(abs(total), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    first = next((i for i, (value, _) in enumerate(units) if value), None)
    if first is None:
        return "0s"
    return sign + "".join(f"{value}{unit}" for value, unit in units[first : first + 2] if value)


def describe_instant(iso: str | None, zone: tzinfo, now: datetime | None = None) -> str:
    """An ISO time stamp for people: `2026-12-01 09:00:00 CET (in 4m12s)` in `zone`."""
    if not iso:
        return "-"
    moment = datetime.fromisoformat(iso)
    delta = (moment - (now or datetime.now(UTC))).total_seconds()
    relative = f"in {format_duration(delta)}" if delta >= 0 else f"{format_duration(-delta)} ago"
    local = moment.astimezone(zone)
    # Labelled with its zone (CET, EDT, UTC …): a bare wall time is ambiguous.
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or 'UTC'} ({relative})"


def _normalise(text: str, kind: str, hint: str) -> str:
    if len(text) > _MAX_INPUT_CHARS:
        raise TimeParseError(
            f"{kind} {_quote(text)} is too long (over {_MAX_INPUT_CHARS} characters)"
        )
    norm = " ".join(text.lower().split())
    if not norm:
        raise TimeParseError(f"empty {kind}: {hint}")
    return norm


def _quote(text: str) -> str:
    # Collapsing whitespace and repr() keep the message on one line whatever the input holds.
    shown = " ".join(text.split())
    if len(shown) > _MAX_QUOTE_CHARS:
        shown = shown[:_MAX_QUOTE_CHARS] + "…"
    return repr(shown)


def _duration_seconds(spec: str) -> float | None:
    """Seconds in a normalised duration whose every component has a unit, else None."""
    total = 0.0
    pos = 0
    while pos < len(spec):
        match = _COMPONENT_RE.match(spec, pos)
        if match is None:
            return None
        total += float(match["amount"]) * _UNIT_SECONDS[match["unit"]]
        pos = match.end()
    return total if pos else None


def _parse_when(norm: str, text: str, now: datetime, tz: ZoneInfo) -> datetime:
    # Aware arithmetic and comparisons within one tzinfo work on wall time, so use UTC.
    now = now.astimezone(UTC)
    today = now.astimezone(tz).date()
    if norm == "now":
        return now
    if _ISO_START_RE.match(norm):
        return _parse_iso(norm, text, tz)

    if norm in ("yesterday", "last night") or norm.startswith(("yesterday ", "last ")):
        raise TimeParseError(
            f"time {_quote(text)} is in the past: a pulse runs at a time to come; "
            "use 'now' to run it at once"
        )
    if norm.startswith("every ") or norm == "every":
        raise TimeParseError(
            f"time {_quote(text)} recurs: give it as the recurrence (cron), not as one time"
        )
    if norm == "next week":
        return now + timedelta(days=7)
    relative = norm.removeprefix("in ").removeprefix("+").lstrip()
    # "in an hour", "in a minute": one of the unit.
    relative = re.sub(r"^an? (?=[a-z])", "1 ", relative)
    seconds = _duration_seconds(relative)
    if seconds is not None:
        if seconds > _MAX_SECONDS:
            raise TimeParseError(f"time {_quote(text)} is too far in the future (over 100 years)")
        return now + timedelta(seconds=seconds)
    if relative.startswith("-") and _duration_seconds(relative[1:].lstrip()) is not None:
        raise TimeParseError(f"time {_quote(text)} is in the past")

    if norm == "tonight":
        at = _wall(today, _PERIODS["night"], tz)
        return at if at >= now else _wall(today + _ONE_DAY, _PERIODS["night"], tz)

    head, _, rest = norm.partition(" ")
    if head == "this" and rest in _PERIODS:
        head = "today"
    if head == "today":
        at = _wall(today, _clock_or_period(rest, text, default=None), tz)
        if at < now:
            raise TimeParseError(f"time {_quote(text)} is in the past")
        return at
    if head == "tomorrow":
        return _wall(today + _ONE_DAY, _clock_or_period(rest, text, _DEFAULT_TIME), tz)

    weekday = _WEEKDAY_RE.fullmatch(norm)
    if weekday is not None:
        clock = _clock_or_period(weekday["rest"] or "", text, _DEFAULT_TIME)
        offset = (_WEEKDAYS[weekday["day"]] - today.weekday()) % 7
        if weekday["next"]:
            offset = offset or 7
        at = _wall(today + timedelta(days=offset), clock, tz)
        # Only possible when offset is 0: today's slot is gone, so take next week's.
        return at if at >= now else _wall(today + timedelta(days=7), clock, tz)

    month_day = _MONTH_DAY_RE.fullmatch(norm)
    if month_day is not None:
        return _month_day(month_day, text, now, today, tz)

    time_of_day = _parse_clock(norm.removeprefix("at "), text)
    if time_of_day is None:
        raise _not_understood(text, norm)
    at = _wall(today, time_of_day, tz)
    return at if at >= now else _wall(today + _ONE_DAY, time_of_day, tz)


def _month_day(
    match: re.Match[str], text: str, now: datetime, today: date, tz: ZoneInfo
) -> datetime:
    """`dec 1 9am`: that date at that time (09:00 without one), this year or, once
    passed and with no year given, the next."""
    month = _MONTHS[match["mon"] or match["mon2"]]
    day = int(match["day"] or match["day2"])
    clock = _clock_or_period(match["rest"] or "", text, _DEFAULT_TIME)
    years = [int(match["year"])] if match["year"] else [today.year, today.year + 1]
    for year in years:
        try:
            at = _wall(date(year, month, day), clock, tz)
        except ValueError:
            raise TimeParseError(f"time {_quote(text)} is not a date of the calendar") from None
        if at >= now or match["year"]:
            return at
    return at


def parse_recurrence(text: str) -> str | None:
    """The 5-field cron expression a recurring phrase means (`every day at 9am` →
    `0 9 * * *`), or None when `text` does not start with `every`."""
    norm = " ".join(text.lower().split())
    if norm != "every" and not norm.startswith("every "):
        return None
    rest = norm.removeprefix("every").strip()

    def fail() -> TimeParseError:
        return TimeParseError(f"cannot read the recurrence {_quote(text)}: {_EVERY_HINT}")

    step = re.fullmatch(r"(?:(?P<n>\d+) )?(?P<unit>minutes?|mins?|hours?|hrs?)", rest)
    if step is not None:
        n = int(step["n"] or 1)
        if step["unit"].startswith("m"):
            if not 1 <= n <= 59 or (step["n"] and step["unit"] in ("minute", "min")):
                raise fail()
            return "* * * * *" if n == 1 else f"*/{n} * * * *"
        if not 1 <= n <= 23 or (step["n"] and step["unit"] in ("hour", "hr")):
            raise fail()
        return "0 * * * *" if n == 1 else f"0 */{n} * * *"
    days, _, when = rest.partition(" at ")
    words = days.split(" ")
    if words[-1] in _PERIODS and not when:  # "every morning", "every monday evening"
        when = words.pop()
        days = " ".join(words) or "day"
    if not when and len(words) > 1 and _parse_clock_quiet(words[-1]) is not None:
        when = words.pop()  # "every monday 9:00"
        days = " ".join(words)
    clock = _DEFAULT_TIME
    if when:
        if when in _PERIODS:
            clock = _PERIODS[when]
        elif when.isdigit() and int(when) <= 23:
            clock = time(int(when))  # "every weekday at 8": after "at", an hour
        else:
            parsed = _parse_clock_quiet(when)
            if parsed is None or parsed.second:
                raise fail()
            clock = parsed
    if days in ("day", "days"):
        dow = "*"
    elif days in ("weekday", "weekdays"):
        dow = "1-5"
    elif days in ("weekend", "weekends"):
        dow = "0,6"
    else:
        names = [d for d in re.split(r",? (?:and )?|,", days) if d]
        if not names or any(d.rstrip("s") not in _WEEKDAYS and d not in _WEEKDAYS for d in names):
            raise fail()
        numbers = sorted(
            {(_WEEKDAYS.get(d, _WEEKDAYS.get(d.rstrip("s"), 0)) + 1) % 7 for d in names}
        )
        dow = ",".join(map(str, numbers))
    return f"{clock.minute} {clock.hour} * * {dow}"


def _parse_clock_quiet(spec: str) -> time | None:
    try:
        return _parse_clock(spec, spec)
    except TimeParseError:
        return None


def _parse_iso(norm: str, text: str, tz: ZoneInfo) -> datetime:
    try:
        parsed = datetime.fromisoformat(norm.upper())
    except ValueError as exc:
        raise TimeParseError(
            f"cannot understand time {_quote(text)}: not a valid ISO 8601 date or date-time"
        ) from exc
    if parsed.utcoffset() is None:
        return _wall(parsed.date(), parsed.time(), tz)
    return parsed.astimezone(UTC)


def _wall(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local wall-clock time.

    With fold=0 zoneinfo reads a repeated time as its first occurrence and a skipped time
    with the offset in force before the gap, which lands it after the gap by the gap's size.
    """
    return datetime.combine(day, clock).replace(tzinfo=tz).astimezone(UTC)


def _clock_or_period(rest: str, text: str, default: time | None) -> time:
    rest = rest.removeprefix("at ")
    if not rest:
        if default is None:
            raise TimeParseError(
                f"cannot understand time {_quote(text)}: say when, e.g. 'today at 17:30'"
            )
        return default
    if rest in _PERIODS:
        return _PERIODS[rest]
    clock = _parse_clock(rest, text)
    if clock is None:
        raise _not_understood(text, rest)
    return clock


def _parse_clock(spec: str, text: str) -> time | None:
    """The time of day `spec` names, None if it is not shaped like one."""
    if spec == "noon":
        return time(12)
    if spec == "midnight":
        return time(0)
    if match := _AMPM_RE.fullmatch(spec):
        hour, minute = int(match["hour"]), int(match["minute"] or 0)
        if 1 <= hour <= 12 and minute <= 59:
            return time(hour % 12 + (12 if match["ampm"] == "pm" else 0), minute)
    elif match := _24H_RE.fullmatch(spec):
        hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"] or 0)
        if hour <= 23 and minute <= 59 and second <= 59:
            return time(hour, minute, second)
    else:
        return None
    raise TimeParseError(f"cannot understand time {_quote(text)}: {spec!r} is not a time of day")


def _not_understood(text: str, fragment: str) -> TimeParseError:
    if _NUMBER_RE.fullmatch(fragment.removeprefix("in ").removeprefix("at ")):
        return TimeParseError(
            f"cannot understand time {_quote(text)}: a bare number is ambiguous, "
            "write 'in 30 minutes', '9am' or '09:00'"
        )
    return TimeParseError(f"cannot understand time {_quote(text)}: {_WHEN_HINT}")
