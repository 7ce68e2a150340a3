"""A fake `hapi` (and `claude`) that behaves as the real CLIs were seen to, for
tests and benchmarks.

Called as `fake_hapi.py claude FLAGS…` it is `hapi claude`: like hapi 0.30 it
needs `CLI_API_TOKEN` (or hapi's settings file), passes Claude Code's flags
through, appends its own `--settings FILE --add-dir DIR` after them, and
refuses a first argument that is an option (`Unknown option: --print`, exit 1).
With `FAKE_AGENT_AS=claude` in its environment it is Claude Code itself.

The Claude Code part parses flags as the real one does: `--allowedTools`,
`--mcp-config` and `--add-dir` take several values; `--` ends the options; the
first positional is the prompt and later ones are ignored; with no positional
the prompt is read from stdin; `--print` with stream-json needs `--verbose`.
`--resume ID` of a session it never made answers as the real CLI does (no
init event, an `error_during_execution` result, exit 1). A failed run is a
`result` with subtype `success`, `is_error: true`, cost `0` and exit 1.

It records every call (its first instant, argv, the prompt, cwd and the
variables the daemon sets) as a JSON line in `$FAKE_HAPI_DIR/calls.jsonl`, and
how each call ended (unless it was killed) in `$FAKE_HAPI_DIR/ends.jsonl`.
Sessions it made are files in `$FAKE_HAPI_DIR/sessions/`, one prompt a line.
It behaves as directives in the prompt say:

  [sleep S]        sleep S seconds before answering
  [sleep-first S]  sleep S seconds, but only on the first call for this pulse
  [fail-times N]   fail (an API error result, exit 1) on the first N calls for
                   this pulse, then succeed
  [exit N]         exit with status N after the init event, with no result
  [is_error]       fail with "Credit balance is too low" (exit 1)
  [crash]          SIGKILL itself after the init event
  [api-retry N]    print N `api_retry` events first (0.1 s apart)
  [deny TOOL]      answer with TOOL in `permission_denials`
  [mcp TOOL {…}]   call TOOL of the `--mcp-config` server `reeve-lite` with the
                   JSON arguments (denied unless `--allowedTools` allows it);
                   the tool's answer is the run's result
  [spam MB]        print MB megabytes of non-JSON noise first
  [grandchild]     leave a sleeping grandchild in the process group (its pid in
                   `$FAKE_HAPI_DIR/grandchild-PULSE`)
  [daemonize]      leave a sleeping process in a session of its own, parent pid
                   1, as hapi's runner does (its pid in `daemon-PULSE`)
  [banner]         print a non-JSON banner line first
  [nested]         print a JSON line nested 5000 levels deep first
  [memory MB]      hold MB megabytes of memory for a second
"""

import time

T0 = time.time()  # first instant, before any import: the benchmark's end-to-end mark

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

VALUED = {
    "--output-format",
    "--resume",
    "-r",
    "--model",
    "--input-format",
    "--settings",
    "--permission-mode",
    "--append-system-prompt",
    "--session-id",
    "--max-turns",
}
VARIADIC = {"--allowedTools", "--allowed-tools", "--mcp-config", "--add-dir", "--disallowedTools"}
STATE = Path(os.environ.get("FAKE_HAPI_DIR", "."))


def parse(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Claude Code's flags and positionals, as its option parser reads them."""
    flags: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positional += argv[i + 1 :]
            break
        if arg in VALUED:
            flags[arg] = argv[i + 1] if i + 1 < len(argv) else ""
            i += 2
            continue
        if arg in VARIADIC:
            values = flags.setdefault(arg, [])
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            continue
        if arg.startswith("-"):
            flags[arg] = True
        else:
            positional.append(arg)
        i += 1
    return flags, positional


def emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def fail(session: str | None, text: str) -> int:
    """A failed run as Claude Code reports it: subtype success, is_error, exit 1."""
    emit(
        {
            "type": "result",
            "subtype": "success",
            "is_error": True,
            "session_id": session,
            "result": text,
            "num_turns": 1,
            "total_cost_usd": 0,
            "duration_ms": 3,
            "permission_denials": [],
        }
    )
    return 1


def hapi_front(argv: list[str]) -> list[str] | int:
    """What `hapi` does before Claude Code runs: the argv it passes on, or an exit."""
    if not argv or argv[0] != "claude":
        word = argv[0] if argv else ""
        print(f"Unknown option: {word}" if word.startswith("-") else "usage: hapi claude …")
        return 1
    settings = Path(os.environ.get("HAPI_HOME", Path.home() / ".hapi")) / "settings.json"
    token = os.environ.get("CLI_API_TOKEN")
    if not token and settings.exists():
        token = json.loads(settings.read_text()).get("cliApiToken")
    if not token:
        # As hapi 0.30.7 (a Bun binary) words it, with its stack trace after.
        print(
            "error: CLI_API_TOKEN is required. Set it via environment variable or run "
            "`hapi auth login`.\n    at loadConfig (/$bunfs/root/hapi:12:3)\n\n"
            "Bun v1.4.2 (Linux x64)",
            file=sys.stderr,
        )
        return 1
    hooks = STATE / "hapi-hooks.json"
    return [*argv[1:], "--settings", str(hooks), "--add-dir", "/tmp/hapi-blobs"]


def call_tool(config: list[str], name: str, arguments: dict[str, Any]) -> str:
    """Call one tool of the `reeve-lite` server of `--mcp-config` over stdio."""
    server = json.loads(config[0])["mcpServers"]["reeve-lite"]
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "fake-claude", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        },
    ]
    done = subprocess.run(
        [server["command"], *server.get("args", [])],
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
        env={**os.environ, **server.get("env", {})},
        timeout=60,
        check=False,
    )
    for line in done.stdout.splitlines():
        answer = json.loads(line)
        if answer.get("id") == 2:
            content = answer["result"]["content"]
            text = " ".join(c.get("text", "") for c in content)
            return ("ERROR: " if answer["result"].get("isError") else "") + text
    return f"ERROR: no answer: {done.stderr[-500:]}"


def main() -> int:
    argv = sys.argv[1:]
    if argv == ["auth", "status"] and os.environ.get("FAKE_AGENT_AS") == "claude":
        # As Claude Code 2.1.332 answers, without asking the API.
        keyed = bool(os.environ.get("ANTHROPIC_API_KEY"))
        print(json.dumps({"loggedIn": keyed, "authMethod": "api_key" if keyed else "none"}))
        return 0 if keyed else 1
    if argv == ["--version"]:
        as_claude = os.environ.get("FAKE_AGENT_AS") == "claude"
        print("2.1.332 (Claude Code)" if as_claude else "hapi version: 0.30.7")
        return 0
    if os.environ.get("FAKE_AGENT_AS") != "claude":
        passed = hapi_front(argv)
        if isinstance(passed, int):
            return passed
        argv = passed
    flags, positional = parse(argv)
    if flags.get("--output-format") == "stream-json" and not flags.get("--verbose"):
        print("Error: When using --print, --output-format=stream-json requires --verbose")
        return 1
    prompt = positional[0] if positional else sys.stdin.read()
    if not prompt:
        print("Error: Input must be provided either through stdin or as a prompt argument")
        return 1
    pulse = os.environ.get("REEVE_PULSE_ID", "none")
    STATE.mkdir(parents=True, exist_ok=True)
    count_file = STATE / f"count-{pulse}"
    count = int(count_file.read_text()) + 1 if count_file.exists() else 1
    # Atomically: a run killed mid-write must not leave the next one an empty count.
    partial = count_file.with_name(f"{count_file.name}.{os.getpid()}")
    partial.write_text(str(count))
    os.replace(partial, count_file)
    record = {
        "t0": T0,
        "pid": os.getpid(),
        "argv": argv,  # as Claude Code got it (after hapi's own flags were added)
        "received": sys.argv[1:],
        "prompt": prompt,
        "resume": flags.get("--resume"),
        "allowed": flags.get("--allowedTools", []),
        "mcp_config": flags.get("--mcp-config", []),
        "cwd": os.getcwd(),
        "pulse_id": pulse,
        "attempt_id": os.environ.get("REEVE_ATTEMPT_ID"),
        "socket": os.environ.get("REEVE_LITE_SOCKET"),
        "call": count,
        "has_api_key": "ANTHROPIC_API_KEY" in os.environ,
        "leaked": sorted(
            k
            for k in os.environ
            if k
            in (
                "NOTIFY_SOCKET",
                "WATCHDOG_USEC",
                "WATCHDOG_PID",
                "LISTEN_FDS",
                "LISTEN_PID",
                "LISTEN_FDNAMES",
                "REEVE_LITE_API_TOKEN",
                "REEVE_LITE_TELEGRAM_TOKEN",
                "REEVE_LITE_TOKEN_FILE",
                "CREDENTIALS_DIRECTORY",
            )
        ),
    }
    with open(STATE / "calls.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")

    sessions = STATE / "sessions"
    sessions.mkdir(exist_ok=True)
    resume = flags.get("--resume") or flags.get("-r")
    # Like a model, it reads the whole conversation: a retry that resumes a session
    # with a short note still sees the task (and its directives) from before.
    earlier = sessions / str(resume) if resume else None
    task = prompt
    if earlier is not None and earlier.exists():
        task = "\n".join([*(json.loads(x) for x in earlier.read_text().splitlines()), prompt])

    def directive(name: str) -> str | None:
        match = re.search(r"\[" + re.escape(name) + r"(?: ([0-9.]+))?\]", task)
        return None if match is None else (match.group(1) or "")

    if resume and not (sessions / str(resume)).exists():
        print(f"No conversation found with session ID: {resume}", file=sys.stderr)
        emit(
            {
                "type": "result",
                "subtype": "error_during_execution",
                "is_error": True,
                "session_id": str(resume),
                "num_turns": 0,
                "total_cost_usd": 0,
                "duration_ms": 0,
                "errors": [f"No conversation found with session ID: {resume}"],
                "permission_denials": [],
            }
        )
        return 1
    session = str(resume or uuid.uuid4())
    with open(sessions / session, "a") as transcript:
        transcript.write(json.dumps(prompt) + "\n")

    if directive("banner") is not None:
        print("\x1b[1mhapi v0.0-fake\x1b[0m starting…", flush=True)
    if directive("nested") is not None:
        print('{"a":' * 5000 + "1" + "}" * 5000, flush=True)
    if (mb := directive("spam")) is not None:
        line = b"x" * 1023 + b"\n"
        for _ in range(int(float(mb) * 1024)):
            sys.stdout.buffer.write(line)
        sys.stdout.flush()
    servers = [{"name": "reeve-lite", "status": "connected"}] if flags.get("--mcp-config") else []
    emit(
        {
            "type": "system",
            "subtype": "init",
            "session_id": session,
            "tools": ["Bash"],
            "mcp_servers": servers,
        }
    )
    if (n := directive("api-retry")) is not None:
        for attempt in range(1, int(n) + 1):
            emit(
                {
                    "type": "system",
                    "subtype": "api_retry",
                    "attempt": attempt,
                    "max_retries": 10,
                    "retry_delay_ms": 100,
                    "error_status": 529,
                    "error": "overloaded",
                    "session_id": session,
                }
            )
            time.sleep(0.1)
    if directive("grandchild") is not None:
        grandchild = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        (STATE / f"grandchild-{pulse}").write_text(str(grandchild.pid))
    if directive("daemonize") is not None:
        daemonize(STATE / f"daemon-{pulse}")
    if (mb := directive("memory")) is not None:
        hog = bytearray(int(float(mb) * 1024 * 1024))
        for i in range(0, len(hog), 4096):
            hog[i] = 1  # touch every page, so the memory is really used
        time.sleep(1)
        del hog
    if (seconds := directive("sleep")) is not None:
        time.sleep(float(seconds))
    if (seconds := directive("sleep-first")) is not None and count == 1:
        time.sleep(float(seconds))
    if (n := directive("fail-times")) is not None and count <= int(n):
        return fail(session, f"API Error: 500 simulated failure {count} of {n}")
    if (code := directive("exit")) is not None:
        print(f"Error: asked to exit {code}", file=sys.stderr, flush=True)
        return int(code)
    if directive("crash") is not None:
        os.kill(os.getpid(), signal.SIGKILL)
    if directive("is_error") is not None:
        return fail(session, "Credit balance is too low")
    denials: list[dict[str, Any]] = []
    answer = f"done: {prompt[:100]}"
    if (match := re.search(r"\[deny (\S+)\]", prompt)) is not None:
        denials.append({"tool_name": match.group(1), "tool_use_id": "toolu_1", "tool_input": {}})
    if (match := re.search(r"\[mcp (\S+) (\{.*?\})\]", prompt)) is not None:
        tool = f"mcp__reeve-lite__{match.group(1)}"
        allowed = flags.get("--allowedTools", [])
        if "reeve-lite" in json.dumps(flags.get("--mcp-config", [])) and any(
            tool == a or a in ("mcp__reeve-lite", "mcp__reeve-lite__*") for a in allowed
        ):
            answer = call_tool(flags["--mcp-config"], match.group(1), json.loads(match.group(2)))
        else:
            denials.append({"tool_name": tool, "tool_use_id": "toolu_2", "tool_input": {}})
            answer = f"Claude requested permissions to use {tool}, but you haven't granted it yet."
    emit(
        {
            "type": "assistant",
            "session_id": session,
            "message": {"content": [{"type": "text", "text": answer}]},
        }
    )
    emit(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "session_id": session,
            "result": answer,
            "num_turns": 3,
            "total_cost_usd": 0.0123,
            "duration_ms": 7,
            "permission_denials": denials,
        }
    )
    global SUCCEEDED
    SUCCEEDED = True
    return 0


def daemonize(pid_file: Path) -> None:
    """Leave a process behind as hapi's runner does: double fork, new session."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            pid_file.write_text(str(os.getpid()))
            time.sleep(300)
            os._exit(0)
        os._exit(0)
    os.wait()
    while not pid_file.exists():
        time.sleep(0.01)


SUCCEEDED = False


def record_end(code: int | None) -> None:
    """Append how this call ended, so that a test can count completed runs exactly."""
    end = {
        "t1": time.time(),
        "pid": os.getpid(),
        "pulse_id": os.environ.get("REEVE_PULSE_ID", "none"),
        "attempt_id": os.environ.get("REEVE_ATTEMPT_ID"),
        "exit": code,
        "success": SUCCEEDED,
    }
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "ends.jsonl", "a") as log:
        log.write(json.dumps(end) + "\n")


if __name__ == "__main__":
    code: int | None = None
    try:
        code = main()
    finally:
        record_end(code)
    sys.exit(code)
