"""The burst benchmark with the scope executor, where systemd is PID 1: 1000
pulses due at once, each agent in its own transient scope, 8 at a time.

It prints the benchmark's row (drain time, runs) for the log and checks only
that every pulse ran exactly once; the time is a figure, not an assertion."""

from __future__ import annotations

import pytest

from tests.systemd import rootfs
from tests.systemd.conftest import SRC_MOUNT, Container

pytestmark = pytest.mark.systemd


def test_burst_in_transient_scopes_runs_every_pulse_once(container: Container) -> None:
    done = container.run(
        f"cd {SRC_MOUNT} && PYTHONDONTWRITEBYTECODE=1 {rootfs.VENV}/bin/python -m bench.burst"
        " --scope-only --pulses 1000 --concurrency 8",
        timeout=600,
    )
    print(f"\n[systemd tier] bench.burst --scope-only:\n{done.stdout}")
    row = [line for line in done.stdout.splitlines() if "scope: drained" in line]
    assert row, done.stdout
    assert "(1000 runs)" in row[0]
    assert "NOT all once" not in row[0]
    assert "all once" in row[0]
