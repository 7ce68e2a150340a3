"""Tests for reeve_lite.timeparse: every accepted form, rollover rules, DST and errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reeve_lite.timeparse import TimeParseError, format_duration, parse_duration, parse_when
from tests.report import record

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
# Wednesday 2026-06-10 12:00 CEST, i.e. 10:00 UTC.
NOW = datetime(2026, 6, 10, 12, 0, tzinfo=BERLIN)
NOW_UTC = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)

FORMS = (
    "'now'",
    "'in 5 minutes'",
    "'2h'",
    "'tomorrow at 9am'",
    "'tonight'",
    "'at 17:30'",
    "'monday 9am'",
    "'2026-12-01T09:00:00Z'",
)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def when(text: str, now: datetime = NOW, tz: ZoneInfo = BERLIN) -> datetime:
    return parse_when(text, now=now, tz=tz)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", utc(2026, 6, 10, 10, 0)),
        ("NOW", utc(2026, 6, 10, 10, 0)),
        # relative
        ("in 30 seconds", utc(2026, 6, 10, 10, 0, 30)),
        ("in 1 second", utc(2026, 6, 10, 10, 0, 1)),
        ("in 5 minutes", utc(2026, 6, 10, 10, 5)),
        ("in 1 minute", utc(2026, 6, 10, 10, 1)),
        ("in 2 hours", utc(2026, 6, 10, 12, 0)),
        ("in 1 hour", utc(2026, 6, 10, 11, 0)),
        ("in 3 days", utc(2026, 6, 13, 10, 0)),
        ("in 1 day", utc(2026, 6, 11, 10, 0)),
        ("in 1 week", utc(2026, 6, 17, 10, 0)),
        ("in 2 weeks", utc(2026, 6, 24, 10, 0)),
        ("in 5m", utc(2026, 6, 10, 10, 5)),
        ("in 2h", utc(2026, 6, 10, 12, 0)),
        ("in 30s", utc(2026, 6, 10, 10, 0, 30)),
        ("in 3d", utc(2026, 6, 13, 10, 0)),
        ("in 1w", utc(2026, 6, 17, 10, 0)),
        ("5m", utc(2026, 6, 10, 10, 5)),
        ("2 hours", utc(2026, 6, 10, 12, 0)),
        ("in 1h30m", utc(2026, 6, 10, 11, 30)),
        ("1.5h", utc(2026, 6, 10, 11, 30)),
        ("in 0 seconds", utc(2026, 6, 10, 10, 0)),
        ("  In   5   MINUTES  ", utc(2026, 6, 10, 10, 5)),
        # tomorrow
        ("tomorrow at 9am", utc(2026, 6, 11, 7, 0)),
        ("tomorrow 9am", utc(2026, 6, 11, 7, 0)),
        ("tomorrow at 14:30", utc(2026, 6, 11, 12, 30)),
        ("tomorrow 14:30", utc(2026, 6, 11, 12, 30)),
        ("tomorrow 9:15pm", utc(2026, 6, 11, 19, 15)),
        ("tomorrow at noon", utc(2026, 6, 11, 10, 0)),
        ("tomorrow at midnight", utc(2026, 6, 10, 22, 0)),
        ("tomorrow", utc(2026, 6, 11, 7, 0)),
        ("Tomorrow Morning", utc(2026, 6, 11, 6, 0)),
        ("tomorrow afternoon", utc(2026, 6, 11, 12, 0)),
        ("tomorrow evening", utc(2026, 6, 11, 16, 0)),
        ("tomorrow night", utc(2026, 6, 11, 20, 0)),
        # today / this / tonight
        ("tonight", utc(2026, 6, 10, 20, 0)),
        ("this evening", utc(2026, 6, 10, 16, 0)),
        ("this afternoon", utc(2026, 6, 10, 12, 0)),
        ("today at 17:30", utc(2026, 6, 10, 15, 30)),
        ("today 5pm", utc(2026, 6, 10, 15, 0)),
        ("today at noon", utc(2026, 6, 10, 10, 0)),  # exactly now is not the past
        # bare times: today, or tomorrow once passed
        ("at 17:30", utc(2026, 6, 10, 15, 30)),
        ("at 5pm", utc(2026, 6, 10, 15, 0)),
        ("at 5:30pm", utc(2026, 6, 10, 15, 30)),
        ("17:30", utc(2026, 6, 10, 15, 30)),
        ("5pm", utc(2026, 6, 10, 15, 0)),
        ("5 PM", utc(2026, 6, 10, 15, 0)),
        ("14:30:15", utc(2026, 6, 10, 12, 30, 15)),
        ("at 12:00", utc(2026, 6, 10, 10, 0)),  # equal to now counts as today
        ("12pm", utc(2026, 6, 10, 10, 0)),
        ("noon", utc(2026, 6, 10, 10, 0)),
        ("at 11:59", utc(2026, 6, 11, 9, 59)),
        ("at 11am", utc(2026, 6, 11, 9, 0)),
        ("9am", utc(2026, 6, 11, 7, 0)),
        ("9 am", utc(2026, 6, 11, 7, 0)),
        ("9:30am", utc(2026, 6, 11, 7, 30)),
        ("12am", utc(2026, 6, 10, 22, 0)),
        ("midnight", utc(2026, 6, 10, 22, 0)),
        ("00:00", utc(2026, 6, 10, 22, 0)),
        ("23:59:59", utc(2026, 6, 10, 21, 59, 59)),
        # weekdays (today is Wednesday 12:00)
        ("friday 9am", utc(2026, 6, 12, 7, 0)),
        ("friday at 9am", utc(2026, 6, 12, 7, 0)),
        ("fri 9am", utc(2026, 6, 12, 7, 0)),
        ("on friday at 17:30", utc(2026, 6, 12, 15, 30)),
        ("friday", utc(2026, 6, 12, 7, 0)),
        ("friday evening", utc(2026, 6, 12, 16, 0)),
        ("next friday 9:00", utc(2026, 6, 12, 7, 0)),
        ("monday 9am", utc(2026, 6, 15, 7, 0)),
        ("monday at 9am", utc(2026, 6, 15, 7, 0)),
        ("mon 9am", utc(2026, 6, 15, 7, 0)),
        ("next monday 9:00", utc(2026, 6, 15, 7, 0)),
        ("tuesday", utc(2026, 6, 16, 7, 0)),
        ("wednesday 5pm", utc(2026, 6, 10, 15, 0)),  # today, still ahead
        ("wednesday noon", utc(2026, 6, 10, 10, 0)),  # today, exactly now
        ("wednesday 9am", utc(2026, 6, 17, 7, 0)),  # today's 9am has passed
        ("wed", utc(2026, 6, 17, 7, 0)),
        ("next wednesday 5pm", utc(2026, 6, 17, 15, 0)),  # "next" skips today
        ("on next wed at 17:30", utc(2026, 6, 17, 15, 30)),
        # ISO 8601
        ("2026-12-01T09:00:00Z", utc(2026, 12, 1, 9, 0)),
        ("2026-12-01t09:00:00z", utc(2026, 12, 1, 9, 0)),
        ("2026-12-01T09:00:00+02:00", utc(2026, 12, 1, 7, 0)),
        ("2026-12-01T09:00:00-05:00", utc(2026, 12, 1, 14, 0)),
        ("2026-12-01 09:00", utc(2026, 12, 1, 8, 0)),  # local, CET
        ("2026-12-01T09:00", utc(2026, 12, 1, 8, 0)),
        ("2026-07-01T09:00", utc(2026, 7, 1, 7, 0)),  # local, CEST
        ("2026-12-01", utc(2026, 11, 30, 23, 0)),  # local midnight
        ("2020-01-01T00:00:00Z", utc(2020, 1, 1, 0, 0)),  # the past is returned as given
    ],
)
def test_parse_when_forms(text: str, expected: datetime) -> None:
    result = when(text)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", utc(2026, 6, 10, 12, 0)),
        ("tomorrow 9am", utc(2026, 6, 11, 9, 0)),
        ("at 17:30", utc(2026, 6, 10, 17, 30)),
        ("at 11:00", utc(2026, 6, 11, 11, 0)),
        ("tonight", utc(2026, 6, 10, 22, 0)),
        ("monday 9am", utc(2026, 6, 15, 9, 0)),
        ("2026-12-01 09:00", utc(2026, 12, 1, 9, 0)),
        ("2026-12-01", utc(2026, 12, 1, 0, 0)),
    ],
)
def test_parse_when_in_utc_zone(text: str, expected: datetime) -> None:
    assert when(text, now=NOW_UTC, tz=ZoneInfo("UTC")) == expected


@pytest.mark.parametrize(
    "text", ["now", "in 5m", "tomorrow 9am", "at 17:30", "tonight", "fri", "2026-12-01 09:00"]
)
def test_zone_of_now_does_not_matter(text: str) -> None:
    assert when(text, now=NOW.astimezone(NEW_YORK)) == when(text, now=NOW.astimezone(UTC))


@pytest.mark.parametrize(
    ("now", "text", "expected"),
    [
        # at 18:00 Berlin, 17:30 has passed: tomorrow
        (datetime(2026, 6, 10, 18, 0, tzinfo=BERLIN), "at 17:30", utc(2026, 6, 11, 15, 30)),
        (datetime(2026, 6, 10, 18, 0, tzinfo=BERLIN), "5pm", utc(2026, 6, 11, 15, 0)),
        (datetime(2026, 6, 10, 17, 29, tzinfo=BERLIN), "at 17:30", utc(2026, 6, 10, 15, 30)),
        # tonight: today until 22:00, then tomorrow
        (datetime(2026, 6, 10, 21, 59, tzinfo=BERLIN), "tonight", utc(2026, 6, 10, 20, 0)),
        (datetime(2026, 6, 10, 22, 0, tzinfo=BERLIN), "tonight", utc(2026, 6, 10, 20, 0)),
        (datetime(2026, 6, 10, 23, 0, tzinfo=BERLIN), "tonight", utc(2026, 6, 11, 20, 0)),
        # near midnight "tomorrow" is the next local date, not now + 24h
        (datetime(2026, 6, 10, 23, 30, tzinfo=BERLIN), "tomorrow 9am", utc(2026, 6, 11, 7, 0)),
        (datetime(2026, 6, 11, 0, 30, tzinfo=BERLIN), "tomorrow 9am", utc(2026, 6, 12, 7, 0)),
        # today is Monday: bare weekday may be today, "next" never is
        (datetime(2026, 6, 15, 8, 0, tzinfo=BERLIN), "monday 9am", utc(2026, 6, 15, 7, 0)),
        (datetime(2026, 6, 15, 10, 0, tzinfo=BERLIN), "monday 9am", utc(2026, 6, 22, 7, 0)),
        (datetime(2026, 6, 15, 8, 0, tzinfo=BERLIN), "next monday 9am", utc(2026, 6, 22, 7, 0)),
        (datetime(2026, 6, 15, 8, 0, tzinfo=BERLIN), "monday", utc(2026, 6, 15, 7, 0)),
        (datetime(2026, 6, 15, 9, 0, tzinfo=BERLIN), "monday", utc(2026, 6, 15, 7, 0)),
        (datetime(2026, 6, 15, 9, 1, tzinfo=BERLIN), "monday", utc(2026, 6, 22, 7, 0)),
        # Sunday -> Monday wraps the week
        (datetime(2026, 6, 14, 20, 0, tzinfo=BERLIN), "mon 9am", utc(2026, 6, 15, 7, 0)),
        (datetime(2026, 6, 14, 20, 0, tzinfo=BERLIN), "sunday 9am", utc(2026, 6, 21, 7, 0)),
        (datetime(2026, 6, 14, 20, 0, tzinfo=BERLIN), "sunday 9pm", utc(2026, 6, 14, 19, 0)),
    ],
)
def test_rollover_rules(now: datetime, text: str, expected: datetime) -> None:
    assert when(text, now=now) == expected


@pytest.mark.parametrize(
    ("name", "weekday"),
    [
        ("monday", 0),
        ("mon", 0),
        ("tuesday", 1),
        ("tue", 1),
        ("tues", 1),
        ("wednesday", 2),
        ("wed", 2),
        ("thursday", 3),
        ("thu", 3),
        ("thur", 3),
        ("thurs", 3),
        ("friday", 4),
        ("fri", 4),
        ("saturday", 5),
        ("sat", 5),
        ("sunday", 6),
        ("sun", 6),
    ],
)
def test_weekday_names(name: str, weekday: int) -> None:
    for text in (f"{name} 10am", f"next {name} 10am"):
        local = when(text).astimezone(BERLIN)
        assert local.weekday() == weekday
        assert (local.hour, local.minute) == (10, 0)
        assert NOW < local <= NOW + timedelta(days=7)


@pytest.mark.parametrize(
    ("tz", "now", "text", "expected"),
    [
        # Berlin springs forward on 2026-03-29: wall-clock forms keep the local time ...
        (BERLIN, (2026, 3, 28, 12), "tomorrow 9am", utc(2026, 3, 29, 7)),
        (BERLIN, (2026, 3, 28, 12), "at 11:00", utc(2026, 3, 29, 9)),
        (BERLIN, (2026, 3, 28, 12), "sunday", utc(2026, 3, 29, 7)),
        # ... while a duration is exact elapsed time (13:00 CEST, not 12:00)
        (BERLIN, (2026, 3, 28, 12), "in 1 day", utc(2026, 3, 29, 11)),
        (BERLIN, (2026, 3, 29, 1), "in 2 hours", utc(2026, 3, 29, 2)),
        # and falls back on 2026-10-25
        (BERLIN, (2026, 10, 24, 12), "tomorrow 9am", utc(2026, 10, 25, 8)),
        (BERLIN, (2026, 10, 24, 12), "in 1 day", utc(2026, 10, 25, 10)),
        # New York: 2026-03-08 and 2026-11-01
        (NEW_YORK, (2026, 3, 7, 12), "tomorrow 9am", utc(2026, 3, 8, 13)),
        (NEW_YORK, (2026, 10, 31, 12), "tomorrow 9am", utc(2026, 11, 1, 14)),
        # 02:30 does not exist on spring-forward day: moved forward by the gap to 03:30
        (BERLIN, (2026, 3, 28, 12), "tomorrow 2:30am", utc(2026, 3, 29, 1, 30)),
        (BERLIN, (2026, 3, 28, 12), "2026-03-29T02:30", utc(2026, 3, 29, 1, 30)),
        (NEW_YORK, (2026, 3, 7, 12), "tomorrow 2:30am", utc(2026, 3, 8, 7, 30)),
        # a time repeated on fall-back day means its first occurrence (still summer time)
        (BERLIN, (2026, 10, 24, 12), "tomorrow 2:30am", utc(2026, 10, 25, 0, 30)),
        (BERLIN, (2026, 10, 24, 12), "2026-10-25 02:30", utc(2026, 10, 25, 0, 30)),
        (NEW_YORK, (2026, 10, 31, 12), "tomorrow 1:30am", utc(2026, 11, 1, 5, 30)),
    ],
)
def test_dst(tz: ZoneInfo, now: tuple[int, int, int, int], text: str, expected: datetime) -> None:
    assert when(text, now=datetime(*now, tzinfo=tz), tz=tz) == expected


def test_tomorrow_keeps_wall_clock_across_dst() -> None:
    before = datetime(2026, 3, 28, 9, 0, tzinfo=BERLIN)
    after = when("tomorrow 9am", now=before).astimezone(BERLIN)
    assert (after.date().isoformat(), after.hour, after.minute) == ("2026-03-29", 9, 0)
    assert after.astimezone(UTC) - before.astimezone(UTC) == timedelta(hours=23)


def test_today_in_the_past_is_an_error() -> None:
    with pytest.raises(TimeParseError, match=r"'today at 9am' is in the past"):
        when("today at 9am")
    with pytest.raises(TimeParseError, match="in the past"):
        when("this morning")


@pytest.mark.parametrize(
    "text",
    [
        "next blursday",
        "blursday",
        "tomorrow at",
        "tomorrow at lunch",
        "today at tea time",
        "at",
        "in",
        "in 5 parsecs",
        "5 ms",
        "in 1h30",
        "on tomorrow",
        "this friday",
        "next",
        "monday at",
        "5 o'clock",
        "9.30am",
    ],
)
def test_not_understood_message(text: str) -> None:
    with pytest.raises(TimeParseError) as info:
        when(text)
    message = str(info.value)
    assert repr(text) in message
    assert message.startswith("cannot understand time")
    assert all(form in message for form in FORMS)
    assert "\n" not in message


@pytest.mark.parametrize("text", ["9", "at 9", "in 30", "tomorrow 9", "monday 17", "1.5"])
def test_bare_number_is_ambiguous(text: str) -> None:
    with pytest.raises(TimeParseError, match="bare number is ambiguous") as info:
        when(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    "text",
    ["25:00", "at 25:00", "24:00", "13pm", "0am", "9:60", "9:60am", "12:00:60", "tomorrow 13pm"],
)
def test_out_of_range_time(text: str) -> None:
    with pytest.raises(TimeParseError, match="is not a time of day") as info:
        when(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty time"),
        ("   ", "empty time"),
        ("in -5 minutes", "in the past"),
        ("-5m", "in the past"),
        ("in 99999999999 days", "too far in the future"),
        ("in 36526 days", "too far in the future"),
        ("2026-13-01", "not a valid ISO 8601"),
        ("2026-02-30T09:00", "not a valid ISO 8601"),
        ("2026-12-01Tnine", "not a valid ISO 8601"),
        ("9999-12-31T23:00:00-02:00", "out of range"),
        ("0001-01-01T00:00:00+01:00", "out of range"),
        ("today", "say when"),
    ],
)
def test_specific_errors(text: str, fragment: str) -> None:
    with pytest.raises(TimeParseError, match=fragment):
        when(text)


def test_empty_error_lists_forms() -> None:
    with pytest.raises(TimeParseError) as info:
        when("")
    assert all(form in str(info.value) for form in FORMS)


def test_long_input_is_truncated_in_message() -> None:
    with pytest.raises(TimeParseError, match="too long") as info:
        when("in 5 minutes " + "x" * 10_000)
    message = str(info.value)
    assert len(message) < 150
    assert "'in 5 minutes xxx" in message
    assert "…" in message


def test_exactly_200_chars_is_not_too_long() -> None:
    text = "in 5 minutes".ljust(200)
    assert when(text) == utc(2026, 6, 10, 10, 5)
    with pytest.raises(TimeParseError, match="too long"):
        when(text + " ")


def test_message_stays_on_one_line() -> None:
    with pytest.raises(TimeParseError) as info:
        when("next\nblursday\r\x00")
    assert "'next blursday" in str(info.value)
    assert "\n" not in str(info.value)
    assert "\r" not in str(info.value)


def test_near_the_end_of_time() -> None:
    end = datetime(9999, 12, 31, 12, 0, tzinfo=UTC)
    for text in ("tomorrow", "in 1 day", "at 11:00", "friday"):
        with pytest.raises(TimeParseError, match="out of range"):
            when(text, now=end, tz=ZoneInfo("UTC"))
    assert when("in 1 hour", now=end, tz=ZoneInfo("UTC")) == utc(9999, 12, 31, 13, 0)
    assert when("tonight", now=end, tz=ZoneInfo("UTC")) == utc(9999, 12, 31, 22, 0)


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware") as info:
        parse_when("now", now=datetime(2026, 6, 10, 12, 0), tz=BERLIN)
    assert not isinstance(info.value, TimeParseError)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("0", 0.0),
        ("2.5", 2.5),
        ("30s", 30.0),
        ("1 sec", 1.0),
        ("90 seconds", 90.0),
        ("1 second", 1.0),
        ("5m", 300.0),
        ("5 min", 300.0),
        ("10 mins", 600.0),
        ("1 minute", 60.0),
        (".5m", 30.0),
        ("2h", 7200.0),
        ("1 hr", 3600.0),
        ("2 hrs", 7200.0),
        ("1.5h", 5400.0),
        ("3 hours", 10800.0),
        ("3 days", 259200.0),
        ("1d", 86400.0),
        ("1 week", 604800.0),
        ("2 wks", 1209600.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1 hour 30 minutes", 5400.0),
        ("1d2h3m4s", 93784.0),
        ("  5 M  ", 300.0),
        ("36525 days", 36525 * 86400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("-5m", "negative"),
        ("-5", "negative"),
        ("- 1 hour", "negative"),
        ("abc", "cannot understand duration 'abc'"),
        ("-abc", "cannot understand duration '-abc'"),
        ("5 parsecs", "cannot understand duration"),
        ("5 ms", "cannot understand duration"),
        ("1h30", "cannot understand duration"),
        ("1.h", "cannot understand duration"),
        ("1e3", "cannot understand duration"),
        ("nan", "cannot understand duration"),
        ("inf", "cannot understand duration"),
        ("m5", "cannot understand duration"),
        ("٣m", "cannot understand duration"),  # non-ASCII digit
        ("36526 days", "longer than 100 years"),
        ("99999999999999999999 weeks", "longer than 100 years"),
        ("1" * 201, "too long"),
    ],
)
def test_parse_duration_errors(text: str, fragment: str) -> None:
    with pytest.raises(TimeParseError, match=fragment):
        parse_duration(text)


def test_parse_duration_error_lists_examples() -> None:
    with pytest.raises(TimeParseError) as info:
        parse_duration("soon")
    assert all(example in str(info.value) for example in ("'30s'", "'5m'", "'1h30m'"))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (45, "45s"),
        (59.6, "1m"),
        (60, "1m"),
        (252, "4m12s"),
        (3600, "1h"),
        (7500, "2h5m"),
        (7505, "2h5m"),
        (86400 + 30, "1d"),
        (273600, "3d4h"),
        (-90, "-1m30s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=3599))
def test_format_duration_round_trips_under_an_hour(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


UNITS = {"s": 1, "seconds": 1, "m": 60, "minutes": 60, "h": 3600, "hour": 3600, "d": 86400}


@given(st.integers(min_value=0, max_value=36525), st.sampled_from(sorted(UNITS)))
@settings(max_examples=300, deadline=None)
def test_relative_amounts(amount: int, unit: str) -> None:
    expected = NOW.astimezone(UTC) + timedelta(seconds=amount * UNITS[unit])
    assert when(f"in {amount} {unit}") == expected
    assert when(f"{amount}{unit}") == expected


GRAMMAR_WORDS = [
    *("now", "in", "at", "on", "next", "today", "tomorrow", "tonight", "this", "noon"),
    *("midnight", "morning", "afternoon", "evening", "night", "monday", "mon", "fri"),
    *("sunday", "am", "pm", "s", "m", "h", "d", "w", "seconds", "minute", "hours", "days"),
    *("week", "-", ":", ".", "t", "z", "+", "2026-12-01", "9999-12-31", "0001-01-01"),
    *("T23:59", "+14:00", "-23:59", "00:00", "12", "13", "24", "60", "99999999999"),
]
grammar_text = st.tuples(
    st.lists(
        st.one_of(
            st.sampled_from(GRAMMAR_WORDS),
            st.integers(min_value=0, max_value=10**15).map(str),
            st.text(alphabet="0123456789:.-+ ", max_size=6),
        ),
        max_size=6,
    ),
    st.sampled_from([" ", ""]),
).map(lambda words_sep: words_sep[1].join(words_sep[0]))
any_now = st.datetimes(timezones=st.sampled_from([UTC, BERLIN, NEW_YORK]))


def check_when(text: str, now: datetime, tz: ZoneInfo) -> None:
    try:
        result = parse_when(text, now=now, tz=tz)
    except TimeParseError as exc:
        message = str(exc)
    else:
        assert result.tzinfo is UTC
        return
    assert message
    assert "\n" not in message


@given(st.text(max_size=250))
@settings(max_examples=300, deadline=None)
def test_parse_when_only_raises_time_parse_error(text: str) -> None:
    check_when(text, NOW, BERLIN)


@given(grammar_text, any_now, st.sampled_from([BERLIN, NEW_YORK, ZoneInfo("UTC")]))
@settings(max_examples=300, deadline=None)
def test_parse_when_grammar_words_only_raise_time_parse_error(
    text: str, now: datetime, tz: ZoneInfo
) -> None:
    check_when(text, now, tz)


@given(
    st.datetimes(),
    st.sampled_from(["", "Z", "+14:00", "-12:00", "+05:30", "-00:01"]),
    st.sampled_from(["T", " "]),
)
@settings(max_examples=300, deadline=None)
def test_iso_only_raises_time_parse_error(moment: datetime, offset: str, sep: str) -> None:
    check_when(moment.isoformat(sep=sep) + offset, NOW, NEW_YORK)


@given(st.one_of(st.text(max_size=250), grammar_text))
@settings(max_examples=300, deadline=None)
def test_parse_duration_only_raises_time_parse_error(text: str) -> None:
    check_duration(text)


def check_duration(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except TimeParseError as exc:
        message = str(exc)
    else:
        assert 0 <= seconds <= 36525 * 86400
        return
    assert message
    assert "\n" not in message


# Hostile text: control and format characters, odd spaces, digits of other scripts
# (which \d and str.isdigit() accept but int() may not), numbers far past any range,
# and text far past the length limit.
ODD_CHARACTERS = "".join(
    map(chr, [*range(32), 0x7F, 0x85, 0xA0, 0x200B, 0x2028, 0x2029, 0x3000, 0xFEFF])
)
# Arabic-Indic, Devanagari, Gurmukhi, fullwidth, mathematical bold, superscripts,
# a fraction, a Roman numeral, the ideographic zero.
OTHER_DIGITS = (
    "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"
    "\u0966\u0967\u0968\u0969\u0a66\u0a67"
    "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19"
    "\U0001d7ce\U0001d7cf\U0001d7d7\u00b2\u00b3\u00b9\u2070\u00bd\u216b\u3007"
)
hostile_text = st.one_of(
    st.lists(
        st.one_of(
            st.text(),
            st.text(alphabet=ODD_CHARACTERS + OTHER_DIGITS + " :.-+tz", max_size=30),
            st.integers(min_value=0, max_value=10**400).map(str),
            st.sampled_from([*GRAMMAR_WORDS, "1e309", "inf", "nan", "-0", "0x10", "1_000"]),
        ),
        max_size=8,
    ).map(" ".join),
    st.text(min_size=190, max_size=5000),
)
extreme_now = st.one_of(
    any_now,
    st.sampled_from([datetime.min, datetime.max]).map(lambda d: d.replace(tzinfo=UTC)),
)
HOSTILE_EXAMPLES = 500


def test_hostile_text_only_raises_time_parse_error() -> None:
    cases = 0

    @given(hostile_text, extreme_now, st.sampled_from([BERLIN, NEW_YORK, ZoneInfo("UTC")]))
    @settings(max_examples=HOSTILE_EXAMPLES, deadline=None, derandomize=True, database=None)
    def check(text: str, now: datetime, tz: ZoneInfo) -> None:
        nonlocal cases
        cases += 1
        check_when(text, now, tz)
        check_duration(text)

    check()
    assert cases >= HOSTILE_EXAMPLES
    record(
        "hostile input",
        "time parser: arbitrary text (control characters, other scripts' digits, "
        "400-digit numbers, 5000 characters), times near year 1 and 9999",
        f"{cases} texts, each through parse_when and parse_duration: only TimeParseError",
    )


@pytest.mark.parametrize(
    "digits", ["\u0665", "\u096b", "\uff15", "\U0001d7d3", "\u2075", "\u00bd", "\u2164"]
)
def test_digits_of_other_scripts_are_refused(digits: str) -> None:
    # They are numbers to str.isdigit() or \d; a time is written in ASCII digits.
    for text in (f"in {digits} minutes", f"{digits}m", f"at {digits}:00", f"{digits}pm"):
        with pytest.raises(TimeParseError):
            when(text)
    for text in (digits, f"{digits}s", f"{digits} hours"):
        with pytest.raises(TimeParseError):
            parse_duration(text)


def test_iso_times_share_the_100_year_bound() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    with pytest.raises(TimeParseError, match="too far in the future"):
        parse_when("9999-12-31T23:59:59Z", now=now, tz=ZoneInfo("UTC"))
    assert parse_when("2126-01-01T00:00:00Z", now=now, tz=ZoneInfo("UTC")).year == 2126


def test_describe_instant_for_people() -> None:
    from reeve_lite.timeparse import describe_instant

    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert describe_instant("2026-11-25T12:04:12Z", UTC, now) == (
        "2026-11-25 12:04:12 UTC (in 4m12s)"
    )
    assert describe_instant("2026-11-25T11:00:00Z", ZoneInfo("Europe/Berlin"), now) == (
        "2026-11-25 12:00:00 CET (1h ago)"
    )
    assert describe_instant(None, UTC, now) == "-"
