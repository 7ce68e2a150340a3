"""Scheduling policy: what becomes of a due pulse that is late, missed or expired.

Pure functions of a pulse and an instant, so that every rule is tested with an
injected clock. The scheduler calls `review()` on each due pulse before it may
run; the store applies the answer in the same transaction as the claims.

Terms (docs/scheduling.md, "Policy", says the same):

* An *occurrence* is one nominal fire time of a pulse (`occurrence_at`): the
  time given for a one-off pulse, each cron time for a recurring one. The time
  an attempt starts (`scheduled_at`) may be later: retry backoff, jitter,
  catch-up spacing.
* An occurrence is *missed* when it starts more than `missed_grace` after its
  time, whatever the cause (the daemon was down, the machine asleep, the
  concurrency key busy). `on_missed` decides: `once` runs one catch-up for all
  missed occurrences, `all` one run per missed occurrence (at most
  `catchup_max`, `catchup_spacing` apart, the oldest beyond that dropped),
  `skip` runs none. Every missed occurrence is recorded.
* An occurrence *expires* when it cannot start by its deadline (`expires_at`,
  or its time plus `expires_after`): it is recorded and never run. A one-off
  pulse then ends `expired`; a recurring one waits for its next occurrence,
  unless `expires_at` has passed, which ends it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from reeve_lite.models import MissAction, OnMissed, Pulse, Status
from reeve_lite.recurrence import RecurrenceError, load_zone, next_occurrence, occurrences_between
from reeve_lite.timeparse import format_duration

# At most this many missed occurrences are counted one by one; beyond, the count is
# unknown (None) and the record says "more than". An every-minute pulse down for a
# week has 10,080: counting them costs about half a second once.
MAX_COUNTED = 20_000
# The concurrency key of pulses without one: they share the Desk.
DEFAULT_KEY = "desk"


@dataclass(frozen=True)
class Policy:
    """The daemon-wide settings the rules depend on."""

    missed_grace: float = 60.0
    catchup_max: int = 10
    catchup_spacing: float = 60.0


@dataclass(frozen=True)
class Miss:
    """Occurrences from `first` to `last` (`count` of them; None: more than
    MAX_COUNTED) that did not run on time, and what was done about them."""

    first: datetime
    last: datetime
    count: int | None
    action: MissAction


@dataclass(frozen=True)
class Review:
    """A decision about a due pulse. With `status` PENDING and `run` True, the pulse
    may run now (as the occurrence and catch-up count given); otherwise it moves to
    the state given and does not run."""

    status: Status
    scheduled_at: datetime
    occurrence_at: datetime
    catchup_remaining: int
    run: bool
    misses: tuple[Miss, ...] = ()
    reason: str | None = None
    # Deadline of the new occurrence (recomputed whenever the occurrence moves).
    deadline: datetime | None = None
    retry_count: int | None = None  # None: unchanged


def deadline_for(
    occurrence: datetime, expires_after: float | None, expires_at: datetime | None
) -> datetime | None:
    """The last instant an occurrence may start: the earlier of `expires_at` and
    the occurrence plus `expires_after`; None when neither is set."""
    limits = []
    if expires_at is not None:
        limits.append(expires_at)
    if expires_after is not None:
        limits.append(occurrence + timedelta(seconds=expires_after))
    return min(limits) if limits else None


def deadline_of(pulse: Pulse, occurrence: datetime) -> datetime | None:
    """`deadline_for` an occurrence of `pulse`."""
    return deadline_for(occurrence, pulse.expires_after, pulse.expires_at)


def paced_time(
    now: datetime, low: float, high: float, others: Sequence[datetime], spacing: float
) -> datetime:
    """The earliest instant between `low` and `high` seconds from now that is at
    least `spacing` seconds from each of `others` (the same source's pending
    pulses); the end of the window when there is none."""
    gap = timedelta(seconds=spacing)
    start, end = now + timedelta(seconds=low), now + timedelta(seconds=high)
    for candidate in sorted([start, *(o + gap for o in others)]):
        if start <= candidate <= end and all(abs(candidate - o) >= gap for o in others):
            return candidate
    return end


def jittered(occurrence: datetime, jitter: float, rng: random.Random | None = None) -> datetime:
    """When an occurrence fires: its time plus up to `jitter` seconds, uniformly."""
    if jitter <= 0:
        return occurrence
    return occurrence + timedelta(seconds=(rng or random).uniform(0, jitter))


def next_fire(pulse: Pulse, after: datetime) -> datetime:
    """The recurring pulse's first cron occurrence strictly after `after`."""
    assert pulse.cron is not None
    return next_occurrence(pulse.cron, load_zone(pulse.timezone or "UTC"), after)


def _miss(times: list[datetime], count: int | None, action: MissAction) -> Miss:
    return Miss(times[0], times[-1], count, action)


def _words(count: int | None) -> str:
    if count is None:
        return f"more than {MAX_COUNTED} occurrences"
    return f"{count} occurrence{'' if count == 1 else 's'}"


def review(pulse: Pulse, now: datetime, policy: Policy) -> Review | None:
    """Decide about a due pending pulse; None when it simply runs (on time, or a
    retry or catch-up of an occurrence already decided). A Review with `run` False
    moves the pulse at once; one with `run` True is applied and the pulse runs
    when it can (a free slot and a free concurrency key)."""
    if pulse.cron is None:
        return _review_once(pulse, now, policy)
    return _review_recurring(pulse, now, policy)


def _started(pulse: Pulse) -> bool:
    # A retry or a decided catch-up: this occurrence has been judged already.
    return pulse.retry_count > 0 or pulse.catchup_remaining > 0


def _late(pulse: Pulse, now: datetime, policy: Policy) -> float | None:
    """Seconds the pending attempt is past its time, when beyond the grace."""
    late = (now - pulse.scheduled_at).total_seconds()
    return late if late > policy.missed_grace else None


def _ended(pulse: Pulse, status: Status, misses: Sequence[Miss], reason: str) -> Review:
    return Review(
        status=status,
        scheduled_at=pulse.scheduled_at,
        occurrence_at=pulse.occurrence_at,
        catchup_remaining=0,
        run=False,
        misses=tuple(misses),
        reason=reason,
        deadline=pulse.deadline,
    )


def _review_once(pulse: Pulse, now: datetime, policy: Policy) -> Review | None:
    occurrence = pulse.occurrence_at
    if pulse.deadline is not None and now > pulse.deadline:
        return _ended(
            pulse,
            Status.EXPIRED,
            [Miss(occurrence, occurrence, 1, "expired")],
            f"expired: not started by its deadline {pulse.deadline:%Y-%m-%d %H:%M:%S}Z",
        )
    late = None if _started(pulse) else _late(pulse, now, policy)
    if late is None:
        return None
    if pulse.on_missed is OnMissed.SKIP:
        return _ended(
            pulse,
            Status.SKIPPED,
            [Miss(occurrence, occurrence, 1, "skipped")],
            f"skipped: missed its time by {format_duration(late)} (on_missed=skip)",
        )
    return Review(
        status=Status.PENDING,
        scheduled_at=pulse.scheduled_at,
        occurrence_at=occurrence,
        catchup_remaining=1,
        run=True,
        misses=(Miss(occurrence, occurrence, 1, "caught_up"),),
        reason=f"missed its time by {format_duration(late)}: runs late "
        f"(on_missed={pulse.on_missed})",
        deadline=pulse.deadline,
    )


def _review_recurring(pulse: Pulse, now: datetime, policy: Policy) -> Review | None:
    assert pulse.cron is not None
    occurrence = pulse.occurrence_at
    try:
        zone = load_zone(pulse.timezone or "UTC")
        passed, counted = occurrences_between(pulse.cron, zone, occurrence, now, MAX_COUNTED)
    except RecurrenceError as exc:
        # The expression was valid when stored; a zone gone from tzdata is not.
        return _ended(pulse, Status.FAILED, [], f"cannot compute its next time: {exc}")
    started = _started(pulse)
    # Occurrences that have not started, oldest first; the count may be unknown.
    waiting = passed if started else [occurrence, *passed]
    total = None if counted is None else len(waiting)
    misses: list[Miss] = []

    if pulse.expires_at is not None and now > pulse.expires_at:
        if waiting:
            misses.append(_miss(waiting, total, "expired"))
        return _ended(
            pulse,
            Status.EXPIRED,
            misses,
            f"expired: its expires_at {pulse.expires_at:%Y-%m-%d %H:%M:%S}Z has passed",
        )
    if pulse.expires_after is not None:
        window = timedelta(seconds=pulse.expires_after)
        if started and occurrence + window < now:
            # The retry or catch-up of this occurrence can no longer start in time.
            misses.append(Miss(occurrence, occurrence, 1, "expired"))
            started = False
        live = [t for t in waiting if t + window >= now]
        gone = waiting[: len(waiting) - len(live)]
        if gone:
            gone_count = None if total is None else len(gone)
            misses.append(_miss(gone, gone_count, "expired"))
        waiting = live
        total = None if total is None else len(live)
    if started:
        if not misses and not waiting:
            return None
        if not waiting:
            return _running(
                pulse, occurrence, pulse.catchup_remaining, misses, None, keep_retries=True
            )
    if not waiting:
        return _rearmed(pulse, next_fire(pulse, now), misses, "every missed occurrence expired")

    current = waiting[-1]
    late_by = (now - current).total_seconds()
    if current == pulse.occurrence_at:
        # Only the pulse's own occurrence is waiting: measured from its due time
        # (jitter is not lateness).
        late_by = (now - pulse.scheduled_at).total_seconds()
    on_time = late_by <= policy.missed_grace
    missed = waiting[:-1] if on_time else waiting
    missed_count = None if total is None else len(missed)
    if not missed:
        return _running(pulse, current, 0, misses, None) if misses else None
    how = _words(missed_count)
    if pulse.on_missed is OnMissed.SKIP:
        misses.append(_miss(missed, missed_count, "skipped"))
        if on_time:
            return _running(pulse, current, 0, misses, f"skipped {how} (on_missed=skip)")
        return _rearmed(pulse, next_fire(pulse, now), misses, f"skipped {how} (on_missed=skip)")
    if pulse.on_missed is OnMissed.ONCE:
        # One run now stands for all of them (and for the current one when on time).
        misses.append(_miss(missed, missed_count, "caught_up"))
        reason = f"caught up {how} with one run (on_missed=once)"
        return _running(pulse, current, 0 if on_time else 1, misses, reason)
    # ALL: one run per missed occurrence, the most recent `catchup_max` of them.
    keep = missed[-policy.catchup_max :] if policy.catchup_max > 0 else []
    dropped = missed[: len(missed) - len(keep)]
    if dropped or missed_count is None:
        dropped_count = None if missed_count is None else len(dropped)
        misses.append(_miss(dropped or missed, dropped_count, "dropped"))
    if keep:
        misses.append(_miss(keep, len(keep), "caught_up"))
    runs = len(keep) + (1 if on_time else 0)
    reason = f"catching up {len(keep)} of {how} one by one (on_missed=all)"
    if runs == 0:
        return _rearmed(pulse, next_fire(pulse, now), misses, reason)
    return _running(pulse, current, runs, misses, reason)


def _running(
    pulse: Pulse,
    occurrence: datetime,
    catchup: int,
    misses: Sequence[Miss],
    reason: str | None,
    *,
    keep_retries: bool = False,
) -> Review:
    moved = occurrence != pulse.occurrence_at
    return Review(
        status=Status.PENDING,
        scheduled_at=max(pulse.scheduled_at, occurrence) if moved else pulse.scheduled_at,
        occurrence_at=occurrence,
        catchup_remaining=catchup,
        run=True,
        misses=tuple(misses),
        reason=reason,
        deadline=deadline_of(pulse, occurrence),
        retry_count=pulse.retry_count if keep_retries or not moved else 0,
    )


def _rearmed(pulse: Pulse, occurrence: datetime, misses: Sequence[Miss], reason: str) -> Review:
    if pulse.expires_at is not None and occurrence > pulse.expires_at:
        return _ended(pulse, Status.EXPIRED, misses, f"{reason}; no occurrence before expires_at")
    return Review(
        status=Status.PENDING,
        scheduled_at=jittered(occurrence, pulse.jitter),
        occurrence_at=occurrence,
        catchup_remaining=0,
        run=False,
        misses=tuple(misses),
        reason=reason,
        deadline=deadline_of(pulse, occurrence),
        retry_count=0,
    )


@dataclass(frozen=True)
class After:
    """Where a pulse goes after an attempt ended."""

    status: Status
    scheduled_at: datetime | None
    retry_count: int
    occurrence_at: datetime | None = None
    catchup_remaining: int = 0
    deadline: datetime | None = None


def _next_occurrence(pulse: Pulse, now: datetime, policy: Policy) -> After:
    """After an occurrence is done: the next catch-up, the next cron occurrence, or the end."""
    if pulse.catchup_remaining > 1:
        return After(
            Status.PENDING,
            now + timedelta(seconds=policy.catchup_spacing),
            0,
            pulse.occurrence_at,
            pulse.catchup_remaining - 1,
            pulse.deadline,
        )
    if pulse.cron is None:
        return After(Status.COMPLETED, None, pulse.retry_count)
    # From the occurrence, not from now: one that passed while this ran is seen as
    # missed by the next review (and its policy applies) rather than silently lost.
    occurrence = next_fire(pulse, pulse.occurrence_at)
    if pulse.expires_at is not None and occurrence > pulse.expires_at:
        return After(Status.COMPLETED, None, 0)
    return After(
        Status.PENDING,
        jittered(occurrence, pulse.jitter),
        0,
        occurrence,
        0,
        deadline_of(pulse, occurrence),
    )


def after_success(pulse: Pulse, now: datetime, policy: Policy = Policy()) -> After:
    """A one-off pulse is completed; a recurring one moves to its next occurrence
    (or next catch-up run)."""
    return _next_occurrence(pulse, now, policy)


def after_failure(pulse: Pulse, now: datetime, *, delay: float, policy: Policy = Policy()) -> After:
    """Retry after `delay` seconds while retries remain; then a one-off pulse has
    failed and a recurring one gives up this occurrence and moves to the next."""
    if pulse.retry_count < pulse.max_retries:
        return After(
            Status.PENDING,
            now + timedelta(seconds=delay),
            pulse.retry_count + 1,
            pulse.occurrence_at,
            pulse.catchup_remaining,
            pulse.deadline,
        )
    if pulse.cron is None:
        return After(Status.FAILED, None, pulse.retry_count)
    return _next_occurrence(pulse, now, policy)
