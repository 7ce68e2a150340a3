"""Lateness: how long after its due time a pulse's agent starts.

    python -m bench.lateness [--pulses 200] [--spread 10] [--concurrency 4] [--random SEED]

In one run, with the same tiny agent (`bench/agent.py`):

1. reeve-lite: the daemon as a subprocess on a temporary socket; PULSES pulses
   due over SPREAD seconds (evenly spaced, or uniformly random with --random),
   a concurrency key each. Dispatch lateness is the
   instant the daemon spawned the agent (recorded in the attempt) minus the
   due time; end-to-end lateness is the agent's own first instant minus the
   due time.
2. A 1-second polling loop over the same database (the store's own claim
   query, run once a second), spawning the same agent: the baseline.
3. The spawn floor: the same agent started directly, spawn to first instant.

Run alone, it prints min/p50/p99/max in milliseconds; `rows()` gives the
rows of `python -m bench`. It never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import AGENT_ARGV, Row, met, pct, running_daemon
from reeve_lite.executor import watch_children_with_pidfd
from reeve_lite.store import NewPulse, Store


def stats(values: list[float]) -> tuple[float, float, float, float]:
    """(min, p50, p99, max) of `values`."""
    return min(values), pct(values, 50), pct(values, 99), max(values)


def read_agent_log(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    found: dict[str, float] = {}
    for line in path.read_text().splitlines():
        pulse, instant = line.split()
        found.setdefault(pulse, float(instant))
    return found


def due_times(count: int, spread: float, start: float, seed: int | None) -> list[float]:
    """Evenly spaced over `spread` seconds, or uniformly random with a seed."""
    if seed is None:
        return [start + spread * i / count for i in range(count)]
    rng = random.Random(seed)
    return sorted(start + rng.uniform(0, spread) for _ in range(count))


def run_daemon(
    tmp: Path, count: int, spread: float, concurrency: int, seed: int | None
) -> tuple[list[float], ...]:
    """Phase 1: the daemon. Returns (dispatch ms, end-to-end ms)."""
    with running_daemon(tmp, max_concurrent=str(concurrency)) as daemon:
        client = daemon.client
        dues = due_times(count, spread, time.time() + 3.0, seed)
        ids = {}
        for n, due in enumerate(dues):
            at = datetime.fromtimestamp(due, UTC).isoformat()
            # Independent pulses (a key each): they may overlap up to max_concurrent.
            made = client.create(prompt="bench", scheduled_at=at, concurrency_key=f"b{n}")
            ids[str(made["pulse_id"])] = due
        log = tmp / "agent.log"
        while len(read_agent_log(log)) < count and time.time() < dues[-1] + 30:
            time.sleep(0.2)
        while client.status()["counts"]["completed"] < count and time.time() < dues[-1] + 30:
            time.sleep(0.1)
    db = sqlite3.connect(tmp / "reeve.db")
    rows = db.execute(
        "SELECT a.started_at - p.scheduled_at FROM attempts a JOIN pulses p ON p.id = a.pulse_id "
        "WHERE a.number = 1"
    ).fetchall()
    db.close()
    dispatch = [r[0] * 1000 for r in rows]
    firsts = read_agent_log(log)
    end_to_end = [(firsts[pid] - due) * 1000 for pid, due in ids.items() if pid in firsts]
    return dispatch, end_to_end


async def run_poller(
    tmp: Path, count: int, spread: float, seed: int | None
) -> tuple[list[float], ...]:
    """Phase 2: a 1-second polling loop over the same database file."""
    log = tmp / "agent-poller.log"
    store = await Store.open(tmp / "reeve.db")
    env = dict(os.environ, BENCH_AGENT_LOG=str(log))
    now = datetime.now(UTC)
    dues: dict[str, float] = {}
    for n, due in enumerate(due_times(count, spread, time.time() + 3.0, seed)):
        when = datetime.fromtimestamp(due, UTC)
        pulse, _ = await store.create(
            NewPulse(prompt="poll", scheduled_at=when, concurrency_key=f"p{n}"), now=now
        )
        dues[str(pulse.pulse_id)] = due
    dispatch: list[float] = []
    running: set[asyncio.Task[None]] = set()

    async def spawn(pulse_id: int, due: float) -> None:
        proc = await asyncio.create_subprocess_exec(
            *AGENT_ARGV,
            env=env | {"REEVE_PULSE_ID": str(pulse_id)},
            stdout=asyncio.subprocess.DEVNULL,
        )
        dispatch.append((time.time() - due) * 1000)
        await proc.wait()

    claimed = 0
    tick = asyncio.get_running_loop().time()
    while claimed < count:
        # A poller has no timer to miss: each tick it starts everything due.
        for claim in await store.claim_due(datetime.now(UTC), count):
            task = asyncio.create_task(spawn(claim.pulse.pulse_id, dues[str(claim.pulse.pulse_id)]))
            running.add(task)
            task.add_done_callback(running.discard)
            claimed += 1
        tick += 1.0
        await asyncio.sleep(max(0.0, tick - asyncio.get_running_loop().time()))
    await asyncio.gather(*running)
    await store.close()
    firsts = read_agent_log(log)
    end_to_end = [(firsts[pid] - due) * 1000 for pid, due in dues.items() if pid in firsts]
    return dispatch, end_to_end


async def spawn_floor(tmp: Path, count: int) -> list[float]:
    """Phase 3: spawn to the agent's first instant, started directly."""
    log = tmp / "agent-floor.log"
    floor = []
    for i in range(count):
        env = dict(os.environ, BENCH_AGENT_LOG=str(log), REEVE_PULSE_ID=str(i))
        before = time.time()
        proc = await asyncio.create_subprocess_exec(
            *AGENT_ARGV, env=env, stdout=asyncio.subprocess.DEVNULL
        )
        await proc.wait()
        floor.append((read_agent_log(log)[str(i)] - before) * 1000)
    return floor


def measure(
    pulses: int, spread: float, concurrency: int, seed: int | None
) -> dict[str, list[float]]:
    """The three phases in one run; milliseconds by series."""
    watch_children_with_pidfd()  # the same child watcher as the daemon
    with tempfile.TemporaryDirectory(prefix="reeve-bench-") as name:
        tmp = Path(name)
        dispatch, end_to_end = run_daemon(tmp, pulses, spread, concurrency, seed)
        poll_dispatch, poll_e2e = asyncio.run(run_poller(tmp, pulses, spread, seed))
        floor = asyncio.run(spawn_floor(tmp, pulses))
    return {
        "reeve-lite dispatch (spawned - due)": dispatch,
        "reeve-lite end-to-end (agent start - due)": end_to_end,
        "1 s poller dispatch": poll_dispatch,
        "1 s poller end-to-end": poll_e2e,
        "spawn floor (agent start - spawn)": floor,
    }


def rows(pulses: int = 200, spread: float = 10.0, concurrency: int = 4) -> list[Row]:
    """Dispatch and end-to-end lateness beside the poller and the spawn floor."""
    series = measure(pulses, spread, concurrency, None)
    dispatch = stats(series["reeve-lite dispatch (spawned - due)"])
    e2e = stats(series["reeve-lite end-to-end (agent start - due)"])
    poll_d = stats(series["1 s poller dispatch"])
    poll_e = stats(series["1 s poller end-to-end"])
    floor = stats(series["spawn floor (agent start - spawn)"])
    label = f"{pulses} pulses over {spread:g} s"
    return [
        Row(
            f"lateness: dispatch, {label}",
            f"p50 {dispatch[1]:.2f} ms, p99 {dispatch[2]:.2f} ms",
            f"1 s poller: p50 {poll_d[1]:.0f} ms, p99 {poll_d[2]:.0f} ms",
            f"poller p50 / p50: {poll_d[1] / max(dispatch[1], 0.001):.0f}x",
            "p99 <= 5 ms",
            met(dispatch[2] <= 5),
        ),
        Row(
            f"lateness: end-to-end, {label}",
            f"p50 {e2e[1]:.2f} ms, p99 {e2e[2]:.2f} ms",
            f"spawn floor p50 {floor[1]:.2f} ms; 1 s poller p50 {poll_e[1]:.0f} ms",
            f"poller p50 / p50: {poll_e[1] / max(e2e[1], 0.001):.0f}x",
            f"p99 <= floor p50 + 5 = {floor[1] + 5:.2f} ms",
            met(e2e[2] <= floor[1] + 5),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pulses", type=int, default=200)
    parser.add_argument("--spread", type=float, default=10.0, help="seconds")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--random",
        type=int,
        metavar="SEED",
        default=None,
        help="due instants uniformly random (seeded) instead of evenly spaced",
    )
    args = parser.parse_args()
    spacing = "evenly spaced" if args.random is None else f"random, seed {args.random}"
    print(
        f"lateness of {args.pulses} pulses due over {args.spread:g} s ({spacing}), "
        f"max_concurrent={args.concurrency}; {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}",
        flush=True,
    )
    series = measure(args.pulses, args.spread, args.concurrency, args.random)
    print(f"{'ms':<44}{'n':>5}{'min':>9}{'p50':>9}{'p99':>9}{'max':>9}")
    for label, values in series.items():
        lo, mid, p99, hi = stats(values)
        print(f"{label:<44}{len(values):>5}{lo:>9.2f}{mid:>9.2f}{p99:>9.2f}{hi:>9.2f}")


if __name__ == "__main__":
    main()
