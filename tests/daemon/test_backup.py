"""`reeve-lite backup`: consistent copies of a database that is being written;
`reeve-lite restore`: a backup put back while the daemon is stopped."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reeve_lite.backup import BackupError, backup
from tests.conftest import Daemon, clean_env, wait_for
from tests.daemon.test_cli import cli
from tests.report import record


def test_backup_while_the_daemon_writes(daemon: Daemon, tmp_path: Path) -> None:
    client = daemon.client()
    for i in range(20):
        client.create(prompt=f"before {i}", scheduled_at="in 1 hour")
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        while not stop.is_set():
            written.append(client.create(prompt="during", scheduled_at="in 1 hour")["pulse_id"])

    thread = threading.Thread(target=writer)
    thread.start()
    copies: list[tuple[Path, int]] = []  # each copy, and how many writes were acknowledged before
    try:
        wait_for(lambda: len(written) >= 5, 10, "writes to begin")
        for i in range(3):
            acknowledged = len(written)
            made = backup(
                daemon.db,
                tmp_path / "b",
                keep=10,
                now=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
            )
            copies.append((made, acknowledged))
    finally:
        stop.set()
        thread.join()
    for copy, acknowledged in copies:
        db = sqlite3.connect(copy)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        ids = [row[0] for row in db.execute("SELECT id FROM pulses ORDER BY id")]
        db.close()
        # One instant of the database: every write acknowledged before the copy
        # began, and no gap (a later write without an earlier one).
        assert set(written[:acknowledged]) <= set(ids)
        assert ids == list(range(1, len(ids) + 1))
        assert copy.stat().st_mode & 0o777 == 0o600
    assert len(written) > copies[-1][1]  # writes really went on during the copies
    assert not list((tmp_path / "b").glob("*.partial"))
    record(
        "backup",
        "online backup while 1 client writes",
        f"{len(copies)} copies, integrity ok, each one instant (all acknowledged writes, no gap)",
    )


def test_only_the_newest_are_kept(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    made = [
        backup(db, tmp_path / "b", keep=3, now=datetime(2026, 1, day, tzinfo=UTC))
        for day in range(1, 6)
    ]
    assert sorted((tmp_path / "b").iterdir()) == made[-3:]
    assert made[-1].name == "reeve-lite-20260105T000000Z.db"


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no database at"):
        backup(tmp_path / "none.db", tmp_path / "b", keep=1)
    done = cli("backup", "--db", str(tmp_path / "none.db"))
    assert done.returncode == 1
    assert "no database at" in done.stderr
    assert cli("backup", "--keep", "0").returncode == 2


def test_cli_backup_prints_the_copy(daemon: Daemon) -> None:
    done = cli("backup", "--db", str(daemon.db))
    assert done.returncode == 0, done.stderr
    copy = Path(done.stdout.strip())
    assert copy.parent == daemon.db.parent / "backups"
    assert copy.exists()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_restore_brings_a_backup_back_and_refuses_while_the_daemon_runs(
    daemon: Daemon, tmp_path: Path
) -> None:
    env = clean_env() | {"REEVE_LITE_DB": str(daemon.db)}
    kept_pulse = daemon.client().create(prompt="before the backup", scheduled_at="in 1 hour")
    made = _cli("backup", "--dir", str(tmp_path / "b"), env=env)
    assert made.returncode == 0, made.stderr
    copy = made.stdout.strip()
    lost = daemon.client().create(prompt="after the backup", scheduled_at="in 1 hour")

    busy = _cli("restore", copy, env=env)
    assert busy.returncode == 1
    assert "another reeve-lite daemon is using" in busy.stderr

    daemon.stop()
    done = _cli("restore", copy, env=env)
    assert done.returncode == 0, done.stderr
    assert "the previous database is" in done.stdout
    assert oct(daemon.db.stat().st_mode & 0o777) == "0o600"
    previous = [p for p in daemon.db.parent.iterdir() if ".before-restore-" in p.name]
    assert previous, "the replaced database is kept"
    daemon.start()
    ids = [p["pulse_id"] for p in daemon.client().list(status=None)["pulses"]]
    assert kept_pulse["pulse_id"] in ids
    assert lost["pulse_id"] not in ids
    record("backup", "restore FILE with the daemon stopped", "refused while running; brought back")


def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    env = clean_env() | {"REEVE_LITE_DB": str(tmp_path / "state" / "reeve.db")}
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    done = _cli("restore", str(junk), env=env)
    assert done.returncode == 1
    assert "is not a reeve-lite backup" in done.stderr
    assert not (tmp_path / "state" / "reeve.db").exists()
    missing = _cli("restore", str(tmp_path / "nothing.db"), env=env)
    assert "no backup at" in missing.stderr
