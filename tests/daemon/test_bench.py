"""The benchmark suite runs end to end: `python -m bench --quick` prints its table.

Only that rows come out is checked, never a timing (figures belong to
`make bench`, not to tests). Slow tier: the quick run takes tens of seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_benchmark_table_has_a_row_per_figure() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("machine: ")
    table = [line for line in lines if line.startswith("| ")]
    assert table[0].startswith("| figure ")
    figures = [line.split("|")[1].strip() for line in table[2:]]
    for expected in (
        "lateness: dispatch",
        "lateness: end-to-end",
        "idle wake-ups/min",
        "idle CPU ms/min",
        "RSS idle",
        "enqueue, 16 clients",
        "plain: drained",
        "plain: run exactly once",
        "RSS under the burst",
        "socket activation to first answer",
        "reeve-lite mcp to initialize answer",
        "CLI status round trip",
        "create, 2,000 rows of history",
        "next due, 2,000 rows of history",
        "upcoming list (20), 2,000 rows of history",
    ):
        assert any(expected in f for f in figures), (expected, figures)
    # Every row has a figure in the measured column.
    assert all(line.split("|")[2].strip() for line in table[2:])
