"""Idle cost: a daemon with one pulse pending an hour out, beside a 1-second poller.

    python -m bench.idle [--seconds 60]

Both run over the same database for the same window; CPU time and wake-ups
(voluntary context switches of all threads) come from /proc, per minute. The
daemon runs without a watchdog, so every wake-up counts: with its wall-clock
timer armed for the pending pulse, it should make none.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    CLOCK_TICKS,
    ProcSample,
    Row,
    clean_env,
    met,
    print_rows,
    proc_sample,
    running_daemon,
)


def _per_minute(before: ProcSample, after: ProcSample, seconds: float) -> tuple[float, float]:
    scale = 60.0 / seconds
    return (after.cpu_ms - before.cpu_ms) * scale, (after.wakeups - before.wakeups) * scale


def rows(seconds: float = 60.0) -> list[Row]:
    """Idle CPU, wake-ups and RSS of the daemon and of the poller."""
    with tempfile.TemporaryDirectory(prefix="reeve-bench-") as name:
        tmp = Path(name)
        with running_daemon(tmp) as daemon:
            daemon.client.create(prompt="an hour out", scheduled_at="in 1 hour")
            poller = subprocess.Popen(
                [sys.executable, "-m", "bench.poller", str(tmp / "reeve.db")], env=clean_env()
            )
            try:
                time.sleep(2.0)  # both past their start-up
                d0, p0 = proc_sample(daemon.pid), proc_sample(poller.pid)
                start = time.monotonic()
                time.sleep(seconds)
                d1, p1 = proc_sample(daemon.pid), proc_sample(poller.pid)
                elapsed = time.monotonic() - start
            finally:
                poller.terminate()
                poller.wait()
    cpu, wakeups = _per_minute(d0, d1, elapsed)
    poll_cpu, poll_wakeups = _per_minute(p0, p1, elapsed)
    window = f" ({elapsed:.0f} s)"
    return [
        Row(
            "idle wake-ups/min" + window,
            f"{wakeups:.1f}",
            f"{poll_wakeups:.1f} (1 s poller)",
            f"{wakeups / poll_wakeups:.3f}" if poll_wakeups else "-",
            "<= 2",
            met(wakeups <= 2),
        ),
        Row(
            "idle CPU ms/min" + window,
            # /proc counts CPU time in clock ticks (10 ms at USER_HZ=100).
            f"{cpu:.1f}" if cpu else f"0 (< {1000 / CLOCK_TICKS:.0f} ms in {elapsed:.0f} s)",
            f"{poll_cpu:.1f} (1 s poller)",
            f"{cpu / poll_cpu:.3f}" if poll_cpu else "-",
            "<= 20",
            met(cpu <= 20),
        ),
        Row(
            "RSS idle",
            f"{d1.rss_kb / 1024:.1f} MB",
            f"{p1.rss_kb / 1024:.1f} MB (1 s poller)",
            "-",
            "<= 45 MB",
            met(d1.rss_kb <= 45 * 1024),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    print_rows(rows(parser.parse_args().seconds))


if __name__ == "__main__":
    main()
