"""The scheduling policy with an injected clock: missed runs (once, all, skip),
deadlines, catch-up runs, the next occurrence, jitter, pacing and DST days."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from reeve_lite.models import OnMissed, Priority, Pulse, Status
from reeve_lite.policy import (
    MAX_COUNTED,
    Policy,
    after_failure,
    after_success,
    deadline_for,
    jittered,
    paced_time,
    review,
)

T9 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
POLICY = Policy(missed_grace=60, catchup_max=10, catchup_spacing=30)
HOURLY = "0 * * * *"


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return T9.replace(hour=hour, minute=minute, second=second)


def make(**kw: Any) -> Pulse:
    fields: dict[str, Any] = dict(
        pulse_id=1,
        scheduled_at=T9,
        occurrence_at=kw.get("scheduled_at", T9),
        prompt="p",
        priority=Priority.NORMAL,
        status=Status.PENDING,
        source="api",
        tags=[],
        session_id=None,
        sticky_notes=[],
        retry_count=0,
        max_retries=3,
        cron=None,
        timezone="UTC",
        idempotency_key=None,
        created_at=T9,
        updated_at=T9,
        last_error=None,
    )
    fields.update(kw)
    if "deadline" not in kw:
        fields["deadline"] = deadline_for(
            fields["occurrence_at"], fields.get("expires_after"), fields.get("expires_at")
        )
    return Pulse(**fields)


# --- one-off pulses


def test_a_pulse_on_time_just_runs() -> None:
    assert review(make(), at(9, 0, 59), POLICY) is None


@pytest.mark.parametrize("policy", [OnMissed.ONCE, OnMissed.ALL])
def test_a_late_one_off_pulse_runs_once_as_a_recorded_catch_up(policy: OnMissed) -> None:
    decision = review(make(on_missed=policy), at(11), POLICY)
    assert decision is not None
    assert (decision.status, decision.run, decision.catchup_remaining) == (Status.PENDING, True, 1)
    [miss] = decision.misses
    assert (miss.first, miss.last, miss.count, miss.action) == (T9, T9, 1, "caught_up")
    assert "missed its time by 2h" in (decision.reason or "")


def test_a_late_one_off_pulse_with_skip_ends_skipped_unrun() -> None:
    decision = review(make(on_missed=OnMissed.SKIP), at(9, 1, 1), POLICY)
    assert decision is not None
    assert (decision.status, decision.run) == (Status.SKIPPED, False)
    assert [m.action for m in decision.misses] == ["skipped"]
    assert "on_missed=skip" in (decision.reason or "")


def test_a_catch_up_already_decided_is_not_judged_again() -> None:
    assert review(make(catchup_remaining=1), at(11), POLICY) is None


def test_a_late_retry_is_not_a_missed_occurrence() -> None:
    # The occurrence started on time; its retry waited for the backoff.
    assert (
        review(make(retry_count=1, occurrence_at=T9, scheduled_at=at(9, 5)), at(9, 30), POLICY)
        is None
    )


def test_a_one_off_pulse_past_its_deadline_expires_unrun_with_the_reason() -> None:
    pulse = make(expires_after=600.0)
    late = review(pulse, at(9, 10), POLICY)  # late, but at the deadline it may still start
    assert late is not None
    assert late.run
    decision = review(pulse, at(9, 10, 1), POLICY)
    assert decision is not None
    assert (decision.status, decision.run) == (Status.EXPIRED, False)
    assert decision.reason == "expired: not started by its deadline 2026-11-25 09:10:00Z"
    assert [m.action for m in decision.misses] == ["expired"]


def test_expires_at_bounds_a_retry_too() -> None:
    pulse = make(retry_count=2, occurrence_at=T9, scheduled_at=at(9, 30), expires_at=at(9, 20))
    decision = review(pulse, at(9, 30), POLICY)
    assert decision is not None
    assert decision.status is Status.EXPIRED


# --- recurring pulses: down from 09:00 to past 12:00, hourly


def hourly(**kw: Any) -> Pulse:
    return make(cron=HOURLY, **kw)


def test_once_catches_up_missed_hours_with_the_current_run() -> None:
    # 12:00 has just come: it runs on time and stands for 09:00-11:00 too.
    decision = review(hourly(), at(12, 0, 30), POLICY)
    assert decision is not None
    assert decision.run
    assert decision.occurrence_at == at(12)
    assert decision.catchup_remaining == 0
    [miss] = decision.misses
    assert (miss.first, miss.last, miss.count, miss.action) == (at(9), at(11), 3, "caught_up")


def test_once_after_the_grace_runs_one_catch_up_for_all() -> None:
    decision = review(hourly(), at(12, 5), POLICY)
    assert decision is not None
    assert decision.run
    assert (decision.occurrence_at, decision.catchup_remaining) == (at(12), 1)
    [miss] = decision.misses
    assert (miss.first, miss.last, miss.count, miss.action) == (at(9), at(12), 4, "caught_up")
    assert decision.reason == "caught up 4 occurrences with one run (on_missed=once)"


def test_skip_records_the_missed_hours_and_rearms_at_the_next() -> None:
    decision = review(hourly(on_missed=OnMissed.SKIP), at(12, 5), POLICY)
    assert decision is not None
    assert not decision.run
    assert decision.status is Status.PENDING
    assert (decision.occurrence_at, decision.scheduled_at) == (at(13), at(13))
    [miss] = decision.misses
    assert (miss.count, miss.action) == (4, "skipped")


def test_skip_still_runs_the_occurrence_that_is_on_time() -> None:
    decision = review(hourly(on_missed=OnMissed.SKIP), at(12, 0, 10), POLICY)
    assert decision is not None
    assert decision.run
    assert decision.occurrence_at == at(12)
    assert [(m.count, m.action) for m in decision.misses] == [(3, "skipped")]


def test_all_runs_one_per_missed_occurrence_up_to_the_cap() -> None:
    policy = Policy(missed_grace=60, catchup_max=2, catchup_spacing=30)
    decision = review(hourly(on_missed=OnMissed.ALL), at(12, 5), policy)
    assert decision is not None
    assert decision.run
    assert decision.catchup_remaining == 2
    assert [(m.first, m.last, m.count, m.action) for m in decision.misses] == [
        (at(9), at(10), 2, "dropped"),
        (at(11), at(12), 2, "caught_up"),
    ]


def test_all_counts_the_on_time_run_as_well() -> None:
    decision = review(hourly(on_missed=OnMissed.ALL), at(12, 0, 30), POLICY)
    assert decision is not None
    # 09:00, 10:00, 11:00 caught up one by one, then 12:00 itself.
    assert decision.catchup_remaining == 4
    assert [(m.count, m.action) for m in decision.misses] == [(3, "caught_up")]


def test_catch_up_runs_are_spaced_then_the_next_occurrence_follows() -> None:
    pulse = hourly(occurrence_at=at(12), scheduled_at=at(12, 5), catchup_remaining=3)
    first = after_success(pulse, at(12, 6), POLICY)
    assert (first.status, first.catchup_remaining) == (Status.PENDING, 2)
    assert first.scheduled_at == at(12, 6, 30)
    last = after_success(pulse.model_copy(update={"catchup_remaining": 1}), at(12, 8), POLICY)
    assert (last.occurrence_at, last.scheduled_at, last.catchup_remaining) == (at(13), at(13), 0)


def test_the_next_occurrence_counts_from_the_occurrence_not_from_now() -> None:
    # A run of 09:00 that ends at 10:30 leaves 10:00 to the next review, as missed.
    state = after_success(hourly(), at(10, 30), POLICY)
    assert state.occurrence_at == at(10)
    decision = review(hourly(occurrence_at=at(10), scheduled_at=at(10)), at(10, 30), POLICY)
    assert decision is not None
    assert [m.action for m in decision.misses] == ["caught_up"]


def test_expires_after_drops_old_occurrences_and_catches_up_the_live_one() -> None:
    decision = review(hourly(expires_after=600.0), at(12, 5), POLICY)
    assert decision is not None
    assert decision.run
    assert [(m.first, m.last, m.count, m.action) for m in decision.misses] == [
        (at(9), at(11), 3, "expired"),
        (at(12), at(12), 1, "caught_up"),
    ]
    assert decision.deadline == at(12, 10)


def test_every_occurrence_expired_rearms_at_the_next() -> None:
    decision = review(hourly(expires_after=60.0), at(12, 5), POLICY)
    assert decision is not None
    assert not decision.run
    assert (decision.status, decision.occurrence_at) == (Status.PENDING, at(13))
    assert decision.deadline == at(13, 1)
    assert [(m.count, m.action) for m in decision.misses] == [(4, "expired")]


def test_expires_at_ends_a_recurring_pulse() -> None:
    decision = review(hourly(expires_at=at(11, 30)), at(12, 5), POLICY)
    assert decision is not None
    assert (decision.status, decision.run) == (Status.EXPIRED, False)
    assert "expires_at 2026-11-25 11:30:00Z has passed" in (decision.reason or "")


def test_a_retry_overtaken_by_newer_occurrences_moves_on() -> None:
    pulse = hourly(retry_count=2, occurrence_at=T9, scheduled_at=at(10, 30))
    decision = review(pulse, at(10, 30), POLICY)
    assert decision is not None
    assert decision.run
    # 10:00 never started: it is caught up by this run, whose retries start afresh.
    assert decision.occurrence_at == at(10)
    assert decision.retry_count == 0
    assert [(m.first, m.count) for m in decision.misses] == [(at(10), 1)]


def test_too_many_missed_occurrences_are_a_range_with_an_unknown_count() -> None:
    start = T9 - timedelta(days=30)
    pulse = make(cron="* * * * *", occurrence_at=start, scheduled_at=start)
    decision = review(pulse, at(9, 0, 30), POLICY)
    assert decision is not None
    [miss] = decision.misses
    assert (miss.first, miss.last, miss.count) == (start, at(8, 59), None)
    assert MAX_COUNTED < 30 * 24 * 60
    assert decision.occurrence_at == T9


# --- after a run


def test_success_completes_a_one_off_pulse() -> None:
    state = after_success(make(retry_count=2), at(9, 1))
    assert (state.status, state.scheduled_at, state.retry_count) == (Status.COMPLETED, None, 2)


def test_failure_retries_keeping_the_occurrence_then_fails() -> None:
    pulse = make(max_retries=1, expires_after=3600.0)
    state = after_failure(pulse, at(9, 1), delay=60)
    assert (state.status, state.scheduled_at, state.retry_count) == (Status.PENDING, at(9, 2), 1)
    assert (state.occurrence_at, state.deadline) == (T9, at(10))
    done = after_failure(pulse.model_copy(update={"retry_count": 1}), at(9, 3), delay=60)
    assert done.status is Status.FAILED


NOON = datetime(2026, 11, 25, 12, 0, 30, tzinfo=UTC)  # a Wednesday, 13:00:30 in Berlin


def test_success_rearms_a_recurring_pulse_in_its_zone() -> None:
    # 09:30 on weekdays in Berlin: next is Thursday.
    pulse = make(cron="30 9 * * 1-5", timezone="Europe/Berlin", retry_count=2, scheduled_at=NOON)
    state = after_success(pulse, NOON)
    assert state.status is Status.PENDING
    assert state.scheduled_at == datetime(2026, 11, 26, 8, 30, tzinfo=UTC)
    assert state.retry_count == 0


def test_failure_retries_after_the_delay_until_max_retries() -> None:
    state = after_failure(make(retry_count=1, max_retries=3, scheduled_at=NOON), NOON, delay=120)
    assert (state.status, state.scheduled_at, state.retry_count) == (
        Status.PENDING,
        NOON + timedelta(seconds=120),
        2,
    )
    exhausted = after_failure(make(retry_count=3, max_retries=3), NOON, delay=120)
    assert (exhausted.status, exhausted.scheduled_at) == (Status.FAILED, None)
    never = after_failure(make(retry_count=0, max_retries=0), NOON, delay=60)
    assert never.status is Status.FAILED


def test_exhausted_recurring_pulse_waits_for_its_next_occurrence() -> None:
    pulse = make(retry_count=3, max_retries=3, cron=HOURLY, scheduled_at=NOON)
    state = after_failure(pulse, NOON, delay=60)
    assert (state.status, state.scheduled_at, state.retry_count) == (
        Status.PENDING,
        datetime(2026, 11, 25, 13, 0, tzinfo=UTC),
        0,
    )


def test_exhausted_recurring_pulse_moves_to_its_next_occurrence() -> None:
    state = after_failure(hourly(max_retries=0), at(9, 1), delay=60)
    assert (state.status, state.occurrence_at, state.retry_count) == (Status.PENDING, at(10), 0)


def test_a_recurring_pulse_past_expires_at_completes() -> None:
    state = after_success(hourly(expires_at=at(9, 30)), at(9, 1))
    assert state.status is Status.COMPLETED


# --- jitter and pacing


def test_jitter_spreads_within_the_bound_and_never_early() -> None:
    rng = random.Random(7)
    fires = [jittered(T9, 300, rng) for _ in range(2000)]
    assert min(fires) >= T9
    assert max(fires) <= T9 + timedelta(seconds=300)
    assert max(fires) - min(fires) > timedelta(seconds=290)  # spread, not constant
    assert jittered(T9, 0) == T9


def test_jitter_applies_to_each_next_occurrence() -> None:
    pulse = hourly(jitter=120.0)
    for _ in range(50):
        state = after_success(pulse, at(9, 1))
        assert state.occurrence_at == at(10)
        assert state.scheduled_at is not None
        assert at(10) <= state.scheduled_at <= at(10, 2)


def test_paced_time_is_the_earliest_in_the_window_clear_of_other_pulses() -> None:
    now = T9
    assert paced_time(now, 600, 3600, [], 60) == at(9, 10)
    # Another pulse at 09:10:30 pushes this one a minute past it.
    assert paced_time(now, 600, 3600, [at(9, 10, 30)], 60) == at(9, 11, 30)
    # No room in the window: its end.
    crowded = [at(9, 10) + timedelta(seconds=50 * i) for i in range(10)]
    assert paced_time(now, 600, 900, crowded, 60) == at(9, 15)


# --- daylight saving: a 02:30 daily pulse fires once a day, at the documented instant


@pytest.mark.parametrize(
    ("zone", "days", "expected"),
    [
        # Spring forward (02:30 does not exist): at the jump, 03:00 local.
        (
            "Europe/Berlin",
            ("2026-03-28", "2026-03-29", "2026-03-30"),
            ("2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30"),
        ),
        # Fall back (02:30 happens twice): the first, still on summer time.
        (
            "Europe/Berlin",
            ("2026-10-24", "2026-10-25", "2026-10-26"),
            ("2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30"),
        ),
        (
            "America/New_York",
            ("2026-03-07", "2026-03-08", "2026-03-09"),
            ("2026-03-07T07:30", "2026-03-08T07:00", "2026-03-09T06:30"),
        ),
        # New York goes back at 02:00 to 01:00: 02:30 happens once, on standard time.
        (
            "America/New_York",
            ("2026-10-31", "2026-11-01", "2026-11-02"),
            ("2026-10-31T06:30", "2026-11-01T07:30", "2026-11-02T07:30"),
        ),
    ],
)
def test_a_0230_daily_pulse_across_dst_fires_once_a_day(
    zone: str, days: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    start = datetime.fromisoformat(days[0]).replace(tzinfo=ZoneInfo(zone))  # local midnight
    pulse = make(cron="30 2 * * *", timezone=zone, occurrence_at=start, scheduled_at=start)
    fired = []
    for _ in range(3):
        # Each run succeeds on time; the pulse moves to its next occurrence.
        state = after_success(pulse, pulse.occurrence_at)
        assert state.occurrence_at is not None
        fired.append(state.occurrence_at)
        pulse = pulse.model_copy(
            update={"occurrence_at": state.occurrence_at, "scheduled_at": state.scheduled_at}
        )
    assert [t.strftime("%Y-%m-%dT%H:%M") for t in fired] == list(expected)
    # And at each of those instants the review lets it run, on time, once.
    for instant in fired:
        on_time = make(
            cron="30 2 * * *", timezone=zone, occurrence_at=instant, scheduled_at=instant
        )
        assert review(on_time, instant + timedelta(seconds=1), POLICY) is None
