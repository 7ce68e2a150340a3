"""`reeve-lite backup`: a consistent copy of the live database, dated, the last N kept.

Uses SQLite's online backup API, so the daemon may keep writing meanwhile; the
copy is checked with `PRAGMA integrity_check` and only then given its final
name, so a partial file never looks like a backup.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

PREFIX = "reeve-lite-"
SUFFIX = ".db"


class BackupError(Exception):
    """The backup could not be made; str() says why."""


def backup(db: Path, directory: Path, *, keep: int, now: datetime | None = None) -> Path:
    """Copy `db` to `directory/reeve-lite-YYYYmmddTHHMMSSZ.db`; keep the newest `keep`."""
    if not db.exists():
        raise BackupError(f"no database at {db}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = directory / f"{PREFIX}{stamp}{SUFFIX}"
    partial = target.with_name(target.name + ".partial")
    source = sqlite3.connect(db, timeout=30)
    try:
        fd = os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        os.close(fd)
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)
            verdict = copy.execute("PRAGMA integrity_check").fetchone()[0]
            copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            copy.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot back up {db}: {exc}") from None
    finally:
        source.close()
    if verdict != "ok":
        partial.unlink(missing_ok=True)
        raise BackupError(f"the copy of {db} failed its integrity check: {verdict}")
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, target)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in sorted(directory.glob(f"{PREFIX}*{SUFFIX}"))[:-keep]:
        old.unlink()
    return target
