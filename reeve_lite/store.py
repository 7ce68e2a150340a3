"""The SQLite store: every SQL statement of reeve-lite lives in this module.

One connection (aiosqlite, autocommit mode) owned by the daemon, the only
writer. WAL journal with `synchronous=FULL`, so a commit that returned has
reached the disk and an acknowledged request survives a crash or power loss.
Every change goes through `_transaction()` (`BEGIN IMMEDIATE` … `COMMIT`).
Times are REAL epoch seconds (UTC); priorities their integer rank; lists JSON.
The schema is versioned with `PRAGMA user_version`; `MIGRATIONS` holds the
forward steps, applied in order at open.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from reeve_lite.models import Attempt, Missed, OnMissed, Priority, Pulse, Status
from reeve_lite.policy import DEFAULT_KEY, After, Miss, Review

# Each entry moves the schema one version forward; never edit a released step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: pulses and their attempts.
    (
        """CREATE TABLE pulses (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            scheduled_at REAL NOT NULL,
            prompt TEXT NOT NULL,
            priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 4),
            status TEXT NOT NULL CHECK (status IN
                ('pending', 'processing', 'completed', 'failed', 'cancelled')),
            source TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '[]',
            session_id TEXT,
            sticky_notes TEXT NOT NULL DEFAULT '[]',
            retry_count INTEGER NOT NULL DEFAULT 0,
            max_retries INTEGER NOT NULL DEFAULT 3,
            cron TEXT,
            timezone TEXT,
            idempotency_key TEXT UNIQUE,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            pulse_id INTEGER NOT NULL REFERENCES pulses(id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            exit_code INTEGER,
            duration_ms INTEGER,
            session_id TEXT,
            is_error INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            result TEXT,
            output_tail TEXT,
            cost_usd REAL,
            num_turns INTEGER
        )""",
        "CREATE INDEX pulses_pending_due ON pulses(scheduled_at) WHERE status = 'pending'",
        "CREATE INDEX pulses_status ON pulses(status, id)",
        "CREATE UNIQUE INDEX attempts_pulse ON attempts(pulse_id, number)",
    ),
    # 2: remember the agent process of an attempt, so that recovery after a
    # crash can stop an orphaned run; keep the last error on the pulse.
    (
        "ALTER TABLE attempts ADD COLUMN pid INTEGER",
        "ALTER TABLE pulses ADD COLUMN last_error TEXT",
        "CREATE INDEX attempts_running ON attempts(id) WHERE finished_at IS NULL",
    ),
    # 3: scheduling policy. The status CHECK gains 'expired' and 'skipped', which
    # SQLite can only do by rebuilding the table (its documented 12 steps; foreign
    # keys are off while migrating, see `_migrate`).
    (
        """CREATE TABLE pulses_v3 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            scheduled_at REAL NOT NULL,
            prompt TEXT NOT NULL,
            priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 4),
            status TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'completed',
                'failed', 'cancelled', 'expired', 'skipped')),
            source TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '[]',
            session_id TEXT,
            sticky_notes TEXT NOT NULL DEFAULT '[]',
            retry_count INTEGER NOT NULL DEFAULT 0,
            max_retries INTEGER NOT NULL DEFAULT 3,
            cron TEXT,
            timezone TEXT,
            idempotency_key TEXT UNIQUE,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            last_error TEXT,
            occurrence_at REAL NOT NULL,
            on_missed TEXT NOT NULL DEFAULT 'once' CHECK (on_missed IN ('once', 'all', 'skip')),
            expires_after REAL,
            expires_at REAL,
            deadline REAL,
            concurrency_key TEXT,
            jitter REAL NOT NULL DEFAULT 0,
            catchup_remaining INTEGER NOT NULL DEFAULT 0,
            lease INTEGER
        )""",
        """INSERT INTO pulses_v3 (id, scheduled_at, prompt, priority, status, source, tags,
            session_id, sticky_notes, retry_count, max_retries, cron, timezone,
            idempotency_key, created_at, updated_at, last_error, occurrence_at, lease)
        SELECT id, scheduled_at, prompt, priority, status, source, tags, session_id,
            sticky_notes, retry_count, max_retries, cron, timezone, idempotency_key,
            created_at, updated_at, last_error, scheduled_at,
            (SELECT MAX(a.id) FROM attempts a WHERE a.pulse_id = pulses.id
                AND a.finished_at IS NULL)
        FROM pulses""",
        "DROP TABLE pulses",
        "ALTER TABLE pulses_v3 RENAME TO pulses",
        "CREATE INDEX pulses_pending_due ON pulses(scheduled_at) WHERE status = 'pending'",
        "CREATE INDEX pulses_status ON pulses(status, id)",
        "CREATE INDEX pulses_deadline ON pulses(deadline) "
        "WHERE status = 'pending' AND deadline IS NOT NULL",
        """CREATE TABLE misses (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            pulse_id INTEGER NOT NULL REFERENCES pulses(id) ON DELETE CASCADE,
            first_due REAL NOT NULL,
            last_due REAL NOT NULL,
            count INTEGER,
            action TEXT NOT NULL CHECK (action IN ('caught_up', 'skipped', 'expired', 'dropped')),
            recorded_at REAL NOT NULL
        )""",
        "CREATE INDEX misses_pulse ON misses(pulse_id, id)",
        # An attempt cut by a restart whose process may still run: checked (and
        # cleared) before its pulse starts again.
        "ALTER TABLE attempts ADD COLUMN orphan INTEGER NOT NULL DEFAULT 0",
    ),
    # 4: what the agent was refused (a JSON list of tool names), and how many
    # notifications the attempt sent (a Telegram message is answered once).
    (
        "ALTER TABLE attempts ADD COLUMN denials TEXT",
        "ALTER TABLE attempts ADD COLUMN notified INTEGER NOT NULL DEFAULT 0",
    ),
    # 5: a comment for the people who read the queue (the agent never gets it).
    ("ALTER TABLE pulses ADD COLUMN comment TEXT",),
)
SCHEMA_VERSION = len(MIGRATIONS)
# `PRAGMA application_id` of a reeve-lite database ("ReVe"): a file with another one,
# or with someone else's tables, is never changed.
APPLICATION_ID = 0x52655665
# The tables of an unmarked reeve-lite database (made before the mark was set).
_OUR_TABLES = {"pulses", "attempts", "misses"}
# How long a statement waits inside SQLite for a lock another process holds;
# short, because the connection is shared by every request while it waits.
BUSY_TIMEOUT_MS = 100
# How long a write waits for the database's write lock before it is refused.
WRITE_WAIT_S = 5.0
MAX_ATTEMPTS_SHOWN = 50
MAX_MISSES_SHOWN = 50


class StoreError(Exception):
    """A store operation that cannot be done; subclasses say why."""


class NotFound(StoreError):
    """No pulse with that id."""


class NotPending(StoreError):
    """The pulse exists but is no longer pending (its status is in the message)."""

    def __init__(self, pulse_id: int, status: Status) -> None:
        super().__init__(f"pulse {pulse_id} is {status}, only a pending pulse can be changed")
        self.status = status


class SchemaTooNew(StoreError):
    """The database was written by a newer reeve-lite."""


class Locked(StoreError):
    """Another daemon holds the database."""


class DatabaseError(StoreError):
    """SQLite could not do it (SQLite's error is the cause). `kind` says what that
    means for the caller: "full" (the disk is full), "busy" (another process holds
    a lock; try again) or "error" (anything else)."""

    def __init__(self, exc: sqlite3.Error) -> None:
        super().__init__(str(exc))
        self.kind = _failure_kind(exc)


def _ours(exc: BaseException) -> BaseException:
    """`exc` as callers of the store see it: an SQLite error becomes a DatabaseError."""
    if isinstance(exc, sqlite3.Error):
        error = DatabaseError(exc)
        error.__cause__ = exc
        return error
    return exc


def check_ours(path: Path) -> None:
    """Raise StoreError, having changed nothing, unless `path` is missing, empty, an
    empty SQLite database, or a reeve-lite database of a schema this code knows."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        return
    if not header:
        return  # an empty file: ours to initialise
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise StoreError("it is not an SQLite database (it was left as it is)")
    application_id = int.from_bytes(header[68:72], "big")
    if application_id not in (0, APPLICATION_ID):
        raise StoreError(
            f"it belongs to another application (application_id {application_id:#010x}); "
            "it was left as it is"
        )
    if application_id == APPLICATION_ID:
        version = int.from_bytes(header[60:64], "big")
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"it has schema version {version}, newer than this reeve-lite understands "
                f"({SCHEMA_VERSION}); upgrade reeve-lite (the file was left as it is)"
            )
        return  # ours (the schema is checked again, through the WAL, when it opens)
    # Read only: no pragma that writes, no journal mode change.
    try:
        conn = sqlite3.connect(path)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = sorted(
                str(r[0])
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'"
                )
            )
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return  # cannot be read here (a read-only directory): opening it says why
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"it cannot be read as an SQLite database ({exc})") from None
    if not tables:
        return  # an empty database: ours to initialise
    if version > SCHEMA_VERSION and {"pulses", "attempts"} <= set(tables):
        raise SchemaTooNew(
            f"it has schema version {version}, newer than this reeve-lite understands "
            f"({SCHEMA_VERSION}); upgrade reeve-lite (the file was left as it is)"
        )
    if not ({"pulses", "attempts"} <= set(tables) <= _OUR_TABLES and version >= 1):
        shown = ", ".join(tables[:8]) + (" …" if len(tables) > 8 else "")
        raise StoreError(
            f"it is not a reeve-lite database: it holds the tables {shown} (schema "
            f"version {version}); it was left as it is"
        )


def _failure_kind(exc: sqlite3.Error) -> str:
    """What a database error means for a request: "full" (the disk is full),
    "busy" (another process holds a lock; try again), or "error" (anything else)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "error"
    primary = code & 0xFF  # an extended code (SQLITE_BUSY_SNAPSHOT ...) keeps its primary
    if primary == sqlite3.SQLITE_FULL:
        return "full"
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return "busy"
    return "error"


def copy_file(source: Path, target: Path, *, read_only: bool = False) -> str:
    """Copy the database `source` into the new file `target` with SQLite's online
    backup API (a daemon may write meanwhile), as one self-contained file (no WAL);
    SQLite's integrity verdict on the copy, "ok" when sound. StoreError if it fails."""
    uri = f"file:{source}?mode=ro" if read_only else str(source)
    try:
        origin = sqlite3.connect(uri, uri=read_only, timeout=30)
        try:
            copy = sqlite3.connect(target)
            try:
                origin.backup(copy)
                verdict = str(copy.execute("PRAGMA integrity_check").fetchone()[0])
                copy.execute("PRAGMA journal_mode = DELETE")
            finally:
                copy.close()
        finally:
            origin.close()
    except sqlite3.Error as exc:
        raise StoreError(str(exc)) from None
    return verdict


def examine(path: Path) -> tuple[str, int, set[str]]:
    """Read only: the integrity verdict, schema version and tables of a database
    file. StoreError if it cannot be read as one."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            verdict = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(str(exc)) from None
    return verdict, version, tables


def _owner_if_not_mine(path: Path) -> str | None:
    """The name of the user who owns `path` when that is not this process's user."""
    import pwd

    try:
        uid = path.stat().st_uid
    except FileNotFoundError:
        return None
    if uid == os.geteuid():
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def lock_writer(path: Path) -> int:
    """Take the one-daemon-per-database lock (`<db>.lock`, flock); the fd to keep open.

    Two daemons on one file would each claim and run the same pulses; the second
    is refused. The kernel drops the lock when the holder exits, even by SIGKILL.
    """
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    check_ours(path)
    owner = _owner_if_not_mine(path)
    if owner is not None:
        # Even root: a root-owned lock or WAL would lock the owner out of their queue.
        raise StoreError(
            f"it belongs to the user {owner}; run the daemon as that user "
            f"(sudo -u {owner} reeve-lite serve), or choose another --db"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        # mkdir's word for "a regular file where a directory belongs".
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(path.parent)) from None
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Locked(
            f"another reeve-lite daemon is using {path} (it holds {lock}); stop it first"
        ) from None
    return fd


def _ts(value: datetime) -> float:
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store")
    return value.timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _opt_dt(value: float | None) -> datetime | None:
    return None if value is None else _dt(value)


def _opt_ts(value: datetime | None) -> float | None:
    return None if value is None else _ts(value)


@dataclass(frozen=True)
class Kept:
    """How a value of a pulse is kept in its column, and read back."""

    dump: Callable[[Any], Any]
    load: Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _json_list(value: Sequence[str]) -> str:
    return json.dumps(list(value))


def _rank(priority: Priority) -> int:
    return priority.rank


_SAME = Kept(_same, _same)
_TIME = Kept(_opt_ts, _opt_dt)
_LIST = Kept(_json_list, json.loads)

# The stored fields of a pulse, by their name in `Pulse` (the column is the same,
# but `pulse_id` is `id`), and how each is kept. The insert's columns and
# placeholders and the row mapping are derived from this declaration; a test holds
# it to the models and to the live schema. (`lease` is the store's own column.)
PULSE_FIELDS: dict[str, Kept] = {
    "pulse_id": _SAME,
    "scheduled_at": _TIME,
    "prompt": _SAME,
    "priority": Kept(_rank, Priority.from_rank),
    "status": Kept(str, Status),
    "source": _SAME,
    "tags": _LIST,
    "session_id": _SAME,
    "sticky_notes": _LIST,
    "retry_count": _SAME,
    "max_retries": _SAME,
    "cron": _SAME,
    "timezone": _SAME,
    "idempotency_key": _SAME,
    "created_at": _TIME,
    "updated_at": _TIME,
    "last_error": _SAME,
    "occurrence_at": _TIME,
    "on_missed": Kept(str, OnMissed),
    "expires_after": _SAME,
    "expires_at": _TIME,
    "deadline": _TIME,
    "concurrency_key": _SAME,
    "jitter": _SAME,
    "catchup_remaining": _SAME,
    "comment": _SAME,
}


def _column(name: str) -> str:
    return "id" if name == "pulse_id" else name


@dataclass(frozen=True)
class NewPulse:
    """A validated pulse to insert."""

    prompt: str
    scheduled_at: datetime
    priority: Priority = Priority.NORMAL
    source: str = "api"
    tags: Sequence[str] = ()
    session_id: str | None = None
    sticky_notes: Sequence[str] = ()
    max_retries: int = 3
    cron: str | None = None
    timezone: str | None = None
    idempotency_key: str | None = None
    occurrence_at: datetime | None = None  # None: scheduled_at
    on_missed: OnMissed = OnMissed.ONCE
    expires_after: float | None = None
    expires_at: datetime | None = None
    deadline: datetime | None = None
    concurrency_key: str | None = None
    jitter: float = 0.0
    comment: str | None = None

    def __post_init__(self) -> None:
        if self.occurrence_at is None:
            object.__setattr__(self, "occurrence_at", self.scheduled_at)


# A create: the fields of NewPulse, then the ones every new pulse starts with.
_NEW_FIELDS = tuple(f.name for f in dataclasses.fields(NewPulse))
# Column names come from the declaration; every value is bound.
_INSERT = (
    f"INSERT INTO pulses ({', '.join(_NEW_FIELDS)}, status, created_at, updated_at) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(_NEW_FIELDS))}, 'pending', ?, ?) RETURNING *"
)


@dataclass(frozen=True)
class Orphan:
    """An earlier attempt of a pulse, cut by a restart, whose process may still run."""

    attempt_id: int
    number: int
    pid: int | None


@dataclass(frozen=True)
class Claim:
    """A pulse moved to `processing`, with the attempt opened for it. The attempt id
    is the fencing token: only it can record the pulse's outcome (`finish`)."""

    pulse: Pulse
    attempt_id: int
    number: int
    orphans: tuple[Orphan, ...] = ()
    # For a retry: the attempt before it, whose session may already hold the task.
    previous: Previous | None = None


@dataclass(frozen=True)
class Previous:
    """The last finished attempt of a pulse that is being retried."""

    number: int
    session_id: str | None
    error: str | None


@dataclass(frozen=True)
class Dispatched:
    """What one pass over the due pulses did."""

    claims: list[Claim]
    reviewed: list[tuple[Pulse, Review]]


# What a one-off pulse becomes after a successful attempt.
COMPLETED = After(Status.COMPLETED, None, 0)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended and what becomes of its pulse."""

    finished_at: datetime
    exit_code: int | None
    duration_ms: int
    is_error: bool
    error: str | None = None
    session_id: str | None = None
    result: str | None = None
    output_tail: str | None = None
    cost_usd: float | None = None
    num_turns: int | None = None
    # The pulse afterwards (a one-off pulse that succeeded: completed).
    then: After = COMPLETED
    # The attempt's process may outlive it (a crash cut it): check before the next.
    orphan: bool = False
    denials: Sequence[str] = ()
    # The session the pulse was to resume is gone: the pulse forgets it.
    forget_session: bool = False


@dataclass(frozen=True)
class Running:
    """An attempt that has not finished, with its pulse."""

    pulse: Pulse
    attempt: Attempt


@dataclass(frozen=True)
class NextDue:
    """The earliest pending pulse."""

    pulse_id: int
    scheduled_at: datetime
    priority: Priority


def _pulse(row: sqlite3.Row) -> Pulse:
    return Pulse(**{name: kept.load(row[_column(name)]) for name, kept in PULSE_FIELDS.items()})


def _missed(row: sqlite3.Row) -> Missed:
    return Missed(
        first_due=_dt(row["first_due"]),
        last_due=_dt(row["last_due"]),
        count=row["count"],
        action=row["action"],
        recorded_at=_dt(row["recorded_at"]),
    )


def _attempt(row: sqlite3.Row) -> Attempt:
    finished = row["finished_at"]
    return Attempt(
        attempt_id=row["id"],
        number=row["number"],
        started_at=_dt(row["started_at"]),
        finished_at=None if finished is None else _dt(finished),
        exit_code=row["exit_code"],
        duration_ms=row["duration_ms"],
        session_id=row["session_id"],
        is_error=bool(row["is_error"]),
        error=row["error"],
        result=row["result"],
        output_tail=row["output_tail"],
        cost_usd=row["cost_usd"],
        num_turns=row["num_turns"],
        pid=row["pid"],
        denials=json.loads(row["denials"]) if row["denials"] else [],
        notified=row["notified"],
    )


class Store:
    """The pulse database. Open with `await Store.open(path)`; close when done."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        # One connection: statements of concurrent coroutines must not interleave
        # inside another's transaction.
        self._lock = asyncio.Lock()
        # Creates waiting for the next group commit, and the task that commits them.
        self._creates: list[tuple[NewPulse, datetime, asyncio.Future[tuple[Pulse, bool]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path, *, migrate_to: int = SCHEMA_VERSION) -> Store:
        """Open (creating if needed) the database at `path` and bring its schema up to date.

        A new database is private to its owner (0600; SQLite gives its -wal and
        -shm files the same mode): prompts may hold anything.
        """
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        check_ours(path)  # before anything changes it
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            async with db.execute("PRAGMA journal_mode = WAL") as cur:
                row = await cur.fetchone()
            if row is None or str(row[0]).lower() != "wal":
                raise StoreError(f"{path}: cannot switch the database to WAL mode")
            await db.execute("PRAGMA synchronous = FULL")
            await db.execute("PRAGMA foreign_keys = ON")
            store = cls(db, path)
            await store._migrate(migrate_to)
            async with db.execute("PRAGMA application_id") as cur:
                mark = await cur.fetchone()
            if mark is None or mark[0] != APPLICATION_ID:
                await db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection, once the creates already queued are committed."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._db.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        try:
            await self._begin()
        except sqlite3.Error as exc:
            raise _ours(exc) from exc
        try:
            yield self._db
            await self._db.execute("COMMIT")
        except BaseException as exc:
            # SQLite may have rolled back already (a failed COMMIT); make sure.
            with contextlib.suppress(sqlite3.Error):
                await self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _ours(exc) from exc
            raise
        finally:
            self._lock.release()

    async def _begin(self) -> None:
        """Take the connection and the database's write lock (`BEGIN IMMEDIATE`).

        While another process holds the write lock, wait up to `WRITE_WAIT_S`,
        trying again every `BUSY_TIMEOUT_MS` and leaving the connection to other
        requests in between: reads (and the watchdog's check) still answer, and
        each waiting write ends with "database is locked" after its own wait,
        not after everyone's before it.
        """
        deadline = time.monotonic() + WRITE_WAIT_S
        while True:
            await self._lock.acquire()
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                self._lock.release()
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # or an extended BUSY_*
                if not busy or time.monotonic() >= deadline:
                    raise
            except BaseException:
                self._lock.release()
                raise
            await asyncio.sleep(0.01)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise _ours(exc) from exc

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one read (one round trip to the connection's thread)."""
        async with self._read() as db:
            return list(await db.execute_fetchall(sql, params))

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """The first row of one read, or None."""
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row of one read, or None."""
        row = await self._row(sql, params)
        return None if row is None else row[0]

    async def schema_version(self) -> int:
        """The `user_version` of the open database."""
        return int(await self._scalar("PRAGMA user_version") or 0)

    async def _migrate(self, target: int) -> None:
        current = await self.schema_version()
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.path} has schema version {current}, newer than this reeve-lite "
                f"understands ({SCHEMA_VERSION}); upgrade reeve-lite"
            )
        if current >= target:
            return
        # Rebuilding a table drops the old one, which with foreign keys on would
        # cascade to its attempts; the pragma cannot change inside a transaction.
        await self._db.execute("PRAGMA foreign_keys = OFF")
        try:
            for version in range(current + 1, target + 1):
                async with self._transaction() as db:
                    for statement in MIGRATIONS[version - 1]:
                        await db.execute(statement)
                    async with db.execute("PRAGMA foreign_key_check") as cur:
                        broken = await cur.fetchone()
                    if broken is not None:
                        raise StoreError(
                            f"{self.path}: migration to schema {version} broke a reference "
                            f"({tuple(broken)}); nothing was changed"
                        )
                    await db.execute(f"PRAGMA user_version = {version}")
        finally:
            await self._db.execute("PRAGMA foreign_keys = ON")

    async def integrity_check(self) -> str:
        """SQLite's own verdict on the file: 'ok' when sound."""
        verdict = await self._scalar("PRAGMA integrity_check")
        return "no answer" if verdict is None else str(verdict)

    # --- pulses

    async def create(self, new: NewPulse, *, now: datetime) -> tuple[Pulse, bool]:
        """Insert `new`; returns (pulse, created). With a known idempotency key,
        returns the earlier pulse and created=False instead of inserting.

        Creates that arrive while the connection is busy are committed together
        (group commit: one fsync for many); each is applied on its own, so one
        that fails does not fail the others, and none returns before the COMMIT
        that made it durable has returned.
        """
        waiter: asyncio.Future[tuple[Pulse, bool]] = asyncio.get_running_loop().create_future()
        self._creates.append((new, now, waiter))
        if self._flusher is None or self._flusher.done():
            # A task of its own: a caller that goes away does not cut the batch.
            self._flusher = asyncio.create_task(self._flush_creates())
        return await waiter

    async def _flush_creates(self) -> None:
        """Commit the queued creates, a batch per transaction, until none is left."""
        while self._creates:
            try:
                await self._begin()
            except Exception as exc:
                # The write lock never came (another process held it): every
                # create waiting now hears so, and nothing was written.
                for _, _, waiter in self._creates:
                    if not waiter.done():
                        waiter.set_exception(_ours(exc))
                self._creates.clear()
                return
            try:
                # Everything that queued up while the lock was busy goes in this batch.
                batch = [item for item in self._creates if not item[2].cancelled()]
                self._creates.clear()
                await self._commit_batch(batch)
            finally:
                self._lock.release()

    async def _commit_batch(
        self, batch: list[tuple[NewPulse, datetime, asyncio.Future[tuple[Pulse, bool]]]]
    ) -> None:
        done: list[tuple[asyncio.Future[tuple[Pulse, bool]], tuple[Pulse, bool]]] = []
        failed: list[tuple[asyncio.Future[tuple[Pulse, bool]], BaseException]] = []
        db = self._db
        try:
            # The caller began the transaction (`_begin`).
            try:
                for new, now, waiter in batch:
                    # Not released one by one (a round trip each): the COMMIT
                    # releases them all, and ROLLBACK TO goes back to the latest.
                    await db.execute("SAVEPOINT create_one")
                    try:
                        result = await self._insert(db, new, now)
                    except (sqlite3.Error, ValueError) as exc:
                        # Undo this item only; if even that fails, the batch fails.
                        await db.execute("ROLLBACK TO create_one")
                        failed.append((waiter, _ours(exc)))
                    else:
                        done.append((waiter, result))
                await db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a failed COMMIT); make sure.
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                raise
        except Exception as exc:
            # Nothing of the batch is durable: every waiter hears so.
            for _, _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(_ours(exc))
            return
        except BaseException as exc:
            for _, _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(StoreError(f"the create was interrupted: {exc!r}"))
            raise
        for waiter, result in done:
            if not waiter.done():
                waiter.set_result(result)
        for waiter, error in failed:
            if not waiter.done():
                waiter.set_exception(error)

    @staticmethod
    async def _insert(db: aiosqlite.Connection, new: NewPulse, now: datetime) -> tuple[Pulse, bool]:
        """One create, within the caller's transaction."""
        # execute_fetchall: one round trip to the connection's thread per statement.
        if new.idempotency_key is not None:
            found = await db.execute_fetchall(
                "SELECT * FROM pulses WHERE idempotency_key = ?", (new.idempotency_key,)
            )
            for row in found:
                return _pulse(row), False
        stamp = _ts(now)
        values = [PULSE_FIELDS[name].dump(getattr(new, name)) for name in _NEW_FIELDS]
        rows = await db.execute_fetchall(_INSERT, (*values, stamp, stamp))
        (row,) = rows
        return _pulse(row), True

    async def get(self, pulse_id: int, *, attempts: int = MAX_ATTEMPTS_SHOWN) -> Pulse:
        """The pulse with its latest `attempts` attempts, oldest first; NotFound if none."""
        async with self._read() as db:
            rows = await db.execute_fetchall("SELECT * FROM pulses WHERE id = ?", (pulse_id,))
            if not rows:
                raise NotFound(f"no pulse {pulse_id}")
            attempt_rows = await db.execute_fetchall(
                "SELECT * FROM attempts WHERE pulse_id = ? ORDER BY number DESC LIMIT ?",
                (pulse_id, attempts),
            )
            miss_rows = await db.execute_fetchall(
                "SELECT * FROM misses WHERE pulse_id = ? ORDER BY id DESC LIMIT ?",
                (pulse_id, MAX_MISSES_SHOWN),
            )
        pulse = _pulse(next(iter(rows)))
        pulse.attempts = [_attempt(r) for r in reversed(list(attempt_rows))]
        pulse.missed = [_missed(r) for r in reversed(list(miss_rows))]
        return pulse

    async def list_pulses(
        self, *, status: Status | None, limit: int, offset: int
    ) -> tuple[list[Pulse], int]:
        """A page of pulses and the total that match. Pending and processing pulses
        come in due order; the others newest first."""
        where, params = ("WHERE status = ?", [str(status)]) if status else ("", [])
        order = "scheduled_at, id" if status in (Status.PENDING, Status.PROCESSING) else "id DESC"
        async with self._read() as db:
            rows = await db.execute_fetchall(
                f"SELECT * FROM pulses {where} ORDER BY {order} LIMIT ? OFFSET ?",  # noqa: S608
                (*params, limit, offset),
            )
            total = await db.execute_fetchall(f"SELECT COUNT(*) FROM pulses {where}", params)  # noqa: S608
        return [_pulse(r) for r in rows], int(next(iter(total))[0])

    async def upcoming(self, limit: int) -> list[Pulse]:
        """Pending pulses, earliest due first."""
        rows = await self._rows(
            "SELECT * FROM pulses WHERE status = 'pending' ORDER BY scheduled_at, id LIMIT ?",
            (limit,),
        )
        return [_pulse(r) for r in rows]

    async def _change_pending(
        self, pulse_id: int, sql: str, params: Sequence[Any], now: datetime
    ) -> Pulse:
        async with self._transaction() as db:
            async with db.execute(
                f"UPDATE pulses SET {sql}, updated_at = ? "  # noqa: S608 - fixed fragments
                "WHERE id = ? AND status = 'pending' RETURNING *",
                (*params, _ts(now), pulse_id),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                async with db.execute("SELECT status FROM pulses WHERE id = ?", (pulse_id,)) as cur:
                    found = await cur.fetchone()
                if found is None:
                    raise NotFound(f"no pulse {pulse_id}")
                raise NotPending(pulse_id, Status(found["status"]))
        return _pulse(row)

    async def cancel(self, pulse_id: int, *, now: datetime) -> Pulse:
        """Cancel a pending pulse; NotFound or NotPending otherwise."""
        return await self._change_pending(pulse_id, "status = 'cancelled'", (), now)

    async def reschedule(
        self, pulse_id: int, when: datetime, *, deadline: datetime | None, now: datetime
    ) -> Pulse:
        """Move a pending pulse (its current occurrence) to `when`, with that
        occurrence's `deadline`; NotFound or NotPending otherwise."""
        return await self._change_pending(
            pulse_id,
            "scheduled_at = ?, occurrence_at = ?, deadline = ?, catchup_remaining = 0",
            (_ts(when), _ts(when), _opt_ts(deadline)),
            now,
        )

    async def next_due(
        self, *, busy_keys: Collection[str] = (), default_key: str = DEFAULT_KEY
    ) -> NextDue | None:
        """The earliest pending pulse whose concurrency key is not in `busy_keys`, or
        None when there is none."""
        keys = list(busy_keys)
        where = ""
        if keys:
            marks = ", ".join("?" * len(keys))
            where = f" AND COALESCE(concurrency_key, ?) NOT IN ({marks})"
        row = await self._row(
            "SELECT id, scheduled_at, priority FROM pulses WHERE status = 'pending'"  # noqa: S608
            f"{where} ORDER BY scheduled_at LIMIT 1",
            [default_key, *keys] if keys else [],
        )
        if row is None:
            return None
        return NextDue(row["id"], _dt(row["scheduled_at"]), Priority.from_rank(row["priority"]))

    async def next_deadline(self) -> datetime | None:
        """The earliest deadline of a pending pulse (it expires then if not started)."""
        return _opt_dt(
            await self._scalar(
                "SELECT MIN(deadline) FROM pulses WHERE status = 'pending' AND deadline IS NOT NULL"
            )
        )

    async def due_until(self, until: datetime) -> list[Pulse]:
        """Pending and running pulses due at or before `until`, earliest first."""
        rows = await self._rows(
            "SELECT * FROM pulses WHERE status IN ('pending', 'processing') "
            "AND scheduled_at <= ? ORDER BY scheduled_at, id",
            (_ts(until),),
        )
        return [_pulse(r) for r in rows]

    async def history(
        self, since: datetime, limit: int
    ) -> tuple[list[tuple[Attempt, Pulse]], list[tuple[datetime, bool, float | None]]]:
        """The latest `limit` attempts started since `since`, newest first, each with
        its pulse; and (start, failed, cost) of every attempt since then."""
        async with self._read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT * FROM attempts WHERE started_at >= ? "
                    "ORDER BY started_at DESC, id DESC LIMIT ?",
                    (_ts(since), limit),
                )
            )
            ids = sorted({r["pulse_id"] for r in rows})
            pulses: dict[int, Pulse] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in await db.execute_fetchall(
                    f"SELECT * FROM pulses WHERE id IN ({marks})",  # noqa: S608 - placeholders
                    chunk,
                ):
                    pulses[row["id"]] = _pulse(row)
            totals = await db.execute_fetchall(
                "SELECT started_at, is_error, cost_usd FROM attempts "
                "WHERE started_at >= ? AND finished_at IS NOT NULL",
                (_ts(since),),
            )
        every = [(_dt(r[0]), bool(r[1]), r[2]) for r in totals]
        # An attempt without its pulse (a file edited with foreign keys off) is left out.
        shown = [(_attempt(r), pulses[r["pulse_id"]]) for r in rows if r["pulse_id"] in pulses]
        return shown, every

    async def pending_times(self, source: str) -> list[datetime]:
        """Due times of the pending pulses of `source`, earliest first (for pacing)."""
        rows = await self._rows(
            "SELECT scheduled_at FROM pulses WHERE status = 'pending' AND source = ? "
            "ORDER BY scheduled_at",
            (source,),
        )
        return [_dt(r[0]) for r in rows]

    async def count_pending(self) -> int:
        """How many pulses are pending (an indexed count, cheap at any history size)."""
        return int(await self._scalar("SELECT COUNT(*) FROM pulses WHERE status = 'pending'"))

    async def counts(self) -> dict[Status, int]:
        """How many pulses are in each status (every status present, zeros included)."""
        rows = await self._rows("SELECT status, COUNT(*) FROM pulses GROUP BY status")
        counts = dict.fromkeys(Status, 0)
        counts.update({Status(r[0]): int(r[1]) for r in rows})
        return counts

    # --- the scheduler's side

    async def claim_due(self, now: datetime, limit: int) -> list[Claim]:
        """Claim up to `limit` pulses due by `now`, without policy review (tests, benches)."""
        return (await self.dispatch(now, now, limit=limit)).claims

    async def dispatch(
        self,
        now: datetime,
        horizon: datetime,
        *,
        limit: int,
        review: Callable[[Pulse, datetime], Review | None] | None = None,
        overdue: datetime | None = None,
        default_key: str = DEFAULT_KEY,
    ) -> Dispatched:
        """One pass over the queue, in one transaction.

        First, when `review` (the scheduling policy) is given, every pending pulse
        that is overdue (due before `overdue` and not yet judged: no retry or
        catch-up under way) or past its deadline is reviewed, the decision applied
        and its missed occurrences recorded, whether or not it could run now.
        Then up to `limit` pulses due by `horizon` are claimed in priority then
        due order (each reviewed first), never two with the same concurrency key
        nor one whose key is already processing: moved to `processing` with an
        attempt opened for each, whose id the pulse holds as its lease.
        """
        stamp = _ts(now)
        claims: list[Claim] = []
        reviewed: list[tuple[Pulse, Review]] = []
        async with self._transaction() as db:
            if review is not None:
                async with db.execute(
                    "SELECT * FROM pulses WHERE status = 'pending' AND ((scheduled_at <= ? "
                    "AND retry_count = 0 AND catchup_remaining = 0) OR deadline <= ?)",
                    (_ts(overdue or now), stamp),
                ) as cur:
                    late_rows = await cur.fetchall()
                for row in late_rows:
                    pulse = _pulse(row)
                    decision = review(pulse, now)
                    if decision is not None:
                        reviewed.append((await self._apply(db, pulse, decision, now), decision))
            if limit <= 0:
                return Dispatched(claims, reviewed)
            async with db.execute(
                "SELECT DISTINCT COALESCE(concurrency_key, ?) FROM pulses "
                "WHERE status = 'processing'",
                (default_key,),
            ) as cur:
                busy = {str(r[0]) for r in await cur.fetchall()}
            marks = ", ".join("?" * len(busy))
            # The first due pulse of each free key: one pass however many share a key.
            async with db.execute(
                "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY "  # noqa: S608
                "COALESCE(concurrency_key, ?) ORDER BY priority, scheduled_at, id) AS nth "
                "FROM pulses WHERE status = 'pending' AND scheduled_at <= ? "
                f"AND COALESCE(concurrency_key, ?) NOT IN ({marks})) "
                "WHERE nth = 1 ORDER BY priority, scheduled_at, id LIMIT ?",
                (default_key, _ts(horizon), default_key, *busy, limit),
            ) as cur:
                rows = await cur.fetchall()
            for row in rows:
                pulse = _pulse(row)
                decision = review(pulse, now) if review is not None else None
                if decision is not None:
                    pulse = await self._apply(db, pulse, decision, now)
                    reviewed.append((pulse, decision))
                    if not decision.run or pulse.scheduled_at > horizon:
                        continue
                claims.append(await self._claim(db, pulse, stamp))
        return Dispatched(claims, reviewed)

    async def _apply(
        self, db: aiosqlite.Connection, pulse: Pulse, decision: Review, now: datetime
    ) -> Pulse:
        """Write a policy decision (within the caller's transaction); the pulse after it."""
        stamp = _ts(now)
        retries = pulse.retry_count if decision.retry_count is None else decision.retry_count
        note = pulse.last_error if decision.run or not decision.reason else decision.reason
        await db.execute(
            """UPDATE pulses SET status = ?, scheduled_at = ?, occurrence_at = ?,
                catchup_remaining = ?, deadline = ?, retry_count = ?, last_error = ?,
                updated_at = ?
            WHERE id = ?""",
            (
                str(decision.status),
                _ts(decision.scheduled_at),
                _ts(decision.occurrence_at),
                decision.catchup_remaining,
                _opt_ts(decision.deadline),
                retries,
                note,
                stamp,
                pulse.pulse_id,
            ),
        )
        await self._record_misses(db, pulse.pulse_id, decision.misses, stamp)
        return pulse.model_copy(
            update={
                "status": decision.status,
                "scheduled_at": decision.scheduled_at,
                "occurrence_at": decision.occurrence_at,
                "catchup_remaining": decision.catchup_remaining,
                "deadline": decision.deadline,
                "retry_count": retries,
                "last_error": note,
            }
        )

    @staticmethod
    async def _record_misses(
        db: aiosqlite.Connection, pulse_id: int, misses: Sequence[Miss], stamp: float
    ) -> None:
        for miss in misses:
            await db.execute(
                "INSERT INTO misses (pulse_id, first_due, last_due, count, action, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                (pulse_id, _ts(miss.first), _ts(miss.last), miss.count, miss.action, stamp),
            )

    async def _claim(self, db: aiosqlite.Connection, pulse: Pulse, stamp: float) -> Claim:
        async with db.execute(
            """INSERT INTO attempts (pulse_id, number, started_at)
            VALUES (?, (SELECT COALESCE(MAX(number), 0) + 1 FROM attempts
                        WHERE pulse_id = ?), ?)
            RETURNING id, number""",
            (pulse.pulse_id, pulse.pulse_id, stamp),
        ) as cur:
            attempt = await cur.fetchone()
        assert attempt is not None
        await db.execute(
            "UPDATE pulses SET status = 'processing', lease = ?, updated_at = ? WHERE id = ?",
            (attempt["id"], stamp, pulse.pulse_id),
        )
        async with db.execute(
            "SELECT id, number, pid FROM attempts WHERE pulse_id = ? AND orphan = 1",
            (pulse.pulse_id,),
        ) as cur:
            orphans = tuple(Orphan(r["id"], r["number"], r["pid"]) for r in await cur.fetchall())
        previous = None
        if pulse.retry_count > 0:
            async with db.execute(
                "SELECT number, session_id, error FROM attempts WHERE pulse_id = ? "
                "AND finished_at IS NOT NULL AND is_error = 1 ORDER BY number DESC LIMIT 1",
                (pulse.pulse_id,),
            ) as cur:
                last = await cur.fetchone()
            if last is not None:
                previous = Previous(last["number"], last["session_id"], last["error"])
        claimed = pulse.model_copy(update={"status": Status.PROCESSING})
        return Claim(claimed, attempt["id"], attempt["number"], orphans, previous)

    async def clear_orphans(self, attempt_ids: Sequence[int]) -> None:
        """The processes of these cut attempts are known to be gone."""
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE attempts SET orphan = 0 WHERE id = ?", [(i,) for i in attempt_ids]
            )

    async def count_notifications(self, attempt_id: int, messages: int) -> None:
        """Add `messages` sent to the user on behalf of a running attempt."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE attempts SET notified = notified + ? WHERE id = ?", (messages, attempt_id)
            )

    async def mark_started(self, attempt_id: int, *, pid: int, started_at: datetime) -> None:
        """Record the agent's process and the instant it was spawned."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE attempts SET pid = ?, started_at = ? WHERE id = ?",
                (pid, _ts(started_at), attempt_id),
            )

    async def finish(self, attempt_id: int, outcome: Outcome) -> bool:
        """Close the attempt and move its pulse as `outcome` says, in one transaction.

        Returns True when the pulse moved. False when the attempt was already closed
        (nothing changes: a late finish never overwrites a newer decision), or when
        it no longer holds the pulse's lease (the attempt is closed, the pulse left
        to the attempt that holds it).
        """
        async with self._transaction() as db:
            async with db.execute(
                """UPDATE attempts SET finished_at = ?, exit_code = ?, duration_ms = ?,
                    session_id = ?, is_error = ?, error = ?, result = ?, output_tail = ?,
                    cost_usd = ?, num_turns = ?, denials = ?
                WHERE id = ? AND finished_at IS NULL RETURNING pulse_id""",
                (
                    _ts(outcome.finished_at),
                    outcome.exit_code,
                    outcome.duration_ms,
                    outcome.session_id,
                    int(outcome.is_error),
                    outcome.error,
                    outcome.result,
                    outcome.output_tail,
                    outcome.cost_usd,
                    outcome.num_turns,
                    json.dumps(list(outcome.denials)) if outcome.denials else None,
                    attempt_id,
                ),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return False
            if outcome.orphan:
                await db.execute("UPDATE attempts SET orphan = 1 WHERE id = ?", (attempt_id,))
            sets = ["status = ?", "updated_at = ?", "last_error = ?", "lease = NULL"]
            then = outcome.then
            params: list[Any] = [str(then.status), _ts(outcome.finished_at), outcome.error]
            if then.scheduled_at is not None:
                sets.append("scheduled_at = ?")
                params.append(_ts(then.scheduled_at))
            if then.occurrence_at is not None:
                # A new occurrence brings its own deadline (or none).
                sets += ["occurrence_at = ?", "deadline = ?"]
                params += [_ts(then.occurrence_at), _opt_ts(then.deadline)]
            sets += ["retry_count = ?", "catchup_remaining = ?"]
            params += [then.retry_count, then.catchup_remaining]
            if outcome.forget_session:
                sets.append("session_id = NULL")
            elif outcome.session_id is not None:
                # The next run of the pulse resumes the conversation it started.
                sets.append("session_id = ?")
                params.append(outcome.session_id)
            # The lease is the fence: only the attempt that holds it moves the pulse.
            async with db.execute(
                f"UPDATE pulses SET {', '.join(sets)} "  # noqa: S608 - fixed fragments
                "WHERE id = ? AND status = 'processing' AND lease = ?",
                (*params, row["pulse_id"], attempt_id),
            ) as cur:
                moved = cur.rowcount > 0
        return moved

    async def running(self) -> list[Running]:
        """Attempts without an end (after a crash: the ones to recover)."""
        async with self._read() as db:
            attempt_rows = await db.execute_fetchall(
                "SELECT * FROM attempts WHERE finished_at IS NULL ORDER BY id"
            )
            found: list[Running] = []
            for arow in attempt_rows:
                for prow in await db.execute_fetchall(
                    "SELECT * FROM pulses WHERE id = ?", (arow["pulse_id"],)
                ):
                    found.append(Running(_pulse(prow), _attempt(arow)))
        return found

    async def orphaned_processing(self) -> list[Pulse]:
        """Pulses in `processing` with no open attempt (should not exist; repaired at start)."""
        rows = await self._rows(
            "SELECT * FROM pulses WHERE status = 'processing' AND NOT EXISTS "
            "(SELECT 1 FROM attempts a WHERE a.pulse_id = pulses.id AND a.finished_at IS NULL)"
        )
        return [_pulse(r) for r in rows]

    async def requeue(self, pulse_id: int, *, now: datetime, error: str) -> None:
        """Put a `processing` pulse back to pending, due now (repair of a lost claim)."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE pulses SET status = 'pending', scheduled_at = ?, updated_at = ?, "
                "last_error = ?, lease = NULL WHERE id = ? AND status = 'processing'",
                (_ts(now), _ts(now), error, pulse_id),
            )
