"""Run the agent CLI for one attempt and report how it went.

The agent's argv comes from its profile (`reeve_lite.agent`): argv only, never
a shell, in the Desk directory, in a process group of its own. Under systemd
the command is wrapped in a transient scope (`systemd-run --scope`) or a
transient service with the configured resource limits.

The agent's stdout and stderr are read as one stream: JSON lines are parsed
for the session id, the result, its cost and the denied tools; only a capped
tail is kept, so a flood of output costs bounded memory. When the attempt
ends, nothing it started is left running: its process group, its unit, and
any process that carries its attempt id in its environment (a CLI that
detaches a helper with `setsid()`, as hapi does) are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reeve_lite.agent import (
    STOPPED,
    Profile,
    StreamState,
    judge,
    mcp_config,
    resolve_profile,
)
from reeve_lite.config import Settings
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
# How far ahead of a due instant the event loop wakes the run (see `Executor.run`).
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


def _limits(settings: Settings) -> list[str]:
    argv = []
    if settings.scope_memory_max:
        argv.append(f"--property=MemoryMax={settings.scope_memory_max}")
    if settings.scope_cpu_quota:
        argv.append(f"--property=CPUQuota={settings.scope_cpu_quota}")
    argv.append(f"--property=TasksMax={settings.scope_tasks_max}")
    return argv


def scope_argv(settings: Settings, *, user: bool, unit: str) -> list[str]:
    """The `systemd-run --scope` prefix that puts a run in a transient scope."""
    argv = ["systemd-run"]
    if user:
        argv.append("--user")
    argv += ["--scope", "--quiet", "--collect", f"--unit={unit}", "--slice=reeve-lite.slice"]
    return [*argv, *_limits(settings), "--"]


@dataclass(frozen=True)
class Manager:
    """A systemd manager that agent runs go into.

    `kind` is "system" or "user" (a transient scope, run in place), or
    "user-service": the lingering user manager of a system service's own user,
    where a scope cannot be made (PID migration fails), so the run is a
    transient service. `env` is what `systemd-run` needs to reach it.
    """

    kind: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def user(self) -> bool:
        """Whether `--user` is needed."""
        return self.kind != "system"


def systemd_manager(env: Mapping[str, str]) -> Manager | None:
    """The manager `systemd-run` can reach from here, or None."""
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemd-run") is None:
        return None
    if os.geteuid() == 0:
        return Manager("system") if Path("/run/systemd/private").exists() else None
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime, "systemd", "private").exists():
        return Manager("user")
    runtime = f"/run/user/{os.geteuid()}"
    if Path(runtime, "systemd", "private").exists():
        return Manager(
            "user-service",
            {"XDG_RUNTIME_DIR": runtime, "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus"},
        )
    return None


# The limit each setting sets, and the cgroup controller that enforces it.
_CONTROLLERS = {"scope_memory_max": "memory", "scope_cpu_quota": "cpu", "scope_tasks_max": "pids"}


def unenforced_limits(
    settings: Settings, manager: Manager, root: Path = Path("/sys/fs/cgroup")
) -> list[str]:
    """The configured limits whose cgroup controller the manager cannot use here
    (on a hybrid or cgroup v1 host, or in a container without delegation)."""
    if manager.kind == "system":
        available = root / "cgroup.controllers"
    else:
        uid = os.geteuid()
        available = root / f"user.slice/user-{uid}.slice/user@{uid}.service/cgroup.controllers"
    try:
        controllers = set(available.read_text().split())
    except OSError:
        controllers = set()
    return [
        name
        for name, controller in _CONTROLLERS.items()
        if getattr(settings, name) and controller not in controllers
    ]


def service_argv(
    settings: Settings, *, unit: str, names: Sequence[str], timeout: float
) -> list[str]:
    """The `systemd-run --user --wait --pipe` prefix that makes a run a transient
    service. Variables are passed by name only (`--setenv=NAME` takes the value
    from systemd-run's own environment), so no value shows in `ps`."""
    # Not --quiet: its closing "Finished with result: ..." line names a timeout or OOM kill.
    argv = [
        "systemd-run",
        "--user",
        "--collect",
        "--wait",
        "--pipe",
        f"--unit={unit}",
        "--property=Type=exec",
        f"--property=WorkingDirectory={settings.desk}",
        f"--property=RuntimeMaxSec={max(1, int(timeout))}",
    ]
    argv += _limits(settings)
    argv += [f"--setenv={name}" for name in names]
    return [*argv, "--"]


def escape_for_unit(argv: Sequence[str]) -> list[str]:
    """A transient service expands `$VAR` in its command line; `$$` is a literal `$`."""
    return [arg.replace("$", "$$") for arg in argv]


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


def kill_tree(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False when it is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("not allowed to signal process group %d", pgid)
        return False
    return True


def process_runs_attempt(pid: int, attempt_id: int, socket: Path) -> bool:
    """True when process `pid` exists and was started for `attempt_id` by the
    daemon of `socket` (its environment says both), so that neither a reused pid
    nor another daemon's agent with the same attempt number is ever killed."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        f"REEVE_ATTEMPT_ID={attempt_id}".encode() in environ
        and f"REEVE_LITE_SOCKET={socket}".encode() in environ
    )


def processes_of_attempt(attempt_id: int, socket: Path) -> list[int]:
    """The processes started for `attempt_id` by the daemon of `socket` (the agent
    and its children), found by their environment: for an agent whose pid was never
    recorded (the daemon died between spawning it and writing its pid down)."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and process_runs_attempt(int(entry.name), attempt_id, socket)
    ]


def kill_attempt_processes(attempt_id: int, socket: Path) -> bool:
    """Kill the process group of every process started for `attempt_id` by the
    daemon of `socket`; False when none is left."""
    killed = False
    for pid in processes_of_attempt(attempt_id, socket):
        try:
            killed = kill_tree(os.getpgid(pid)) or killed
        except ProcessLookupError:
            continue
    return killed


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
    """Starts agent runs as the settings say (plain or in a systemd scope)."""

    def __init__(self, settings: Settings, *, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self._env = dict(os.environ if env is None else env)
        manager = systemd_manager(self._env) if settings.executor != "off" else None
        if settings.executor == "on" and manager is None:
            raise RuntimeError(
                "REEVE_LITE_EXECUTOR=on but no systemd manager answers here "
                "(not booted with systemd, or no user manager); use auto or off"
            )
        self.manager = manager
        self.profile: Profile = self.resolve_profile()
        # Under systemd the agent's output also goes to the journal, line by line.
        self._journal = journal_attached(self._env)
        self.unenforced = unenforced_limits(settings, manager) if manager else []
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
        if self.manager is None:
            return "plain"
        return "service" if self.manager.kind == "user-service" else "scope"

    def unit_name(self, pulse_id: int, number: int) -> str | None:
        """The transient unit of an attempt, in scope or service mode."""
        if self.manager is None:
            return None
        return f"reeve-pulse-{pulse_id}-{number}.{self.mode}"

    async def orphan_running(
        self, *, pulse_id: int, number: int, attempt_id: int, pid: int | None
    ) -> bool:
        """Whether anything of an attempt cut by a crash still runs: its transient
        service, or its agent process (the pid still running that attempt)."""
        unit = self.unit_name(pulse_id, number)
        if (
            self.mode == "service"
            and unit is not None
            and await self._systemctl("is-active", "--quiet", unit) == 0
        ):
            return True
        if pid is None:
            return bool(processes_of_attempt(attempt_id, self.settings.socket))
        return process_runs_attempt(pid, attempt_id, self.settings.socket)

    async def stop_orphan(
        self, *, pulse_id: int, number: int, attempt_id: int, pid: int | None
    ) -> bool:
        """Stop what is left of an attempt cut by a crash; True when something ran."""
        unit = self.unit_name(pulse_id, number)
        if (
            self.mode == "service"
            and unit is not None
            and await self._systemctl("is-active", "--quiet", unit) == 0
        ):
            await self._systemctl("stop", unit)
            return True
        if pid is None:
            return kill_attempt_processes(attempt_id, self.settings.socket)
        if process_runs_attempt(pid, attempt_id, self.settings.socket):
            kill_tree(pid)
            return True
        return False

    async def _systemctl(self, *args: str) -> int:
        assert self.manager is not None
        env = {**self._env, **self.manager.env}
        command = ["systemctl", *(["--user"] if self.manager.user else []), *args]
        proc = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            return await asyncio.wait_for(proc.wait(), timeout=30)
        except TimeoutError:
            proc.kill()
            return await proc.wait()

    async def run(
        self,
        *,
        pulse_id: int,
        attempt_id: int,
        number: int,
        prompt: str,
        session_id: str | None,
        stop: asyncio.Event,
        on_spawn: Callable[[int, float], Awaitable[None]],
        delay: float = 0.0,
        stream: StreamState | None = None,
        private: Sequence[str] = (),
    ) -> RunReport:
        """Run the agent for one attempt until it exits, times out or `stop` is set.

        `prompt` is the whole text the agent gets (notes included); neither it nor
        any of `private` shows in the report's error. The process starts `delay`
        seconds from now (everything else is prepared first); `on_spawn(pid,
        epoch)` is awaited right after it started.
        """
        deadline = time.monotonic() + delay
        s = self.settings
        tools = mcp_config(s.socket, pulse_id=pulse_id, attempt_id=attempt_id)
        argv = self.profile.argv(prompt, session_id=session_id, mcp_config=tools)
        private = [prompt, *private, *(t for t in (s.api_token, s.telegram_token) if t)]
        env = agent_environment(
            self._env, pulse_id=pulse_id, attempt_id=attempt_id, socket=s.socket
        )
        unit = self.unit_name(pulse_id, number)
        timeout = s.agent_timeout
        if self.manager is not None and unit is not None:
            if self.mode == "service":
                names = sorted(env)
                argv = service_argv(s, unit=unit, names=names, timeout=timeout) + escape_for_unit(
                    argv
                )
                env = {**env, **self.manager.env}
                timeout += 5  # systemd enforces RuntimeMaxSec; this is the backstop
            else:
                argv = scope_argv(s, user=self.manager.user, unit=unit) + argv
        if (wait := deadline - time.monotonic()) > 0:
            # At most the scheduler's claim lead (25 ms): a plain sleep is the most
            # punctual wake-up, and a stop that came meanwhile is honoured below.
            # asyncio's timers fire 0.5 to 2 ms late (epoll takes whole milliseconds,
            # rounded up twice): wake SPIN_LEAD early, then yield to the loop until
            # the instant (other tasks still run; the spin costs at most SPIN_LEAD).
            await asyncio.sleep(max(0.0, wait - SPIN_LEAD))
            while time.monotonic() < deadline and not stop.is_set():  # noqa: ASYNC110 - a spin, not a wait
                await asyncio.sleep(0)
        if stop.is_set():
            return RunReport(time.time(), 0, None, True, STOPPED, StreamState(), "", stopped=True)
        started = time.time()
        t0 = time.monotonic()
        try:
            s.desk.mkdir(parents=True, exist_ok=True)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=s.desk,
                env=env,
                stdin=asyncio.subprocess.PIPE
                if self.profile.prompt_on_stdin
                else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            reason = _spawn_error(self.profile, exc, s.desk)
            return RunReport(started, 0, None, True, reason, StreamState(), "")
        spawned = time.time()
        assert proc.stdout is not None
        stream = stream or StreamState()
        tail = bytearray()
        journal = (
            JournalLines(
                f"reeve-pulse-{pulse_id}-{number}",
                {"REEVE_PULSE_ID": str(pulse_id), "REEVE_ATTEMPT": str(number)},
            )
            if self._journal
            else None
        )
        reader = asyncio.create_task(self._read(proc.stdout, stream, tail, journal))
        feeder = (
            asyncio.create_task(_feed(proc.stdin, prompt.encode()))
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
                {waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter not in done:
                timed_out = stopper not in done
                stopped = not timed_out
                if self.mode == "service" and unit is not None:
                    await self._systemctl("stop", unit)
                await self._terminate(proc.pid, waiter)
        finally:
            stopper.cancel()
            if feeder is not None:
                feeder.cancel()
            # Whatever the leader left behind in its group goes with it, and so
            # does what left the group (it may hold the output pipe open).
            kill_tree(proc.pid)
            leftovers = await self._contain(attempt_id, unit)
            await asyncio.wait({reader}, timeout=2.0)
            reader.cancel()
            if journal is not None:
                journal.close()
            if not waiter.done():
                await self._terminate(proc.pid, waiter)
        code = proc.returncode
        duration_ms = int((time.monotonic() - t0) * 1000)
        tail_text = tail.decode("utf-8", "replace")
        unit_result = _unit_result(tail_text) if self.mode == "service" else None
        if self.mode == "service":
            tail_text = _without_systemd_run_lines(tail_text)
        if unit_result == "timeout":
            timed_out = True  # systemd stopped the unit at RuntimeMaxSec
        verdict = judge(
            code,
            stream,
            tail_text,
            timed_out=timed_out,
            stopped=stopped,
            timeout=s.agent_timeout,
            program=self.profile.program,
            private=private,
        )
        error = verdict.error
        if unit_result == "oom-kill":
            error = f"killed for using more memory than MemoryMax={s.scope_memory_max}"
        return RunReport(
            started_at=spawned,
            duration_ms=duration_ms,
            exit_code=code,
            failed=error is not None,
            error=error,
            stream=stream,
            output_tail=tail_text,
            timed_out=timed_out,
            stopped=stopped,
            session_gone=verdict.session_gone,
            leftovers=leftovers,
        )

    async def _contain(self, attempt_id: int, unit: str | None) -> int:
        """Stop whatever the attempt left running once its main process ended: the
        rest of a scope, and any process that carries the attempt's id (one that
        left the process group with `setsid()`). How many were found."""
        if (
            self.mode == "scope"
            and unit is not None
            and await self._systemctl("is-active", "--quiet", unit) == 0
        ):
            await self._systemctl("stop", unit)
        found = processes_of_attempt(attempt_id, self.settings.socket)
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                # Its group too: a daemonized helper may have children of its own.
                kill_tree(os.getpgid(pid))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if found:
            log.info(
                "attempt=%d: stopped %d process(es) it left behind: %s",
                attempt_id,
                len(found),
                ", ".join(_command_name(pid) for pid in found[:5]),
            )
        return len(found)

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


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or str(pid)
    except OSError:
        return str(pid)


# What `systemd-run --wait` says of the unit around the agent's own output.
_SYSTEMD_RUN_LINES = re.compile(
    r"^(Running as unit: |Finished with result: |Main processes terminated with: |"
    r"Service runtime: |CPU time consumed: |Memory peak: |Memory swap peak: |IP traffic |"
    r"IO bytes )"
)


def _without_systemd_run_lines(tail: str) -> str:
    """The agent's output without systemd-run's own lines about the unit."""
    return "\n".join(line for line in tail.split("\n") if not _SYSTEMD_RUN_LINES.match(line))


def _unit_result(tail: str) -> str | None:
    """The result systemd-run reported for a transient service ("success",
    "timeout", "oom-kill", "signal" ...), from its closing lines."""
    for line in reversed(tail.splitlines()[-20:]):
        if line.startswith("Finished with result: "):
            return line.removeprefix("Finished with result: ").strip()
    return None
