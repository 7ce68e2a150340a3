"""What the daemon imports to start: socket activation waits for it, idle memory keeps it.

croniter (and dateutil with it) is imported when a cron expression is first
evaluated, not at start-up.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import modules_loaded_by


def test_the_daemon_starts_without_croniter() -> None:
    lazy = ("croniter", "dateutil")
    assert modules_loaded_by("reeve_lite.cli, reeve_lite.daemon", lazy) == []


def test_cron_still_works_once_imported_lazily() -> None:
    probe = (
        "from datetime import UTC, datetime; from zoneinfo import ZoneInfo; "
        "from reeve_lite.recurrence import next_occurrence; "
        "print(next_occurrence('30 9 * * *', ZoneInfo('UTC'), datetime(2026, 1, 1, tzinfo=UTC)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "2026-01-01 09:30:00+00:00"
