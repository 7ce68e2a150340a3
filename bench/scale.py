"""Scale: create, next-due and upcoming-list latency with 1 million rows of
history, beside the same with 1,000 rows.

    python -m bench.scale [--rows 1000000] [--plans]

The history is written with plain SQL in one transaction: terminal pulses
(completed, failed, cancelled, expired) with one attempt each, plus 100
pending pulses due later. The figures are the store's own calls, as the
daemon makes them (create includes its durable COMMIT); medians of many
calls. `--plans` prints SQLite's query plan of each query.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Row, met, p50, print_rows
from reeve_lite.store import NewPulse, Store

SMALL = 1000
PENDING = 100
CALLS = 200


def fill(db: Path, history: int) -> None:
    """`history` terminal pulses with an attempt each, and PENDING due in a day."""
    now = time.time()
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("BEGIN")
        conn.execute(
            """WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
            INSERT INTO pulses (scheduled_at, prompt, priority, status, source, created_at,
                updated_at, occurrence_at)
            SELECT ? - i, 'history ' || i, 2,
                CASE i % 10 WHEN 0 THEN 'failed' WHEN 1 THEN 'cancelled'
                    WHEN 2 THEN 'expired' ELSE 'completed' END,
                'api', ? - i, ? - i, ? - i FROM n""",
            (history, now, now, now, now),
        )
        conn.execute(
            """INSERT INTO attempts (pulse_id, number, started_at, finished_at, exit_code,
                duration_ms)
            SELECT id, 1, scheduled_at, scheduled_at + 1, 0, 1000 FROM pulses"""
        )
        conn.execute(
            """WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
            INSERT INTO pulses (scheduled_at, prompt, priority, status, source, created_at,
                updated_at, occurrence_at)
            SELECT ? + 86400 + i, 'later ' || i, 2, 'pending', 'api', ?, ?, ? + 86400 + i
            FROM n""",
            (PENDING, now, now, now, now),
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")


def calls_of(store: Store, due: datetime) -> dict[str, Callable[[], Awaitable[Any]]]:
    """The timed calls, by figure."""
    return {
        "create": lambda: store.create(
            NewPulse(prompt="bench", scheduled_at=due), now=datetime.now(UTC)
        ),
        "scheduler pass (nothing due)": lambda: store.claim_due(datetime.now(UTC), 8),
        "next due": store.next_due,
        "upcoming list (20)": lambda: store.upcoming(20),
        "status counts": store.counts,
    }


async def measure(small_db: Path, big_db: Path, calls: int) -> dict[str, tuple[float, float]]:
    """Median ms of each call on (big, small), the two alternating call by call.

    The process is pinned to one CPU meanwhile: each store has its own
    connection thread, and on this VM a thread woken on the other CPU made one
    connection about 0.1 ms a call slower than the other whatever its size
    (whichever was opened first), which would otherwise read as a cost of history.
    """
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    due = datetime.now(UTC) + timedelta(days=2)
    stores = (await Store.open(big_db), await Store.open(small_db))
    try:
        found = {}
        for figure in calls_of(stores[0], due):
            times: tuple[list[float], list[float]] = ([], [])
            repeat = max(5, calls // 20) if figure == "status counts" else calls
            for n in range(repeat + 5):
                for side, store in enumerate(stores):
                    start = time.perf_counter()
                    await calls_of(store, due)[figure]()
                    if n >= 5:  # the first few warm the caches
                        times[side].append((time.perf_counter() - start) * 1000)
            found[figure] = (p50(times[0]), p50(times[1]))
        return found
    finally:
        for store in stores:
            await store.close()
        os.sched_setaffinity(0, cpus)


QUERIES = {
    "next due": "SELECT id, scheduled_at, priority FROM pulses WHERE status = 'pending' "
    "ORDER BY scheduled_at LIMIT 1",
    "upcoming list": "SELECT * FROM pulses WHERE status = 'pending' "
    "ORDER BY scheduled_at, id LIMIT 20",
    "create (idempotency key)": "SELECT * FROM pulses WHERE idempotency_key = 'k'",
    "scheduler pass: overdue review": "SELECT * FROM pulses WHERE status = 'pending' AND "
    "((scheduled_at <= 0 AND retry_count = 0 AND catchup_remaining = 0) OR deadline <= 0)",
    "scheduler pass: busy keys": "SELECT DISTINCT COALESCE(concurrency_key, 'desk') FROM pulses "
    "WHERE status = 'processing'",
    "status counts": "SELECT status, COUNT(*) FROM pulses GROUP BY status",
}


def plans(db: Path) -> dict[str, list[str]]:
    """SQLite's query plan of each query the figures time."""
    with sqlite3.connect(db) as conn:
        return {
            name: [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            for name, sql in QUERIES.items()
        }


def rows(history: int = 1_000_000, calls: int = CALLS, show_plans: bool = False) -> list[Row]:
    """Each call's median at `history` rows beside the same at 1,000 rows."""
    with tempfile.TemporaryDirectory(prefix="reeve-bench-") as name:
        tmp = Path(name)
        for size in (SMALL, history):
            asyncio.run(_schema(tmp / f"{size}.db"))
            fill(tmp / f"{size}.db", size)
        results = asyncio.run(measure(tmp / f"{SMALL}.db", tmp / f"{history}.db", calls))
        if show_plans:
            for query, steps in plans(tmp / f"{history}.db").items():
                print(f"plan of {query}: {'; '.join(steps)}")
    found = []
    for figure, (big, small) in results.items():
        ratio = big / small
        goal = figure != "status counts"
        found.append(
            Row(
                f"{figure}, {history:,} rows of history",
                f"{big:.2f} ms",
                f"{small:.2f} ms ({SMALL:,} rows)",
                f"{ratio:.2f}",
                "<= 2x" if goal else "-",
                met(ratio <= 2) if goal else "-",
            )
        )
    return found


async def _schema(db: Path) -> None:
    await (await Store.open(db)).close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--plans", action="store_true", help="print the query plans")
    args = parser.parse_args()
    print_rows(rows(args.rows, show_plans=args.plans))


if __name__ == "__main__":
    main()
