"""`reeve-lite backup`: a consistent copy of the live database, dated, the last N kept.

Uses SQLite's online backup API, so the daemon may keep writing meanwhile; the
copy is checked with `PRAGMA integrity_check` and only then given its final
name, so a partial file never looks like a backup.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

PREFIX = "reeve-lite-"
SUFFIX = ".db"


class BackupError(Exception):
    """The backup could not be made; str() says why."""


def backup(db: Path, directory: Path, *, keep: int, now: datetime | None = None) -> Path:
    """Copy `db` to `directory/reeve-lite-YYYYmmddTHHMMSSZ.db`; keep the newest `keep`."""
    # Here, not at the top: the store brings aiosqlite and pydantic, which only the
    # backup itself needs (the command's help and errors start without them).
    from reeve_lite.store import StoreError, copy_file

    if not db.exists():
        raise BackupError(f"no database at {db}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = directory / f"{PREFIX}{stamp}{SUFFIX}"
    partial = target.with_name(target.name + ".partial")
    try:
        os.close(os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600))
        verdict = copy_file(db, partial)
    except (StoreError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot back up {db}: {exc}") from None
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


def restore(source: Path, db: Path, *, now: datetime | None = None) -> Path | None:
    """Put the backup `source` in place of `db` while no daemon uses it.

    The backup is checked first (a SQLite file that passes `integrity_check`, with
    pulses, of a schema this version understands). The database it replaces, with
    its WAL, is kept beside it as `DB.before-restore-STAMP`, whose path is returned
    (None when there was none). The new file gets the old one's owner and mode 0600.
    """
    from reeve_lite.store import SCHEMA_VERSION, StoreError, copy_file, examine, lock_writer

    if not source.is_file():
        raise BackupError(f"no backup at {source}")
    try:
        verdict, version, tables = examine(source)
    except StoreError as exc:
        raise BackupError(f"{source} is not a reeve-lite backup: {exc}") from None
    if verdict != "ok":
        raise BackupError(f"{source} fails its integrity check: {verdict}")
    if "pulses" not in tables:
        raise BackupError(f"{source} is not a reeve-lite backup: it has no pulses table")
    if version > SCHEMA_VERSION:
        raise BackupError(
            f"{source} has schema version {version}, newer than this reeve-lite "
            f"understands ({SCHEMA_VERSION})"
        )
    try:
        lock = lock_writer(db)
    except (StoreError, OSError) as exc:
        raise BackupError(f"{exc} (systemctl stop reeve-lite.socket reeve-lite.service)") from None
    try:
        owner = db.stat() if db.exists() else db.parent.stat()
        kept: Path | None = None
        if db.exists():
            stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
            kept = db.with_name(f"{db.name}.before-restore-{stamp}")
            for suffix in ("", "-wal", "-shm"):
                old = Path(str(db) + suffix)
                if old.exists():
                    os.replace(old, Path(str(kept) + suffix))
        partial = db.with_name(db.name + ".restoring")
        os.close(os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600))
        try:
            verdict = copy_file(source, partial, read_only=True)
        except StoreError as exc:
            partial.unlink(missing_ok=True)
            raise BackupError(f"cannot restore {source}: {exc}") from None
        if verdict != "ok":
            partial.unlink(missing_ok=True)
            raise BackupError(f"the copy of {source} failed its integrity check: {verdict}")
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        if os.geteuid() == 0:
            os.chown(partial, owner.st_uid, owner.st_gid)
        os.replace(partial, db)
        dir_fd = os.open(db.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return kept
    finally:
        os.close(lock)
