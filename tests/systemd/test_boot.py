"""The harness itself: a real systemd boots, and the project runs inside it."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from tests.systemd.conftest import PROJECT_ROOT, Container

pytestmark = pytest.mark.systemd

IMPORT_EVERY_MODULE = """\
import importlib, pkgutil, reeve_lite
for module in pkgutil.walk_packages(reeve_lite.__path__, "reeve_lite."):
    importlib.import_module(module.name)
print(reeve_lite.__file__)
"""


def test_systemd_is_pid_1_and_the_system_is_running(container: Container) -> None:
    assert container.run("cat /proc/1/comm").stdout.strip() == "systemd"
    assert container.run("readlink /proc/1/exe").stdout.strip().endswith("/systemd")
    # A different PID namespace from ours: this is the container, not the host.
    inside = container.run("readlink /proc/self/ns/pid").stdout.strip()
    assert inside != os.readlink("/proc/self/ns/pid")
    state = container.run("systemctl is-system-running", check=False).stdout.strip()
    failed = container.run("systemctl --failed --no-legend --plain").stdout
    assert state == "running", f"system is {state!r}; failed units:\n{failed}"


def test_reeve_lite_version(container: Container) -> None:
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    done = container.run("reeve-lite --version")
    assert done.stdout.strip() == f"reeve-lite {version}"
    # Installed from the source into the container's venv, not run from the bind mount,
    # and every module imports against the dependency versions the root resolved.
    where = container.run("cd / && /opt/reeve-lite/bin/python -", input=IMPORT_EVERY_MODULE)
    assert where.stdout.startswith("/opt/reeve-lite/lib/")
    assert container.run("readlink /usr/local/bin/reeve-lite").stdout.strip() == (
        "/opt/reeve-lite/bin/reeve-lite"
    )


def test_transient_scope_with_a_memory_limit(container: Container) -> None:
    done = container.run("systemd-run --scope -p MemoryMax=64M sleep 0.1")
    assert done.returncode == 0
    # The scope really exists in the container's manager, with the limit recorded.
    limit = container.run(
        "systemd-run --scope --quiet -p MemoryMax=64M --unit=reeve-probe "
        "systemctl show -P MemoryMax reeve-probe.scope"
    )
    assert limit.stdout.strip() == str(64 * 1024 * 1024)


def test_systemd_run_wait_pipe(container: Container) -> None:
    done = container.run("systemd-run --quiet --wait --pipe echo hi")
    assert done.stdout == "hi\n"
    journal = container.run("journalctl -b --no-pager -o cat -u 'run-u*.service'")
    assert "echo hi" in journal.stdout


def test_cgroup_controllers_are_reported(container: Container) -> None:
    done = container.run("cat /sys/fs/cgroup/cgroup.controllers")
    print(f"cgroup controllers inside the container: {done.stdout.strip() or '(none)'}")
    print(f"cgroup hierarchy: {container.run('stat -fc %T /sys/fs/cgroup').stdout.strip()}")


def test_run_and_copy_in(container: Container, tmp_path: Path) -> None:
    """The fixture's own API: exit codes, stdin, scopes and copying files in."""
    assert container.run("exit 3", check=False).returncode == 3
    assert container.run("cat", input="piped").stdout == "piped"
    in_scope = container.run("cat /proc/self/cgroup", scope=True).stdout
    assert "/system.slice/run-" in in_scope
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "file.txt").write_text("hello\n")
    container.copy_in(tmp_path / "tree", "/var/tmp/copied")
    assert container.run("cat /var/tmp/copied/sub/file.txt").stdout == "hello\n"
    assert container.run("stat -c %U /var/tmp/copied/sub/file.txt").stdout.strip() == "root"
