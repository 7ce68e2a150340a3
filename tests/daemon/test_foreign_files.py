"""`serve` on files that are not its own: each is refused with what was found, and
left byte for byte as it was (no WAL switch, no lock, no mark)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from reeve_lite.store import APPLICATION_ID
from tests.conftest import Daemon, serve_once
from tests.report import record


def _sqlite(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


FILES: dict[str, tuple[Callable[[Path], object], str]] = {
    "an application's SQLite file (a users table)": (
        lambda p: _sqlite(p, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"),
        "it is not a reeve-lite database: it holds the tables users",
    ),
    "another application's own pulses table": (
        lambda p: _sqlite(p, "CREATE TABLE pulses (beat REAL)", "PRAGMA user_version = 2"),
        "it is not a reeve-lite database: it holds the tables pulses (schema version 2)",
    ),
    "another application_id": (
        lambda p: _sqlite(p, "PRAGMA application_id = 1234", "CREATE TABLE t (x)"),
        "it belongs to another application (application_id 0x000004d2)",
    ),
    "a reeve-lite database from a newer version": (
        lambda p: _sqlite(
            p,
            f"PRAGMA application_id = {APPLICATION_ID}",
            "CREATE TABLE pulses (id INTEGER)",
            "PRAGMA user_version = 99",
        ),
        "it has schema version 99, newer than this reeve-lite understands",
    ),
    "random bytes": (
        lambda p: p.write_bytes(bytes(range(256)) * 64),
        "it is not an SQLite database",
    ),
}


@pytest.mark.parametrize("kind", FILES)
def test_a_file_that_is_not_ours_is_refused_untouched(tmp_path: Path, kind: str) -> None:
    make, message = FILES[kind]
    db = tmp_path / "found.db"
    make(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    names = sorted(p.name for p in tmp_path.iterdir())
    done = serve_once("--db", str(db), "--socket", str(tmp_path / "api.sock"))
    assert done.returncode == 1
    assert message in done.stderr, done.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no -wal, -shm, .lock
    record("foreign files", f"serve on {kind}", "refused naming what was found; unchanged by hash")


def test_a_new_database_is_marked_as_ours(daemon: Daemon) -> None:
    conn = sqlite3.connect(daemon.db)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    finally:
        conn.close()
