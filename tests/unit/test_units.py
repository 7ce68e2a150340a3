"""The systemd units: they verify cleanly, score within the goal, and say what
the daemon expects (one socket unit per file descriptor name, notify, watchdog)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.report import record

UNITS = Path(__file__).parents[2] / "units"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing")
EXPOSURE_GOAL = 2.5


def staged(variant: str, tmp_path: Path) -> Path:
    """The units of `variant` with ExecStart= pointing at an executable that exists here."""
    out = tmp_path / variant
    out.mkdir()
    binary = shutil.which("reeve-lite") or str(Path(__file__).parents[2] / ".venv/bin/reeve-lite")
    for unit in (UNITS / variant).iterdir():
        (out / unit.name).write_text(unit.read_text().replace("/usr/bin/reeve-lite", binary))
    return out


def analyze(*args: str, user: bool, runtime: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(runtime)}
    flags = ["--user"] if user else []
    return subprocess.run(
        [ANALYZE, *args[:1], *flags, *args[1:]], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize("variant", ["system", "user"])
def test_units_verify_without_a_word(variant: str, tmp_path: Path) -> None:
    units = sorted(str(p) for p in staged(variant, tmp_path).iterdir())
    runtime = tmp_path / "run"
    runtime.mkdir()
    done = analyze("verify", "--man=no", *units, user=variant == "user", runtime=runtime)
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""


def exposure(variant: str, unit: str, tmp_path: Path) -> tuple[float, list[str]]:
    """The overall exposure score and the settings it counts against the unit."""
    runtime = tmp_path / "run"
    runtime.mkdir(exist_ok=True)
    done = analyze(
        "security",
        "--offline=yes",
        str(staged(variant, tmp_path) / unit),
        user=variant == "user",
        runtime=runtime,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert match, done.stdout + done.stderr
    open_items = re.findall(r"^✗ (\S+)", done.stdout, re.MULTILINE)
    return float(match.group(1)), open_items


def test_system_service_exposure_is_within_the_goal(tmp_path: Path) -> None:
    score, open_items = exposure("system", "reeve-lite.service", tmp_path)
    assert score <= EXPOSURE_GOAL
    # Agents run inside the service's sandbox and need the network and their home.
    assert "PrivateNetwork=" in open_items
    record(
        "access",
        "systemd-analyze security, system service",
        f"exposure {score} (goal <= {EXPOSURE_GOAL}); {len(open_items)} settings left open,"
        " for the agents (network, JIT, home)",
    )


def test_user_service_exposure_is_reported(tmp_path: Path) -> None:
    score, _ = exposure("user", "reeve-lite.service", tmp_path)
    assert 0 < score <= 10
    record(
        "access",
        "systemd-analyze security, user service",
        f"exposure {score} (agents run as the user, with the user's own access)",
    )


def read(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


@pytest.mark.parametrize("variant", ["system", "user"])
def test_each_socket_unit_names_its_descriptor(variant: str) -> None:
    api = read(UNITS / variant / "reeve-lite.socket")
    tcp = read(UNITS / variant / "reeve-lite-tcp.socket")
    assert api["Socket"]["FileDescriptorName"] == "api"
    assert api["Socket"]["SocketMode"] == "0660"
    assert tcp["Socket"]["FileDescriptorName"] == "tcp"
    assert tcp["Socket"]["ListenStream"] == "127.0.0.1:8765"
    assert tcp["Socket"]["Service"] == "reeve-lite.service"
    expected = "/run/reeve-lite/api.sock" if variant == "system" else "%t/reeve-lite/api.sock"
    assert api["Socket"]["ListenStream"] == expected


@pytest.mark.parametrize("variant", ["system", "user"])
def test_service_is_notify_with_watchdog_reload_and_restart(variant: str) -> None:
    service = read(UNITS / variant / "reeve-lite.service")["Service"]
    assert service["Type"] == "notify"
    assert service["WatchdogSec"] == "30"
    assert service["Restart"] == "on-failure"
    # The shell's own kill: /bin/kill (procps) is not on every system.
    assert service["ExecReload"] == """/bin/sh -c 'kill -HUP "$$MAINPID"'"""
    assert service["KillMode"] == "mixed"
    assert "MemoryDenyWriteExecute" not in service  # Node-based agents JIT
    assert "Environment" not in service or "TOKEN" not in service["Environment"]
