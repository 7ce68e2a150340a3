"""Tests for reeve_lite.recurrence: validation, fire times and DST behaviour."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reeve_lite.recurrence import (
    RecurrenceError,
    load_zone,
    next_occurrence,
    next_occurrences,
    validate_cron,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
# Wednesday 2026-06-10 12:00 UTC.
AFTER = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    "name",
    ["Europe/Berlin", "UTC", "America/New_York", "Etc/GMT+5", "America/Argentina/Buenos_Aires"],
)
def test_load_zone(name: str) -> None:
    assert load_zone(name) == ZoneInfo(name)
    assert load_zone(name).key == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "../etc",
        "../../etc/passwd",
        "/etc/passwd",
        "Europe/../Europe/Berlin",
        "Europe",
        "Europe/",
        "Europe/Berlin ",
        "Nowhere/Special",
        "zone.tab",
        "a\x00b",
        "Europe\\Berlin",
    ],
)
def test_load_zone_rejects(name: str) -> None:
    with pytest.raises(RecurrenceError, match="unknown time zone") as info:
        load_zone(name)
    assert info.value.field == "timezone"
    assert repr(name) in str(info.value)


def test_load_zone_error_does_not_echo_huge_names() -> None:
    with pytest.raises(RecurrenceError) as info:
        load_zone("x" * 10_000)
    assert len(str(info.value)) < 200


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_load_zone_only_raises_recurrence_error(name: str) -> None:
    try:
        zone = load_zone(name)
    except RecurrenceError as exc:
        field = exc.field
    else:
        assert zone.key == name
        return
    assert field == "timezone"


@pytest.mark.parametrize(
    ("expr", "normalised"),
    [
        ("30 9 * * 1-5", "30 9 * * 1-5"),
        ("  30   9 *\t* 1-5 \n", "30 9 * * 1-5"),
        ("*/15 * * * *", "*/15 * * * *"),
        ("0 0 * * mon-fri", "0 0 * * mon-fri"),
        ("0 9 1,15 * *", "0 9 1,15 * *"),
        ("0 0 L * *", "0 0 L * *"),
        ("0 12 * * 5#3", "0 12 * * 5#3"),
        ("0 0 29 2 *", "0 0 29 2 *"),
        ("0 0 * jan,jul thu", "0 0 * jan,jul thu"),
        ("@hourly", "@hourly"),
        ("@DAILY", "@daily"),
        ("@weekly", "@weekly"),
        ("@monthly", "@monthly"),
        ("@yearly", "@yearly"),
        ("@annually", "@annually"),
        ("@midnight", "@midnight"),
    ],
)
def test_validate_cron(expr: str, normalised: str) -> None:
    assert validate_cron(expr) == normalised


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("* * * * * *", "has 6 fields, but 5 fields are expected"),
        ("0 30 9 * * 1-5", "has 6 fields, but 5 fields are expected"),
        ("0 0 0 * * * 2030", "has 7 fields, but 5 fields are expected"),
        ("* * * *", "has 4 fields"),
        ("", "has 0 fields"),
        ("x", "has 1 field,"),
        ("60 * * * *", "invalid cron expression"),
        ("* 24 * * *", "invalid cron expression"),
        ("* * 32 * *", "invalid cron expression"),
        ("* * * 13 *", "invalid cron expression"),
        ("* * * * 8", "invalid cron expression"),
        ("*/0 * * * *", "invalid cron expression"),
        ("a b c d e", "invalid cron expression"),
        ("0 0 30 2 *", "invalid cron expression"),  # 30 February never happens
        ("0 0 31 4,6 *", "invalid cron expression"),
        ("@reboot", "invalid cron expression"),
        ("@hourly *", "has 2 fields"),
        ("H * * * *", "'H', 'R'"),
        ("H/15 * * * *", "'H', 'R'"),
        ("0 H(0-6) * * *", "'H', 'R'"),
        ("R * * * *", "'H', 'R'"),
        ("0,r * * * *", "'H', 'R'"),
    ],
)
def test_validate_cron_rejects(expr: str, fragment: str) -> None:
    with pytest.raises(RecurrenceError, match=fragment) as info:
        validate_cron(expr)
    assert info.value.field == "cron"
    assert repr(" ".join(expr.split())) in str(info.value)


@pytest.mark.parametrize("expr", ["0 30 9 * * 1-5", "0 0 0 * * * 2030", "60 * * * *"])
def test_validate_cron_message_explains_the_fields(expr: str) -> None:
    with pytest.raises(RecurrenceError) as info:
        validate_cron(expr)
    assert "'minute hour day-of-month month day-of-week', e.g. '30 9 * * 1-5'" in str(info.value)


CRON_TOKENS = ["*", "*/5", "0", "30", "9", "1-5", "mon-fri", "jan", "L", "5#3", "15W", "H", "R"]
cron_text = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.one_of(st.sampled_from(CRON_TOKENS), st.text(alphabet="0123456789*/,-#LW", max_size=5)),
        max_size=8,
    ).map(" ".join),
)


@given(cron_text)
@settings(max_examples=300, deadline=None)
def test_validate_cron_only_raises_recurrence_error(expr: str) -> None:
    try:
        normalised = validate_cron(expr)
    except RecurrenceError as exc:
        field = exc.field
    else:
        assert normalised == " ".join(expr.split()) or normalised.startswith("@")
        assert validate_cron(normalised) == normalised
        return
    assert field == "cron"


@pytest.mark.parametrize(
    ("expr", "zone", "after", "expected"),
    [
        # weekday mornings; AFTER is Wednesday 12:00 UTC
        ("30 9 * * 1-5", "UTC", AFTER, utc(2026, 6, 11, 9, 30)),
        ("30 9 * * 1-5", "Europe/Berlin", AFTER, utc(2026, 6, 11, 7, 30)),
        ("30 9 * * 1-5", "America/New_York", AFTER, utc(2026, 6, 10, 13, 30)),
        ("30 9 * * 1-5", "UTC", utc(2026, 6, 12, 10, 0), utc(2026, 6, 15, 9, 30)),  # Fri->Mon
        # strictly after: an exact fire time is not returned again
        ("30 9 * * 1-5", "UTC", utc(2026, 6, 11, 9, 30), utc(2026, 6, 12, 9, 30)),
        (
            "30 9 * * 1-5",
            "UTC",
            datetime(2026, 6, 11, 9, 29, 59, 999999, UTC),
            utc(2026, 6, 11, 9, 30),
        ),
        ("*/15 * * * *", "UTC", utc(2026, 6, 10, 10, 7), utc(2026, 6, 10, 10, 15)),
        ("*/15 * * * *", "UTC", utc(2026, 6, 10, 10, 15), utc(2026, 6, 10, 10, 30)),
        ("* * * * *", "UTC", datetime(2026, 6, 10, 10, 7, 30, tzinfo=UTC), utc(2026, 6, 10, 10, 8)),
        ("0 9 1 * *", "America/New_York", AFTER, utc(2026, 7, 1, 13, 0)),
        ("0 0 L * *", "UTC", AFTER, utc(2026, 6, 30, 0, 0)),
        ("0 0 29 2 *", "UTC", AFTER, utc(2028, 2, 29, 0, 0)),
        ("@hourly", "Europe/Berlin", AFTER, utc(2026, 6, 10, 13, 0)),
        ("@daily", "Europe/Berlin", AFTER, utc(2026, 6, 10, 22, 0)),
        ("@weekly", "UTC", AFTER, utc(2026, 6, 14, 0, 0)),  # Sunday
        ("@yearly", "Asia/Tokyo", AFTER, utc(2026, 12, 31, 15, 0)),
        # whitespace does not matter
        ("  0   9 * * *  ", "UTC", AFTER, utc(2026, 6, 11, 9, 0)),
        # zone with a 30-minute offset
        ("0 9 * * *", "Asia/Kolkata", AFTER, utc(2026, 6, 11, 3, 30)),
    ],
)
def test_next_occurrence(expr: str, zone: str, after: datetime, expected: datetime) -> None:
    result = next_occurrence(expr, ZoneInfo(zone), after)
    assert result == expected
    assert result.tzinfo is UTC


def test_zone_of_after_does_not_matter() -> None:
    for after in (AFTER, AFTER.astimezone(BERLIN), AFTER.astimezone(ZoneInfo("Asia/Tokyo"))):
        assert next_occurrence("30 9 * * 1-5", NEW_YORK, after) == utc(2026, 6, 10, 13, 30)


def test_next_occurrences() -> None:
    friday_noon = datetime(2026, 6, 12, 12, 0, tzinfo=BERLIN)
    assert next_occurrences("30 9 * * 1-5", BERLIN, friday_noon, 4) == [
        utc(2026, 6, 15, 7, 30),
        utc(2026, 6, 16, 7, 30),
        utc(2026, 6, 17, 7, 30),
        utc(2026, 6, 18, 7, 30),
    ]
    assert next_occurrences("30 9 * * 1-5", BERLIN, friday_noon, 0) == []
    assert next_occurrences("@monthly", NEW_YORK, AFTER, 3) == [
        utc(2026, 7, 1, 4, 0),
        utc(2026, 8, 1, 4, 0),
        utc(2026, 9, 1, 4, 0),
    ]


def test_naive_after_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware") as info:
        next_occurrence("* * * * *", BERLIN, datetime(2026, 6, 10, 12, 0))
    assert not isinstance(info.value, RecurrenceError)


def test_invalid_expression_is_rejected_when_computing() -> None:
    with pytest.raises(RecurrenceError) as info:
        next_occurrence("* * * * * *", BERLIN, AFTER)
    assert info.value.field == "cron"
    with pytest.raises(RecurrenceError):
        next_occurrences("* * * * * *", BERLIN, AFTER, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        next_occurrences("* * * * *", BERLIN, datetime(2026, 6, 10), 0)


def test_expression_that_never_fires() -> None:
    # With '#', croniter intersects day-of-month and day-of-week: February 1st is never
    # the fifth Monday of February, which validation cannot see.
    assert validate_cron("0 0 1 2 1#5") == "0 0 1 2 1#5"
    with pytest.raises(RecurrenceError, match="no fire time in the next 50 years") as info:
        next_occurrence("0 0 1 2 1#5", ZoneInfo("UTC"), AFTER)
    assert info.value.field == "cron"


def fires_on(expr: str, zone: ZoneInfo, day: date) -> list[datetime]:
    """Every fire time whose local date is `day`."""
    start = datetime.combine(day - timedelta(days=1), datetime.min.time(), zone)
    times = next_occurrences(expr, zone, start, 200)
    return [t for t in times if t.astimezone(zone).date() == day]


@pytest.mark.parametrize(
    ("zone", "day", "expr", "expected"),
    [
        # spring forward: 02:30 does not exist and fires once, when clocks jump to 03:00
        (BERLIN, date(2026, 3, 29), "30 2 * * *", utc(2026, 3, 29, 1, 0)),
        (NEW_YORK, date(2026, 3, 8), "30 2 * * *", utc(2026, 3, 8, 7, 0)),
        # fall back: the repeated time fires once, at its first occurrence
        (BERLIN, date(2026, 10, 25), "30 2 * * *", utc(2026, 10, 25, 0, 30)),
        (NEW_YORK, date(2026, 11, 1), "30 1 * * *", utc(2026, 11, 1, 5, 30)),
        (NEW_YORK, date(2026, 11, 1), "30 2 * * *", utc(2026, 11, 1, 7, 30)),  # not repeated
        # times next to the change are untouched
        (BERLIN, date(2026, 3, 29), "30 1 * * *", utc(2026, 3, 29, 0, 30)),
        (BERLIN, date(2026, 3, 29), "30 3 * * *", utc(2026, 3, 29, 1, 30)),
        (BERLIN, date(2026, 10, 25), "30 3 * * *", utc(2026, 10, 25, 2, 30)),
    ],
)
def test_daily_job_fires_once_on_dst_days(
    zone: ZoneInfo, day: date, expr: str, expected: datetime
) -> None:
    assert fires_on(expr, zone, day) == [expected]
    # and fires at its wall-clock time on the days around the change
    hour = int(expr.split()[1])
    for other in (day - timedelta(days=1), day + timedelta(days=1)):
        (fire,) = fires_on(expr, zone, other)
        local = fire.astimezone(zone)
        assert (local.hour, local.minute) == (hour, 30)


@pytest.mark.parametrize(
    ("zone", "day", "count"),
    [
        (BERLIN, date(2026, 3, 29), 23),  # 02:00 does not exist: fires with 03:00
        (BERLIN, date(2026, 10, 25), 24),  # 02:00 happens twice but fires once
        (NEW_YORK, date(2026, 3, 8), 23),
        (NEW_YORK, date(2026, 11, 1), 24),
        (BERLIN, date(2026, 6, 10), 24),
    ],
)
def test_hourly_job_on_dst_days(zone: ZoneInfo, day: date, count: int) -> None:
    fires = fires_on("0 * * * *", zone, day)
    assert len(fires) == count
    assert [t.astimezone(zone).hour for t in fires] == sorted(
        {t.astimezone(zone).hour for t in fires}
    )


def test_skipped_hour_does_not_duplicate_fire_times() -> None:
    # 02:00/02:20/02:40 do not exist and fire once, together with 03:00.
    fires = fires_on("*/20 2,3 * * *", BERLIN, date(2026, 3, 29))
    assert [t.astimezone(BERLIN).strftime("%H:%M%z") for t in fires] == [
        "03:00+0200",
        "03:20+0200",
        "03:40+0200",
    ]


def test_half_hour_gap_keeps_fire_times_in_order() -> None:
    # Lord Howe Island jumps from 02:00 to 02:30 on 2026-10-04. Shifting 02:07 by the gap
    # would give 02:37, after the real 02:35; instead all skipped times fire at 02:30.
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    after = datetime(2026, 10, 4, 1, 50, tzinfo=lord_howe)
    fires = next_occurrences("*/7 * * * *", lord_howe, after, 4)
    assert [t.astimezone(lord_howe).strftime("%H:%M%z") for t in fires] == [
        "01:56+1030",
        "02:30+1100",
        "02:35+1100",
        "02:42+1100",
    ]


def test_after_inside_the_repeated_hour() -> None:
    # 02:15 CET is the second pass through 02:15; 02:30 already fired in the first pass.
    second_pass = datetime(2026, 10, 25, 2, 15, fold=1, tzinfo=BERLIN)
    assert second_pass.astimezone(UTC) == utc(2026, 10, 25, 1, 15)
    assert next_occurrence("30 2 * * *", BERLIN, second_pass) == utc(2026, 10, 26, 1, 30)
    assert next_occurrence("0 3 * * *", BERLIN, second_pass) == utc(2026, 10, 25, 2, 0)
    first_pass = datetime(2026, 10, 25, 2, 15, fold=0, tzinfo=BERLIN)
    assert next_occurrence("30 2 * * *", BERLIN, first_pass) == utc(2026, 10, 25, 0, 30)


DST_ZONES = [BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("UTC")]
EXPRESSIONS = ["* * * * *", "*/7 * * * *", "0 * * * *", "30 1,2,3 * * *", "15 2 * * *", "@daily"]
# Windows around the 2026 changes of the zones above, so DST days come up often.
dst_moments = st.sampled_from(
    [
        datetime(2026, 3, 28, 23, 0),
        datetime(2026, 3, 7, 23, 0),
        datetime(2026, 10, 24, 23, 0),
        datetime(2026, 10, 31, 23, 0),
        datetime(2026, 4, 4, 23, 0),
        datetime(2026, 10, 3, 23, 0),
    ]
).flatmap(lambda base: st.integers(0, 6 * 60).map(lambda m: base + timedelta(minutes=m)))


@given(
    st.sampled_from(EXPRESSIONS),
    st.sampled_from(DST_ZONES),
    dst_moments,
    st.booleans(),
)
@settings(max_examples=150, deadline=None)  # each example runs croniter 10 times
def test_occurrences_are_increasing_and_chain(
    expr: str, zone: ZoneInfo, local: datetime, fold: bool
) -> None:
    after = local.replace(tzinfo=zone, fold=int(fold))
    times = next_occurrences(expr, zone, after, 5)
    assert all(t.tzinfo is UTC for t in times)
    assert after < times[0]
    assert all(a < b for a, b in itertools.pairwise(times))
    # next_occurrences is the same as repeatedly asking for the next one
    chained = [next_occurrence(expr, zone, after)]
    while len(chained) < 5:
        chained.append(next_occurrence(expr, zone, chained[-1]))
    assert chained == times
    # each local wall-clock time fires at most once
    walls = [t.astimezone(zone).replace(tzinfo=None) for t in times]
    assert len(set(walls)) == len(walls)
