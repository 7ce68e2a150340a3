"""The agent CLI: which program a pulse runs, with what argv, and how its output
is read into a verdict.

A profile is one way to call Claude Code: `claude` itself, `hapi claude` (hapi
names the agent it wraps, then passes Claude Code's flags through), or a
command of the user's that takes the same flags. Every run gets Claude Code's
stream-json flags, this daemon's own MCP server (`--mcp-config`) and the
permission to use exactly its tools (`--allowedTools mcp__reeve-lite`).

The stream-json events read here are the ones the real CLI prints (see the
"The agent" in docs/operations.md): `system/init` (the session id), `assistant`
(the model answered), `system/api_retry` (the API is being retried), and one
`result` whose `is_error`, `result`, `errors` and `permission_denials` say how
the run went. A failed run is a `result` with subtype `success` and
`is_error: true`, so the subtype alone never decides.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AGENT_FLAGS = ("--print", "--output-format", "stream-json", "--verbose")
# The name this daemon's MCP server has inside a run; its tools are
# `mcp__reeve-lite__<tool>`, and the server's name alone allows all of them.
MCP_SERVER = "reeve-lite"
MAX_RESULT_CHARS = 65536
# Claude Code's answer to `--resume` of a session it does not have.
_SESSION_GONE = "No conversation found with session ID"
# Known failure texts of the real CLIs, and what fixes them.
_FIXES = (
    (
        "Not logged in",
        "log in once as the daemon's user (run `claude`, then /login), or give the "
        "daemon ANTHROPIC_API_KEY",
    ),
    ("Invalid API key", "check ANTHROPIC_API_KEY in the daemon's environment"),
    (
        "CLI_API_TOKEN is required",
        "run `hapi auth login` as the daemon's user, or set CLI_API_TOKEN in its environment",
    ),
    (
        "Unable to connect to HAPI hub",
        "start hapi's hub (`hapi hub`) and give the daemon HAPI_API_URL, or set "
        "REEVE_LITE_AGENT=claude",
    ),
    (
        "Authentication error: Request failed with status code 401",
        "hapi's token is not the hub's: run `hapi auth login` as the daemon's user, or "
        "set CLI_API_TOKEN to the hub's",
    ),
)


class AgentUnavailable(RuntimeError):
    """No agent CLI can be found for the configured profile."""


@dataclass(frozen=True)
class Profile:
    """How to call the agent: the program and the words that come before
    Claude Code's flags, and whether this daemon's MCP tools are handed over."""

    name: str  # "hapi", "claude" or "command"
    command: tuple[str, ...]
    mcp: bool = True

    @property
    def program(self) -> str:
        """What a person would call the program in an error message."""
        return "hapi" if self.name == "hapi" else Path(self.command[0]).name

    @property
    def prompt_on_stdin(self) -> bool:
        """Whether the prompt is written to the agent's stdin rather than argv."""
        return self.name != "command"

    def argv(self, prompt: str, *, session_id: str | None, mcp_config: str | None) -> list[str]:
        """The whole argv of one run.

        hapi and Claude Code read the prompt on stdin: it never shows in `ps` or
        in hapi's logs, and nothing after it can be lost. (hapi appends its own
        `--settings FILE --add-dir DIR`, its session hooks, after our arguments,
        and Claude Code ignores every word after the first one that follows
        `--`.) A command gets the prompt last, after `--`, so that a prompt that
        begins with `-` is never read as a flag (nor as a flag's value)."""
        argv = list(self.command)
        if mcp_config is not None and self.mcp:
            # Both take several values: a switch must follow them, never a word.
            argv += ["--mcp-config", mcp_config, "--allowedTools", f"mcp__{MCP_SERVER}"]
        if session_id:
            argv += ["--resume", session_id]
        argv += AGENT_FLAGS
        return argv if self.prompt_on_stdin else [*argv, "--", prompt]


def resolve_profile(
    agent: str, command: Sequence[str], *, path: str | None, mcp: bool = True
) -> Profile:
    """The profile `REEVE_LITE_AGENT` names, with its program found on `path`.

    `auto` takes a command set in `REEVE_LITE_AGENT_COMMAND`, then `hapi`, then
    `claude`; it raises AgentUnavailable naming both and the setting when neither
    is installed. With `hapi` or `claude`, a command names the program."""
    if agent == "command" or (agent == "auto" and command):
        if not command:
            raise AgentUnavailable(
                "REEVE_LITE_AGENT=command needs REEVE_LITE_AGENT_COMMAND (the agent's argv)"
            )
        return Profile("command", tuple(command), mcp)
    found = {name: shutil.which(name, path=path) for name in ("hapi", "claude")}
    if agent in ("hapi", "claude"):
        # With a command, that is the program (one not on PATH). Named on purpose:
        # a missing program is each run's error, which says so.
        program = tuple(command) or (found[agent] or agent,)
        return Profile(agent, (*program, "claude") if agent == "hapi" else program, mcp)
    if found["hapi"]:
        return Profile("hapi", (found["hapi"], "claude"), mcp)
    if found["claude"]:
        return Profile("claude", (found["claude"],), mcp)
    raise AgentUnavailable(
        "no agent CLI found: neither `hapi` nor `claude` is on the daemon's PATH. Install "
        "Claude Code (npm install -g @anthropic-ai/claude-code) or hapi "
        "(npm install -g @twsxtd/hapi), or set REEVE_LITE_AGENT (hapi, claude or command "
        "with REEVE_LITE_AGENT_COMMAND)"
    )


def mcp_config(
    socket: Path, *, pulse_id: int, attempt_id: int, python: str = sys.executable
) -> str:
    """The `--mcp-config` JSON that gives a run this installation's MCP server,
    talking to this daemon's socket. It holds no secret: it shows in `ps`."""
    server = {
        "command": python,
        "args": ["-I", "-m", "reeve_lite.cli", "mcp"],
        "env": {
            "REEVE_LITE_SOCKET": str(socket),
            "REEVE_PULSE_ID": str(pulse_id),
            "REEVE_ATTEMPT_ID": str(attempt_id),
        },
    }
    return json.dumps({"mcpServers": {MCP_SERVER: server}}, separators=(",", ":"))


@dataclass(frozen=True)
class Brief:
    """What the agent is told for one attempt: the whole text it gets (notes
    included), the session to resume, and the texts that must never show in a
    report (the pulse's own prompt and notes, when the text is a retry's note)."""

    prompt: str
    session_id: str | None = None
    private: Sequence[str] = ()


def compose_prompt(prompt: str, sticky_notes: Sequence[str]) -> str:
    """The prompt handed to the agent: the pulse's prompt, then its reminders."""
    if not sticky_notes:
        return prompt
    reminders = "\n".join(f"- {note}" for note in sticky_notes)
    return f"{prompt}\n\nReminders:\n{reminders}"


def retry_prompt(number: int, previous_error: str | None) -> str:
    """What a retry sends when it resumes the session of the attempt before it:
    the task is already in that conversation, so only how it ended."""
    ended = previous_error or "without a result"
    return (
        f"[reeve-lite] This is attempt {number} of the same pulse. The previous attempt "
        f"ended: {ended}. Continue the task above from where it stopped."
    )


@dataclass
class StreamState:
    """What the agent's stream-json output has told so far."""

    session_id: str | None = None
    saw_init: bool = False
    result_seen: bool = False
    is_error: bool = False
    result: str | None = None
    errors: list[str] = field(default_factory=list)
    cost_usd: float | None = None
    num_turns: int | None = None
    # Tools the run asked for and was refused (`permission_denials`), by name.
    denials: list[str] = field(default_factory=list)
    # While Claude Code retries its API: (attempt, max_retries, the error).
    api_retry: tuple[int, int | None, str | None] | None = None

    def feed(self, line: bytes) -> None:
        """Take one output line; lines that are not JSON objects are ignored."""
        line = line.strip()
        if not line.startswith(b"{"):
            return
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):  # deep nesting exhausts the parser's stack
            return
        if isinstance(event, dict):
            self._event(event)

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        subtype = event.get("subtype")
        session = event.get("session_id")
        if kind == "system" and subtype == "init":
            self.saw_init = True
            if isinstance(session, str):
                self.session_id = session
        elif kind == "system" and subtype == "api_retry":
            attempt = _int(event.get("attempt"))
            if attempt is not None:
                # `error` is a short kind ("overloaded", "authentication_failed"),
                # `error_status` the HTTP status when there was an answer.
                error = event.get("error")
                text = _short(error) if isinstance(error, str) else None
                status = _int(event.get("error_status"))
                if status is not None:
                    text = f"{text or 'error'} ({status})"
                self.api_retry = (attempt, _int(event.get("max_retries")), text)
        elif kind == "assistant":
            self.api_retry = None  # the API answered: no retry in progress
        elif kind == "result":
            self._result(event, subtype, session)

    def _result(self, event: dict[str, Any], subtype: Any, session: Any) -> None:
        self.result_seen = True
        self.api_retry = None
        if isinstance(session, str):
            self.session_id = session
        self.is_error = bool(event.get("is_error")) or subtype not in (None, "success")
        result = event.get("result")
        if isinstance(result, str):
            self.result = result[:MAX_RESULT_CHARS]
        errors = event.get("errors")
        if isinstance(errors, list):
            self.errors = [str(e)[:2000] for e in errors[:20]]
        self.cost_usd = _run_cost(event)
        self.num_turns = _int(event.get("num_turns"))
        denials = event.get("permission_denials")
        if isinstance(denials, list):
            self.denials = [
                str(d.get("tool_name"))[:200]
                for d in denials[:50]
                if isinstance(d, dict) and d.get("tool_name")
            ]
        if self.is_error and not self.errors and not self.result and subtype != "success":
            self.errors = [str(subtype)]

    @property
    def session_gone(self) -> bool:
        """The run asked to resume a session the CLI does not have."""
        return not self.saw_init and any(_SESSION_GONE in e for e in self.errors)

    def progress(self) -> str | None:
        """A short word on a run in progress, e.g. "API retry 3/10: overloaded"."""
        if self.api_retry is None:
            return None
        attempt, most, error = self.api_retry
        text = f"API retry {attempt}/{most}" if most else f"API retry {attempt}"
        return f"{text}: {error}" if error else text


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _run_cost(event: dict[str, Any]) -> float | None:
    """This run's cost. After `--resume`, `total_cost_usd` is the whole session's;
    `model_usage_since_last_result` holds this run's own, per model."""
    usage = event.get("model_usage_since_last_result")
    if isinstance(usage, dict) and usage:
        costs = [_number(m.get("costUSD")) for m in usage.values() if isinstance(m, dict)]
        if costs and all(c is not None for c in costs):
            return sum(c for c in costs if c is not None)
    return _number(event.get("total_cost_usd"))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Verdict:
    """How a finished run is judged: its error (None: it succeeded), and whether
    the session it was to resume is gone."""

    error: str | None
    session_gone: bool = False


STOPPED = "stopped: the daemon shut down before the run ended"


def judge(
    code: int | None,
    stream: StreamState,
    tail: str,
    *,
    timed_out: bool,
    stopped: bool,
    timeout: float,
    program: str = "agent",
    private: Sequence[str] = (),
) -> Verdict:
    """The verdict on a finished run. The reason is the CLI's own (its result text,
    its `errors`, or its last line that is not JSON), with the fix when it is a
    known one; no text of `private` (the prompt, secrets) is ever part of it."""
    if timed_out:
        return Verdict(f"timed out after {timeout:g}s; the run's processes were killed")
    if stopped:
        return Verdict(STOPPED)
    reason = redact(_reason(stream, redact(tail, private)), private)
    if reason:
        for text, fix in _FIXES:
            if text in reason:
                reason = f"{reason} (fix: {fix})"
                break
    if stream.session_gone:
        return Verdict(
            f"the session to resume is gone ({reason}); the pulse runs again as a new session",
            session_gone=True,
        )
    if code is None:
        return Verdict("the agent's exit status is unknown")
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals.__members__.values() else code
        return Verdict(f"{program} killed by signal {name}" + (f": {reason}" if reason else ""))
    if code != 0:
        return Verdict(f"{program} exited with status {code}" + (f": {reason}" if reason else ""))
    if stream.is_error:
        return Verdict(f"{program} reported an error: {reason or 'no detail'}")
    if not stream.result_seen:
        # A clean exit with no result: the stream was cut or the CLI is not Claude Code.
        return Verdict(
            f"{program} exited without a result event" + (f": {reason}" if reason else "")
        )
    return Verdict(None)


def _reason(stream: StreamState, tail: str) -> str:
    if stream.errors:
        return "; ".join(_short(e, 500) for e in stream.errors)
    if stream.is_error and stream.result:
        return _short(stream.result, 500)
    if stream.api_retry is not None and stream.api_retry[2]:
        return f"API unreachable after {stream.api_retry[0]} retries: {stream.api_retry[2]}"
    # A known failure may be followed by a stack trace (hapi is a Bun binary).
    for line in tail.splitlines()[-200:]:
        if any(text in line for text, _ in _FIXES):
            return _short(line.strip(), 500)
    return last_line(tail)


def last_line(text: str) -> str:
    """The last line of output that is not a JSON event, trimmed."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line and not line.startswith("{"):
            return _short(line, 500)
    return ""


def redact(text: str, private: Sequence[str]) -> str:
    """`text` without any of `private` (a prompt, a note, a token): each becomes
    `[…]`, and so does each line of one that is quoted alone. A line that holds
    the beginning of a private text is cut there, since what follows it (more of
    the prompt, cut short) is private too."""
    for secret in sorted((p for p in private if p and len(p.strip()) >= 3), key=len, reverse=True):
        text = text.replace(secret, "[…]")
        for part in secret.splitlines():
            if len(part.strip()) >= 8:
                text = text.replace(part.strip(), "[…]")
        head = secret.strip()[:24]
        if len(head) >= 8 and head in text:
            text = "\n".join(
                line[: line.index(head)] + "[…]" if head in line else line
                for line in text.splitlines()
            )
    return text


def hapi_problem(env: Mapping[str, str], home: Path) -> tuple[str, str] | None:
    """What keeps hapi from running here, and its fix; None when its token is set
    and its hub accepts it. Reads the hub's URL and the token as hapi does:
    `HAPI_API_URL` and `CLI_API_TOKEN`, else `$HAPI_HOME/settings.json`."""
    import urllib.error
    import urllib.request

    settings: dict[str, Any] = {}
    path = Path(env.get("HAPI_HOME") or home / ".hapi") / "settings.json"
    try:
        loaded = json.loads(path.read_text())
        settings = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    token = env.get("CLI_API_TOKEN") or settings.get("cliApiToken")
    url = str(env.get("HAPI_API_URL") or settings.get("apiUrl") or "http://localhost:3006")
    if not token:
        return (
            "hapi has no CLI_API_TOKEN",
            "run `hapi auth login` as the daemon's user, or set CLI_API_TOKEN in its environment",
        )
    request = urllib.request.Request(  # noqa: S310 - hapi's own hub URL
        url.rstrip("/") + "/cli/sessions/resumable",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            return None
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            return (
                f"hapi's hub at {url} refuses its token (401)",
                "run `hapi auth login`, or set CLI_API_TOKEN to the hub's token",
            )
        return None  # the hub answered: it is there
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return (
            f"hapi's hub at {url} does not answer ({reason})",
            "start it (`hapi hub`), and give the daemon HAPI_API_URL if it is not "
            "http://localhost:3006",
        )
