"""What the benchmarks share: a daemon subprocess, percentiles, /proc readings, table rows."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median, quantiles

from reeve_lite.client import Client, DaemonUnreachable

AGENT = Path(__file__).with_name("agent.py")
# -I -S: the agent starts as fast as Python can, so what is measured is reeve-lite.
AGENT_ARGV = [sys.executable, "-I", "-S", str(AGENT)]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Row:
    """One line of the table: a figure, its baseline from the same run, the goal."""

    figure: str
    measured: str
    baseline: str = "-"
    ratio: str = "-"
    goal: str = "-"
    met: str = "-"  # "yes", "no", or "-" when there is no goal or nothing to judge


def met(ok: bool) -> str:
    return "yes" if ok else "no"


def pct(values: list[float], p: int) -> float:
    """The p-th percentile (inclusive method); the value itself for one sample."""
    if len(values) == 1:
        return values[0]
    return quantiles(sorted(values), n=100, method="inclusive")[p - 1]


def p50(values: list[float]) -> float:
    return float(median(values))


def clean_env() -> dict[str, str]:
    """This environment without reeve-lite or systemd variables."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REEVE_LITE_", "NOTIFY_SOCKET", "LISTEN_", "WATCHDOG_"))
    }


def daemon_env(tmp: Path, **settings: str) -> dict[str, str]:
    """The environment of a benchmark daemon in `tmp`, with the bench agent."""
    env = clean_env()
    env.update(
        REEVE_LITE_DB=str(tmp / "reeve.db"),
        REEVE_LITE_SOCKET=str(tmp / "api.sock"),
        REEVE_LITE_AGENT_COMMAND=shlex.join(AGENT_ARGV),
        REEVE_LITE_DESK=str(tmp / "desk"),
        REEVE_LITE_EXECUTOR="off",
        REEVE_LITE_LOG_LEVEL="warning",
        BENCH_AGENT_LOG=str(tmp / "agent.log"),
    )
    env.update({f"REEVE_LITE_{k.upper()}": v for k, v in settings.items()})
    return env


@dataclass
class Daemon:
    """A running daemon subprocess."""

    proc: subprocess.Popen[bytes]
    client: Client
    tmp: Path
    log: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid


def wait_healthy(client: Client, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.health()
            return
        except DaemonUnreachable:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the daemon did not start") from None
            time.sleep(0.02)


@contextmanager
def running_daemon(tmp: Path, **settings: str) -> Iterator[Daemon]:
    """`reeve-lite serve` on `tmp/api.sock` with the bench agent; stopped on exit."""
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "reeve_lite.cli", "serve"], env=daemon_env(tmp, **settings)
    )
    client = Client(socket_path=tmp / "api.sock")
    try:
        wait_healthy(client, proc)
        yield Daemon(proc, client, tmp)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class ProcSample:
    """CPU time, voluntary context switches (all threads) and RSS of a process."""

    cpu_ms: float
    wakeups: int
    rss_kb: int


def proc_sample(pid: int) -> ProcSample:
    """Read /proc/PID: utime+stime, the sum of every thread's voluntary switches, RSS."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_ms = (int(fields[11]) + int(fields[12])) * 1000 / CLOCK_TICKS
    wakeups = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    wakeups += int(line.split()[1])
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    rss_kb = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
    return ProcSample(cpu_ms, wakeups, rss_kb)


def print_rows(rows: list[Row]) -> None:
    """The table, as Markdown (it is pasted into docs/benchmarks.md as it is)."""
    header = ("figure", "measured", "baseline (same run)", "ratio", "goal", "met")
    cells = [header, *((r.figure, r.measured, r.baseline, r.ratio, r.goal, r.met) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]

    def line(cols: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |"

    print(line(header))
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for c in cells[1:]:
        print(line(c))
    sys.stdout.flush()
