"""Run the agent CLI for one attempt and report how it went.

The agent's argv comes from its profile (`reeve_lite.agent`): argv only, never
a shell, in the Desk directory, in a process group of its own. Where it runs
(a plain process group, a transient scope or a transient service, with the
configured limits) is its runner's business (`reeve_lite.runners`); every
attempt is run the same way through it.

The agent's stdout and stderr are read as one stream: JSON lines are parsed
for the session id, the result, its cost and the denied tools; only a capped
tail is kept, so a flood of output costs bounded memory. When the attempt
ends, nothing it started is left running: its process group, its unit, and
any process that carries its attempt id in its environment (a CLI that
detaches a helper with `setsid()`, as hapi does) are stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reeve_lite.agent import (
    STOPPED,
    Brief,
    Profile,
    StreamState,
    judge,
    mcp_config,
    resolve_profile,
)
from reeve_lite.config import Settings
from reeve_lite.processes import (
    kill_tree,
    process_runs_attempt,
    processes_of_attempt,
    stop_attempt_processes,
)
from reeve_lite.runners import AttemptRef, Launch, make_runner
from reeve_lite.systemd import JournalLines, journal_attached

log = logging.getLogger(__name__)

# Variables that speak for the daemon's own unit; a child must not act on them.
_UNIT_VARIABLES = (
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
)
# Every path to the daemon's own secrets: the tokens, the token file, and systemd's
# credentials directory (api-token, telegram-token). The user's own variables (the
# agent's API key among them) stay.
_SECRET_VARIABLES = (
    "REEVE_LITE_API_TOKEN",
    "REEVE_LITE_TELEGRAM_TOKEN",
    "REEVE_LITE_TOKEN_FILE",
    "CREDENTIALS_DIRECTORY",
)
MAX_LINE = 1024 * 1024  # a longer line is not parsed (a result event is far shorter)
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of the tree
READ_CHUNK = 65536
# How far ahead of a due instant the event loop wakes the run (see `_until`).
SPIN_LEAD = 0.003


@dataclass
class RunReport:
    """How one agent run ended."""

    started_at: float  # epoch seconds at spawn
    duration_ms: int
    exit_code: int | None
    failed: bool
    error: str | None
    stream: StreamState
    output_tail: str
    timed_out: bool = False
    stopped: bool = False
    # The session it was to resume does not exist any more.
    session_gone: bool = False
    # Processes of the attempt still running after its main process ended.
    leftovers: int = 0


def agent_environment(
    base: Mapping[str, str], *, pulse_id: int, attempt_id: int, socket: Path
) -> dict[str, str]:
    """The agent's environment: the daemon's, less unit variables and secrets,
    plus the pulse it runs for and the socket to reach the daemon."""
    env = {k: v for k, v in base.items() if k not in _UNIT_VARIABLES and k not in _SECRET_VARIABLES}
    env["REEVE_PULSE_ID"] = str(pulse_id)
    env["REEVE_ATTEMPT_ID"] = str(attempt_id)
    env["REEVE_LITE_SOCKET"] = str(socket)
    return env


def watch_children_with_pidfd() -> None:
    """Watch agent processes with a pidfd in the event loop (Python 3.11 starts
    a thread per child by default; 3.12 does this already). Call before the loop runs."""
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        try:
            os.close(os.pidfd_open(os.getpid()))
        except OSError:
            return  # the kernel lacks pidfd support
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())


class Executor:
    """Runs the agent for one attempt at a time, through the runner the settings
    and the host allow (plain, or a transient scope or service)."""

    def __init__(self, settings: Settings, *, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self._env = dict(os.environ if env is None else env)
        self.runner = make_runner(settings, self._env)
        self.profile: Profile = self.resolve_profile()
        # Under systemd the agent's output also goes to the journal, line by line.
        self._journal = journal_attached(self._env)
        self.unenforced = self.runner.unenforced(settings)
        if self.unenforced:
            log.warning(
                "systemd cannot enforce %s here: the cgroup controller is missing; "
                "agent runs go on without that limit",
                ", ".join(self.unenforced),
            )

    def resolve_profile(self) -> Profile:
        """The agent profile the settings name, found on the daemon's PATH."""
        s = self.settings
        return resolve_profile(
            s.agent, s.agent_command, path=self._env.get("PATH"), mcp=s.agent_mcp
        )

    @property
    def mode(self) -> str:
        """'scope' or 'service' (transient systemd units), or 'plain'."""
        return self.runner.mode

    async def orphan_running(self, ref: AttemptRef) -> bool:
        """Whether anything of an attempt cut by a crash still runs: its unit, or
        its agent process (the pid still running that attempt)."""
        if await self.runner.alive(ref):
            return True
        socket = self.settings.socket
        if ref.pid is None:
            return bool(processes_of_attempt(ref.attempt_id, socket))
        return process_runs_attempt(ref.pid, ref.attempt_id, socket)

    async def stop_orphan(self, ref: AttemptRef) -> bool:
        """Stop what is left of an attempt cut by a crash; True when something ran."""
        if await self.runner.alive(ref):
            await self.runner.cut(ref)
            return True
        socket = self.settings.socket
        running = False
        if ref.pid is not None and process_runs_attempt(ref.pid, ref.attempt_id, socket):
            kill_tree(ref.pid)
            running = True
        # With the agent, whatever it detached with setsid() (found by the attempt's
        # id); without a recorded pid, that is how the agent itself is found.
        found = stop_attempt_processes(ref.attempt_id, socket)
        if not running and not found:
            return False
        await self._gone(ref.attempt_id)
        return True

    async def _gone(self, attempt_id: int) -> None:
        """Wait until no process runs the attempt any more (up to KILL_GRACE): a
        SIGKILL takes effect a moment later, and the check before the pulse's retry
        must not find the orphan still dying and refuse to start."""
        end = time.monotonic() + KILL_GRACE
        while processes_of_attempt(attempt_id, self.settings.socket):
            if time.monotonic() >= end:
                log.warning("attempt=%d: its processes outlive SIGKILL", attempt_id)
                return
            await asyncio.sleep(0.02)

    async def run(
        self,
        ref: AttemptRef,
        brief: Brief,
        *,
        stop: asyncio.Event,
        on_spawn: Callable[[int, float], Awaitable[None]],
        delay: float = 0.0,
        stream: StreamState | None = None,
    ) -> RunReport:
        """Run the agent for attempt `ref` until it exits, times out or `stop` is set.

        Neither the brief's prompt nor its private texts show in the report's
        error. The process starts `delay` seconds from now (everything else is
        prepared first); `on_spawn(pid, epoch)` is awaited right after it started.
        """
        deadline = time.monotonic() + delay
        s = self.settings
        tools = mcp_config(s.socket, pulse_id=ref.pulse_id, attempt_id=ref.attempt_id)
        argv = self.profile.argv(brief.prompt, session_id=brief.session_id, mcp_config=tools)
        secrets = (t for t in (s.api_token, s.telegram_token) if t)
        private = [brief.prompt, *brief.private, *secrets]
        env = agent_environment(
            self._env, pulse_id=ref.pulse_id, attempt_id=ref.attempt_id, socket=s.socket
        )
        launch = self.runner.launch(argv, env, ref, s)
        await _until(deadline, stop)
        if stop.is_set():
            return RunReport(time.time(), 0, None, True, STOPPED, StreamState(), "", stopped=True)
        started = time.time()
        t0 = time.monotonic()
        try:
            proc = await self._spawn(launch)
        except OSError as exc:
            reason = _spawn_error(self.profile, exc, s.desk)
            return RunReport(started, 0, None, True, reason, StreamState(), "")
        spawned = time.time()
        assert proc.stdout is not None
        stream = stream or StreamState()
        tail = bytearray()
        journal = (
            JournalLines(
                ref.name,
                {"REEVE_PULSE_ID": str(ref.pulse_id), "REEVE_ATTEMPT": str(ref.number)},
            )
            if self._journal
            else None
        )
        reader = asyncio.create_task(self._read(proc.stdout, stream, tail, journal))
        feeder = (
            asyncio.create_task(_feed(proc.stdin, brief.prompt.encode()))
            if proc.stdin is not None
            else None
        )
        waiter = asyncio.create_task(proc.wait())
        stopper = asyncio.create_task(stop.wait())
        timed_out = stopped = False
        leftovers = 0
        try:
            # Inside the try: if recording the start fails, the run is still reaped.
            await on_spawn(proc.pid, spawned)
            done, _ = await asyncio.wait(
                {waiter, stopper}, timeout=launch.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter not in done:
                timed_out = stopper not in done
                stopped = not timed_out
                await self.runner.cut(ref)
                await self._terminate(proc.pid, waiter)
        finally:
            stopper.cancel()
            if feeder is not None:
                feeder.cancel()
            # Whatever the leader left behind in its group goes with it, and so
            # does what left the group (it may hold the output pipe open).
            kill_tree(proc.pid)
            await self.runner.sweep(ref)
            # And what left the group with setsid(): found by the attempt's id.
            leftovers = stop_attempt_processes(ref.attempt_id, s.socket)
            await asyncio.wait({reader}, timeout=2.0)
            reader.cancel()
            if journal is not None:
                journal.close()
            if not waiter.done():
                await self._terminate(proc.pid, waiter)
        return self._report(
            RunReport(
                started_at=spawned,
                duration_ms=int((time.monotonic() - t0) * 1000),
                exit_code=proc.returncode,
                failed=False,
                error=None,
                stream=stream,
                output_tail=tail.decode("utf-8", "replace"),
                timed_out=timed_out,
                stopped=stopped,
                leftovers=leftovers,
            ),
            private,
        )

    async def _spawn(self, launch: Launch) -> asyncio.subprocess.Process:
        """Start the launch in the Desk, in a session (a process group) of its own."""
        self.settings.desk.mkdir(parents=True, exist_ok=True)
        return await asyncio.create_subprocess_exec(
            *launch.argv,
            cwd=self.settings.desk,
            env=launch.env,
            stdin=asyncio.subprocess.PIPE
            if self.profile.prompt_on_stdin
            else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )

    def _report(self, raw: RunReport, private: Sequence[str]) -> RunReport:
        """The run's report with the verdict: the agent's protocol, then the runner's
        own word on the unit (systemd's timeout or OOM kill)."""
        s = self.settings
        tail, unit_result = self.runner.result(raw.output_tail)
        # systemd stopped the unit at RuntimeMaxSec.
        timed_out = raw.timed_out or unit_result == "timeout"
        verdict = judge(
            raw.exit_code,
            raw.stream,
            tail,
            timed_out=timed_out,
            stopped=raw.stopped,
            timeout=s.agent_timeout,
            program=self.profile.program,
            private=private,
        )
        error = verdict.error
        if unit_result == "oom-kill":
            error = f"killed for using more memory than MemoryMax={s.scope_memory_max}"
        return dataclasses.replace(
            raw,
            failed=error is not None,
            error=error,
            output_tail=tail,
            timed_out=timed_out,
            session_gone=verdict.session_gone,
        )

    async def _terminate(self, pgid: int, waiter: asyncio.Task[int]) -> None:
        kill_tree(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout=KILL_GRACE)
        except TimeoutError:
            kill_tree(pgid, signal.SIGKILL)
            await waiter

    async def _read(
        self,
        pipe: asyncio.StreamReader,
        stream: StreamState,
        tail: bytearray,
        journal: JournalLines | None,
    ) -> None:
        cap = self.settings.output_tail_bytes
        line = bytearray()
        oversized = False
        while chunk := await pipe.read(READ_CHUNK):
            tail += chunk
            if len(tail) > cap:
                del tail[: len(tail) - cap]
            start = 0
            # Only the new chunk is searched: a long line costs linear time.
            while (end := chunk.find(b"\n", start)) != -1:
                if not oversized:
                    line += chunk[start:end]
                    stream.feed(bytes(line))
                    if journal is not None:
                        journal.send(bytes(line))
                line.clear()
                oversized = False
                start = end + 1
            if not oversized:
                line += chunk[start:]
                if len(line) > MAX_LINE:
                    # Skip the rest of this line; memory stays bounded.
                    line.clear()
                    oversized = True
        if line and not oversized:
            stream.feed(bytes(line))
            if journal is not None:
                journal.send(bytes(line))


async def _until(deadline: float, stop: asyncio.Event) -> None:
    """Wait until the monotonic instant `deadline`, or until `stop` is set.

    At most the scheduler's claim lead (25 ms): a plain sleep is the most
    punctual wake-up, and a stop that came meanwhile is honoured after it.
    asyncio's timers fire 0.5 to 2 ms late (epoll takes whole milliseconds,
    rounded up twice): wake SPIN_LEAD early, then yield to the loop until the
    instant (other tasks still run; the spin costs at most SPIN_LEAD).
    """
    if (wait := deadline - time.monotonic()) <= 0:
        return
    await asyncio.sleep(max(0.0, wait - SPIN_LEAD))
    while time.monotonic() < deadline and not stop.is_set():  # noqa: ASYNC110 - a spin, not a wait
        await asyncio.sleep(0)


async def _feed(pipe: asyncio.StreamWriter, data: bytes) -> None:
    """Write the prompt to the agent's stdin and close it (the CLI reads to EOF)."""
    try:
        pipe.write(data)
        await pipe.drain()
        pipe.close()
        await pipe.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the agent exited without reading it: its exit says why


def _spawn_error(profile: Profile, exc: OSError, desk: Path) -> str:
    program = profile.command[0]
    if exc.filename is not None and Path(exc.filename) in (desk, *desk.parents):
        return f"cannot use the Desk directory {str(desk)!r}: {exc.strerror}"
    if isinstance(exc, FileNotFoundError):
        setting = "REEVE_LITE_AGENT_COMMAND" if profile.name == "command" else "REEVE_LITE_AGENT"
        return (
            f"agent command not found: {program!r} is not on the daemon's PATH "
            f"(install it, or set {setting})"
        )
    if isinstance(exc, PermissionError):
        return f"agent command not executable: {program!r} ({exc.strerror})"
    return f"cannot start the agent {program!r}: {exc.strerror or exc}"
