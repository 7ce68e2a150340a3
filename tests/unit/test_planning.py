"""The planner's rules, as a pure function: no daemon, no database, a fixed clock.

The same rules are exercised end to end through the REST API in
test_api_errors.py, test_scheduling_policy.py and test_newcomer.py; here each
is pinned down on its own, with the field each refusal names.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reeve_lite.config import Settings, load_settings
from reeve_lite.models import PulseCreate
from reeve_lite.planning import (
    MAX_JITTER,
    PlanError,
    TooLarge,
    TooMany,
    plan,
    plan_move,
    prepare,
)
from tests.unit.test_policy import make

# A Monday, 10:00:30 UTC.
NOW = datetime(2026, 11, 30, 10, 0, 30, tzinfo=UTC)


@pytest.fixture
def settings() -> Settings:
    return load_settings(
        {
            "REEVE_LITE_TIMEZONE": "UTC",
            "REEVE_LITE_MAX_PROMPT_BYTES": "1024",
            "REEVE_LITE_SELF_MAX_PENDING": "3",
        }
    )


def body(**fields: Any) -> PulseCreate:
    return PulseCreate.model_validate({"prompt": "check the mail", **fields})


def refusal(settings: Settings, **fields: Any) -> PlanError:
    with pytest.raises(PlanError) as caught:
        plan(body(**fields), settings=settings, now=NOW)
    return caught.value


def test_now_is_due_at_once_with_the_default_retries(settings: Settings) -> None:
    new = plan(body(), settings=settings, now=NOW)
    assert new.scheduled_at == new.occurrence_at == NOW
    assert new.max_retries == settings.max_retries
    assert (new.cron, new.deadline, new.expires_after) == (None, None, None)


def test_a_time_in_the_past_is_refused_naming_the_field(settings: Settings) -> None:
    err = refusal(settings, scheduled_at="2026-11-30T09:00:00Z")
    assert (err.code, err.field) == ("invalid_time", "scheduled_at")
    assert "1h" in err.message
    assert "in the past" in err.message
    # Within the clock-skew tolerance it still means "now".
    new = plan(body(scheduled_at="2026-11-30T10:00:00Z"), settings=settings, now=NOW)
    assert new.scheduled_at == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def test_cron_words_become_the_expression_and_the_first_run_is_on_the_grid(
    settings: Settings,
) -> None:
    new = plan(body(scheduled_at="every weekday at 8"), settings=settings, now=NOW)
    assert new.cron == "0 8 * * 1-5"
    assert new.scheduled_at == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    assert new.timezone == "UTC"  # a recurring pulse keeps the zone it was planned in


def test_scheduled_at_with_cron_means_not_before(settings: Settings) -> None:
    new = plan(
        body(cron="0 9 * * *", scheduled_at="2026-12-03T00:00:00Z"), settings=settings, now=NOW
    )
    assert new.scheduled_at == datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_jitter_needs_cron_and_has_a_ceiling(settings: Settings) -> None:
    err = refusal(settings, jitter="5m")
    assert (err.code, err.field) == ("invalid_field", "jitter")
    err = refusal(settings, cron="0 9 * * *", jitter=f"{int(MAX_JITTER) + 1}s")
    assert err.field == "jitter"
    assert "at most 12h" in err.message
    new = plan(body(cron="0 9 * * *", jitter="10m"), settings=settings, now=NOW)
    assert new.occurrence_at == datetime(2026, 11, 30, 9, 0, tzinfo=UTC) + timedelta(days=1)
    assert timedelta(0) <= new.scheduled_at - new.occurrence_at <= timedelta(minutes=10)


def test_pace_and_a_time_exclude_each_other(settings: Settings) -> None:
    err = refusal(settings, scheduled_at="in 5 minutes", pace_min="10m")
    assert err.field == "pace_min"
    err = refusal(settings, pace_min="1h", pace_max="10m")
    assert err.field == "pace_max"


def test_expiry_defaults_by_source_and_never_turns_it_off(settings: Settings) -> None:
    telegram = plan(body(source="telegram"), settings=settings, now=NOW)
    assert telegram.expires_after == 3600.0
    assert telegram.deadline == NOW + timedelta(hours=1)
    never = plan(body(source="telegram", expires_after="never"), settings=settings, now=NOW)
    assert (never.expires_after, never.deadline) == (None, None)
    err = refusal(settings, expires_after="0s")
    assert err.field == "expires_after"


def test_expires_at_before_the_due_time_could_never_run(settings: Settings) -> None:
    err = refusal(settings, scheduled_at="in 2 hours", expires_at="in 1 hour")
    assert err.field == "expires_at"
    assert "could never run" in err.message


def test_the_agent_may_not_wake_itself_too_soon(settings: Settings) -> None:
    err = refusal(settings, source="reeve", scheduled_at="in 10 seconds")
    assert (err.code, err.field) == ("pacing", "scheduled_at")
    # Another source may.
    plan(body(source="api", scheduled_at="in 10 seconds"), settings=settings, now=NOW)


def test_the_agents_recurring_pulse_keeps_its_minimum_interval() -> None:
    strict = load_settings({"REEVE_LITE_TIMEZONE": "UTC", "REEVE_LITE_SELF_MIN_DELAY": "10m"})
    with pytest.raises(PlanError) as caught:
        plan(body(source="reeve", cron="*/5 * * * *"), settings=strict, now=NOW)
    assert (caught.value.code, caught.value.field) == ("pacing", "cron")
    # Its first run keeps the delay too.
    new = plan(body(source="reeve", cron="*/15 * * * *"), settings=strict, now=NOW)
    assert new.scheduled_at == datetime(2026, 11, 30, 10, 15, tzinfo=UTC)


def test_a_paced_pulse_of_the_agent_is_spaced_from_its_others(settings: Settings) -> None:
    own = [NOW + timedelta(minutes=1), NOW + timedelta(minutes=2)]
    new = plan(
        body(source="reeve", pace_min="1m", pace_max="10m"), settings=settings, now=NOW, own=own
    )
    assert all(abs(new.scheduled_at - t) >= timedelta(minutes=1) for t in own)
    assert timedelta(minutes=1) <= new.scheduled_at - NOW <= timedelta(minutes=10)


def test_the_agents_pending_count_is_bounded(settings: Settings) -> None:
    own = [NOW + timedelta(hours=h) for h in range(1, 4)]
    with pytest.raises(TooMany) as caught:
        plan(body(source="reeve", scheduled_at="in 5 hours"), settings=settings, now=NOW, own=own)
    assert caught.value.field is None
    assert "self_max_pending=3" in caught.value.message
    # Another source is not held to it.
    plan(body(source="api", scheduled_at="in 5 hours"), settings=settings, now=NOW, own=own)


def test_the_prompt_with_its_notes_is_bounded(settings: Settings) -> None:
    with pytest.raises(TooLarge) as caught:
        plan(body(prompt="x" * 1025), settings=settings, now=NOW)
    assert caught.value.field == "prompt"
    with pytest.raises(TooLarge) as caught:
        plan(body(prompt="x" * 1000, sticky_notes=["y" * 40]), settings=settings, now=NOW)
    assert caught.value.field == "sticky_notes"


def test_a_move_past_the_pulses_end_is_refused(settings: Settings) -> None:
    current = make(
        scheduled_at=NOW + timedelta(hours=1),
        created_at=NOW,
        updated_at=NOW,
        timezone=None,
        expires_after=600.0,
        expires_at=NOW + timedelta(hours=2),
    )
    when, deadline = plan_move(current, "in 90 minutes", settings=settings, now=NOW)
    assert when == NOW + timedelta(minutes=90)
    assert deadline == when + timedelta(minutes=10)
    with pytest.raises(PlanError) as caught:
        plan_move(current, "in 3 hours", settings=settings, now=NOW)
    assert caught.value.field == "scheduled_at"
    assert "could never run" in caught.value.message


def test_what_needs_no_clock_nor_queue_is_checked_first(settings: Settings) -> None:
    """The API reads the agent's pending pulses only for a request that `prepare`
    passed: a bad one is refused without touching the database."""
    with pytest.raises(TooLarge):
        prepare(body(source="reeve", prompt="x" * 2000), settings=settings)
    with pytest.raises(PlanError) as caught:
        prepare(body(source="reeve", jitter="5m"), settings=settings)
    assert caught.value.field == "jitter"
    draft = prepare(body(source="reeve", pace_min="1m", pace_max="5m"), settings=settings)
    assert draft.mine
    assert not prepare(body(source="api"), settings=settings).mine
