"""The store as a state machine: Hypothesis runs create, cancel, reschedule,
claim, finish (success, failure, and with a lease that is no longer held) and
the start-up recovery in random order against a real SQLite file, and after
every step compares the database with a plain model of the queue."""

from __future__ import annotations

import asyncio
import functools
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Coroutine
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from reeve_lite.config import load_settings
from reeve_lite.executor import Executor
from reeve_lite.models import OnMissed, Priority, Pulse, Status
from reeve_lite.policy import (
    DEFAULT_KEY,
    After,
    Policy,
    after_failure,
    after_success,
    deadline_for,
    review,
)
from reeve_lite.scheduler import Scheduler
from reeve_lite.store import Claim, NewPulse, NotFound, NotPending, Outcome, Store
from tests.report import record

T = TypeVar("T")
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TERMINAL = {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.EXPIRED, Status.SKIPPED}
# None shares the Desk's key with "desk" itself.
KEYS = [None, DEFAULT_KEY, "a", "b"]
# Above the kernel's largest pid: recovery finds no process to stop.
GONE_PID = 4_194_305
POLICY = Policy()
EXAMPLES = 80
STEPS = 40
STEPS_RUN: list[int] = []
# What the runs did, so that the test shows it reached every path it claims to check.
DONE: Counter[str] = Counter()
WHAT = (
    "cancelled",
    "rescheduled",
    "claimed",
    "reviewed",
    "orphans reported",
    "finished ok",
    "finished failed",
    "stale finish refused",
    "recovered",
    "ended pulses checked",
)


@dataclass
class Expected:
    """What the model says of one pulse."""

    status: Status
    key: str
    priority: Priority
    scheduled_at: datetime
    retry_count: int
    max_retries: int
    recurring: bool
    expires_after: float | None
    lease: int | None = None
    # Attempts cut by a recovery while their process was known: reported at the next claim.
    orphans: set[int] = field(default_factory=set)


class StoreMachine(RuleBasedStateMachine):
    """A real Store on a real file, driven by an event loop the machine owns."""

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.dir = Path(tempfile.mkdtemp(prefix="reeve-lite-machine-"))
        self.path = self.dir / "reeve.db"
        self.store = self.run(Store.open(self.path))
        self.now = T0
        self.pulses: dict[int, Expected] = {}
        self.claims: dict[int, Claim] = {}  # attempt id → a claim whose run goes on
        self.started: set[int] = set()  # attempts whose process was recorded
        self.stale: list[int] = []  # attempts that no longer hold their pulse's lease
        self.ended: dict[int, Status] = {}
        self.idempotency: dict[str, int] = {}
        self.steps = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def pick(self, data: st.DataObject) -> int:
        """An existing pulse's id, or one that does not exist."""
        return data.draw(st.sampled_from([*sorted(self.pulses), len(self.pulses) + 1]))

    def moved(self, pulse_id: int, status: Status) -> None:
        expected = self.pulses[pulse_id]
        assert expected.status not in TERMINAL
        expected.status = status
        if status in TERMINAL:
            self.ended[pulse_id] = status

    def change(self, change: Coroutine[Any, Any, Pulse], expected: Expected | None) -> Pulse | None:
        """Run a change of a pending pulse; None when the store refused it, as it must
        for an unknown pulse or one that is no longer pending."""
        refusal: NotFound | NotPending | None = None
        try:
            return self.run(change)
        except (NotFound, NotPending) as exc:
            refusal = exc
        if isinstance(refusal, NotFound):
            assert expected is None
        else:
            assert expected is not None
            assert expected.status is not Status.PENDING
            assert refusal.status is expected.status
        return None

    # --- rules

    @rule(seconds=st.integers(0, 400))
    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @initialize(
        keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=4),
        recurring=st.booleans(),
    )
    def some_due_pulses(self, keys: list[str | None], recurring: bool) -> None:
        """A queue with work in it from the start, so that runs reach claims early."""
        for n, key in enumerate(keys):
            self.create(
                -n, Priority.NORMAL, key, n % 3, recurring and n % 2 == 0, None, OnMissed.ONCE, None
            )

    @rule(
        due=st.integers(-300, 300),
        priority=st.sampled_from(Priority),
        key=st.sampled_from(KEYS),
        max_retries=st.integers(0, 2),
        recurring=st.booleans(),
        idempotency_key=st.sampled_from([None, None, "k1", "k2"]),
        on_missed=st.sampled_from(OnMissed),
        expires_after=st.sampled_from([None, 60.0, 60.0, 600.0]),
    )
    def create(
        self,
        due: int,
        priority: Priority,
        key: str | None,
        max_retries: int,
        recurring: bool,
        idempotency_key: str | None,
        on_missed: OnMissed,
        expires_after: float | None,
    ) -> None:
        when = self.now + timedelta(seconds=due)
        new = NewPulse(
            prompt="p",
            scheduled_at=when,
            priority=priority,
            max_retries=max_retries,
            cron="*/5 * * * *" if recurring else None,
            timezone="UTC" if recurring else None,
            idempotency_key=idempotency_key,
            concurrency_key=key,
            on_missed=on_missed,
            expires_after=expires_after,
            deadline=deadline_for(when, expires_after, None),
        )
        pulse, created = self.run(self.store.create(new, now=self.now))
        if idempotency_key in self.idempotency:
            assert not created
            assert pulse.pulse_id == self.idempotency[idempotency_key]
            return
        assert created
        assert pulse.pulse_id not in self.pulses
        if idempotency_key is not None:
            self.idempotency[idempotency_key] = pulse.pulse_id
        self.pulses[pulse.pulse_id] = Expected(
            Status.PENDING,
            key or DEFAULT_KEY,
            priority,
            new.scheduled_at,
            0,
            max_retries,
            recurring,
            expires_after,
        )

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        pulse_id = self.pick(data)
        expected = self.pulses.get(pulse_id)
        pulse = self.change(self.store.cancel(pulse_id, now=self.now), expected)
        if pulse is None:
            return
        assert expected is not None
        assert expected.status is Status.PENDING
        assert pulse.status is Status.CANCELLED
        self.moved(pulse_id, Status.CANCELLED)
        DONE["cancelled"] += 1

    @rule(data=st.data(), due=st.integers(-300, 300))
    def reschedule(self, data: st.DataObject, due: int) -> None:
        pulse_id = self.pick(data)
        expected = self.pulses.get(pulse_id)
        when = self.now + timedelta(seconds=due)
        # The deadline of the moved occurrence, as the API gives it.
        deadline = deadline_for(when, expected.expires_after, None) if expected else None
        pulse = self.change(
            self.store.reschedule(pulse_id, when, deadline=deadline, now=self.now), expected
        )
        if pulse is None:
            return
        assert expected is not None
        assert expected.status is Status.PENDING
        assert (pulse.status, pulse.scheduled_at) == (Status.PENDING, when)
        expected.scheduled_at = when
        DONE["rescheduled"] += 1

    def due_claims(self, limit: int) -> list[int]:
        """What the model would claim: per free key, its first due pending pulse in
        priority, due time and id order; then the first `limit` of those."""
        busy = {e.key for e in self.pulses.values() if e.status is Status.PROCESSING}
        first: dict[str, tuple[int, datetime, int]] = {}
        for pulse_id, e in self.pulses.items():
            if e.status is Status.PENDING and e.scheduled_at <= self.now and e.key not in busy:
                order = (e.priority.rank, e.scheduled_at, pulse_id)
                first[e.key] = min(first.get(e.key, order), order)
        return [order[2] for order in sorted(first.values())][:limit]

    @rule(limit=st.integers(1, 3), later=st.sampled_from([0, 0, 60, 300]), spawned=st.booleans())
    def claim(self, limit: int, later: int, spawned: bool) -> None:
        self.now += timedelta(seconds=later)
        wanted = self.due_claims(limit)
        claims = self.run(self.store.claim_due(self.now, limit))
        assert [c.pulse.pulse_id for c in claims] == wanted
        self.took(claims, spawned)

    def took(self, claims: list[Claim], spawned: bool) -> None:
        """The model after `claims`; their agents' processes recorded when `spawned`."""
        for claim in claims:
            expected = self.pulses[claim.pulse.pulse_id]
            assert {o.attempt_id for o in claim.orphans} == expected.orphans
            # As the scheduler does once it has found their processes gone.
            self.run(self.store.clear_orphans([o.attempt_id for o in claim.orphans]))
            expected.orphans.clear()
            self.moved(claim.pulse.pulse_id, Status.PROCESSING)
            expected.lease = claim.attempt_id
            self.claims[claim.attempt_id] = claim
            if spawned:  # the agent's process was recorded (else the crash came first)
                self.run(
                    self.store.mark_started(claim.attempt_id, pid=GONE_PID, started_at=self.now)
                )
                self.started.add(claim.attempt_id)
            DONE["claimed"] += 1
            DONE["orphans reported"] += len(claim.orphans)

    @rule(limit=st.integers(1, 3), later=st.sampled_from([0, 0, 90, 600]), spawned=st.booleans())
    def dispatch(self, limit: int, later: int, spawned: bool) -> None:
        """The scheduler's pass: the policy reviews late pulses (catch-up, skip,
        expiry), then due pulses are claimed."""
        self.now += timedelta(seconds=later)
        busy = {e.key for e in self.pulses.values() if e.status is Status.PROCESSING}
        done = self.run(
            self.store.dispatch(
                self.now,
                self.now,
                limit=limit,
                review=functools.partial(review, policy=POLICY),
                overdue=self.now - timedelta(seconds=POLICY.missed_grace),
            )
        )
        for pulse, decision in done.reviewed:
            DONE["reviewed"] += 1
            e = self.pulses[pulse.pulse_id]
            assert e.status is Status.PENDING
            if decision.status is not Status.PENDING:
                self.moved(pulse.pulse_id, decision.status)
                DONE[str(decision.status)] += 1
            e.scheduled_at = decision.scheduled_at
            if decision.retry_count is not None:
                e.retry_count = decision.retry_count
        keys = [self.pulses[c.pulse.pulse_id].key for c in done.claims]
        assert len(keys) == len(set(keys)) <= limit
        assert not busy & set(keys)
        for claim in done.claims:
            e = self.pulses[claim.pulse.pulse_id]
            assert e.status is Status.PENDING
            assert e.scheduled_at <= self.now
        self.took(done.claims, spawned)

    def finish(self, attempt_id: int, *, ok: bool, delay: int) -> None:
        claim = self.claims.pop(attempt_id)
        pulse = claim.pulse
        then = after_success(pulse, self.now) if ok else after_failure(pulse, self.now, delay=delay)
        outcome = Outcome(
            finished_at=self.now,
            exit_code=0 if ok else 1,
            duration_ms=0,
            is_error=not ok,
            error=None if ok else "failed",
            then=then,
        )
        assert self.run(self.store.finish(attempt_id, outcome)) is True
        self.stale.append(attempt_id)
        DONE["finished ok" if ok else "finished failed"] += 1
        self.after_attempt(pulse.pulse_id, ok=ok, then=then)

    def after_attempt(self, pulse_id: int, *, ok: bool, then: After) -> None:
        """The model's own rule for a pulse after an attempt ended."""
        e = self.pulses[pulse_id]
        if ok:
            status = Status.PENDING if e.recurring else Status.COMPLETED
            retries = 0 if e.recurring else e.retry_count
        elif e.retry_count < e.max_retries:
            status, retries = Status.PENDING, e.retry_count + 1
        else:
            status = Status.PENDING if e.recurring else Status.FAILED
            retries = 0 if e.recurring else e.retry_count
        self.moved(pulse_id, status)
        e.retry_count = retries
        e.lease = None
        if then.scheduled_at is not None:
            e.scheduled_at = then.scheduled_at

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def finish_success(self, data: st.DataObject) -> None:
        self.finish(data.draw(st.sampled_from(sorted(self.claims))), ok=True, delay=0)

    @precondition(lambda self: self.claims)
    @rule(data=st.data(), delay=st.integers(0, 300))
    def finish_failure(self, data: st.DataObject, delay: int) -> None:
        self.finish(data.draw(st.sampled_from(sorted(self.claims))), ok=False, delay=delay)

    @precondition(lambda self: self.stale)
    @rule(data=st.data(), ok=st.booleans())
    def finish_stale(self, data: st.DataObject, ok: bool) -> None:
        attempt_id = data.draw(st.sampled_from(self.stale))
        before = self.rows()
        late = Outcome(
            finished_at=self.now,
            exit_code=0 if ok else 1,
            duration_ms=1,
            is_error=not ok,
            error=None if ok else "late",
            session_id="late-session",
            then=After(Status.COMPLETED if ok else Status.FAILED, self.now, 0, self.now),
        )
        assert self.run(self.store.finish(attempt_id, late)) is False
        assert self.rows() == before
        DONE["stale finish refused"] += 1

    @rule(reopen=st.booleans())
    def recover(self, reopen: bool) -> None:
        """The daemon stopped with attempts open (their runs are lost with it) and
        starts again: what `reeve-lite serve` does before it serves."""
        if reopen:
            self.run(self.store.close())
            self.store = self.run(Store.open(self.path))
        processing = [i for i, e in self.pulses.items() if e.status is Status.PROCESSING]
        before = {i: self.run(self.store.get(i, attempts=0)) for i in processing}
        config = load_settings(
            {
                "REEVE_LITE_DB": str(self.path),
                "REEVE_LITE_EXECUTOR": "off",
                "REEVE_LITE_TIMEZONE": "UTC",
                "REEVE_LITE_DESK": str(self.dir),
                # Recovery runs no agent; any command will do.
                "REEVE_LITE_AGENT_COMMAND": "true",
            }
        )
        scheduler = Scheduler(self.store, Executor(config, env={}), config, clock=lambda: self.now)
        assert self.run(scheduler.recover()) == len(processing)
        for pulse_id in processing:
            lease = self.pulses[pulse_id].lease
            assert lease is not None
            if lease in self.started:
                self.pulses[pulse_id].orphans.add(lease)
            then = after_failure(before[pulse_id], self.now, delay=0, policy=scheduler.policy)
            self.after_attempt(pulse_id, ok=False, then=then)
        self.stale += list(self.claims)
        self.claims.clear()
        DONE["recovered"] += len(processing)

    # --- invariants

    def rows(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Every row of pulses and attempts, read on a connection of its own."""
        with closing(sqlite3.connect(self.path)) as db:
            pulses = db.execute("SELECT * FROM pulses ORDER BY id").fetchall()
            attempts = db.execute("SELECT * FROM attempts ORDER BY id").fetchall()
        return pulses, attempts

    @invariant()
    def database_matches_the_model(self) -> None:
        self.steps += 1
        with closing(sqlite3.connect(self.path)) as db:
            pulses = db.execute(
                "SELECT id, status, lease, retry_count, scheduled_at, "
                "COALESCE(concurrency_key, ?) FROM pulses",
                (DEFAULT_KEY,),
            ).fetchall()
            open_attempts = db.execute(
                "SELECT pulse_id, id FROM attempts WHERE finished_at IS NULL"
            ).fetchall()
        assert {row[0] for row in pulses} == set(self.pulses)
        open_by_pulse: dict[int, list[int]] = {}
        for pulse_id, attempt_id in open_attempts:
            open_by_pulse.setdefault(pulse_id, []).append(attempt_id)
        processing_keys: list[str] = []
        for pulse_id, status, lease, retries, scheduled_at, key in pulses:
            e = self.pulses[pulse_id]
            assert status in {s.value for s in Status}
            assert Status(status) is e.status, (pulse_id, status, e)
            assert retries == e.retry_count
            if status == Status.PENDING:
                assert scheduled_at == e.scheduled_at.timestamp()
            # Processing iff it holds the lease of exactly one open attempt.
            if status == Status.PROCESSING:
                assert open_by_pulse.get(pulse_id) == [lease] == [e.lease]
                processing_keys.append(key)
            else:
                assert pulse_id not in open_by_pulse
                assert lease is None
            if pulse_id in self.ended:
                DONE["ended pulses checked"] += 1
                assert Status(status) is self.ended[pulse_id]
        assert len(processing_keys) == len(set(processing_keys))

    @invariant()
    def an_ended_pulse_is_never_due(self) -> None:
        nxt = self.run(self.store.next_due())
        pending = {i: e for i, e in self.pulses.items() if e.status is Status.PENDING}
        if nxt is None:
            assert not pending
            return
        assert nxt.pulse_id in pending
        assert nxt.scheduled_at == min(e.scheduled_at for e in pending.values())

    def teardown(self) -> None:
        try:
            assert self.run(self.store.integrity_check()) == "ok"
            self.run(self.store.close())
        finally:
            self.runner.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            STEPS_RUN.append(self.steps)


def test_the_store_keeps_its_invariants_in_any_order_of_operations() -> None:
    STEPS_RUN.clear()
    DONE.clear()
    run_state_machine_as_test(
        StoreMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            derandomize=True,  # the same runs in CI every time
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    runs, steps = len(STEPS_RUN), sum(STEPS_RUN)
    print(f"\n{runs} runs, {steps} steps checked; {dict(DONE)}")
    assert runs >= EXAMPLES
    assert min(DONE[what] for what in WHAT) > 0, DONE
    # The policy ended some pulses unrun too (which of the two varies with the runs).
    assert DONE["expired"] + DONE["skipped"] > 0, DONE
    record(
        "store",
        "state machine: create, cancel, reschedule, claim, dispatch, finish, stale finish, "
        "recover, in random order on a real SQLite file",
        f"{runs} runs, {steps} steps ({DONE['claimed']} claims, {DONE['stale finish refused']} "
        f"stale finishes refused, {DONE['recovered']} recovered): invariants held, "
        "integrity_check ok",
    )
