"""Enums and the pydantic models of the REST API's bodies and answers.

The store keeps one canonical form of each enum: a priority is stored as its
rank (0 = critical … 4 = deferred) so that "priority order" is an indexed
integer sort, a status as its lowercase name.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from reeve_lite.sources import API, SOURCE_PATTERN


class Priority(enum.StrEnum):
    """Dispatch order: critical first, deferred last."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
    DEFERRED = "deferred"

    @property
    def rank(self) -> int:
        """The stored integer: lower runs first."""
        return _PRIORITY_ORDER.index(self)

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        """The priority stored as `rank`."""
        return _PRIORITY_ORDER[rank]


_PRIORITY_ORDER: tuple[Priority, ...] = tuple(Priority)


class Status(enum.StrEnum):
    """Life of a pulse: pending → processing → completed | failed; cancelled by a
    user; expired (past its deadline) or skipped (missed, on_missed=skip) unrun."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    SKIPPED = "skipped"


class OnMissed(enum.StrEnum):
    """What a pulse does about occurrences that could not start on time."""

    ONCE = "once"  # one catch-up run for all of them
    ALL = "all"  # one run per missed occurrence, spaced and capped
    SKIP = "skip"  # none: record them and wait for the next occurrence


# What was done about a range of missed occurrences.
MissAction = Literal["caught_up", "skipped", "expired", "dropped"]


KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$"
DURATION_HELP = "A duration such as '90s', '10m', '2h', '1h30m' or '3 days'."
# A session id is passed to the agent as `--resume ID`: it must never look like a flag.
SESSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"

Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
Note = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class _Model(BaseModel):
    # Validators are built at a model's first use, not at import: start-up (what
    # socket activation waits for) and idle memory carry only what is used.
    model_config = ConfigDict(defer_build=True)


class _Strict(_Model):
    model_config = ConfigDict(extra="forbid", defer_build=True)


def json_integer(value: Any) -> Any:
    """A JSON Schema integer: 3 and 3.0, but not true nor "3" (which lax pydantic
    would read as 1 and 3)."""
    if isinstance(value, bool | str):
        raise ValueError("must be a whole number")
    return value


class PulseCreate(_Strict):
    """Body of `POST /api/pulse/trigger`."""

    prompt: str = Field(min_length=1, description="What the agent is asked to do.")
    scheduled_at: str = Field(
        default="now",
        min_length=1,
        max_length=200,
        description="When: 'now', 'in 5 minutes', 'tomorrow at 9am', 'monday 9am', "
        "'at 17:30', or ISO 8601 (without an offset it is in the daemon's time zone).",
    )
    priority: Priority = Field(default=Priority.HIGH)
    source: str = Field(default=API, pattern=SOURCE_PATTERN, description="Who created it.")
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    session_id: str | None = Field(
        default=None, pattern=SESSION_PATTERN, description="Agent session to resume."
    )
    sticky_notes: list[Note] = Field(
        default_factory=list, max_length=20, description="Reminders appended to the prompt."
    )
    max_retries: int | None = Field(default=None, ge=0, le=100)
    cron: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="5-field cron expression for a recurring pulse, e.g. '30 9 * * 1-5', "
        "or the same in words: 'every weekday at 8', 'every day at 9am', 'every monday "
        "9:00', 'every 2 hours', 'every 15 minutes' (the answer's cron is the expression). "
        "scheduled_at may be such a phrase too.",
    )
    timezone: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="IANA zone of the cron expression (default: the daemon's zone).",
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="A second create with the same key returns the first pulse.",
    )
    on_missed: OnMissed = Field(
        default=OnMissed.ONCE,
        description="When occurrences could not start on time (daemon down, machine "
        "asleep): 'once' runs one catch-up, 'all' one run per missed occurrence (spaced, "
        "capped), 'skip' none. Missed occurrences are recorded either way.",
    )
    expires_after: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Do not start an occurrence later than this after its time; it "
        "expires unrun instead. 'never' turns off the default of the source "
        "(telegram and reeve have one). " + DURATION_HELP,
    )
    expires_at: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Never start after this instant (same forms as scheduled_at); a "
        "recurring pulse ends there.",
    )
    concurrency_key: str | None = Field(
        default=None,
        pattern=KEY_PATTERN,
        description="Pulses with the same key never run at the same time; different "
        "keys may, up to max_concurrent. Default: the Desk's key 'desk', shared by "
        "all pulses without one.",
    )
    jitter: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Recurring pulses only: start each occurrence up to this much "
        "after its time, at random (at most 12h). " + DURATION_HELP,
    )
    pace_min: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Instead of scheduled_at: run between pace_min and pace_max from "
        "now; the daemon picks the time within its pacing bounds. " + DURATION_HELP,
    )
    pace_max: str | None = Field(
        default=None, min_length=1, max_length=100, description="See pace_min."
    )
    comment: str | None = Field(
        default=None,
        min_length=1,
        max_length=2000,
        description="For the people who read the queue (why it exists, who asked); "
        "shown with the pulse, never given to the agent.",
    )

    _max_retries_integer = field_validator("max_retries", mode="before")(json_integer)

    @field_validator("prompt", "sticky_notes")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # A NUL cannot travel in an argv string; refuse it rather than cut the prompt.
        texts = value if isinstance(value, list) else [value]
        if any("\x00" in text for text in texts):
            raise ValueError("must not contain NUL characters")
        if any(not text.strip() for text in texts):
            raise ValueError("must not be empty or only white space")
        return value


class Notify(_Strict):
    """Body of `POST /api/notify`: a message to the user's Telegram chats."""

    message: str = Field(min_length=1, max_length=20000)
    priority: Literal["normal", "silent", "critical"] = Field(
        default="normal", description="silent: no sound; critical: marked as urgent."
    )
    parse_mode: Literal["Markdown", "MarkdownV2", "HTML"] | None = None
    link_url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://\S+$")
    link_text: str = Field(default="Open", min_length=1, max_length=64)
    pulse_id: int | None = Field(
        default=None, ge=1, description="The running pulse that asks: its session gets a link."
    )

    _pulse_id_integer = field_validator("pulse_id", mode="before")(json_integer)


class NotifyOut(_Model):
    """Answer of `POST /api/notify`."""

    chats: list[int]
    messages: int = Field(description="Telegram messages sent (long texts are split).")
    link: str | None


class Reschedule(_Strict):
    """Body of `POST /api/pulse/{id}/reschedule`."""

    scheduled_at: str = Field(min_length=1, max_length=200, description="New time, as in create.")


class Attempt(_Model):
    """One execution of a pulse."""

    attempt_id: int
    number: int = Field(description="1 for the first run of this pulse, then 2, 3 …")
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    duration_ms: int | None
    session_id: str | None
    is_error: bool = Field(description="True when the attempt failed; `error` says why.")
    error: str | None
    result: str | None
    output_tail: str | None
    cost_usd: float | None
    num_turns: int | None
    pid: int | None = Field(default=None, description="Agent process (or scope leader) id.")
    denials: list[str] = Field(
        default_factory=list,
        description="Tools the agent asked for and was refused (permission_denials), by name.",
    )
    notified: int = Field(default=0, description="Messages sent to the user during the attempt.")


class Missed(_Model):
    """Occurrences of a pulse that did not run on time, and what was done."""

    first_due: datetime
    last_due: datetime
    count: int | None = Field(description="How many; null: more than could be counted.")
    action: MissAction = Field(
        description="caught_up: run late (on_missed once/all); skipped: not run "
        "(on_missed=skip); expired: past its deadline, not run; dropped: beyond "
        "catchup_max, not run."
    )
    recorded_at: datetime


class FireTime(_Model):
    """A future fire time of a recurring pulse."""

    utc: datetime
    local: str = Field(description="The same instant on the pulse's own wall clock, ISO 8601.")


class Pulse(_Model):
    """A pulse as the API shows it."""

    pulse_id: int
    scheduled_at: datetime
    prompt: str
    priority: Priority
    status: Status
    source: str
    tags: list[str]
    session_id: str | None
    sticky_notes: list[str]
    retry_count: int
    max_retries: int
    cron: str | None
    timezone: str | None
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    last_error: str | None
    on_missed: OnMissed = OnMissed.ONCE
    occurrence_at: datetime = Field(
        description="Nominal time of the occurrence this pulse stands for; scheduled_at "
        "may be later (retry backoff, jitter, catch-up spacing)."
    )
    expires_after: float | None = Field(default=None, description="Seconds.")
    expires_at: datetime | None = None
    deadline: datetime | None = Field(
        default=None, description="The current occurrence expires if not started by then."
    )
    concurrency_key: str | None = None
    jitter: float = Field(default=0.0, description="Seconds.")
    catchup_remaining: int = Field(
        default=0, description="Catch-up runs still owed for missed occurrences."
    )
    comment: str | None = Field(default=None, description="The comment it was created with.")
    attempts: list[Attempt] | None = Field(
        default=None, description="Present when one pulse is fetched."
    )
    missed: list[Missed] | None = Field(
        default=None,
        description="Missed occurrences, newest last; present when one pulse is fetched.",
    )
    next_fire_times: list[FireTime] | None = Field(
        default=None,
        description="Recurring pulses, when created, rescheduled or fetched: the next "
        "three occurrences, in UTC and in the pulse's zone.",
    )
    progress: str | None = Field(
        default=None,
        description="When one pulse is fetched while it runs: what its agent waits on, "
        "e.g. 'API retry 3/10: overloaded (529)'.",
    )


class PulseList(_Model):
    """A page of pulses."""

    pulses: list[Pulse]
    total: int = Field(description="How many match, over all pages.")
    limit: int
    offset: int


class Health(_Model):
    """Answer of `GET /api/health`."""

    ok: bool
    version: str


class RunningAttempt(_Model):
    """A pulse that is being executed now."""

    pulse_id: int
    attempt_id: int
    started_at: datetime
    pid: int | None
    session_id: str | None = Field(
        default=None, description="The agent's session, once its first event told it."
    )
    progress: str | None = Field(
        default=None,
        description="What the run is waiting on, e.g. 'API retry 3/10: ...' while the agent "
        "retries its API.",
    )


class StatusOut(_Model):
    """Answer of `GET /api/status`."""

    version: str
    uptime_s: float
    counts: dict[Status, int]
    next_due_at: datetime | None
    next_due_pulse_id: int | None
    running: list[RunningAttempt]
    max_concurrent: int
    executor: str = Field(description="'scope' or 'service' (transient systemd units) or 'plain'.")
    agent: str = Field(default="", description="The agent profile: hapi, claude or command.")
    limits_unenforced: list[str] = Field(
        default_factory=list,
        description="Configured limits (e.g. scope_memory_max) that systemd cannot enforce "
        "here because the cgroup controller is missing.",
    )
    last_error: str | None
    last_denial: str | None = Field(
        default=None, description="The last tools an agent run was refused, and the pulse."
    )


class AgendaEntry(_Model):
    """One fire time in the agenda."""

    at: datetime
    pulse_id: int
    priority: Priority
    source: str
    prompt: str = Field(description="The prompt's first line (at most 100 characters).")
    recurring: bool


class AgendaOut(_Model):
    """Answer of `GET /api/agenda`: every fire time in the window, earliest first."""

    start: datetime
    until: datetime
    timezone: str = Field(description="The daemon's zone, for grouping by day.")
    entries: list[AgendaEntry]
    truncated: bool = Field(description="More fire times than listed (at most 2000).")


class HistoryEntry(_Model):
    """One attempt in the history."""

    pulse_id: int
    number: int
    started_at: datetime
    outcome: Literal["ok", "failed", "running"]
    duration_ms: int | None
    cost_usd: float | None
    source: str
    prompt: str = Field(description="The prompt's first line (at most 100 characters).")
    summary: str | None = Field(
        description="The first line of the result, or of the error for a failed attempt."
    )


class DayTotal(_Model):
    """Runs, failures and cost of one day (the daemon's zone)."""

    day: str
    runs: int
    failures: int
    cost_usd: float


class HistoryOut(_Model):
    """Answer of `GET /api/history`: recent attempts, newest first, and daily totals."""

    since: datetime
    timezone: str
    attempts: list[HistoryEntry]
    days: list[DayTotal] = Field(description="Every day since `since`, newest first.")


class ConfigOut(_Model):
    """Answer of `GET /api/config`: the daemon's effective settings."""

    settings: dict[str, str] = Field(
        description="Each REEVE_LITE_* variable as it would be written in the configuration "
        "file; a secret that is set shows as (hidden)."
    )


class ErrorBody(_Model):
    """What went wrong; `field` names the offending input when there is one."""

    code: str
    message: str
    field: str | None = None


class ErrorOut(_Model):
    """Every error answer: `{"error": {"code", "message", "field"}}`."""

    error: ErrorBody


def dump(model: BaseModel) -> dict[str, Any]:
    """The JSON-ready form of a model."""
    return model.model_dump(mode="json")
