"""The store against real SQLite files: queries, claims, fencing and migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reeve_lite import store as store_module
from reeve_lite.models import Priority, Pulse, Status
from reeve_lite.policy import After, Miss, Review
from reeve_lite.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    NewPulse,
    NotFound,
    NotPending,
    Outcome,
    SchemaTooNew,
    Store,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = await Store.open(tmp_path / "db" / "reeve.db")
    yield s
    await s.close()


def new(prompt: str = "p", *, due: timedelta = timedelta(0), **kw) -> NewPulse:  # type: ignore[no-untyped-def]
    return NewPulse(prompt=prompt, scheduled_at=NOW + due, **kw)


async def test_create_and_get_round_trip_every_field(store: Store) -> None:
    pulse, created = await store.create(
        new(
            "hello",
            due=timedelta(minutes=5),
            priority=Priority.CRITICAL,
            source="telegram",
            tags=["a", "b"],
            session_id="s-1",
            sticky_notes=["n1"],
            max_retries=7,
            cron="0 9 * * *",
            timezone="Europe/Berlin",
            idempotency_key="k",
        ),
        now=NOW,
    )
    assert created
    got = await store.get(pulse.pulse_id)
    assert got.model_dump(exclude={"attempts", "missed"}) == pulse.model_dump(
        exclude={"attempts", "missed"}
    )
    assert got.missed == []
    assert got.scheduled_at == NOW + timedelta(minutes=5)
    assert got.scheduled_at.tzinfo is not None
    assert (got.priority, got.status, got.source) == (Priority.CRITICAL, Status.PENDING, "telegram")
    assert (got.tags, got.sticky_notes, got.max_retries) == (["a", "b"], ["n1"], 7)
    assert (got.cron, got.timezone, got.idempotency_key) == ("0 9 * * *", "Europe/Berlin", "k")
    assert got.attempts == []


async def test_priority_is_stored_as_its_rank_and_status_as_its_name(store: Store) -> None:
    await store.create(new(priority=Priority.LOW), now=NOW)
    raw = sqlite3.connect(store.path)
    assert raw.execute("SELECT priority, status FROM pulses").fetchone() == (3, "pending")
    raw.close()


async def test_idempotency_key_returns_the_first(store: Store) -> None:
    first, created1 = await store.create(new("one", idempotency_key="x"), now=NOW)
    second, created2 = await store.create(new("two", idempotency_key="x"), now=NOW)
    assert (created1, created2) == (True, False)
    assert second.pulse_id == first.pulse_id
    assert second.prompt == "one"


async def test_claim_takes_due_pulses_in_priority_then_due_order(store: Store) -> None:
    ids = {}
    for name, priority, due in [
        ("late-critical", Priority.CRITICAL, timedelta(seconds=-1)),
        ("early-low", Priority.LOW, timedelta(seconds=-60)),
        ("early-high", Priority.HIGH, timedelta(seconds=-30)),
        ("later-high", Priority.HIGH, timedelta(seconds=-10)),
        ("future-critical", Priority.CRITICAL, timedelta(seconds=10)),
    ]:
        # Each its own concurrency key, so that several may be claimed together.
        made = new(name, due=due, priority=priority, concurrency_key=name)
        ids[name] = (await store.create(made, now=NOW))[0].pulse_id
    first = await store.claim_due(NOW, 3)
    assert [c.pulse.prompt for c in first] == ["late-critical", "early-high", "later-high"]
    assert all(c.pulse.status is Status.PROCESSING and c.number == 1 for c in first)
    rest = await store.claim_due(NOW, 10)
    assert [c.pulse.prompt for c in rest] == ["early-low"]
    assert await store.claim_due(NOW, 10) == []
    assert (await store.get(ids["future-critical"])).status is Status.PENDING


async def test_next_due_and_upcoming(store: Store) -> None:
    assert await store.next_due() is None
    a = (await store.create(new("a", due=timedelta(hours=2)), now=NOW))[0]
    b = (await store.create(new("b", due=timedelta(hours=1), priority=Priority.LOW), now=NOW))[0]
    nxt = await store.next_due()
    assert nxt is not None
    assert (nxt.pulse_id, nxt.scheduled_at, nxt.priority) == (
        b.pulse_id,
        b.scheduled_at,
        Priority.LOW,
    )
    assert [p.pulse_id for p in await store.upcoming(10)] == [b.pulse_id, a.pulse_id]
    await store.cancel(b.pulse_id, now=NOW)
    assert [p.pulse_id for p in await store.upcoming(10)] == [a.pulse_id]


async def test_finish_closes_the_attempt_once(store: Store) -> None:
    pulse = (await store.create(new(), now=NOW))[0]
    [claim] = await store.claim_due(NOW, 1)
    await store.mark_started(claim.attempt_id, pid=4242, started_at=NOW)
    outcome = Outcome(
        finished_at=NOW + timedelta(seconds=3),
        exit_code=0,
        duration_ms=3000,
        is_error=False,
        session_id="sess",
        result="ok",
        cost_usd=0.5,
        num_turns=2,
        output_tail="tail",
    )
    assert await store.finish(claim.attempt_id, outcome) is True
    late = Outcome(
        finished_at=NOW,
        exit_code=1,
        duration_ms=1,
        is_error=True,
        error="late",
        then=After(Status.FAILED, None, 0),
    )
    assert await store.finish(claim.attempt_id, late) is False
    got = await store.get(pulse.pulse_id)
    assert got.status is Status.COMPLETED
    assert got.session_id == "sess"
    [attempt] = got.attempts or []
    assert (attempt.exit_code, attempt.pid, attempt.cost_usd, attempt.error) == (0, 4242, 0.5, None)


async def test_cancel_and_reschedule_only_pending(store: Store) -> None:
    pulse = (await store.create(new(), now=NOW))[0]
    with pytest.raises(NotFound):
        await store.cancel(999, now=NOW)
    tomorrow = NOW + timedelta(days=1)
    moved = await store.reschedule(pulse.pulse_id, tomorrow, deadline=None, now=NOW)
    assert moved.scheduled_at == moved.occurrence_at == tomorrow
    await store.claim_due(NOW + timedelta(days=2), 1)
    with pytest.raises(NotPending) as err:
        await store.cancel(pulse.pulse_id, now=NOW)
    assert err.value.status is Status.PROCESSING


async def test_list_pages_and_counts(store: Store) -> None:
    for i in range(5):
        await store.create(new(f"p{i}", due=timedelta(minutes=5 - i)), now=NOW)
    page, total = await store.list_pulses(status=Status.PENDING, limit=2, offset=1)
    assert total == 5
    assert [p.prompt for p in page] == ["p3", "p2"]
    everything, total = await store.list_pulses(status=None, limit=10, offset=0)
    assert [p.prompt for p in everything] == ["p4", "p3", "p2", "p1", "p0"]  # newest first
    counts = await store.counts()
    assert counts[Status.PENDING] == 5
    assert counts[Status.FAILED] == 0


async def test_running_lists_open_attempts_for_recovery(store: Store) -> None:
    await store.create(new(), now=NOW)
    [claim] = await store.claim_due(NOW, 1)
    [running] = await store.running()
    assert running.attempt.attempt_id == claim.attempt_id
    assert running.pulse.status is Status.PROCESSING
    assert await store.orphaned_processing() == []


async def test_database_is_wal_with_full_sync(store: Store) -> None:
    raw = sqlite3.connect(store.path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    assert await store.integrity_check() == "ok"
    assert await store.schema_version() == SCHEMA_VERSION


async def test_new_database_is_private(store: Store) -> None:
    await store.create(new(), now=NOW)
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert store.path.parent.stat().st_mode & 0o777 == 0o700
    wal = store.path.with_name(store.path.name + "-wal")
    assert wal.stat().st_mode & 0o777 == 0o600


async def test_naive_datetime_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="naive"):
        await store.create(NewPulse(prompt="x", scheduled_at=datetime(2026, 1, 1)), now=NOW)


async def test_upgrade_from_schema_1_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = await Store.open(path, migrate_to=1)
    assert await old.schema_version() == 1
    await old.close()
    # Rows as version 1 wrote them.
    raw = sqlite3.connect(path)
    raw.execute(
        "INSERT INTO pulses (scheduled_at, prompt, priority, status, source, created_at, "
        "updated_at) VALUES (?, 'from v1', 2, 'completed', 'api', ?, ?)",
        (NOW.timestamp(), NOW.timestamp(), NOW.timestamp()),
    )
    raw.execute(
        "INSERT INTO attempts (pulse_id, number, started_at, finished_at, exit_code) "
        "VALUES (1, 1, ?, ?, 0)",
        (NOW.timestamp(), NOW.timestamp()),
    )
    raw.commit()
    raw.close()

    upgraded = await Store.open(path)
    try:
        assert await upgraded.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
        pulse = await upgraded.get(1)
        assert pulse.prompt == "from v1"
        assert pulse.status is Status.COMPLETED
        assert pulse.last_error is None  # added by version 2
        [attempt] = pulse.attempts or []
        assert attempt.pid is None  # added by version 2
        assert attempt.exit_code == 0
        created, _ = await upgraded.create(new("after upgrade"), now=NOW)
        assert created.pulse_id == 2
    finally:
        await upgraded.close()


async def test_upgrade_from_schema_2_keeps_attempts_and_the_lease(tmp_path: Path) -> None:
    # Version 3 rebuilds the pulses table: the attempts (which reference it with
    # ON DELETE CASCADE) must survive, and a processing pulse keeps its attempt.
    path = tmp_path / "v2.db"
    old = await Store.open(path, migrate_to=2)
    await old.close()
    raw = sqlite3.connect(path)
    stamp = NOW.timestamp()
    raw.executemany(
        "INSERT INTO pulses (scheduled_at, prompt, priority, status, source, cron, timezone, "
        "created_at, updated_at) VALUES (?, ?, 2, ?, 'api', ?, 'UTC', ?, ?)",
        [
            (stamp, "done", "completed", None, stamp, stamp),
            (stamp, "running", "processing", "0 * * * *", stamp, stamp),
        ],
    )
    raw.executemany(
        "INSERT INTO attempts (pulse_id, number, started_at, finished_at, pid) "
        "VALUES (?, 1, ?, ?, ?)",
        [(1, stamp, stamp, None), (2, stamp, None, 4242)],
    )
    raw.commit()
    raw.close()

    upgraded = await Store.open(path)
    try:
        done, running = await upgraded.get(1), await upgraded.get(2)
        assert [a.number for a in done.attempts or []] == [1]
        assert running.occurrence_at == running.scheduled_at == NOW
        assert running.on_missed == "once"
        assert running.deadline is None
        [open_attempt] = await upgraded.running()
        assert open_attempt.attempt.pid == 4242
        # The open attempt holds the lease: it, and only it, can finish the pulse.
        assert await upgraded.finish(open_attempt.attempt.attempt_id, ok()) is True
        assert (await upgraded.get(2)).status is Status.COMPLETED
        assert await upgraded.integrity_check() == "ok"
        fk = sqlite3.connect(path).execute("PRAGMA foreign_key_check").fetchall()
        assert fk == []
    finally:
        await upgraded.close()


def ok() -> Outcome:
    return Outcome(finished_at=NOW, exit_code=0, duration_ms=1, is_error=False)


async def test_a_lost_lease_cannot_record_over_the_newer_attempt(store: Store) -> None:
    pulse = (await store.create(new(), now=NOW))[0]
    [old] = await store.claim_due(NOW, 1)
    # The daemon restarted while `old` ran: recovery closed it and put the pulse back.
    interrupted = Outcome(
        finished_at=NOW,
        exit_code=None,
        duration_ms=5,
        is_error=True,
        error="interrupted",
        then=After(Status.PENDING, NOW, 1),
        orphan=True,
    )
    assert await store.finish(old.attempt_id, interrupted) is True
    [new_claim] = await store.claim_due(NOW, 1)
    assert new_claim.attempt_id > old.attempt_id
    assert [o.attempt_id for o in new_claim.orphans] == [old.attempt_id]
    # The old run reports success late: refused, the newer attempt keeps the pulse.
    assert await store.finish(old.attempt_id, ok()) is False
    assert (await store.get(pulse.pulse_id)).status is Status.PROCESSING
    assert await store.finish(new_claim.attempt_id, ok()) is True
    got = await store.get(pulse.pulse_id)
    assert got.status is Status.COMPLETED
    assert [a.error for a in got.attempts or []] == ["interrupted", None]


async def test_a_stale_attempt_without_the_lease_does_not_move_the_pulse(store: Store) -> None:
    pulse = (await store.create(new(), now=NOW))[0]
    [claim] = await store.claim_due(NOW, 1)
    raw = sqlite3.connect(store.path)
    raw.execute(
        "UPDATE pulses SET lease = ? WHERE id = ?", (claim.attempt_id + 1000, pulse.pulse_id)
    )
    raw.commit()
    raw.close()
    assert await store.finish(claim.attempt_id, ok()) is False
    got = await store.get(pulse.pulse_id)
    assert got.status is Status.PROCESSING
    assert got.attempts
    assert got.attempts[0].finished_at is not None


async def test_orphans_are_cleared_once_checked(store: Store) -> None:
    await store.create(new(), now=NOW)
    [first] = await store.claim_due(NOW, 1)
    cut = Outcome(
        finished_at=NOW,
        exit_code=None,
        duration_ms=0,
        is_error=True,
        then=After(Status.PENDING, NOW, 1),
        orphan=True,
    )
    await store.finish(first.attempt_id, cut)
    [second] = await store.claim_due(NOW, 1)
    assert len(second.orphans) == 1
    await store.clear_orphans([o.attempt_id for o in second.orphans])
    await store.finish(second.attempt_id, replace(ok(), then=After(Status.PENDING, NOW, 1)))
    [third] = await store.claim_due(NOW, 1)
    assert third.orphans == ()


async def test_one_claim_per_concurrency_key(store: Store) -> None:
    for name, key in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("d1", None), ("d2", None)]:
        await store.create(new(name, concurrency_key=key), now=NOW)
    first = await store.claim_due(NOW, 10)
    assert sorted(c.pulse.prompt for c in first) == ["a1", "b1", "d1"]
    # While those run, their keys are busy: nothing more is claimed.
    assert await store.claim_due(NOW, 10) == []
    for claim in first:
        await store.finish(claim.attempt_id, ok())
    assert sorted(c.pulse.prompt for c in await store.claim_due(NOW, 10)) == ["a2", "d2"]


async def test_dispatch_applies_a_review_and_records_the_misses(store: Store) -> None:
    skip = (await store.create(new("skip"), now=NOW))[0]
    late = (await store.create(new("late", concurrency_key="k"), now=NOW))[0]

    def decide(pulse: Pulse, now: datetime) -> Review | None:
        if pulse.catchup_remaining:
            return None  # judged already (as the real policy does)
        miss = Miss(NOW - timedelta(hours=2), NOW, 3, "skipped")
        if pulse.prompt == "skip":
            return Review(
                Status.SKIPPED,
                pulse.scheduled_at,
                pulse.occurrence_at,
                0,
                False,
                (miss,),
                "skipped: test",
            )
        return Review(
            Status.PENDING,
            pulse.scheduled_at,
            pulse.occurrence_at,
            1,
            True,
            (Miss(NOW, NOW, 1, "caught_up"),),
        )

    done = await store.dispatch(NOW, NOW, limit=5, review=decide)
    assert [c.pulse.pulse_id for c in done.claims] == [late.pulse_id]
    assert done.claims[0].pulse.catchup_remaining == 1
    got = await store.get(skip.pulse_id)
    assert (got.status, got.last_error) == (Status.SKIPPED, "skipped: test")
    [missed] = got.missed or []
    assert (missed.first_due, missed.last_due, missed.count, missed.action) == (
        NOW - timedelta(hours=2),
        NOW,
        3,
        "skipped",
    )
    assert [(m.count, m.action) for m in (await store.get(late.pulse_id)).missed or []] == [
        (1, "caught_up")
    ]


async def test_deadlines_are_dispatched_before_the_due_time(store: Store) -> None:
    # A retry scheduled past its deadline is looked at when the deadline passes.
    made = new("x", due=timedelta(hours=1), deadline=NOW + timedelta(minutes=5))
    pulse = (await store.create(made, now=NOW))[0]
    assert await store.next_deadline() == NOW + timedelta(minutes=5)
    seen: list[int] = []

    def decide(p: Pulse, now: datetime) -> Review | None:
        seen.append(p.pulse_id)
        return None

    later = NOW + timedelta(minutes=6)
    assert (await store.dispatch(later, later, limit=1, review=decide)).claims == []
    assert seen == [pulse.pulse_id]


async def test_next_due_skips_busy_keys(store: Store) -> None:
    a = (await store.create(new("a", due=timedelta(minutes=1), concurrency_key="a"), now=NOW))[0]
    d = (await store.create(new("d", due=timedelta(minutes=2)), now=NOW))[0]
    nxt = await store.next_due(busy_keys={"a"})
    assert nxt is not None
    assert nxt.pulse_id == d.pulse_id
    nxt = await store.next_due(busy_keys={"desk"})
    assert nxt is not None
    assert nxt.pulse_id == a.pulse_id
    assert await store.next_due(busy_keys={"a", "desk"}) is None


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(SchemaTooNew, match="upgrade reeve-lite"):
        await Store.open(path)


async def test_a_write_waiting_for_the_lock_lets_reads_through(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process holds the write lock, a waiting write does not hold
    the connection: reads answer meanwhile, and the write is refused after its wait."""
    await store.create(new("before"), now=NOW)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        waiting = asyncio.create_task(store.create(new("while locked"), now=NOW))
        await asyncio.sleep(0.3)  # the write is now waiting for the lock
        assert not waiting.done()
        assert await store.count_pending() == 1
        assert not waiting.done()  # the read did not wait for the write's turn
    finally:
        holder.execute("ROLLBACK")
    assert (await waiting)[1] is True  # it got the lock once it was free
    monkeypatch.setattr(store_module, "WRITE_WAIT_S", 0.2)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(store_module.DatabaseError, match="database is locked") as caught:
            await store.create(new("refused"), now=NOW)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert caught.value.kind == "busy"  # what the API answers 503 database_busy for
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert await store.count_pending() == 2
