"""The reliability summary: tests record one row per proven property, and
`python -m tests.report FILE` prints them as a table (`.ci/run` does).

Rows go to the file named by REEVE_LITE_TEST_REPORT, one JSON object per line;
appends of one short line are atomic, so pytest-xdist workers can share it.
Without the variable, recording does nothing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPORT_VARIABLE = "REEVE_LITE_TEST_REPORT"


def record(area: str, check: str, result: str) -> None:
    """Add a row (e.g. "crash", "kill -9 x20, 8 clients", "lost 0, doubled 0")
    to the summary; call it after the test's assertions passed."""
    target = os.environ.get(REPORT_VARIABLE)
    if not target:
        return
    line = json.dumps({"area": area, "check": check, "result": result}) + "\n"
    with open(target, "a", encoding="utf-8") as out:
        out.write(line)


# The order of the summary; other areas follow in the order they were first seen.
AREAS = (
    "crash",
    "faults",
    "agent faults",
    "agent runs",
    "the real agent",
    "hostile input",
    "foreign files",
    "store",
    "group commit",
    "access",
    "backup",
)


def table(rows: list[dict[str, str]]) -> str:
    """The rows as a Markdown table, grouped by area (AREAS first), without repeats."""
    rows = list({tuple(row.items()): row for row in rows}.values())
    seen = dict.fromkeys(row["area"] for row in rows)
    areas = [a for a in AREAS if a in seen] + [a for a in seen if a not in AREAS]
    ordered = sorted(rows, key=lambda row: (areas.index(row["area"]), row["check"]))
    lines = ["| area | check | result |", "| --- | --- | --- |"]
    lines += [f"| {row['area']} | {row['check']} | {row['result']} |" for row in ordered]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the table recorded in the file given as the only argument."""
    if len(argv) != 1:
        print("usage: python -m tests.report FILE", file=sys.stderr)
        return 2
    path = Path(argv[0])
    if not path.exists():
        print(f"{path}: no results were recorded", file=sys.stderr)
        return 1
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
