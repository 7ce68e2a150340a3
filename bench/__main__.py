"""`python -m bench` (what `make bench` runs): every figure in one table.

    python -m bench [--quick] [--only NAME ...]

Each figure sits beside its baseline, measured in the same run; ratios and
medians are what to compare across machines. `--quick` is a short smoke run
(seconds, small counts): its figures are not the benchmark's. It prints; it
never asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import burst, cold_start, enqueue, idle, lateness, scale
from bench.common import Row, print_rows

# name: (full run, quick run)
SUITE: dict[str, tuple[Callable[[], list[Row]], Callable[[], list[Row]]]] = {
    "lateness": (lambda: lateness.rows(200, 10.0), lambda: lateness.rows(20, 1.0)),
    "idle": (lambda: idle.rows(60.0), lambda: idle.rows(2.0)),
    "enqueue": (lambda: enqueue.rows(2000), lambda: enqueue.rows(160)),
    "burst": (lambda: burst.rows(1000, 8), lambda: burst.rows(40, 8)),
    "cold_start": (lambda: cold_start.rows(9), lambda: cold_start.rows(1)),
    "scale": (lambda: scale.rows(1_000_000), lambda: scale.rows(2000, calls=10)),
}


def machine() -> str:
    """CPU model, cores, kernel, Python, and the disk and filesystem of the temp dir."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    tmp = os.environ.get("TMPDIR", "/tmp")
    try:
        df = (
            subprocess.run(
                ["df", "--output=source,fstype", tmp], capture_output=True, text=True, check=True
            )
            .stdout.split("\n")[1]
            .split()
        )
        disk = f"{df[0]} ({df[1]})"
    except (OSError, subprocess.CalledProcessError, IndexError):
        disk = "unknown disk"
    return (
        f"{cpu}, {os.cpu_count()} cores; Linux {platform.release()}; "
        f"Python {platform.python_version()}; temp files on {disk}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--only", nargs="+", choices=list(SUITE), help="these figures only")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    rows: list[Row] = []
    start = time.monotonic()
    for name in args.only or SUITE:
        full, quick = SUITE[name]
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        rows += (quick if args.quick else full)()
    print_rows(rows)
    print(f"({'quick run, ' if args.quick else ''}{time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()
