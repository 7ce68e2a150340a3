"""From a request to a pulse: the rules of creating and moving one.

Pure functions of the request, the settings, the instant `now` and the
requester's pending pulses: which time a pulse is due (`scheduled_at`, a cron
expression or its words, or a pace window), its jitter, its expiry (the
source's default), and the bounds on an agent that schedules itself. A rule
that refuses raises `PlanError` naming the field; the API translates it to HTTP.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from reeve_lite import sources
from reeve_lite.agent import compose_prompt
from reeve_lite.config import Settings
from reeve_lite.models import Pulse, PulseCreate
from reeve_lite.policy import deadline_for, deadline_of, jittered, paced_time
from reeve_lite.recurrence import (
    RecurrenceError,
    load_zone,
    next_occurrence,
    next_occurrences,
    validate_cron,
)
from reeve_lite.store import NewPulse
from reeve_lite.timeparse import (
    TimeParseError,
    format_duration,
    parse_duration,
    parse_recurrence,
    parse_when,
)

# The most a recurring pulse's start may be spread after its time.
MAX_JITTER = 12 * 3600.0
# How far in the past a time may be and still mean "now": the clocks of a client
# and the daemon may differ a little, and a request takes its time.
PAST_TOLERANCE = 60.0


class PlanError(ValueError):
    """A request that cannot become a pulse: `code` says what kind, `field` names
    the offending input (None when it is no one field)."""

    def __init__(self, code: str, message: str, field: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class TooLarge(PlanError):
    """The prompt (with its notes) is over the size limit."""


class TooMany(PlanError):
    """The agent already has as many pending pulses as it may."""


def is_self(source: str) -> bool:
    """Whether pulses of `source` are the agent's own (held to the pacing bounds);
    the planner then needs that source's pending due times."""
    return source == sources.SELF


@dataclass(frozen=True)
class _Recurrence:
    cron: str | None
    zone_name: str | None  # the request's zone, validated; None: the daemon's
    scheduled_at_given: bool  # scheduled_at named a time (not a recurrence in words)


@dataclass(frozen=True)
class Draft:
    """A request that passed every check that needs neither the clock nor the
    queue; `place` gives it its time."""

    body: PulseCreate
    settings: Settings
    recurrence: _Recurrence
    expires_after: float | None
    jitter: float
    paced: bool

    @property
    def mine(self) -> bool:
        """Whether it is the agent's own (`place` then needs its pending pulses)."""
        return is_self(self.body.source)


def prepare(body: PulseCreate, *, settings: Settings) -> Draft:
    """Check `body` as far as it can be without the clock or the queue: its size,
    its recurrence and zone, its expiry and jitter, pace against a time."""
    _check_size(body, settings.max_prompt_bytes)
    rec = _recurrence(body)
    expires_after = _expires_after(body, settings)
    jitter = _jitter(body, rec.cron)
    paced = body.pace_min is not None or body.pace_max is not None
    if paced and (rec.scheduled_at_given or rec.cron is not None):
        raise PlanError(
            "invalid_field",
            "give either scheduled_at (or cron) or pace_min/pace_max, not both",
            "pace_min",
        )
    return Draft(body, settings, rec, expires_after, jitter, paced)


def plan(
    body: PulseCreate, *, settings: Settings, now: datetime, own: Sequence[datetime] = ()
) -> NewPulse:
    """The pulse `body` asks for, created at `now` (`prepare`, then `place`)."""
    return place(prepare(body, settings=settings), now=now, own=own)


def place(draft: Draft, *, now: datetime, own: Sequence[datetime] = ()) -> NewPulse:
    """The pulse `draft` becomes at `now`: its due time, occurrence and deadline.

    `own` are the due times of the requester's pending pulses when it is the agent
    itself (`Draft.mine`): a paced pulse is spaced from them, and their number is
    bounded.
    """
    body, s, rec = draft.body, draft.settings, draft.recurrence
    cron, expires_after, jitter, paced = rec.cron, draft.expires_after, draft.jitter, draft.paced
    zone = s.zone if rec.zone_name is None else load_zone(rec.zone_name)
    mine = draft.mine
    occurrence: datetime | None = None
    if paced:
        when = _paced(body, s, now, own, mine)
    elif cron is not None:
        # WHEN with cron means "not before": the first run is the first occurrence
        # at or after it, so every run stays on the grid. The agent's own pulses
        # keep the self-pacing delay on their first run too.
        start = now
        if rec.scheduled_at_given:
            start = max(start, when_of(body.scheduled_at, now=now, zone=zone))
        if mine:
            start = max(start, now + timedelta(seconds=s.self_min_delay))
        occurrence = next_occurrence(cron, zone, start - timedelta(microseconds=1))
        when = jittered(occurrence, jitter)
    else:
        when = when_of(body.scheduled_at, now=now, zone=zone)
    zone_name = rec.zone_name
    if cron is not None and zone_name is None:
        zone_name = s.timezone
    expires_at = None
    if body.expires_at is not None:
        expires_at = when_of(body.expires_at, now=now, zone=zone, field="expires_at")
        if expires_at < when:
            raise PlanError(
                "invalid_field",
                f"expires_at ({expires_at:%Y-%m-%d %H:%M:%S}Z) is before the pulse is due "
                f"({when:%Y-%m-%d %H:%M:%S}Z): it could never run",
                "expires_at",
            )
    if mine:
        if cron is not None:
            # The interval is what paces a recurring pulse; its first fire may be near.
            _self_cron_bounds(cron, zone, now, s.self_min_delay)
        elif not paced:
            self_bounds(when, now, s.self_min_delay)
        if len(own) >= s.self_max_pending:
            raise TooMany(
                "pacing",
                f"you already have {len(own)} pending pulses scheduled for yourself, the "
                f"most allowed (self_max_pending={s.self_max_pending}); cancel one you no "
                "longer need, or fold this into one of them",
                None,
            )
    occurrence = occurrence or when
    return NewPulse(
        prompt=body.prompt,
        scheduled_at=when,
        priority=body.priority,
        source=body.source,
        tags=body.tags,
        session_id=body.session_id,
        sticky_notes=body.sticky_notes,
        max_retries=s.max_retries if body.max_retries is None else body.max_retries,
        cron=cron,
        timezone=zone_name,
        idempotency_key=body.idempotency_key,
        occurrence_at=occurrence,
        on_missed=body.on_missed,
        expires_after=expires_after,
        expires_at=expires_at,
        deadline=deadline_for(occurrence, expires_after, expires_at),
        concurrency_key=body.concurrency_key,
        jitter=jitter,
        comment=body.comment,
    )


def plan_move(
    current: Pulse, text: str, *, settings: Settings, now: datetime
) -> tuple[datetime, datetime | None]:
    """Where a pending pulse moves to when rescheduled to `text`, and the new
    occurrence's deadline."""
    zone = settings.zone if current.timezone is None else load_zone(current.timezone)
    when = when_of(text, now=now, zone=zone)
    if is_self(current.source):
        self_bounds(when, now, settings.self_min_delay)
    if current.expires_at is not None and when > current.expires_at:
        raise PlanError(
            "invalid_field",
            f"the pulse expires at {current.expires_at:%Y-%m-%d %H:%M:%S}Z, before "
            f"{when:%Y-%m-%d %H:%M:%S}Z: it could never run",
            "scheduled_at",
        )
    return when, deadline_of(current, when)


def when_of(
    text: str, *, now: datetime, zone: ZoneInfo, field: str = "scheduled_at", future: bool = True
) -> datetime:
    """The instant `text` names; with `future`, one in the past (beyond the clock
    skew tolerance) is refused, saying how far back it is and what to use instead."""
    try:
        when = parse_when(text, now=now, tz=zone)
    except TimeParseError as exc:
        raise PlanError("invalid_time", str(exc), field) from None
    late = (now - when).total_seconds()
    if future and late > PAST_TOLERANCE:
        raise PlanError(
            "invalid_time",
            f"{field} {text!r} is {format_duration(late)} in the past "
            f'({when:%Y-%m-%d %H:%M:%S}Z); use "now" to run it at once, or a time to come '
            '("in 10 minutes", "tomorrow at 9am")',
            field,
        )
    return when


def self_bounds(when: datetime, now: datetime, least: float) -> None:
    """The agent scheduling itself may not wake itself sooner than `least` seconds."""
    ahead = (when - now).total_seconds()
    # A little slack: 'in 1 minute' parsed a moment ago is not too soon.
    if ahead < least - 1:
        raise PlanError(
            "pacing",
            f"a pulse you schedule for yourself must be due at least "
            f"{format_duration(least)} from now (self_min_delay); this one is due in "
            f"{format_duration(max(ahead, 0))}. Choose a later time, or give pace_min "
            "and pace_max and let the daemon pick",
            "scheduled_at",
        )


def _check_size(body: PulseCreate, limit: int) -> None:
    if len(body.prompt.encode()) > limit:
        raise TooLarge("too_large", f"prompt over {limit} bytes", "prompt")
    # What the agent receives is the prompt with its reminders, as one text.
    if len(compose_prompt(body.prompt, body.sticky_notes).encode()) > limit:
        raise TooLarge(
            "too_large", f"prompt with its sticky notes over {limit} bytes", "sticky_notes"
        )


def _recurrence(body: PulseCreate) -> _Recurrence:
    """The cron expression of a recurring pulse: `cron` (an expression or its
    words, "every weekday at 8"), or words given as `scheduled_at`."""
    given = "scheduled_at" in body.model_fields_set
    cron_text = body.cron
    try:
        if cron_text is not None:
            cron_text = parse_recurrence(cron_text) or cron_text
        elif given:
            words = parse_recurrence(body.scheduled_at)
            if words is not None:
                cron_text, given = words, False
    except TimeParseError as exc:
        field = "cron" if body.cron is not None else "scheduled_at"
        raise PlanError("invalid_time", str(exc), field) from None
    try:
        zone_name = None if body.timezone is None else load_zone(body.timezone).key
        cron = None if cron_text is None else validate_cron(cron_text)
    except RecurrenceError as exc:
        raise PlanError("invalid_field", str(exc), exc.field) from None
    return _Recurrence(cron, zone_name, given)


def _duration(text: str, field: str) -> float:
    try:
        return parse_duration(text)
    except TimeParseError as exc:
        raise PlanError("invalid_field", f"{field}: {exc}", field) from None


def _expires_after(body: PulseCreate, settings: Settings) -> float | None:
    """The request's expiry; without one, its source's default; 'never': none."""
    if body.expires_after is None:
        return settings.default_expires_after.get(body.source)
    if body.expires_after.strip().lower() == "never":
        return None
    seconds = _duration(body.expires_after, "expires_after")
    if seconds <= 0:
        raise PlanError("invalid_field", "expires_after must be more than 0", "expires_after")
    return seconds


def _jitter(body: PulseCreate, cron: str | None) -> float:
    if body.jitter is None:
        return 0.0
    if cron is None:
        raise PlanError(
            "invalid_field", "jitter applies to recurring pulses: give cron too", "jitter"
        )
    jitter = _duration(body.jitter, "jitter")
    if jitter > MAX_JITTER:
        raise PlanError(
            "invalid_field", f"jitter is at most {format_duration(MAX_JITTER)}", "jitter"
        )
    return jitter


def _paced(
    body: PulseCreate, s: Settings, now: datetime, own: Sequence[datetime], mine: bool
) -> datetime:
    """A time between pace_min and pace_max from now, spaced from the agent's own."""
    low = 0.0 if body.pace_min is None else _duration(body.pace_min, "pace_min")
    high = low if body.pace_max is None else _duration(body.pace_max, "pace_max")
    if high < low:
        raise PlanError("invalid_field", "pace_max is less than pace_min", "pace_max")
    spacing = 0.0
    if mine:
        # Clamped to the bounds rather than refused: the daemon picks the time.
        spacing = s.self_min_delay
        low, high = max(low, spacing), max(high, spacing)
    return paced_time(now, low, high, own, spacing)


def _self_cron_bounds(cron: str, zone: ZoneInfo, now: datetime, least: float) -> None:
    times = next_occurrences(cron, zone, now, 6)
    gap = min((b - a).total_seconds() for a, b in itertools.pairwise(times))
    if gap < least:
        raise PlanError(
            "pacing",
            f"cron {cron!r} fires every {format_duration(gap)}, more often than a pulse you "
            f"schedule for yourself may (self_min_delay={format_duration(least)})",
            "cron",
        )
