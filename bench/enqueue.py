"""Enqueue throughput: `POST /api/pulse/trigger` over the Unix socket, 1 and 16 clients.

    python -m bench.enqueue [--requests 2000]

The baseline, in the same run: raw aiosqlite inserts of the same rows into
the same schema with the same durability (WAL, synchronous=FULL), one
commit per row, one writer. Each client sends its requests one after the
other (a new connection each, as the CLI does); the latency is the
client's, from sending to the parsed answer.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import aiosqlite

from bench.common import Row, met, p50, pct, print_rows, running_daemon
from reeve_lite.store import Store


async def raw_rate(db: Path, count: int) -> float:
    """Commits per second of one-row inserts into the pulses table."""
    await (await Store.open(db)).close()  # the schema, as the daemon makes it
    async with aiosqlite.connect(db, isolation_level=None) as conn:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        due = (datetime.now(UTC) + timedelta(hours=1)).timestamp()
        start = time.perf_counter()
        for n in range(count):
            await conn.execute("BEGIN IMMEDIATE")
            now = time.time()
            await conn.execute(
                "INSERT INTO pulses (scheduled_at, prompt, priority, status, source, created_at, "
                "updated_at, occurrence_at) VALUES (?, ?, 2, 'pending', 'api', ?, ?, ?)",
                (due + n, "bench", now, now, due + n),
            )
            await conn.execute("COMMIT")
        return count / (time.perf_counter() - start)


async def api_run(socket: Path, clients: int, count: int) -> tuple[float, list[float]]:
    """(creates per second, latencies in ms) with `clients` concurrent senders."""
    due = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    latencies: list[float] = []
    connector = aiohttp.UnixConnector(path=str(socket), force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def sender(share: int) -> None:
            for _ in range(share):
                t0 = time.perf_counter()
                async with http.post(
                    "http://localhost/api/pulse/trigger",
                    json={"prompt": "bench", "scheduled_at": due},
                ) as resp:
                    await resp.json()
                    if resp.status != 201:
                        raise SystemExit(f"create answered {resp.status}")
                latencies.append((time.perf_counter() - t0) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(sender(count // clients) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, latencies


def rows(requests: int = 2000) -> list[Row]:
    """Creates/s and latency with 1 and 16 clients, beside the raw insert rate."""
    with tempfile.TemporaryDirectory(prefix="reeve-bench-") as name:
        tmp = Path(name)
        raw = asyncio.run(raw_rate(tmp / "raw.db", requests))
        with running_daemon(tmp / "daemon") as daemon:
            socket = daemon.tmp / "api.sock"
            asyncio.run(api_run(socket, 4, 64))  # warm-up
            one, one_lat = asyncio.run(api_run(socket, 1, requests // 4))
            many, many_lat = asyncio.run(api_run(socket, 16, requests))
        raw_after = asyncio.run(raw_rate(tmp / "raw2.db", requests))
    raw = max(raw, raw_after)  # the better of the two, before and after
    base = f"{raw:.0f}/s raw inserts"
    return [
        Row("enqueue, 1 client", f"{one:.0f}/s", base, f"{one / raw:.3f}"),
        Row(
            "enqueue, 1 client, latency",
            f"p50 {p50(one_lat):.1f} ms, p99 {pct(one_lat, 99):.1f} ms",
        ),
        Row(
            "enqueue, 16 clients",
            f"{many:.0f}/s",
            base,
            f"{many / raw:.3f}",
            ">= 0.50 x raw",
            met(many >= 0.5 * raw),
        ),
        Row(
            "enqueue, 16 clients, latency",
            f"p50 {p50(many_lat):.1f} ms, p99 {pct(many_lat, 99):.1f} ms",
            "-",
            "-",
            "p99 <= 50 ms",
            met(pct(many_lat, 99) <= 50),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    print_rows(rows(parser.parse_args().requests))


if __name__ == "__main__":
    main()
