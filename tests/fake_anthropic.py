"""A local stand-in for the Anthropic Messages API, for running the real Claude Code CLI.

Point the CLI at it with `ANTHROPIC_BASE_URL=<url>` and any `ANTHROPIC_API_KEY`.
It answers `POST /v1/messages` (SSE stream or JSON, in the real API's format),
`POST /v1/messages/count_tokens`, `GET /v1/models` and the CLI's `HEAD /api/hello`
warm-up, and records every request (method, path, headers, JSON body).

What it answers comes from a script of turns, taken in order by the *main
conversation* requests only: an auto-compaction request (same shape as the main
ones, but asking for a `<summary>`) gets a canned summary, and any other side
request (`max_tokens: 1`, or neither tools nor thinking) gets `side_text`; each
recorded request has its `kind` (`main`, `compact`, `side`, `count_tokens`,
`models`, `other`). A turn is a JSON object:

  {"text": "hi"}                                  an end_turn answer
  {"text": "let me", "tool_use": {"name": "mcp__reeve-lite__schedule_pulse",
                                  "input": {...}}} a tool call (a list: several)
  {"error": {"status": 400, "type": "invalid_request_error", "message": "..."}}
                                                  an HTTP error with the API's body
  {"error": {..., "in_stream": true}}             an SSE `error` event after message_start
  optional on any turn: "match": "substr" (only for a request whose last user
  message contains it), "delay": seconds (before answering), "usage": {...},
  "stop_reason": "...", "headers": {...} (extra response headers).

With the script exhausted, a request whose last user message holds a tool_result
gets `{"text": "done"}`, any other gets `default` (`{"text": "ok"}` unless set; an
error turn as `default` fails every retry the CLI makes).

Run the CLI with `claude_env()`: a fresh HOME, no non-essential traffic (no DNS
look-ups of api.anthropic.com, no `HEAD /api/hello`), and few API retries (the CLI
retries 401, 429, 5xx, 529 and refused connections 10 times over about 3 minutes).
Give it stdin=DEVNULL when the prompt is an argument: an open, silent stdin costs a
3 s wait.

In-process: `FakeAnthropic().start()` serves on a thread of its own (`.url`,
`.set_script()`, `.requests`, `.main_requests()`, `.stop()`); `.responder` may be
set to a callable `(body) -> Turn | None` that is asked first.
Across processes: `python -m tests.fake_anthropic --port N` prints its URL on the
first line of stdout; `POST /_script {"turns": [...], "default": {...}, "append":
false}`, `GET /_requests` and `POST /_reset` control it (`set_script()`,
`get_requests()` and `reset()` below call them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.local_server import LocalServer

Turn = dict[str, Any]
Responder = Callable[[dict[str, Any]], Turn | None]

DEFAULT_TURN: Turn = {"text": "ok"}
AFTER_TOOL_TURN: Turn = {"text": "done"}
COMPACT_SUMMARY = (
    "<analysis>The stand-in's analysis.</analysis>\n"
    "<summary>The stand-in's summary of the earlier conversation.</summary>"
)
CREDIT_BALANCE_TOO_LOW = (
    "Your credit balance is too low to access the Anthropic API. "
    "Please go to Plans & Billing to upgrade or purchase credits."
)
# Canned errors as the real API words them, for scripts.
ERRORS: dict[str, Turn] = {
    "credit": {
        "error": {"status": 400, "type": "invalid_request_error", "message": CREDIT_BALANCE_TOO_LOW}
    },
    "auth": {
        "error": {"status": 401, "type": "authentication_error", "message": "invalid x-api-key"}
    },
    "overloaded": {"error": {"status": 529, "type": "overloaded_error", "message": "Overloaded"}},
    "api": {"error": {"status": 500, "type": "api_error", "message": "Internal server error"}},
    "rate_limit": {
        "error": {
            "status": 429,
            "type": "rate_limit_error",
            "message": "This request would exceed the rate limit for your organization.",
        }
    },
}


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _text_of(content: Any) -> str:
    """The text in a message's content (string or blocks, tool results included)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                parts.append(_text_of(block.get("content", "")))
    return "\n".join(parts)


def last_user_message(body: dict[str, Any]) -> dict[str, Any] | None:
    """The last message with role `user` in a Messages request body."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return message
    return None


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message (text blocks and tool results)."""
    message = last_user_message(body)
    return _text_of(message.get("content")) if message else ""


def has_tool_result(body: dict[str, Any]) -> bool:
    """Whether the last user message carries a tool_result block."""
    message = last_user_message(body)
    content = message.get("content") if message else None
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def is_compaction(body: dict[str, Any]) -> bool:
    """Whether a Messages request is the CLI asking for a summary of the conversation
    (auto-compaction; it has the main conversation's shape, tools included)."""
    text = last_user_text(body)
    return "Do NOT call any tools" in text and "<summary>" in text


def kind_of(body: dict[str, Any]) -> str:
    """`main` for the main conversation's turns; `compact` for a compaction summary;
    `side` for a utility call (a `max_tokens: 1` check, or neither tools nor thinking)."""
    if int(body.get("max_tokens") or 0) <= 1:
        return "side"
    if "tools" not in body and "thinking" not in body:
        return "side"
    return "compact" if is_compaction(body) else "main"


def _usage(turn: Turn, body: dict[str, Any], output_tokens: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": max(1, len(json.dumps(body.get("messages", []))) // 4),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    usage.update(turn.get("usage") or {})
    return usage


def _blocks(turn: Turn) -> list[dict[str, Any]]:
    """The content blocks a turn answers with."""
    blocks: list[dict[str, Any]] = []
    if turn.get("text"):
        blocks.append({"type": "text", "text": str(turn["text"])})
    calls = turn.get("tool_use") or []
    for call in [calls] if isinstance(calls, dict) else calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or _id("toolu_01"),
                "name": call["name"],
                "input": call.get("input", {}),
            }
        )
    if not blocks:
        blocks.append({"type": "text", "text": ""})
    return blocks


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def claude_env(
    base_url: str, home: str, *, retries: int = 0, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment for running the real Claude Code CLI against the stand-in."""
    env = dict(base if base is not None else os.environ)
    env.update(
        HOME=home,
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY="sk-ant-test-key",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        CLAUDE_CODE_MAX_RETRIES=str(retries),
    )
    env.pop("ANTHROPIC_AUTH_TOKEN", None)
    return env


def error_body(kind: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """The real API's error JSON."""
    return {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": request_id or _id("req_011"),
    }


@dataclass
class FakeAnthropic:
    """The stand-in: its script, its record of requests and its server thread."""

    script: list[Turn] = field(default_factory=list)
    default: Turn = field(default_factory=lambda: dict(DEFAULT_TURN))
    side_text: str = "ok"
    model: str | None = None  # answer as this model (default: the one asked for)
    api_key: str | None = None  # when set, other keys get a 401 authentication_error
    responder: Responder | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    log: bool = False  # print one line per request on stderr
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: LocalServer | None = None

    # -- the scripting interface -------------------------------------------------

    def set_script(self, turns: list[Turn], default: Turn | None = None) -> None:
        """Replace the script (and the default turn, if given)."""
        with self._lock:
            self.script = list(turns)
            if default is not None:
                self.default = default

    def add(self, *turns: Turn) -> None:
        """Append turns to the script."""
        with self._lock:
            self.script.extend(turns)

    def main_requests(self) -> list[dict[str, Any]]:
        """The recorded bodies of the main conversation's Messages requests."""
        with self._lock:
            return [r["body"] for r in self.requests if r["kind"] == "main"]

    def reset(self) -> None:
        """Forget the script and the recorded requests."""
        with self._lock:
            self.script.clear()
            self.requests.clear()
            self.default = dict(DEFAULT_TURN)

    def choose(self, body: dict[str, Any]) -> Turn:
        """The turn that answers a main-conversation request."""
        if self.responder is not None:
            turn = self.responder(body)
            if turn is not None:
                return turn
        text = last_user_text(body)
        with self._lock:
            for i, turn in enumerate(self.script):
                if "match" not in turn or str(turn["match"]) in text:
                    return self.script.pop(i)
            default = self.default
        return dict(AFTER_TOOL_TURN) if has_tool_result(body) else dict(default)

    # -- HTTP ----------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/_script", self._set_script)
        app.router.add_get("/_requests", self._get_requests)
        app.router.add_post("/_reset", self._reset)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        app.router.add_route("*", "/{tail:.*}", self._other)
        return app

    async def _record(self, request: web.Request, kind: str) -> dict[str, Any]:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        if kind == "messages":
            kind = kind_of(body) if isinstance(body, dict) else "side"
        entry = {
            "time": time.time(),
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": dict(request.headers),
            "kind": kind,
            "body": body,
        }
        with self._lock:
            self.requests.append(entry)
        if self.log:
            model = body.get("model") if isinstance(body, dict) else None
            print(f"{request.method} {request.path_qs} {kind} {model or ''}", file=sys.stderr)
        return entry

    def _authorized(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return self.api_key in (request.headers.get("x-api-key"), bearer)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        entry = await self._record(request, "messages")
        body = entry["body"]
        if not isinstance(body, dict):
            return self._error(400, "invalid_request_error", "messages: a JSON body is required")
        if not self._authorized(request):
            return self._error(401, "authentication_error", "invalid x-api-key")
        turn: Turn = {"text": self.side_text}
        if entry["kind"] == "main":
            turn = self.choose(body)
        elif entry["kind"] == "compact":
            turn = {"text": COMPACT_SUMMARY}
        if turn.get("delay"):
            await asyncio.sleep(float(turn["delay"]))
        error = turn.get("error")
        if error and not (error.get("in_stream") and body.get("stream")):
            return self._error(
                int(error.get("status", 400)),
                str(error.get("type", "invalid_request_error")),
                str(error.get("message", "")),
                turn.get("headers"),
            )
        blocks = _blocks(turn)
        stop = turn.get("stop_reason") or (
            "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        )
        output_tokens = max(1, len(json.dumps(blocks)) // 4)
        message: dict[str, Any] = {
            "id": _id("msg_01"),
            "type": "message",
            "role": "assistant",
            "model": self.model or body.get("model", "claude-sonnet-4-5"),
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": _usage(turn, body, output_tokens),
        }
        headers = {"request-id": _id("req_011"), **(turn.get("headers") or {})}
        if not body.get("stream"):
            return web.json_response(message, headers=headers)
        return await self._stream(request, message, headers, error)

    async def _stream(
        self,
        request: web.Request,
        message: dict[str, Any],
        headers: dict[str, str],
        error: dict[str, Any] | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                **headers,
            }
        )
        await response.prepare(request)
        start = dict(message, content=[], stop_reason=None)
        start["usage"] = dict(message["usage"], output_tokens=1)
        await response.write(_sse("message_start", {"type": "message_start", "message": start}))
        if error:
            await response.write(
                _sse(
                    "error",
                    error_body(
                        str(error.get("type")), str(error.get("message")), headers["request-id"]
                    ),
                )
            )
            await response.write_eof()
            return response
        for index, block in enumerate(message["content"]):
            empty = dict(block, text="") if block["type"] == "text" else dict(block, input={})
            await response.write(
                _sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": empty},
                )
            )
            if index == 0:
                await response.write(_sse("ping", {"type": "ping"}))
            if block["type"] == "text":
                deltas = [{"type": "text_delta", "text": c} for c in _chunks(block["text"], 40)]
            else:
                raw = json.dumps(block["input"], ensure_ascii=False)
                deltas = [{"type": "input_json_delta", "partial_json": ""}] + [
                    {"type": "input_json_delta", "partial_json": c} for c in _chunks(raw, 40)
                ]
            for delta in deltas:
                await response.write(
                    _sse(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
            await response.write(
                _sse("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        await response.write(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": message["usage"],
                },
            )
        )
        await response.write(_sse("message_stop", {"type": "message_stop"}))
        await response.write_eof()
        return response

    def _error(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        request_id = _id("req_011")
        return web.json_response(
            error_body(kind, message, request_id),
            status=status,
            headers={"request-id": request_id, **(headers or {})},
        )

    async def _count_tokens(self, request: web.Request) -> web.Response:
        entry = await self._record(request, "count_tokens")
        if not self._authorized(request):
            return self._error(401, "authentication_error", "invalid x-api-key")
        return web.json_response({"input_tokens": max(1, len(json.dumps(entry["body"])) // 4)})

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request, "models")
        names = ["claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5"]
        data = [
            {"type": "model", "id": n, "display_name": n, "created_at": "2025-01-01T00:00:00Z"}
            for n in names
        ]
        return web.json_response(
            {"data": data, "has_more": False, "first_id": names[0], "last_id": names[-1]}
        )

    async def _other(self, request: web.Request) -> web.Response:
        await self._record(request, "other")
        if request.path == "/api/hello":  # the CLI's connection warm-up
            return web.Response(status=200)
        return self._error(404, "not_found_error", f"Not found: {request.method} {request.path}")

    async def _set_script(self, request: web.Request) -> web.Response:
        payload = await request.json()
        turns = list(payload.get("turns", []))
        if payload.get("append"):
            self.add(*turns)
        else:
            self.set_script(turns, payload.get("default"))
        if "side_text" in payload:
            self.side_text = str(payload["side_text"])
        return web.json_response({"script": len(self.script)})

    async def _get_requests(self, request: web.Request) -> web.Response:
        with self._lock:
            return web.json_response(list(self.requests))

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({})

    # -- serving ---------------------------------------------------------------------

    def start(self, port: int = 0) -> FakeAnthropic:
        """Serve on 127.0.0.1 (a free port by default) in a thread of its own."""

        async def make() -> web.Application:
            return self.app()

        self._server = LocalServer.start(make, port, "the fake Anthropic API")
        self.url = self._server.url
        return self

    def stop(self) -> None:
        """Stop serving and end the thread."""
        assert self._server is not None
        self._server.stop()

    def __enter__(self) -> FakeAnthropic:
        return self.start() if not self.url else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the control endpoints from another process -----------------------------------------


def _call(url: str, method: str, payload: dict[str, Any] | None = None) -> Any:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def set_script(
    base_url: str, turns: list[Turn], default: Turn | None = None, *, append: bool = False
) -> None:
    """Set (or extend) the script of a stand-in running in another process."""
    payload: dict[str, Any] = {"turns": turns, "append": append}
    if default is not None:
        payload["default"] = default
    _call(f"{base_url}/_script", "POST", payload)


def get_requests(base_url: str) -> list[dict[str, Any]]:
    """Every request a stand-in in another process has recorded."""
    result: list[dict[str, Any]] = _call(f"{base_url}/_requests", "GET")
    return result


def reset(base_url: str) -> None:
    """Clear the script and the record of a stand-in in another process."""
    _call(f"{base_url}/_reset", "POST", {})


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted; the first line of stdout is the base URL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", help="a JSON file with a list of turns")
    parser.add_argument("--quiet", action="store_true", help="do not log requests on stderr")
    args = parser.parse_args(argv)
    fake = FakeAnthropic(log=not args.quiet)
    if args.script:
        with open(args.script) as f:
            fake.set_script(json.load(f))
    fake.start(args.port)
    print(fake.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
