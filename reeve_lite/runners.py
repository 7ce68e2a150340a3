"""Where an agent run goes: a process group of the daemon's own, a transient
systemd scope, or a transient systemd service.

A `Runner` wraps the agent's command for its place (`launch`), stops what it
made when a run is cut short or has ended (`cut`, `sweep`), says whether an
attempt cut by a crash still runs there (`alive`), and reads its own words out
of the output (`result`). The executor runs every attempt the same way through
it; another place (a container, say) is one more subclass and one more mode.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reeve_lite.config import Settings


@dataclass(frozen=True)
class AttemptRef:
    """Which attempt a run is: its pulse, its id (the fencing token) and its number."""

    pulse_id: int
    attempt_id: int
    number: int
    pid: int | None = None  # the agent's process, once known

    @property
    def name(self) -> str:
        """The attempt's name in systemd and the journal: `reeve-pulse-PULSE-NUMBER`."""
        return f"reeve-pulse-{self.pulse_id}-{self.number}"


@dataclass(frozen=True)
class Launch:
    """What to start: the argv, its environment, and how long to wait for it."""

    argv: list[str]
    env: dict[str, str]
    timeout: float


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


class Runner:
    """The plain runner: the agent is a process group of the daemon's own, which
    the executor signals itself; nothing to wrap, nothing of its own to stop."""

    mode = "plain"

    def unenforced(self, settings: Settings) -> list[str]:
        """The configured limits that cannot be enforced where runs go."""
        return []

    def launch(
        self, argv: Sequence[str], env: Mapping[str, str], ref: AttemptRef, settings: Settings
    ) -> Launch:
        """The command that starts `argv` here, for `ref`."""
        return Launch(list(argv), dict(env), settings.agent_timeout)

    async def cut(self, ref: AttemptRef) -> None:
        """Stop a run cut short (timeout or stop) beyond its process group."""

    async def sweep(self, ref: AttemptRef) -> None:
        """Once the agent's main process ended: stop what is left where it ran."""

    async def alive(self, ref: AttemptRef) -> bool:
        """Whether the place of an attempt cut by a crash still runs."""
        return False

    def result(self, output: str) -> tuple[str, str | None]:
        """The agent's own output, and the runner's verdict on the run ("timeout",
        "oom-kill" ..., None when it has none)."""
        return output, None


class _SystemdRunner(Runner):
    """A runner whose runs are transient units of a systemd manager."""

    def __init__(self, manager: Manager, env: Mapping[str, str]) -> None:
        self.manager = manager
        self._env = dict(env)

    def unenforced(self, settings: Settings) -> list[str]:
        return unenforced_limits(settings, self.manager)

    def _unit(self, ref: AttemptRef) -> str:
        """The attempt's transient unit: reeve-pulse-PULSE-NUMBER.scope or .service."""
        return f"{ref.name}.{self.mode}"

    async def _active(self, unit: str) -> bool:
        return await self._systemctl("is-active", "--quiet", unit) == 0

    async def _systemctl(self, *args: str) -> int:
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


class ScopeRunner(_SystemdRunner):
    """The agent runs in place, moved into a transient scope with the limits."""

    mode = "scope"

    def launch(
        self, argv: Sequence[str], env: Mapping[str, str], ref: AttemptRef, settings: Settings
    ) -> Launch:
        unit = self._unit(ref)
        prefix = scope_argv(settings, user=self.manager.user, unit=unit)
        return Launch([*prefix, *argv], dict(env), settings.agent_timeout)

    async def sweep(self, ref: AttemptRef) -> None:
        # A scope outlives its main process while anything else is left in it.
        unit = self._unit(ref)
        if await self._active(unit):
            await self._systemctl("stop", unit)


class ServiceRunner(_SystemdRunner):
    """The agent runs as a transient service of the user manager, which systemd
    starts and times out itself (`systemd-run --wait --pipe`)."""

    mode = "service"

    def launch(
        self, argv: Sequence[str], env: Mapping[str, str], ref: AttemptRef, settings: Settings
    ) -> Launch:
        unit = self._unit(ref)
        timeout = settings.agent_timeout
        prefix = service_argv(settings, unit=unit, names=sorted(env), timeout=timeout)
        # systemd enforces RuntimeMaxSec; the executor's own wait is the backstop.
        return Launch([*prefix, *escape_for_unit(argv)], {**env, **self.manager.env}, timeout + 5)

    async def cut(self, ref: AttemptRef) -> None:
        await self._systemctl("stop", self._unit(ref))

    async def alive(self, ref: AttemptRef) -> bool:
        return await self._active(self._unit(ref))

    def result(self, output: str) -> tuple[str, str | None]:
        return _without_systemd_run_lines(output), _unit_result(output)


def make_runner(settings: Settings, env: Mapping[str, str]) -> Runner:
    """The runner the settings ask for and this host allows (`executor`: auto, on, off)."""
    manager = systemd_manager(env) if settings.executor != "off" else None
    if settings.executor == "on" and manager is None:
        raise RuntimeError(
            "REEVE_LITE_EXECUTOR=on but no systemd manager answers here "
            "(not booted with systemd, or no user manager); use auto or off"
        )
    if manager is None:
        return Runner()
    if manager.kind == "user-service":
        return ServiceRunner(manager, env)
    return ScopeRunner(manager, env)


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
