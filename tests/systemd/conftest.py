"""The systemd tier: one booted Debian container (systemd as PID 1) per test session.

Every test in this directory must carry the ``systemd`` marker (checked at collection)
so the default run, ``-m 'not systemd and not slow'``, never boots anything. Run the
tier as root with ``pytest -m systemd tests/systemd``.

The ``container`` fixture boots the cached root from ``rootfs.py`` with
``systemd-nspawn --volatile=overlay`` (a tmpfs overlay on the read-only cached root:
the same throw-away semantics as ``--ephemeral`` without copying the root, which
costs 1.5 to 6 s on ext4 and leaves the copy behind if nspawn is killed; set
``REEVE_LITE_TEST_BOOT=ephemeral`` to use ``--ephemeral`` instead), installs the
project from the current source tree into ``/opt/reeve-lite`` and links
``/usr/local/bin/reeve-lite``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, NoReturn

import pytest

from tests.agent.clis import ensure_clis
from tests.conftest import wait_for
from tests.systemd import rootfs

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parents[1]  # the checkout under test, wherever CI cloned it
SRC_MOUNT = "/src"  # PROJECT_ROOT, bound read-only
AGENTS_MOUNT = "/opt/agents"  # the real agent CLIs (tests/agent/clis.py), read-only
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_TIMEOUT = 120.0
# Not worth copying into the container to build the project (and some are huge);
# tar patterns, "./" anchoring a name to the top of the checkout.
SOURCE_EXCLUDES = (
    "./.git",
    "./.venv",
    "./build",
    "./dist",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
)
# Set to 1 in CI so a host that cannot run the tier fails instead of skipping.
REQUIRE_ENV = "REEVE_LITE_TEST_REQUIRE_SYSTEMD"
BOOT_MODE_ENV = "REEVE_LITE_TEST_BOOT"


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse tests under tests/systemd that lack the ``systemd`` marker."""
    unmarked = [
        item.nodeid
        for item in items
        if item.path.is_relative_to(HERE) and item.get_closest_marker("systemd") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests under tests/systemd must be marked @pytest.mark.systemd "
            "(or set pytestmark = pytest.mark.systemd): " + ", ".join(unmarked)
        )


class ContainerCommandError(subprocess.CalledProcessError):
    """A command inside the container failed; the message carries its output."""

    def __str__(self) -> str:
        parts = [f"`{self.cmd}` exited {self.returncode} in the container"]
        for name, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            if text and text.strip():
                parts.append(f"--- {name} ---\n{rootfs._tail(text, 40)}")
        return "\n".join(parts)


@dataclass
class Container:
    """A booted container; commands run inside it as root through nsenter.

    Commands entered this way sit outside the container's cgroup tree (their
    ``/proc/self/cgroup`` reads ``0::/..``); pass ``scope=True`` to ``run`` to start
    them in a transient scope of the container's systemd instead.
    """

    init_pid: int  # the container's PID 1, as seen from the host
    machine: str
    root: Path  # the cached root it was booted from (read-only lower layer)
    log: Path  # nspawn's output: the container's console
    state: str = ""  # `systemctl is-system-running` after boot
    failed_units: tuple[str, ...] = ()
    controllers: str = ""  # /sys/fs/cgroup/cgroup.controllers inside

    def _enter(self, argv: list[str]) -> list[str]:
        # A clean environment: nothing from the host (VIRTUAL_ENV, PIP_*, ...) leaks in.
        return [
            rootfs.which("nsenter") or "nsenter",
            f"--target={self.init_pid}",
            "--all",
            "--root",
            "--wd",
            "env",
            "-i",
            f"PATH={CONTAINER_PATH}",
            "HOME=/root",
            "LANG=C.UTF-8",
            "TERM=dumb",
            *argv,
        ]

    def run(
        self,
        cmd: str,
        check: bool = True,
        timeout: float = 60,
        *,
        input: str | None = None,
        scope: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``bash -c cmd`` inside as root; capture stdout and stderr as text.

        Raises ContainerCommandError on a non-zero exit when `check`, and
        subprocess.TimeoutExpired (after killing the command) past `timeout` seconds.
        """
        inner = ["bash", "-c", cmd]
        if scope:
            inner = ["systemd-run", "--scope", "--quiet", "--collect", "--", *inner]
        return self._exec(inner, cmd, check, timeout, input=input)

    def _exec(
        self,
        inner: list[str],
        label: str,
        check: bool,
        timeout: float,
        *,
        input: str | None = None,
        stdin: IO[bytes] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        # Own session (and so process group), so a timeout can find the whole command.
        with subprocess.Popen(
            self._enter(inner),
            stdin=subprocess.PIPE if input is not None else (stdin or subprocess.DEVNULL),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as proc:
            try:
                stdout, stderr = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                stdout, stderr = _kill_command(proc)
                raise subprocess.TimeoutExpired(label, timeout, stdout, stderr) from exc
        done = subprocess.CompletedProcess(label, proc.returncode, stdout, stderr)
        if check and done.returncode != 0:
            raise ContainerCommandError(done.returncode, label, stdout, stderr)
        return done

    def copy_in(self, host_path: str | os.PathLike[str], container_path: str) -> None:
        """Copy a host file or directory tree to `container_path` (parents created).

        Streams a tar archive into ``tar -x`` inside, rather than writing through
        /proc/PID/root, where absolute symlinks in the container would resolve on
        the host. Files arrive owned by root; a directory merges into an existing one.
        """
        source = Path(host_path)
        target = PurePosixPath(container_path)
        if not target.is_absolute() or target.name in ("", "..", "."):
            raise ValueError(f"container_path must be an absolute file path: {container_path}")
        if not source.exists():
            raise FileNotFoundError(source)

        def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            return info

        with tempfile.TemporaryFile() as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                tar.add(source, arcname=target.name, filter=as_root)
            archive.seek(0)
            parent = shlex.quote(str(target.parent))
            script = f"mkdir -p {parent} && tar -x -C {parent} -f -"
            self._exec(
                ["bash", "-c", script], f"copy_in {source} {target}", True, 120, stdin=archive
            )


@dataclass
class _Boot:
    """The systemd-nspawn process behind a Container, and how to stop it."""

    proc: subprocess.Popen[bytes]
    machine: str
    log: Path
    notes: list[str] = field(default_factory=list)

    def log_tail(self) -> str:
        try:
            return rootfs._tail(self.log.read_text(errors="replace"), 40)
        except OSError:
            return "(no log)"

    def wait_for_init(self, deadline: float) -> int:
        """The container's PID 1 on the host: nspawn's child that is PID 1 in its namespace."""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(
                    f"systemd-nspawn exited {code} while booting:\n{self.log_tail()}"
                )
            for pid in rootfs.processes(ppid=self.proc.pid):
                if _namespace_pid(pid) == 1:
                    return pid
            time.sleep(0.05)
        raise RuntimeError(f"no container init after {BOOT_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def stop(self, container: Container | None) -> None:
        """Power off cleanly; escalate to SIGTERM, then SIGKILL, so nothing outlives us."""
        if self.proc.poll() is None and container is not None:
            # --no-block: the shutdown kills this very command, so do not wait on it.
            with contextlib.suppress(subprocess.SubprocessError):
                container.run("systemctl poweroff --no-block", check=False, timeout=15)
        # nspawn turns SIGTERM into SIGRTMIN+3 for a booted init: an orderly poweroff.
        for action, grace in ((None, 60), (self.proc.terminate, 30), (self.proc.kill, 30)):
            if self.proc.poll() is not None:
                break
            if action is not None:
                self.notes.append(f"container did not stop in time; {action.__name__}")
                action()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        if container is not None and Path(f"/proc/{container.init_pid}").exists():
            # nspawn died without its payload: SIGKILL on PID 1 ends the whole namespace.
            with contextlib.suppress(ProcessLookupError):
                os.kill(container.init_pid, signal.SIGKILL)


def _kill_command(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGKILL a timed-out command inside the container; return what it printed.

    nsenter (the group leader) is spared at first so that it reaps its child: killed
    first, it would leave the child to the host's init, which need not reap it, and
    the zombie inside the container stalls the container's shutdown by 10 s.
    """
    for _ in range(3):
        for pid in rootfs.processes(pgrp=proc.pid):
            if pid != proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        try:
            return proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            continue  # it forked again in the meantime
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.communicate()


def _namespace_pid(pid: int) -> int | None:
    """The innermost PID of `pid` (the NSpid line's last field)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def _die_with_parent() -> None:
    """In the child: SIGTERM nspawn (an orderly poweroff) if pytest dies without teardown."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _boot_mode_args() -> list[str]:
    mode = os.environ.get(BOOT_MODE_ENV, "overlay")
    if mode == "overlay":
        return ["--volatile=overlay"]
    if mode == "ephemeral":
        return ["--ephemeral"]
    raise pytest.UsageError(f"{BOOT_MODE_ENV} must be 'overlay' or 'ephemeral', not {mode!r}")


def poll(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """`wait_for` at a pace suited to checks that run commands in the container."""
    return wait_for(check, timeout, what, interval=0.2)


def boot(root: Path, log: Path, name: str = "", agents: Path | None = None) -> _Boot:
    """Start systemd-nspawn booting `root` in the background; output goes to `log`.
    `name` tells apart two containers of one session; `agents`, the real agent
    CLIs, is bound read-only at AGENTS_MOUNT."""
    machine = f"reeve-lite-test-{os.getpid()}{name}"  # unique: nspawn keys host state on it
    argv = [
        rootfs.which("systemd-nspawn") or "systemd-nspawn",
        "--quiet",
        *_boot_mode_args(),
        f"--directory={root}",
        "--boot",
        "--register=no",  # no systemd-machined on a host whose PID 1 is not systemd
        "--keep-unit",  # nor a manager to create a scope for us
        f"--machine={machine}",
        "--console=read-only",
        f"--bind-ro={PROJECT_ROOT}:{SRC_MOUNT}",
        *([f"--bind-ro={agents}:{AGENTS_MOUNT}"] if agents is not None else []),
        "--",
        "systemd.firstboot=off",
    ]
    # Debian 12 runs the unified cgroup hierarchy; without this a hybrid host (like
    # some CI sandboxes) would hand the container a hybrid layout instead.
    env = os.environ | {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C reaches pytest, which powers off cleanly
            preexec_fn=_die_with_parent,
        )
    return _Boot(proc, machine, log)


def wait_until_up(container: Container, deadline: float) -> None:
    """Wait for `systemctl is-system-running` to settle on running or degraded."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"container not up after {BOOT_TIMEOUT:.0f}s")
        try:
            done = container.run(
                "systemctl is-system-running --wait", check=False, timeout=remaining
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"container not up after {BOOT_TIMEOUT:.0f}s") from None
        state = done.stdout.strip()
        if state in ("running", "degraded"):
            break
        if state not in ("", "offline", "initializing", "starting"):
            raise RuntimeError(f"container reached state {state!r}, not running")
        time.sleep(0.2)  # "offline": PID 1 is not answering on its socket yet
    container.state = state
    if state == "degraded":
        failed = container.run("systemctl --failed --no-legend --plain", check=False).stdout
        container.failed_units = tuple(line.split()[0] for line in failed.splitlines() if line)


def install_project(container: Container) -> None:
    """pip-install the source tree (no deps, no network) and link the console script."""
    excludes = " ".join(f"--exclude={shlex.quote(p)}" for p in SOURCE_EXCLUDES)
    # Built from a copy: setuptools writes build/ and *.egg-info next to the source,
    # and /src is read-only (and the host's checkout is not ours to litter).
    container.run(
        "rm -rf /tmp/src && mkdir /tmp/src"
        f" && tar -C {SRC_MOUNT} {excludes} -cf - . | tar -C /tmp/src -xf -"
        f" && {rootfs.VENV}/bin/pip install --quiet --no-deps --no-build-isolation --no-index"
        " --disable-pip-version-check /tmp/src"
        f" && ln -sf {rootfs.VENV}/bin/reeve-lite /usr/local/bin/reeve-lite",
        timeout=300,
    )


@pytest.fixture(scope="session")
def container(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    """A booted systemd container with the current project installed; see `Container`."""
    required = os.environ.get(REQUIRE_ENV) == "1"

    def unavailable(reason: str) -> NoReturn:
        if required:
            pytest.fail(f"{reason} (and {REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(reason)

    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        unavailable("the systemd tier needs root (debootstrap, systemd-nspawn)")
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")

    def progress(message: str) -> None:
        # Past output capture, straight to the terminal: a cold build takes minutes
        # and a CI log should say why.
        if reporter is None:
            return
        paused = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
        with paused:
            reporter.write_line(f"[systemd tier] {message}")

    try:
        rootfs.ensure_host_tools(progress)
    except rootfs.HostToolsUnavailable as exc:
        unavailable(f"systemd-nspawn/debootstrap unavailable: {exc}")

    # The real Claude Code, for the one real-agent run in a transient unit.
    agents = ensure_clis().root
    with rootfs.leased_rootfs(progress) as root:
        log = tmp_path_factory.mktemp("systemd") / "console.log"
        started = time.monotonic()
        deadline = started + BOOT_TIMEOUT
        booted = boot(root, log, agents=agents)
        machine: Container | None = None
        try:
            init_pid = booted.wait_for_init(deadline)
            machine = Container(init_pid, booted.machine, root, log)
            wait_until_up(machine, deadline)
            up = time.monotonic() - started
            install_project(machine)
            machine.controllers = machine.run(
                "cat /sys/fs/cgroup/cgroup.controllers", check=False
            ).stdout.strip()
            progress(
                f"booted in {up:.1f}s, state {machine.state}"
                + (f" (failed: {', '.join(machine.failed_units)})" if machine.failed_units else "")
                + f"; project installed after {time.monotonic() - started:.1f}s"
                + f"; cgroup controllers: {machine.controllers or '(none)'}"
            )
            yield machine
        finally:
            booted.stop(machine)
            for note in booted.notes:
                progress(note)


# The fake Claude Code (tests/fake_hapi.py as `claude`) where the units' PATH finds
# it, so that REEVE_LITE_AGENT=auto resolves to it; fake_hapi.py at /opt/fake-hapi.py.
FAKE_CLAUDE = (
    "printf '%s\\n' '#!/bin/sh' "
    "'FAKE_AGENT_AS=claude exec /usr/bin/python3 /opt/fake-hapi.py \"$@\"' "
    "> /usr/local/bin/claude && chmod 0755 /usr/local/bin/claude /opt/fake-hapi.py"
)
