"""Group commit of creates, against real SQLite files: concurrent creates share one
transaction, each is applied on its own, and none is acknowledged before the COMMIT."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reeve_lite.store import DatabaseError, NewPulse, Store
from tests.report import record

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def new(prompt: str = "p", **kw) -> NewPulse:  # type: ignore[no-untyped-def]
    return NewPulse(prompt=prompt, scheduled_at=NOW + timedelta(minutes=5), **kw)


def committed(db: Path) -> list[str]:
    """The prompts a second connection sees: what is durable."""
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT prompt FROM pulses ORDER BY id")]


def add_sql(db: Path, *statements: str) -> None:
    with sqlite3.connect(db) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "reeve.db"
    await (await Store.open(path)).close()
    return path


async def test_concurrent_creates_are_all_committed(db: Path) -> None:
    store = await Store.open(db)
    try:
        results = await asyncio.gather(*(store.create(new(f"p{n}"), now=NOW) for n in range(40)))
    finally:
        await store.close()
    assert all(created for _, created in results)
    assert len({pulse.pulse_id for pulse, _ in results}) == 40
    assert committed(db) == [f"p{n}" for n in range(40)]


async def test_one_failing_create_does_not_fail_the_batch(db: Path) -> None:
    # A real SQL failure for one item: a trigger refuses the prompt "bad".
    add_sql(
        db,
        "CREATE TRIGGER refuse BEFORE INSERT ON pulses WHEN NEW.prompt = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    store = await Store.open(db)
    try:
        results = await asyncio.gather(
            *(store.create(new(p), now=NOW) for p in ("a", "bad", "b")),
            store.create(NewPulse(prompt="naive", scheduled_at=datetime(2026, 1, 1)), now=NOW),
            store.create(new("c"), now=NOW),
            return_exceptions=True,
        )
    finally:
        await store.close()
    assert isinstance(results[1], DatabaseError)
    assert isinstance(results[1].__cause__, sqlite3.IntegrityError)
    assert "refused" in str(results[1])
    assert isinstance(results[3], ValueError)
    assert [r[0].prompt for r in results if isinstance(r, tuple)] == ["a", "b", "c"]
    assert committed(db) == ["a", "b", "c"]
    record("group commit", "one bad create among 5 concurrent", "4 committed, 1 refused alone")


async def test_a_failed_commit_fails_every_waiter_and_keeps_nothing(db: Path) -> None:
    # A deferred foreign key is checked only at COMMIT: the item itself succeeds,
    # its batch's COMMIT fails, as a full disk or an I/O error would make it.
    add_sql(
        db,
        "CREATE TABLE poison (ref INTEGER REFERENCES pulses(id) DEFERRABLE INITIALLY DEFERRED)",
        "CREATE TRIGGER poisoned AFTER INSERT ON pulses WHEN NEW.prompt = 'poison' "
        "BEGIN INSERT INTO poison VALUES (-1); END",
    )
    store = await Store.open(db)
    try:
        results = await asyncio.gather(
            *(store.create(new(p), now=NOW) for p in ("a", "poison", "b", "c")),
            return_exceptions=True,
        )
        # The store goes on: the next create is a batch of its own.
        _, created = await store.create(new("after"), now=NOW)
    finally:
        await store.close()
    assert all(
        isinstance(r, DatabaseError) and isinstance(r.__cause__, sqlite3.IntegrityError)
        for r in results
    ), results
    assert created
    assert committed(db) == ["after"]
    record("group commit", "COMMIT of a batch of 4 fails", "all 4 waiters failed, none durable")


async def test_idempotency_keys_hold_within_one_batch(db: Path) -> None:
    store = await Store.open(db)
    try:
        results = await asyncio.gather(
            *(store.create(new(f"p{n}", idempotency_key="same"), now=NOW) for n in range(5))
        )
    finally:
        await store.close()
    assert [created for _, created in results] == [True, False, False, False, False]
    assert len({pulse.pulse_id for pulse, _ in results}) == 1
    assert committed(db) == ["p0"]


async def test_a_cancelled_create_still_queued_is_not_written(db: Path) -> None:
    store = await Store.open(db)
    try:
        async with store._lock:  # the connection is busy: the creates queue up
            first = asyncio.create_task(store.create(new("kept"), now=NOW))
            gone = asyncio.create_task(store.create(new("gone"), now=NOW))
            await asyncio.sleep(0)
            gone.cancel()
        pulse, created = await first
    finally:
        await store.close()
    assert created
    assert pulse.prompt == "kept"
    assert committed(db) == ["kept"]
