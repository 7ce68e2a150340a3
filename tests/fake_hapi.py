"""A fake `hapi` that speaks Claude Code's stream-json, for tests and benchmarks.

It records every call (its first instant, argv, cwd and the variables the
daemon sets) as a JSON line in `$FAKE_HAPI_DIR/calls.jsonl`, and how each call
ended (unless it was killed) in `$FAKE_HAPI_DIR/ends.jsonl`: `success` is true
only for a run that wrote its success result in full. It behaves as directives
in the prompt say:

  [sleep S]        sleep S seconds before answering
  [sleep-first S]  sleep S seconds, but only on the first call for this pulse
  [fail-times N]   exit 1 on the first N calls for this pulse, then succeed
  [exit N]         exit with status N after the init event
  [is_error]       exit 0 with an error result (error_during_execution)
  [crash]          SIGKILL itself after the init event
  [spam MB]        print MB megabytes of non-JSON noise first
  [grandchild]     leave a sleeping grandchild in the process group (its pid in
                   `$FAKE_HAPI_DIR/grandchild-PULSE`)
  [banner]         print a non-JSON banner line first
  [nested]         print a JSON line nested 5000 levels deep first
  [memory MB]      hold MB megabytes of memory for a second

Otherwise it answers with a success result that echoes the prompt, with a
session id (the resumed one, or a new one), a cost and a number of turns.
"""

import time

T0 = time.time()  # first instant, before any import: the benchmark's end-to-end mark

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

VALUED = {"--output-format", "--resume", "-r", "--model", "--input-format"}


def parse(argv: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    """Claude-style flags and positionals; `--` ends the flags."""
    flags: dict[str, str | bool] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positional += argv[i + 1 :]
            break
        if arg in VALUED:
            flags[arg] = argv[i + 1]
            i += 2
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


def main() -> int:
    argv = sys.argv[1:]
    flags, positional = parse(argv)
    prompt = positional[-1] if positional else ""
    pulse = os.environ.get("REEVE_PULSE_ID", "none")
    state = Path(os.environ.get("FAKE_HAPI_DIR", "."))
    state.mkdir(parents=True, exist_ok=True)
    count_file = state / f"count-{pulse}"
    count = int(count_file.read_text()) + 1 if count_file.exists() else 1
    # Atomically: a run killed mid-write must not leave the next one an empty count.
    partial = count_file.with_name(f"{count_file.name}.{os.getpid()}")
    partial.write_text(str(count))
    os.replace(partial, count_file)
    record = {
        "t0": T0,
        "pid": os.getpid(),
        "argv": argv,
        "cwd": os.getcwd(),
        "pulse_id": pulse,
        "attempt_id": os.environ.get("REEVE_ATTEMPT_ID"),
        "socket": os.environ.get("REEVE_LITE_SOCKET"),
        "call": count,
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
            )
        ),
    }
    with open(state / "calls.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")

    def directive(name: str) -> str | None:
        match = re.search(r"\[" + re.escape(name) + r"(?: ([0-9.]+))?\]", prompt)
        return None if match is None else (match.group(1) or "")

    if directive("banner") is not None:
        print("\x1b[1mhapi v0.0-fake\x1b[0m starting…", flush=True)
    if directive("nested") is not None:
        print('{"a":' * 5000 + "1" + "}" * 5000, flush=True)
    session = str(flags.get("--resume") or flags.get("-r") or f"sess-{pulse}-{count}")
    if (mb := directive("spam")) is not None:
        line = b"x" * 1023 + b"\n"
        for _ in range(int(float(mb) * 1024)):
            sys.stdout.buffer.write(line)
        sys.stdout.flush()
    emit({"type": "system", "subtype": "init", "session_id": session, "tools": ["Bash"]})
    if directive("grandchild") is not None:
        grandchild = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        (state / f"grandchild-{pulse}").write_text(str(grandchild.pid))
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
        print(f"Error: simulated failure {count} of {n}", file=sys.stderr, flush=True)
        return 1
    if (code := directive("exit")) is not None:
        print(f"Error: asked to exit {code}", file=sys.stderr, flush=True)
        return int(code)
    if directive("crash") is not None:
        os.kill(os.getpid(), signal.SIGKILL)
    if directive("is_error") is not None:
        emit(
            {
                "type": "result",
                "subtype": "error_during_execution",
                "is_error": True,
                "session_id": session,
                "errors": ["Error: the tool failed"],
                "num_turns": 2,
                "total_cost_usd": 0.002,
                "duration_ms": 5,
            }
        )
        return 0
    emit(
        {
            "type": "assistant",
            "session_id": session,
            "message": {"content": [{"type": "text", "text": f"done: {prompt[:100]}"}]},
        }
    )
    emit(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "session_id": session,
            "result": f"done: {prompt[:100]}",
            "num_turns": 3,
            "total_cost_usd": 0.0123,
            "duration_ms": 7,
        }
    )
    global SUCCEEDED
    SUCCEEDED = True
    return 0


SUCCEEDED = False


def record_end(code: int | None) -> None:
    """Append how this call ended, so that a test can count completed runs exactly."""
    state = Path(os.environ.get("FAKE_HAPI_DIR", "."))
    end = {
        "t1": time.time(),
        "pid": os.getpid(),
        "pulse_id": os.environ.get("REEVE_PULSE_ID", "none"),
        "attempt_id": os.environ.get("REEVE_ATTEMPT_ID"),
        "exit": code,
        "success": SUCCEEDED,
    }
    with open(state / "ends.jsonl", "a") as log:
        log.write(json.dumps(end) + "\n")


if __name__ == "__main__":
    code: int | None = None
    try:
        code = main()
    finally:
        record_end(code)
    sys.exit(code)
