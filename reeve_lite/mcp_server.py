"""`reeve-lite mcp`: an MCP stdio server through which the agent schedules its own future.

A thin client of the daemon (`client.py` over the Unix socket, so the first
call also socket-activates it): it never opens the database. Every tool answers
with one short line for the model plus structured content; a mistake comes
back as a tool error (`isError`) that says how to correct the call.

The protocol part is small (JSON-RPC 2.0, one message per line on stdin and
stdout: `initialize`, `ping`, `tools/list`, `tools/call`) and written here with
the standard library: importing the mcp SDK alone takes longer than the whole
start-up budget. Arguments are validated by pydantic models, whose JSON schemas
are the tools' input schemas (optional ones with their plain type); the results are
compact models of what a model needs (the REST API has every field).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC
from functools import partial
from typing import IO, Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from reeve_lite import __version__, sources
from reeve_lite.client import ApiFailure, Client, DaemonUnreachable, PulseRequest
from reeve_lite.models import NotifyOut, json_integer
from reeve_lite.timeparse import describe_instant

# Revisions with the `initialize` handshake, oldest first; a client asking for
# another one is offered the newest.
PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
# JSON-RPC error codes.
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602

TIMES = (
    "Accepted times: 'now'; relative 'in 30 seconds', 'in 5 minutes', 'in 2 hours', "
    "'in 3 days', 'in 1 week' (or '5m', '2h', 'in 1h30m'); 'tomorrow at 9am', "
    "'tomorrow 14:30', 'tomorrow morning' (08:00), 'tonight' (22:00); 'at 17:30' "
    "(today, or tomorrow once passed); 'monday 9am' (next Monday); or ISO 8601 such as "
    "'2026-12-01T09:00:00Z' or '2026-12-01T09:00:00+01:00' (without an offset, the "
    "daemon's time zone)."
)
INSTRUCTIONS = (
    "reeve-lite is your pulse queue: schedule a future wake-up of yourself (a prompt that "
    "runs at a given time), look at what is planned, move or cancel it. " + TIMES
)

PACING = (
    "Pulses you schedule for yourself are held to bounds: due at least a minimum delay "
    "ahead (1 minute by default), and a limited number pending (20); a call outside them "
    "is refused with the bound. Prefer pace_min/pace_max when the exact time does not "
    "matter: the daemon then picks it."
)
PulseId = Annotated[int, Field(ge=1, description="The pulse's id, as returned when scheduled.")]


def _when(pulse: dict[str, Any]) -> str:
    return describe_instant(pulse["scheduled_at"], UTC)


def _recurs(pulse: dict[str, Any]) -> str:
    """The recurrence and its next fire times, in UTC and on the pulse's clock."""
    if not pulse["cron"]:
        return ""
    times = "; ".join(f"{t['utc']} ({t['local']})" for t in pulse.get("next_fire_times") or [])
    return f", then on cron '{pulse['cron']}' in {pulse['timezone']}; next fire times: {times}"


class ToolError(Exception):
    """A mistake in a tool call: its message tells the model how to correct it."""


def _result(text: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "content": [{"type": "text", "text": text}],
        "structuredContent": data,
        "isError": False,
    }


def _error(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}


def _advice(exc: ApiFailure) -> str:
    """The daemon's refusal, worded for a model to correct its call."""
    if exc.code == "invalid_time":
        return f"{exc.message}. Call again with one of the accepted forms."
    if exc.code == "not_found":
        return f"{exc.message}. Use list_upcoming_pulses to see the pulses that exist."
    if exc.code == "not_configured":
        return (
            f"{exc.message}. Notifications are not set up here: tell the user in your "
            "answer instead."
        )
    if exc.code == "telegram_error":
        return f"{exc.message}. The message was not delivered; try again later."
    if exc.code == "not_pending":
        return f"{exc.message}; it has already run, is running, or was cancelled."
    where = f" (parameter {exc.field})" if exc.field else ""
    return f"{exc.message}{where}."


class _Args(BaseModel):
    """A tool's arguments; an unknown one is refused (a typo would otherwise be
    silently dropped), as on the REST API."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _whole_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # As on the API: a number field takes 3 or 3.0, not true nor "3".
        annotation = cls.model_fields[str(info.field_name)].annotation
        if int in (annotation, *get_args(annotation)):
            return json_integer(value)
        return value


class ScheduleArgs(_Args):
    prompt: Annotated[str, Field(min_length=1, max_length=32768, description="What to do then.")]
    priority: Annotated[
        Literal["critical", "high", "normal", "low", "deferred"],
        Field(description="Which due pulse runs first when several are due at once."),
    ] = "normal"
    sticky_notes: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=2000)]] | None,
        Field(max_length=20, description="Reminders appended to the prompt."),
    ] = None
    tags: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]] | None,
        Field(max_length=32, description="Labels for finding the pulse later, e.g. ['mail']."),
    ] = None
    resume_current_session: Annotated[
        bool, Field(description="Resume the conversation that is running now.")
    ] = False
    session_id: Annotated[
        str | None, Field(max_length=128, description="An agent session to resume.")
    ] = None
    cron: Annotated[
        str | None,
        Field(
            max_length=200,
            description="Recur: a 5-field cron expression ('0 9 * * 1-5') or words "
            "('every weekday at 9am', 'every 2 hours', 'every monday 9:00').",
        ),
    ] = None
    timezone: Annotated[
        str | None, Field(max_length=64, description="IANA zone, e.g. Europe/Berlin.")
    ] = None
    max_retries: Annotated[
        int | None,
        Field(ge=0, le=100, description="Retries after a failed run (default 3)."),
    ] = None
    scheduled_at: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            description="When to run; default: now. With cron: not before this time. " + TIMES,
            json_schema_extra={"default": "now"},
        ),
    ] = None
    pace_min: Annotated[
        str | None,
        Field(
            max_length=100,
            description="Instead of scheduled_at: the earliest you want to run again, "
            "e.g. '10m'. The daemon picks a time between pace_min and pace_max, within "
            "its pacing bounds.",
        ),
    ] = None
    pace_max: Annotated[str | None, Field(max_length=100, description="The latest, e.g. '1h'.")] = (
        None
    )
    on_missed: Annotated[
        Literal["once", "all", "skip"],
        Field(
            description="If the time passes while the machine is off: run once late "
            "(once), once per missed time (all), or not at all (skip)."
        ),
    ] = "once"
    expires_after: Annotated[
        str | None,
        Field(
            max_length=100,
            description="Do not run if it cannot start within this long after its time "
            "(default 6h for pulses you schedule; 'never' for no limit).",
        ),
    ] = None
    concurrency_key: Annotated[
        str | None,
        Field(
            max_length=128,
            description="Pulses with the same key never run at the same time; give "
            "independent work its own key so that it need not wait for the Desk.",
        ),
    ] = None
    comment: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=2000,
            description="Why you scheduled it, for the user reading the queue; "
            "you do not get it back when the pulse runs (put that in the prompt).",
        ),
    ] = None


class ListArgs(_Args):
    limit: Annotated[int, Field(ge=1, le=200, description="How many pulses at most.")] = 20
    include_completed: Annotated[
        bool,
        Field(description="Also list pulses that ran, failed, expired or were cancelled."),
    ] = False


class PulseArgs(_Args):
    pulse_id: PulseId


class RescheduleArgs(_Args):
    pulse_id: PulseId
    new_scheduled_at: Annotated[
        str, Field(min_length=1, max_length=200, description="The new time. " + TIMES)
    ]


Message = Annotated[
    str,
    Field(
        min_length=1,
        max_length=20000,
        description="The text for the user (long text is split in several messages).",
    ),
]


class NotifyArgs(_Args):
    message: Message
    priority: Annotated[
        Literal["normal", "silent", "critical"],
        Field(description="silent: no sound; critical: marked as urgent."),
    ] = "normal"
    parse_mode: Annotated[
        Literal["Markdown", "MarkdownV2", "HTML"] | None,
        Field(description="Formatting of the text; default: plain text."),
    ] = None


class LinkArgs(_Args):
    message: Message
    link_url: Annotated[
        str,
        Field(
            max_length=2000,
            pattern=r"^https?://\S+$",
            description="The http(s) address the button opens.",
        ),
    ]
    link_text: Annotated[
        str, Field(min_length=1, max_length=64, description="The button's label.")
    ] = "Open"


class AttemptBrief(BaseModel):
    """One run of a pulse, as a model needs it."""

    number: int
    started_at: str
    finished_at: str | None
    is_error: bool
    error: str | None
    result: str | None = Field(description="The run's answer, its first 500 characters.")
    session_id: str | None
    denials: list[str] = Field(default_factory=list, description="Tools the run was refused.")


class PulseBrief(BaseModel):
    """A pulse, as a model needs it (the REST API has every field)."""

    pulse_id: int
    status: str
    scheduled_at: str
    priority: str
    source: str
    prompt: str = Field(description="Its first 500 characters.")
    cron: str | None
    timezone: str | None
    on_missed: str | None = None
    expires_after: float | None = Field(
        default=None, description="Seconds after its time past which it does not run."
    )
    concurrency_key: str | None = None
    session_id: str | None
    last_error: str | None
    next_fire_times: list[str] | None = Field(
        default=None, description="Recurring: the next three fire times (UTC)."
    )
    attempts: list[AttemptBrief] | None = Field(
        default=None, description="get_pulse: the latest runs, oldest first."
    )


class PulseBriefs(BaseModel):
    """A page of pulses."""

    pulses: list[PulseBrief]
    total: int


def _cut(text: str | None, limit: int = 500) -> str | None:
    return text if text is None or len(text) <= limit else text[: limit - 1] + "…"


def brief(pulse: dict[str, Any]) -> dict[str, Any]:
    """The compact form of a pulse of the REST API (`PulseBrief`)."""
    fires = pulse.get("next_fire_times")
    attempts = pulse.get("attempts")
    return PulseBrief(
        pulse_id=pulse["pulse_id"],
        status=pulse["status"],
        scheduled_at=pulse["scheduled_at"],
        priority=pulse["priority"],
        source=pulse["source"],
        prompt=_cut(pulse["prompt"]) or "",
        cron=pulse.get("cron"),
        timezone=pulse.get("timezone"),
        on_missed=pulse.get("on_missed"),
        expires_after=pulse.get("expires_after"),
        concurrency_key=pulse.get("concurrency_key"),
        session_id=pulse.get("session_id"),
        last_error=pulse.get("last_error"),
        next_fire_times=[t["utc"] for t in fires] if fires else None,
        attempts=None
        if attempts is None
        else [
            AttemptBrief(
                number=a["number"],
                started_at=a["started_at"],
                finished_at=a["finished_at"],
                is_error=a["is_error"],
                error=a["error"],
                result=_cut(a["result"]),
                session_id=a["session_id"],
                denials=a.get("denials") or [],
            )
            for a in attempts
        ],
    ).model_dump(mode="json")


def plain_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema whose optional properties have their plain type: generic clients
    read `anyOf: [T, null]` as "any text" and send "2" for a number. An optional
    argument is one left out of `required`; null is still accepted."""
    for prop in schema.get("properties", {}).values():
        options = prop.get("anyOf")
        if isinstance(options, list):
            kept = [o for o in options if o != {"type": "null"}]
            if len(kept) == 1 and len(kept) < len(options):
                del prop["anyOf"]
                prop.update(kept[0])
        if prop.get("default", 0) is None:
            del prop["default"]
    plain: dict[str, Any] = untitled(schema)
    return plain


def untitled(schema: Any) -> Any:
    """A JSON schema without pydantic's `title` keys, which repeat the names."""
    if isinstance(schema, dict):
        return {
            k: untitled(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [untitled(v) for v in schema]
    return schema


@dataclass(frozen=True)
class Context:
    """What the tools share: the daemon's client, and this server's environment
    (REEVE_PULSE_ID names the pulse whose agent started it, if one did)."""

    client: Client
    env: Mapping[str, str]

    def asking_pulse(self) -> int | None:
        """The pulse whose agent calls, if the server runs inside one."""
        raw = self.env.get("REEVE_PULSE_ID", "")
        return int(raw) if raw.isdigit() else None

    def current_session(self) -> str:
        """The agent session of the calling pulse, for resume_current_session."""
        raw = self.env.get("REEVE_PULSE_ID", "")
        if not raw.isdigit():
            raise ToolError(
                "resume_current_session needs a running pulse, and this conversation is "
                "not one (REEVE_PULSE_ID is not set). Pass session_id instead, or leave it out."
            )
        status = _daemon(self.client.status)
        for run in status["running"]:
            if run["pulse_id"] == int(raw):
                if run.get("session_id"):
                    return str(run["session_id"])
                raise ToolError(
                    f"pulse {raw} is running but its agent session id is not known yet; "
                    "try again in a moment."
                )
        raise ToolError(f"pulse {raw} is not running now, so there is no session to resume.")


def _daemon(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the daemon; its refusal, or its absence, becomes a ToolError for the model."""
    try:
        return method(*args, **kwargs)
    except DaemonUnreachable as exc:
        raise ToolError(f"{exc}. Nothing was changed; try again later.") from None
    except ApiFailure as exc:
        raise ToolError(_advice(exc)) from None


@dataclass(frozen=True)
class Tool:
    """One tool: its arguments, its result's model, and what it does.

    `run(context, args)` as declared in TOOLS; `build_tools` binds the context, and
    the server then calls `run(args)`."""

    name: str
    description: str
    args: type[_Args]
    result: type[BaseModel]
    run: Callable[..., dict[str, Any]]
    annotations: Mapping[str, Any] = field(default_factory=dict)

    def bound(self, context: Context) -> Tool:
        """This tool with its handler bound to `context`."""
        return replace(self, run=partial(self.run, context))

    def listing(self) -> dict[str, Any]:
        """The tool as `tools/list` describes it."""
        return {
            "name": self.name,
            "description": self.description,
            "inputSchema": plain_schema(self.args.model_json_schema()),
            "outputSchema": untitled(self.result.model_json_schema()),
            "annotations": dict(self.annotations),
        }


# --- the tools' handlers: (context, validated arguments) -> result


def schedule_pulse(ctx: Context, a: ScheduleArgs) -> dict[str, Any]:
    """Create a pulse from the arguments, which are the API's fields of the same names."""
    session_id = a.session_id
    if a.resume_current_session:
        if session_id:
            raise ToolError("Give either session_id or resume_current_session, not both.")
        session_id = ctx.current_session()
    values = a.model_dump(exclude={"resume_current_session"})
    request = PulseRequest(**(values | {"session_id": session_id, "source": sources.SELF}))
    pulse = _daemon(ctx.client.create, request)
    text = f"Scheduled pulse {pulse['pulse_id']} for {_when(pulse)}{_recurs(pulse)}."
    return _result(text, brief(pulse))


def list_upcoming_pulses(ctx: Context, a: ListArgs) -> dict[str, Any]:
    """The planned pulses (and with include_completed the ended ones), earliest first."""
    if a.include_completed:
        page = _daemon(ctx.client.list, status=None, limit=a.limit)
        # The API lists ended pulses newest first; a model asked for earliest first.
        page["pulses"].sort(key=lambda p: (p["scheduled_at"], p["pulse_id"]))
    else:
        page = _daemon(ctx.client.upcoming, a.limit)
    lines = [
        f"{p['pulse_id']}: {p['status']}, {_when(p)}, {p['priority']}: {p['prompt'][:80]}"
        for p in page["pulses"]
    ]
    text = "\n".join(lines) if lines else "No pulses."
    pulses = [brief(p) for p in page["pulses"]]
    return _result(text, {"pulses": pulses, "total": page.get("total", len(pulses))})


def get_pulse(ctx: Context, a: PulseArgs) -> dict[str, Any]:
    """One pulse, summed up: its state, its last attempt and its missed occurrences."""
    pulse = _daemon(ctx.client.get, a.pulse_id)
    attempts = pulse.get("attempts") or []
    last = attempts[-1] if attempts else None
    outcome = ""
    if last is not None:
        state = (
            "running"
            if last["finished_at"] is None
            else ("failed: " + str(last["error"]) if last["is_error"] else "succeeded")
        )
        outcome = f"; last attempt {state}"
    missed = pulse.get("missed") or []
    missed_text = ""
    if missed:
        counts = [m["count"] for m in missed]
        total = "many" if None in counts else str(sum(c or 0 for c in counts))
        last = missed[-1]
        missed_text = f"; {total} occurrence(s) missed, the last {last['action'].replace('_', ' ')}"
    why = f" ({pulse['last_error']})" if pulse["status"] in ("expired", "skipped") else ""
    text = (
        f"Pulse {pulse['pulse_id']} is {pulse['status']}{why}, due {_when(pulse)}, "
        f"{len(attempts)} attempt(s){outcome}{missed_text}."
    )
    return _result(text, brief(pulse))


def cancel_pulse(ctx: Context, a: PulseArgs) -> dict[str, Any]:
    """Cancel a pending pulse."""
    pulse = _daemon(ctx.client.cancel, a.pulse_id)
    return _result(f"Cancelled pulse {pulse['pulse_id']}.", brief(pulse))


def reschedule_pulse(ctx: Context, a: RescheduleArgs) -> dict[str, Any]:
    """Move a pending pulse."""
    pulse = _daemon(ctx.client.reschedule, a.pulse_id, a.new_scheduled_at)
    text = f"Pulse {pulse['pulse_id']} now runs {_when(pulse)}{_recurs(pulse)}."
    return _result(text, brief(pulse))


def send_notification(ctx: Context, a: NotifyArgs) -> dict[str, Any]:
    """Message the user, linked to the calling pulse's session where the daemon knows how."""
    sent = _daemon(
        ctx.client.notify,
        message=a.message,
        priority=a.priority,
        parse_mode=a.parse_mode,
        pulse_id=ctx.asking_pulse(),
    )
    link = f" with a link to {sent['link']}" if sent["link"] else ""
    return _result(f"Sent to {len(sent['chats'])} chat(s){link}.", sent)


def send_message_with_link(ctx: Context, a: LinkArgs) -> dict[str, Any]:
    """Message the user with a button that opens a link."""
    sent = _daemon(ctx.client.notify, message=a.message, link_url=a.link_url, link_text=a.link_text)
    return _result(f"Sent to {len(sent['chats'])} chat(s) with the link.", sent)


# Annotations (hints to the client, not guarantees): reading tools, and those that
# change the queue or reach the user.
_READS = {"readOnlyHint": True, "openWorldHint": False}


def _changes(*, destructive: bool, idempotent: bool, open_world: bool = False) -> dict[str, Any]:
    return {
        "readOnlyHint": False,
        "destructiveHint": destructive,
        "idempotentHint": idempotent,
        "openWorldHint": open_world,
    }


TOOLS: tuple[Tool, ...] = (
    Tool(
        "schedule_pulse",
        "Schedule a future wake-up of yourself: at `scheduled_at` the prompt is given to a "
        "new agent run (or to this conversation again with resume_current_session=true). "
        "Use it to follow up later, check back on something, or recur with a 5-field cron "
        "expression (e.g. '0 9 * * 1-5' with timezone 'Europe/Berlin'). Returns the "
        "pulse's id and due time. " + TIMES + " " + PACING,
        ScheduleArgs,
        PulseBrief,
        schedule_pulse,
        {"title": "Schedule a pulse", **_changes(destructive=False, idempotent=False)},
    ),
    Tool(
        "list_upcoming_pulses",
        "List the pulses that are planned, earliest first (with include_completed, also "
        "those that ran). Use it before scheduling, to avoid duplicates.",
        ListArgs,
        PulseBriefs,
        list_upcoming_pulses,
        {"title": "List pulses", **_READS},
    ),
    Tool(
        "get_pulse",
        "One pulse with its attempts (start, end, errors, session, cost).",
        PulseArgs,
        PulseBrief,
        get_pulse,
        {"title": "Show a pulse", **_READS},
    ),
    Tool(
        "cancel_pulse",
        "Cancel a pending pulse so that it never runs.",
        PulseArgs,
        PulseBrief,
        cancel_pulse,
        {"title": "Cancel a pulse", **_changes(destructive=True, idempotent=True)},
    ),
    Tool(
        "reschedule_pulse",
        "Move a pending pulse to another time. " + TIMES,
        RescheduleArgs,
        PulseBrief,
        reschedule_pulse,
        {"title": "Move a pulse", **_changes(destructive=False, idempotent=True)},
    ),
    Tool(
        "send_notification",
        "Send a message to your user on Telegram. Use it to report a result, ask for a "
        "decision, or warn; not for routine progress. priority 'silent' arrives without "
        "sound, 'critical' is marked as urgent. parse_mode 'HTML' or 'MarkdownV2' formats "
        "the text (if Telegram rejects the markup it is sent as plain text). When you run "
        "inside a pulse, the message links to this session where the daemon knows how.",
        NotifyArgs,
        NotifyOut,
        send_notification,
        {
            "title": "Message the user",
            **_changes(destructive=False, idempotent=False, open_world=True),
        },
    ),
    Tool(
        "send_message_with_link",
        "Send a message to your user on Telegram with a button that opens link_url "
        "(for example a pull request, a dashboard, a document).",
        LinkArgs,
        NotifyOut,
        send_message_with_link,
        {
            "title": "Message the user with a link",
            **_changes(destructive=False, idempotent=False, open_world=True),
        },
    ),
)


def build_tools(client: Client, *, env: Mapping[str, str] | None = None) -> dict[str, Tool]:
    """The tools, bound to `client` (and to `env`, by default this process's), by name."""
    context = Context(client, os.environ if env is None else env)
    return {tool.name: tool.bound(context) for tool in TOOLS}


def _invalid(tool: Tool, exc: ValidationError) -> str:
    """A validation failure, one line per argument, for a model to correct."""
    unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden"]
    if unknown:
        names = ", ".join(repr(u) for u in unknown)
        valid = ", ".join(tool.args.model_fields)
        return (
            f"Unknown argument {names} for {tool.name}; its arguments are: {valid}. "
            "Call again with those names."
        )
    problems = "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()
    )
    return f"Invalid arguments for {tool.name}: {problems}. Call again with corrected arguments."


class Server:
    """Answers MCP requests, one JSON-RPC message at a time."""

    def __init__(self, tools: dict[str, Tool]) -> None:
        self.tools = tools
        self._listing: list[dict[str, Any]] | None = None

    def handle(self, message: Any) -> dict[str, Any] | None:
        """The response to one message (None for a notification or a response)."""
        if not isinstance(message, dict):
            return _rpc_error(None, INVALID_REQUEST, "a JSON-RPC message is an object")
        if "method" not in message:
            return None  # a response to a request this server never sends
        ident = message.get("id")
        method = message["method"]
        params = message.get("params") or {}
        if "id" not in message:
            return None  # notifications (initialized, cancelled) need no answer
        if not isinstance(params, dict):
            return _rpc_error(ident, INVALID_PARAMS, "params must be an object")
        if method == "initialize":
            asked = params.get("protocolVersion")
            version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1]
            return _rpc_result(
                ident,
                {
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": False}},
                    "serverInfo": {"name": "reeve-lite", "version": __version__},
                    "instructions": INSTRUCTIONS,
                },
            )
        if method == "ping":
            return _rpc_result(ident, {})
        if method == "tools/list":
            if self._listing is None:
                self._listing = [tool.listing() for tool in self.tools.values()]
            return _rpc_result(ident, {"tools": self._listing})
        if method == "tools/call":
            return _rpc_result(ident, self.call(params.get("name"), params.get("arguments")))
        return _rpc_error(ident, METHOD_NOT_FOUND, f"method not found: {method}")

    def call(self, name: Any, arguments: Any) -> dict[str, Any]:
        """A tool's result; a mistake is a result with isError, never an exception."""
        tool = self.tools.get(name) if isinstance(name, str) else None
        if tool is None:
            return _error(f"Unknown tool {name!r}; the tools are {', '.join(self.tools)}.")
        try:
            args = tool.args.model_validate(arguments or {})
        except ValidationError as exc:
            return _error(_invalid(tool, exc))
        try:
            return tool.run(args)
        except ToolError as exc:
            return _error(str(exc))
        except Exception:
            # A defect here must not end the session the agent relies on: the
            # call fails, the traceback goes to stderr (the MCP client's log).
            traceback.print_exc(file=sys.stderr)
            return _error(f"{tool.name} failed inside reeve-lite; see the MCP server's log.")


def _rpc_result(ident: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": ident, "result": result}


def _rpc_error(ident: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": ident, "error": {"code": code, "message": message}}


def serve(server: Server, stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Answer each line of `stdin` on `stdout` until `stdin` ends."""
    for line in stdin:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            answer: dict[str, Any] | None = _rpc_error(None, PARSE_ERROR, "not JSON")
        else:
            answer = server.handle(message)
        if answer is not None:
            stdout.write(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
            stdout.flush()


def run(client: Client) -> int:
    """Serve MCP on stdin/stdout until the client closes it."""
    serve(Server(build_tools(client)), sys.stdin.buffer, sys.stdout.buffer)
    return 0
