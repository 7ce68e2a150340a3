"""Burst: 1000 pulses due at the same instant, a no-op agent, 8 at a time.

    python -m bench.burst [--pulses 1000] [--concurrency 8]

The pulses (a concurrency key each, so that 8 can run at once) are written
before the daemon starts, all due a few seconds later. Figures: the time from
that instant until the last attempt was recorded, whether every pulse ran
exactly once (the agent's own log and the attempts table agree), and the
daemon's peak RSS meanwhile. The scope executor needs systemd as PID 1; on a
host without it that row says so instead of a figure (the systemd test tier
runs `--scope-only` in a booted container: tests/systemd/test_bench_scope.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Row, met, print_rows, proc_sample, running_daemon
from reeve_lite.store import NewPulse, Store

NOOP = Path(__file__).with_name("noop-agent.sh")
LEAD = 4.0  # seconds between writing the pulses and their due instant


async def fill(db: Path, count: int, due: float) -> None:
    store = await Store.open(db)
    when = datetime.fromtimestamp(due, UTC)
    now = datetime.now(UTC)
    try:
        await asyncio.gather(
            *(
                store.create(
                    NewPulse(prompt="noop", scheduled_at=when, concurrency_key=f"k{n}"), now=now
                )
                for n in range(count)
            )
        )
    finally:
        await store.close()


def burst(tmp: Path, count: int, concurrency: int, executor: str) -> dict[str, float | bool]:
    """Run one burst; its drain time, exactly-once verdict and peak RSS."""
    due = time.time() + LEAD
    asyncio.run(fill(tmp / "reeve.db", count, due))
    peak = 0
    stop = threading.Event()
    with running_daemon(
        tmp,
        agent_command=f"/bin/sh {NOOP}",
        max_concurrent=str(concurrency),
        executor=executor,
    ) as daemon:

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.05):
                peak = max(peak, proc_sample(daemon.pid).rss_kb)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            give_up = due + 120
            while time.time() < give_up:
                counts = daemon.client.status()["counts"]
                if counts["pending"] == 0 and counts["processing"] == 0:
                    break
                time.sleep(0.1)
        finally:
            stop.set()
            sampler.join()
    with sqlite3.connect(tmp / "reeve.db") as db:
        attempts = db.execute("SELECT pulse_id, finished_at FROM attempts").fetchall()
        completed = db.execute("SELECT COUNT(*) FROM pulses WHERE status = 'completed'").fetchone()
    runs = Counter((tmp / "agent.log").read_text().split())
    per_pulse = Counter(pulse for pulse, _ in attempts)
    once = (
        len(runs) == count
        and set(runs.values()) == {1}
        and len(per_pulse) == count
        and set(per_pulse.values()) == {1}
        and completed[0] == count
    )
    last = max((f for _, f in attempts if f is not None), default=due)
    return {"drain": last - due, "once": once, "runs": sum(runs.values()), "peak_kb": peak}


def has_systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


def scope_row(pulses: int, concurrency: int) -> Row:
    """The burst with every agent in a transient scope (needs systemd as PID 1)."""
    label = f"burst {pulses} due at once, concurrency {concurrency}, scope"
    if not has_systemd():
        return Row(label, "not measured: needs systemd as PID 1", goal="all once")
    with tempfile.TemporaryDirectory(prefix="reeve-bench-") as name:
        scope = burst(Path(name), pulses, concurrency, "on")
    return Row(
        label + ": drained",
        f"{scope['drain']:.2f} s, {'all once' if scope['once'] else 'NOT all once'} "
        f"({scope['runs']:.0f} runs)",
        "-",
        f"{pulses / scope['drain']:.0f} pulses/s",
        "all once",
        met(bool(scope["once"])),
    )


def rows(pulses: int = 1000, concurrency: int = 8) -> list[Row]:
    """Drain time, exactly-once and RSS under the burst, plain; scope when possible."""
    label = f"burst {pulses} due at once, concurrency {concurrency}"
    with tempfile.TemporaryDirectory(prefix="reeve-bench-") as name:
        plain = burst(Path(name), pulses, concurrency, "off")
    found = [
        Row(
            label + ", plain: drained",
            f"{plain['drain']:.2f} s",
            "-",
            f"{pulses / plain['drain']:.0f} pulses/s",
            "<= 5 s",
            met(plain["drain"] <= 5),
        ),
        Row(
            label + ", plain: run exactly once",
            f"{'yes' if plain['once'] else 'no'} ({plain['runs']:.0f} runs)",
            "-",
            "-",
            "all once",
            met(bool(plain["once"])),
        ),
        Row("RSS under the burst (peak)", f"{plain['peak_kb'] / 1024:.1f} MB"),
    ]
    found.append(scope_row(pulses, concurrency))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pulses", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--scope-only", action="store_true", help="only the scope executor")
    args = parser.parse_args()
    if args.scope_only:
        print_rows([scope_row(args.pulses, args.concurrency)])
    else:
        print_rows(rows(args.pulses, args.concurrency))


if __name__ == "__main__":
    main()
