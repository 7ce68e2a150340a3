"""`reeve-lite mcp`: an MCP stdio server through which the agent schedules its own future.

A thin client of the daemon (`client.py` over the Unix socket, so the first
call also socket-activates it): it never opens the database. Every tool answers
with one short line for the model plus structured content; a mistake comes
back as a tool error (`isError`) that says how to correct the call.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import UTC
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import Field

from reeve_lite.client import ApiFailure, Client, DaemonUnreachable
from reeve_lite.models import NotifyOut, Pulse, PulseList
from reeve_lite.timeparse import describe_instant

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

When = Annotated[str, Field(min_length=1, max_length=200, description=TIMES)]
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


def _result(text: str, data: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


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


def build_server(client: Client, *, env: dict[str, str] | None = None) -> MCPServer:
    """The MCP server, with its tools bound to `client`."""
    environ = os.environ if env is None else env
    server = MCPServer(name="reeve-lite", instructions=INSTRUCTIONS)

    async def call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs))
        except DaemonUnreachable as exc:
            raise ToolError(f"{exc}. Nothing was changed; try again later.") from None
        except ApiFailure as exc:
            raise ToolError(_advice(exc)) from None

    async def current_session() -> str:
        raw = environ.get("REEVE_PULSE_ID")
        if not raw or not raw.isdigit():
            raise ToolError(
                "resume_current_session needs a running pulse, and this conversation is "
                "not one (REEVE_PULSE_ID is not set). Pass session_id instead, or leave it out."
            )
        status = await call(client.status)
        for run in status["running"]:
            if run["pulse_id"] == int(raw):
                if run.get("session_id"):
                    return str(run["session_id"])
                raise ToolError(
                    f"pulse {raw} is running but its agent session id is not known yet; "
                    "try again in a moment."
                )
        raise ToolError(f"pulse {raw} is not running now, so there is no session to resume.")

    @server.tool(
        description=(
            "Schedule a future wake-up of yourself: at `scheduled_at` the prompt is given to a "
            "new agent run (or to this conversation again with resume_current_session=true). "
            "Use it to follow up later, check back on something, or recur with a 5-field cron "
            "expression (e.g. '0 9 * * 1-5' with timezone 'Europe/Berlin'). Returns the "
            "pulse's id and due time. " + TIMES + " " + PACING
        )
    )
    async def schedule_pulse(
        prompt: Annotated[
            str, Field(min_length=1, max_length=32768, description="What to do then.")
        ],
        priority: Literal["critical", "high", "normal", "low", "deferred"] = "normal",
        sticky_notes: Annotated[
            list[Annotated[str, Field(min_length=1, max_length=2000)]] | None,
            Field(max_length=20, description="Reminders appended to the prompt."),
        ] = None,
        tags: Annotated[
            list[Annotated[str, Field(min_length=1, max_length=64)]] | None,
            Field(max_length=32),
        ] = None,
        resume_current_session: Annotated[
            bool, Field(description="Resume the conversation that is running now.")
        ] = False,
        session_id: Annotated[
            str | None, Field(max_length=128, description="An agent session to resume.")
        ] = None,
        cron: Annotated[
            str | None, Field(max_length=200, description="5-field cron expression to recur.")
        ] = None,
        timezone: Annotated[
            str | None, Field(max_length=64, description="IANA zone, e.g. Europe/Berlin.")
        ] = None,
        max_retries: Annotated[int | None, Field(ge=0, le=100)] = None,
        scheduled_at: Annotated[
            str | None, Field(min_length=1, max_length=200, description=TIMES)
        ] = None,
        pace_min: Annotated[
            str | None,
            Field(
                max_length=100,
                description="Instead of scheduled_at: the earliest you want to run again, "
                "e.g. '10m'. The daemon picks a time between pace_min and pace_max, within "
                "its pacing bounds.",
            ),
        ] = None,
        pace_max: Annotated[
            str | None, Field(max_length=100, description="The latest, e.g. '1h'.")
        ] = None,
        on_missed: Annotated[
            Literal["once", "all", "skip"],
            Field(
                description="If the time passes while the machine is off: run once late "
                "(once), once per missed time (all), or not at all (skip)."
            ),
        ] = "once",
        expires_after: Annotated[
            str | None,
            Field(
                max_length=100,
                description="Do not run if it cannot start within this long after its time "
                "(default 6h for pulses you schedule; 'never' for no limit).",
            ),
        ] = None,
        concurrency_key: Annotated[
            str | None,
            Field(
                max_length=128,
                description="Pulses with the same key never run at the same time; give "
                "independent work its own key so that it need not wait for the Desk.",
            ),
        ] = None,
    ) -> Annotated[CallToolResult, Pulse]:
        if resume_current_session:
            if session_id:
                raise ToolError("Give either session_id or resume_current_session, not both.")
            session_id = await current_session()
        pulse = await call(
            client.create,
            prompt=prompt,
            scheduled_at=scheduled_at,
            priority=priority,
            sticky_notes=sticky_notes,
            tags=tags,
            session_id=session_id,
            cron=cron,
            timezone=timezone,
            max_retries=max_retries,
            source="reeve",
            pace_min=pace_min,
            pace_max=pace_max,
            on_missed=on_missed,
            expires_after=expires_after,
            concurrency_key=concurrency_key,
        )
        text = f"Scheduled pulse {pulse['pulse_id']} for {_when(pulse)}{_recurs(pulse)}."
        return _result(text, pulse)

    @server.tool(
        description=(
            "List the pulses that are planned, earliest first (with include_completed, also "
            "those that ran). Use it before scheduling, to avoid duplicates."
        )
    )
    async def list_upcoming_pulses(
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
        include_completed: bool = False,
    ) -> Annotated[CallToolResult, PulseList]:
        if include_completed:
            page = await call(client.list, status=None, limit=limit)
        else:
            page = await call(client.upcoming, limit)
        lines = [
            f"{p['pulse_id']}: {p['status']}, {_when(p)}, {p['priority']}: {p['prompt'][:80]}"
            for p in page["pulses"]
        ]
        text = "\n".join(lines) if lines else "No pulses."
        return _result(text, page)

    @server.tool(description="One pulse with its attempts (start, end, errors, session, cost).")
    async def get_pulse(pulse_id: PulseId) -> Annotated[CallToolResult, Pulse]:
        pulse = await call(client.get, pulse_id)
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
            missed_text = (
                f"; {total} occurrence(s) missed, the last {last['action'].replace('_', ' ')}"
            )
        why = f" ({pulse['last_error']})" if pulse["status"] in ("expired", "skipped") else ""
        text = (
            f"Pulse {pulse['pulse_id']} is {pulse['status']}{why}, due {_when(pulse)}, "
            f"{len(attempts)} attempt(s){outcome}{missed_text}."
        )
        return _result(text, pulse)

    @server.tool(description="Cancel a pending pulse so that it never runs.")
    async def cancel_pulse(pulse_id: PulseId) -> Annotated[CallToolResult, Pulse]:
        pulse = await call(client.cancel, pulse_id)
        return _result(f"Cancelled pulse {pulse['pulse_id']}.", pulse)

    @server.tool(description="Move a pending pulse to another time. " + TIMES)
    async def reschedule_pulse(
        pulse_id: PulseId, new_scheduled_at: When
    ) -> Annotated[CallToolResult, Pulse]:
        pulse = await call(client.reschedule, pulse_id, new_scheduled_at)
        return _result(f"Pulse {pulse['pulse_id']} now runs {_when(pulse)}{_recurs(pulse)}.", pulse)

    def asking_pulse() -> int | None:
        raw = environ.get("REEVE_PULSE_ID", "")
        return int(raw) if raw.isdigit() else None

    @server.tool(
        description=(
            "Send a message to your user on Telegram. Use it to report a result, ask for a "
            "decision, or warn; not for routine progress. priority 'silent' arrives without "
            "sound, 'critical' is marked as urgent. parse_mode 'HTML' or 'MarkdownV2' formats "
            "the text (if Telegram rejects the markup it is sent as plain text). When you run "
            "inside a pulse, the message links to this session where the daemon knows how."
        )
    )
    async def send_notification(
        message: Annotated[str, Field(min_length=1, max_length=20000)],
        priority: Literal["normal", "silent", "critical"] = "normal",
        parse_mode: Literal["Markdown", "MarkdownV2", "HTML"] | None = None,
    ) -> Annotated[CallToolResult, NotifyOut]:
        sent = await call(
            client.notify,
            message=message,
            priority=priority,
            parse_mode=parse_mode,
            pulse_id=asking_pulse(),
        )
        link = f" with a link to {sent['link']}" if sent["link"] else ""
        return _result(f"Sent to {len(sent['chats'])} chat(s){link}.", sent)

    @server.tool(
        description=(
            "Send a message to your user on Telegram with a button that opens link_url "
            "(for example a pull request, a dashboard, a document)."
        )
    )
    async def send_message_with_link(
        message: Annotated[str, Field(min_length=1, max_length=20000)],
        link_url: Annotated[str, Field(max_length=2000, pattern=r"^https?://\S+$")],
        link_text: Annotated[str, Field(min_length=1, max_length=64)] = "Open",
    ) -> Annotated[CallToolResult, NotifyOut]:
        sent = await call(client.notify, message=message, link_url=link_url, link_text=link_text)
        return _result(f"Sent to {len(sent['chats'])} chat(s) with the link.", sent)

    return server


def run(client: Client) -> int:
    """Serve MCP on stdin/stdout until the client closes it."""
    build_server(client).run("stdio")
    return 0
