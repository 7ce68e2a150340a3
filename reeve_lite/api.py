"""The REST API (aiohttp): JSON in and out, pydantic at the edge.

Each operation is declared once in `OPERATIONS`; the routes and the OpenAPI
3.1 document (`GET /api/openapi.json`) are both built from that table, so
the document cannot drift from what the server does.

Errors are always `{"error": {"code", "message", "field"}}`. Bad input is a
4xx naming the field; a database that is busy or full is a 503 or 507.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web
from pydantic import BaseModel, ValidationError

from reeve_lite import __version__
from reeve_lite.config import Settings, settings_text
from reeve_lite.models import (
    AgendaEntry,
    AgendaOut,
    ConfigOut,
    DayTotal,
    ErrorOut,
    FireTime,
    Health,
    HistoryEntry,
    HistoryOut,
    Notify,
    NotifyOut,
    Pulse,
    PulseCreate,
    PulseList,
    Reschedule,
    RunningAttempt,
    Status,
    StatusOut,
    dump,
)
from reeve_lite.planning import (
    PlanError,
    TooLarge,
    TooMany,
    place,
    plan_move,
    prepare,
    when_of,
)
from reeve_lite.recurrence import (
    RecurrenceError,
    load_zone,
    next_occurrences,
    occurrences_between,
)
from reeve_lite.scheduler import Scheduler
from reeve_lite.store import MAX_ATTEMPTS_SHOWN, DatabaseError, NotFound, NotPending, Store
from reeve_lite.telegram import BotApi, Link, TelegramError
from reeve_lite.timeparse import (
    TimeParseError,
    parse_duration,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer: HTTP status, machine code, message, and the offending field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


@dataclass
class Context:
    """What the handlers share: the store, the scheduler and the settings."""

    store: Store
    scheduler: Scheduler
    settings: Settings
    started: float = field(default_factory=time.monotonic)
    bot: BotApi | None = None
    on_request: Callable[[], None] | None = None


CONTEXT = web.AppKey("context", Context)
Handler = Callable[[web.Request, Context], Awaitable[web.Response]]


@dataclass(frozen=True)
class Param:
    """A path or query parameter."""

    name: str
    where: str  # "path" or "query"
    schema: dict[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True)
class Operation:
    """One endpoint: its route, its handler and what the document says of it."""

    method: str
    path: str
    handler: Handler
    summary: str
    response: type[BaseModel] | None  # None: a free-form JSON object
    status: int = 200
    body: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    auth: bool = True
    replays: bool = False  # answers 200 with the earlier result for a known idempotency key


def json_response(model: BaseModel | dict[str, Any], status: int = 200) -> web.Response:
    """A JSON answer."""
    data = dump(model) if isinstance(model, BaseModel) else model
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def error_response(err: ApiError) -> web.Response:
    """The JSON answer of an ApiError."""
    body = {"error": {"code": err.code, "message": err.message, "field": err.field}}
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    response = web.json_response(body, status=err.status, dumps=_dumps, headers=headers)
    if err.status == 413:
        # The rest of an oversized body (chunked has no length to skip) is not read:
        # the connection closes after the answer.
        response.force_close()
    return response


# --- input helpers


# Seconds for a request's body to arrive once its headers have (see guard.py).
BODY_TIMEOUT = 10.0


async def _body(request: web.Request, model: type[BaseModel], ctx: Context) -> Any:
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            raw = await request.read()
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()  # a stalled client gets no answer, only closed
        raise ApiError(
            408, "timeout", f"the request body did not arrive within {BODY_TIMEOUT:g}s"
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(
            413, "too_large", f"request body over {ctx.settings.max_body_bytes} bytes"
        ) from None
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        if first["type"] == "extra_forbidden":
            message = f"unknown field '{where}'"
        else:
            message = f"{where}: {first['msg']}" if where else first["msg"]
        raise ApiError(422, "invalid_field", message, where) from None


def _int_param(request: web.Request, name: str, *, default: int | None, low: int, high: int) -> int:
    raw = request.match_info.get(name) or request.query.get(name)
    if raw is None:
        if default is None:
            raise ApiError(422, "invalid_field", f"{name} is required", name)
        return default
    # ASCII digits only ("²".isdigit() is true), and few enough for int() to be cheap.
    if not re.fullmatch(r"[0-9]{1,19}", raw) or not low <= int(raw) <= high:
        raise ApiError(
            422, "invalid_field", f"{name} must be a whole number from {low} to {high}", name
        )
    return int(raw)


MAX_ID = 2**63 - 1


def _pulse_id(request: web.Request) -> int:
    return _int_param(request, "pulse_id", default=None, low=1, high=MAX_ID)


# --- handlers


async def health(_request: web.Request, _ctx: Context) -> web.Response:
    """Liveness: answers without touching the database or asking for a token."""
    return json_response(Health(ok=True, version=__version__))


async def status(_request: web.Request, ctx: Context) -> web.Response:
    """Queue summary."""
    nxt = await ctx.store.next_due()
    runs = ctx.scheduler.runs.values()
    return json_response(
        StatusOut(
            version=__version__,
            uptime_s=round(time.monotonic() - ctx.started, 3),
            counts=await ctx.store.counts(),
            next_due_at=nxt.scheduled_at if nxt else None,
            next_due_pulse_id=nxt.pulse_id if nxt else None,
            running=[
                RunningAttempt(
                    pulse_id=r.pulse_id,
                    attempt_id=r.attempt_id,
                    started_at=r.started_at,
                    pid=r.pid,
                    session_id=r.stream.session_id,
                    progress=r.stream.progress(),
                )
                for r in runs
            ],
            max_concurrent=ctx.settings.max_concurrent,
            executor=ctx.scheduler.executor.mode,
            agent=ctx.scheduler.executor.profile.name,
            last_denial=ctx.scheduler.last_denial,
            limits_unenforced=ctx.scheduler.executor.unenforced,
            last_error=ctx.scheduler.last_error,
        )
    )


FIRE_TIMES_SHOWN = 3


def with_fire_times(pulse: Pulse) -> Pulse:
    """A recurring pulse with its next occurrences, in UTC and on its own clock,
    so that a wrong zone or expression shows at once."""
    if pulse.cron is None or pulse.status not in (Status.PENDING, Status.PROCESSING):
        return pulse
    zone = load_zone(pulse.timezone or "UTC")
    times = [pulse.occurrence_at]
    with contextlib.suppress(RecurrenceError):  # a zone gone from tzdata: the first only
        times += next_occurrences(pulse.cron, zone, pulse.occurrence_at, FIRE_TIMES_SHOWN - 1)
    pulse.next_fire_times = [FireTime(utc=t, local=t.astimezone(zone).isoformat()) for t in times]
    return pulse


async def trigger(request: web.Request, ctx: Context) -> web.Response:
    """Create a pulse."""
    body: PulseCreate = await _body(request, PulseCreate, ctx)
    draft = prepare(body, settings=ctx.settings)
    # The agent's own pending pulses: for spacing a paced one and for the count bound.
    own = await ctx.store.pending_times(body.source) if draft.mine else []
    now = ctx.scheduler.clock()
    new = place(draft, now=now, own=own)
    pulse, created = await ctx.store.create(new, now=now)
    if created:
        soonest = (
            pulse.scheduled_at
            if pulse.deadline is None
            else min(pulse.scheduled_at, pulse.deadline)
        )
        ctx.scheduler.wake(due=soonest)
        log.info(
            "pulse=%d created by %s, due %s, priority %s",
            pulse.pulse_id,
            pulse.source,
            pulse.scheduled_at.isoformat(),
            pulse.priority,
        )
    response = json_response(with_fire_times(pulse), status=201 if created else 200)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


async def upcoming(request: web.Request, ctx: Context) -> web.Response:
    """Pending pulses, earliest first."""
    limit = _int_param(request, "limit", default=20, low=1, high=1000)
    pulses = await ctx.store.upcoming(limit)
    return json_response(PulseList(pulses=pulses, total=len(pulses), limit=limit, offset=0))


async def list_pulses(request: web.Request, ctx: Context) -> web.Response:
    """A page of pulses, optionally of one status."""
    raw_status = request.query.get("status")
    try:
        wanted = Status(raw_status) if raw_status else None
    except ValueError:
        choices = ", ".join(s.value for s in Status)
        raise ApiError(422, "invalid_field", f"status must be one of {choices}", "status") from None
    limit = _int_param(request, "limit", default=50, low=1, high=1000)
    offset = _int_param(request, "offset", default=0, low=0, high=MAX_ID)
    pulses, total = await ctx.store.list_pulses(status=wanted, limit=limit, offset=offset)
    return json_response(PulseList(pulses=pulses, total=total, limit=limit, offset=offset))


async def get_pulse(request: web.Request, ctx: Context) -> web.Response:
    """One pulse with its latest attempts and missed occurrences."""
    pulse_id = _pulse_id(request)
    attempts = _int_param(request, "attempts", default=MAX_ATTEMPTS_SHOWN, low=0, high=1000)
    pulse = with_fire_times(await ctx.store.get(pulse_id, attempts=attempts))
    for run in ctx.scheduler.runs.values():
        if run.pulse_id == pulse_id:
            pulse.progress = run.stream.progress()
    return json_response(pulse)


async def cancel(request: web.Request, ctx: Context) -> web.Response:
    """Cancel a pending pulse."""
    pulse = await ctx.store.cancel(_pulse_id(request), now=ctx.scheduler.clock())
    ctx.scheduler.wake()
    log.info("pulse=%d cancelled", pulse.pulse_id)
    return json_response(pulse)


async def reschedule(request: web.Request, ctx: Context) -> web.Response:
    """Move a pending pulse to a new time."""
    pulse_id = _pulse_id(request)
    body: Reschedule = await _body(request, Reschedule, ctx)
    current = await ctx.store.get(pulse_id, attempts=0)
    now = ctx.scheduler.clock()
    when, deadline = plan_move(current, body.scheduled_at, settings=ctx.settings, now=now)
    pulse = await ctx.store.reschedule(pulse_id, when, deadline=deadline, now=now)
    ctx.scheduler.wake()
    log.info("pulse=%d rescheduled to %s", pulse.pulse_id, pulse.scheduled_at.isoformat())
    return json_response(with_fire_times(pulse))


async def notify(request: web.Request, ctx: Context) -> web.Response:
    """Send a message to the user's Telegram chats."""
    body: Notify = await _body(request, Notify, ctx)
    s = ctx.settings
    if ctx.bot is None or not s.telegram_chat_ids:
        raise ApiError(
            503,
            "not_configured",
            "notifications are not configured: set "
            "REEVE_LITE_TELEGRAM_TOKEN (or the credential telegram-token) and "
            "REEVE_LITE_TELEGRAM_CHAT_IDS",
        )
    link = Link(body.link_url, body.link_text) if body.link_url else None
    if link is None and body.pulse_id is not None and s.session_url:
        session = next(
            (
                r.stream.session_id
                for r in ctx.scheduler.runs.values()
                if r.pulse_id == body.pulse_id and r.stream.session_id
            ),
            None,
        )
        if session:
            link = Link(s.session_url.format(session_id=quote(session, safe="")), "Open session")
    text = f"\u203c\ufe0f {body.message}" if body.priority == "critical" else body.message
    sent = 0
    try:
        for chat in s.telegram_chat_ids:
            sent += await ctx.bot.send_message(
                chat,
                text,
                parse_mode=body.parse_mode,
                silent=body.priority == "silent",
                link=link,
            )
    except TelegramError as exc:
        log.error("notification not sent: %s", exc)
        raise ApiError(502, "telegram_error", str(exc)) from None
    log.info("notification sent to %d chat(s) (%s)", len(s.telegram_chat_ids), body.priority)
    if body.pulse_id is not None:
        # The run answered its user: the Telegram listener sends no answer of its own.
        for run in ctx.scheduler.runs.values():
            if run.pulse_id == body.pulse_id:
                await ctx.store.count_notifications(run.attempt_id, sent)
    return json_response(
        NotifyOut(chats=list(s.telegram_chat_ids), messages=sent, link=link.url if link else None)
    )


MAX_AGENDA = 2000


def _first_line(text: str | None, limit: int = 100) -> str | None:
    if text is None:
        return None
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


async def agenda(request: web.Request, ctx: Context) -> web.Response:
    """Every fire time of the next `days` days, recurring pulses expanded."""
    days = _int_param(request, "days", default=7, low=1, high=366)
    now = ctx.scheduler.clock()
    until = now + timedelta(days=days)
    entries: list[AgendaEntry] = []
    truncated = False
    for pulse in await ctx.store.due_until(until):
        times = [pulse.scheduled_at]
        if pulse.cron:
            zone = load_zone(pulse.timezone or ctx.settings.timezone)
            with contextlib.suppress(RecurrenceError):
                later, count = occurrences_between(
                    pulse.cron, zone, pulse.occurrence_at, until, MAX_AGENDA
                )
                if count is None:  # more than the agenda holds: the first ones
                    later, truncated = (
                        next_occurrences(pulse.cron, zone, pulse.occurrence_at, MAX_AGENDA),
                        True,
                    )
                times += [t for t in later if t > pulse.scheduled_at]
        for at in times:
            entries.append(
                AgendaEntry(
                    at=at,
                    pulse_id=pulse.pulse_id,
                    priority=pulse.priority,
                    source=pulse.source,
                    prompt=_first_line(pulse.prompt) or "",
                    recurring=pulse.cron is not None,
                )
            )
    entries.sort(key=lambda e: (e.at, e.pulse_id))
    if len(entries) > MAX_AGENDA:
        entries, truncated = entries[:MAX_AGENDA], True
    return json_response(
        AgendaOut(
            start=now,
            until=until,
            timezone=ctx.settings.timezone,
            entries=entries,
            truncated=truncated,
        )
    )


async def history(request: web.Request, ctx: Context) -> web.Response:
    """Recent attempts, newest first, with daily totals."""
    raw = request.query.get("since", "7d")
    now = ctx.scheduler.clock()
    try:
        since = now - timedelta(seconds=parse_duration(raw))
    except TimeParseError:
        since = when_of(raw, now=now, zone=ctx.settings.zone, field="since", future=False)
    limit = _int_param(request, "limit", default=50, low=1, high=1000)
    rows, every = await ctx.store.history(since, limit)
    zone = ctx.settings.zone
    totals: dict[str, list[float]] = {}
    for started, failed, cost in every:
        day = started.astimezone(zone).date().isoformat()
        runs, failures, spent = totals.get(day, [0, 0, 0.0])
        totals[day] = [runs + 1, failures + failed, spent + (cost or 0.0)]
    attempts = [
        HistoryEntry(
            pulse_id=pulse.pulse_id,
            number=a.number,
            started_at=a.started_at,
            outcome="running" if a.finished_at is None else ("failed" if a.is_error else "ok"),
            duration_ms=a.duration_ms,
            cost_usd=a.cost_usd,
            source=pulse.source,
            prompt=_first_line(pulse.prompt) or "",
            summary=_first_line(a.error if a.is_error else a.result, 200),
        )
        for a, pulse in rows
    ]
    days = [
        DayTotal(day=day, runs=int(t[0]), failures=int(t[1]), cost_usd=round(t[2], 6))
        for day, t in sorted(totals.items(), reverse=True)
    ]
    return json_response(
        HistoryOut(since=since, timezone=ctx.settings.timezone, attempts=attempts, days=days)
    )


async def config(_request: web.Request, ctx: Context) -> web.Response:
    """The daemon's effective settings, secrets hidden."""
    return json_response(ConfigOut(settings=settings_text(ctx.settings)))


async def openapi(request: web.Request, _ctx: Context) -> web.Response:
    """This API's OpenAPI 3.1 document."""
    return web.json_response(openapi_document())


_ID = Param(
    "pulse_id",
    "path",
    {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "The pulse's id.",
    required=True,
)
_LIMIT = Param(
    "limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, "How many at most."
)

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/api/health", health, "Liveness (no token needed)", Health, auth=False),
    Operation("GET", "/api/status", status, "Queue summary", StatusOut),
    Operation(
        "GET", "/api/config", config, "The daemon's effective settings (secrets hidden)", ConfigOut
    ),
    Operation(
        "GET",
        "/api/agenda",
        agenda,
        "Every fire time of the coming days, recurring pulses expanded",
        AgendaOut,
        params=(
            Param(
                "days",
                "query",
                {"type": "integer", "minimum": 1, "maximum": 366},
                "How many days ahead (default 7).",
            ),
        ),
    ),
    Operation(
        "GET",
        "/api/history",
        history,
        "Recent attempts, newest first, and runs, failures and cost per day",
        HistoryOut,
        params=(
            Param(
                "since",
                "query",
                {"type": "string", "minLength": 1, "maxLength": 200},
                "How far back: a duration ('7d', the default) or a time ('2026-11-01').",
            ),
            _LIMIT,
        ),
    ),
    Operation(
        "POST",
        "/api/pulse/trigger",
        trigger,
        "Create a pulse (201; 200 for a known idempotency key)",
        Pulse,
        status=201,
        body=PulseCreate,
        errors=(400, 413, 422, 429),
        replays=True,
    ),
    Operation(
        "GET",
        "/api/pulse/upcoming",
        upcoming,
        "Pending pulses, earliest due first",
        PulseList,
        params=(_LIMIT,),
        errors=(422,),
    ),
    Operation(
        "GET",
        "/api/pulses",
        list_pulses,
        "Pulses by status, paged (pending in due order, others newest first)",
        PulseList,
        params=(
            Param(
                "status",
                "query",
                # Empty means every status, as when the parameter is absent.
                {"type": "string", "enum": [*(s.value for s in Status), ""]},
                "Only pulses in this status (empty or absent: every status).",
            ),
            _LIMIT,
            Param(
                "offset",
                "query",
                {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                "How many to skip.",
            ),
        ),
        errors=(422,),
    ),
    Operation(
        "GET",
        "/api/pulse/{pulse_id}",
        get_pulse,
        "One pulse with its latest attempts",
        Pulse,
        params=(
            _ID,
            Param(
                "attempts",
                "query",
                {"type": "integer", "minimum": 0, "maximum": 1000},
                f"How many of the latest attempts to include (default {MAX_ATTEMPTS_SHOWN}).",
            ),
        ),
        errors=(404, 422),
    ),
    Operation(
        "POST",
        "/api/pulse/{pulse_id}/cancel",
        cancel,
        "Cancel a pending pulse",
        Pulse,
        params=(_ID,),
        errors=(404, 409, 422),
    ),
    Operation(
        "POST",
        "/api/pulse/{pulse_id}/reschedule",
        reschedule,
        "Move a pending pulse",
        Pulse,
        body=Reschedule,
        params=(_ID,),
        errors=(400, 404, 409, 413, 422),
    ),
    Operation(
        "POST",
        "/api/notify",
        notify,
        "Send a message to the user's Telegram chats",
        NotifyOut,
        body=Notify,
        errors=(400, 413, 422, 502, 503),
    ),
    Operation("GET", "/api/openapi.json", openapi, "This document", None, auth=False),
)

_ERROR_TEXT = {
    400: "Malformed JSON",
    401: "Missing or wrong token",
    404: "No such pulse",
    409: "The pulse is not pending",
    413: "Body or prompt too large",
    422: "A field is invalid (named in error.field)",
    429: "Too many pending pulses of the agent's own (pacing)",
    502: "Telegram refused or could not be reached",
    503: "Database busy, or notifications not configured",
    507: "Disk full",
}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of `OPERATIONS`, schemas from the pydantic models.

    Built at the first request for it, not at start-up (socket activation waits
    for start-up; schema generation and its import are a tenth of it).
    """
    from pydantic.json_schema import models_json_schema

    models: list[tuple[type[BaseModel], Any]] = [(ErrorOut, "serialization")]
    for op in OPERATIONS:
        if op.response is not None:
            models.append((op.response, "serialization"))
        if op.body is not None:
            models.append((op.body, "validation"))
    refs, defs = models_json_schema(
        list(dict.fromkeys(models)), ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        ok_schema: dict[str, Any] = (
            {"type": "object"} if op.response is None else refs[(op.response, "serialization")]
        )
        responses: dict[str, Any] = {
            str(op.status): {
                "description": op.summary,
                "content": {"application/json": {"schema": ok_schema}},
            }
        }
        if op.replays:
            responses["200"] = {
                "description": "The pulse created earlier with the same idempotency key",
                "content": {"application/json": {"schema": ok_schema}},
            }
        # Every operation refuses an unknown query parameter.
        codes = [*op.errors, 422]
        if op.auth:
            codes.append(401)
        if op.auth:
            codes += [503, 507]
        for code in sorted(set(codes)):
            responses[str(code)] = {
                "description": _ERROR_TEXT[code],
                "content": {"application/json": {"schema": refs[(ErrorOut, "serialization")]}},
            }
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": op.handler.__name__,
            "responses": responses,
            "parameters": [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.required or p.where == "path",
                    "description": p.description,
                    "schema": p.schema,
                }
                for p in op.params
            ],
        }
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        if not op.auth:
            entry["security"] = []
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "reeve-lite",
            "version": __version__,
            "description": "The pulse queue of a proactive AI agent. On TCP every operation "
            "but health needs `Authorization: Bearer TOKEN`; on the Unix socket the file "
            "mode is the guard unless a token is required there too.",
        },
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


# --- middlewares


def _is_unix(request: web.Request) -> bool:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    return sock is not None and sock.family == socket.AF_UNIX


def _authorized(request: web.Request, settings: Settings) -> bool:
    if _is_unix(request) and not settings.socket_require_token:
        return True
    if not settings.api_token:
        return False
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    # aiohttp decodes odd header bytes to surrogates; they must compare, not raise.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode("utf-8", "surrogateescape"), settings.api_token.encode()
    )


def _database_error(exc: DatabaseError) -> ApiError:
    kind = exc.kind
    if kind == "full":
        return ApiError(507, "disk_full", "the database's disk is full; nothing was changed")
    if kind == "busy":
        return ApiError(503, "database_busy", "the database is busy; try again shortly")
    return ApiError(503, "database_error", "the database cannot answer; see the daemon's log")


# The HTTP status of the planner's refusals (the others are 422).
_PLAN_STATUS: dict[type[PlanError], int] = {TooLarge: 413, TooMany: 429}


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    if ctx.on_request is not None:
        ctx.on_request()
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except NotFound as exc:
        return error_response(ApiError(404, "not_found", str(exc), "pulse_id"))
    except NotPending as exc:
        return error_response(ApiError(409, "not_pending", str(exc), "pulse_id"))
    except PlanError as exc:
        status = _PLAN_STATUS.get(type(exc), 422)
        return error_response(ApiError(status, exc.code, exc.message, exc.field))
    except RecurrenceError as exc:
        return error_response(ApiError(422, "invalid_field", str(exc), exc.field))
    except DatabaseError as exc:
        log.error("%s %s: database error: %s", request.method, request.path, exc)
        return error_response(_database_error(exc))
    except web.HTTPException as exc:
        if exc.status == 413:
            limit = ctx.settings.max_body_bytes
            return error_response(ApiError(413, "too_large", f"request body over {limit} bytes"))
        code = "not_found" if exc.status == 404 else "http_error"
        return error_response(ApiError(exc.status, code, exc.reason))


def _route(op: Operation, ctx: Context) -> Callable[[web.Request], Awaitable[web.Response]]:
    known = {p.name for p in op.params if p.where == "query"}

    async def handle(request: web.Request) -> web.Response:
        if op.auth and not _authorized(request, ctx.settings):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token")
        # As with body fields, a misspelt parameter is an error, not silently ignored.
        for name in request.query:
            if name not in known:
                raise ApiError(422, "invalid_field", f"unknown query parameter '{name}'", name)
        return await op.handler(request, ctx)

    return handle


def make_app(ctx: Context) -> web.Application:
    """The aiohttp application serving `OPERATIONS` for `ctx`."""
    app = web.Application(middlewares=[_errors], client_max_size=ctx.settings.max_body_bytes)
    app[CONTEXT] = ctx
    for op in OPERATIONS:
        app.router.add_route(op.method, op.path, _route(op, ctx))
    return app
