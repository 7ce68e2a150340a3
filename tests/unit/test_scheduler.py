"""Scheduler arithmetic with an injected clock, and the loop in-process against a
real store and the fake agent (time advanced by the clock, not by sleeping)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reeve_lite.config import Settings, load_settings
from reeve_lite.executor import Executor
from reeve_lite.models import Pulse, Status
from reeve_lite.policy import After
from reeve_lite.runners import AttemptRef
from reeve_lite.scheduler import Scheduler, retry_delay
from reeve_lite.store import DatabaseError, NewPulse, Outcome, Store
from tests.conftest import FakeAgent
from tests.report import record

NOW = datetime(2026, 11, 25, 12, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("retries", "seconds"),
    [(0, 60), (1, 120), (2, 240), (3, 480), (5, 1920), (6, 3600), (40, 3600), (10_000, 3600)],
)
def test_retry_delay_doubles_from_the_base_up_to_the_cap(retries: int, seconds: float) -> None:
    assert retry_delay(retries, base=60, cap=3600) == seconds


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Loop:
    store: Store
    scheduler: Scheduler
    clock: Clock
    agent: FakeAgent


def settings_for(tmp: Path, agent: FakeAgent, **extra: str) -> Settings:
    env = {
        "REEVE_LITE_DB": str(tmp / "db"),
        "REEVE_LITE_SOCKET": str(tmp / "sock"),
        "REEVE_LITE_AGENT": "hapi",
        "REEVE_LITE_DESK": str(tmp / "desk"),
        "REEVE_LITE_EXECUTOR": "off",
        "REEVE_LITE_TIMEZONE": "UTC",
    }
    env.update(extra)
    return load_settings(env)


@pytest.fixture
async def loop(
    tmp_path: Path,
    fake_agent: FakeAgent,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Loop]:
    for name, value in fake_agent.env().items():
        monkeypatch.setenv(name, value)
    settings = settings_for(tmp_path, fake_agent)
    store = await Store.open(settings.db)
    clock = Clock(NOW)
    scheduler = Scheduler(store, Executor(settings), settings, clock=clock)
    task = asyncio.create_task(scheduler.run())
    yield Loop(store, scheduler, clock, fake_agent)
    await scheduler.close(grace=5)
    task.cancel()
    await store.close()


async def wait_until(check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await check()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)
    return value


async def test_recurring_pulse_fires_twice(loop: Loop) -> None:
    created, _ = await loop.store.create(
        NewPulse(prompt="tick", scheduled_at=NOW, cron="*/5 * * * *", timezone="UTC"), now=NOW
    )
    loop.scheduler.wake()

    async def attempts(n: int) -> Pulse | None:
        p = await loop.store.get(created.pulse_id)
        done = [a for a in p.attempts or [] if a.finished_at]
        return p if len(done) >= n and p.status is Status.PENDING else None

    first = await wait_until(lambda: attempts(1))
    assert first.scheduled_at == datetime(2026, 11, 25, 12, 5, tzinfo=UTC)
    # Not due yet: nothing more happens until the clock reaches 12:05.
    loop.scheduler.wake()
    await asyncio.sleep(0.3)
    assert len(loop.agent.calls()) == 1
    loop.clock.now = datetime(2026, 11, 25, 12, 5, 0, 200_000, tzinfo=UTC)
    loop.scheduler.wake()
    second = await wait_until(lambda: attempts(2))
    assert second.scheduled_at == datetime(2026, 11, 25, 12, 10, tzinfo=UTC)
    assert [a.is_error for a in second.attempts or []] == [False, False]
    assert len(loop.agent.calls()) == 2


async def test_the_loop_sleeps_until_due_without_claiming_early(loop: Loop) -> None:
    created, _ = await loop.store.create(
        NewPulse(prompt="later", scheduled_at=NOW + timedelta(minutes=10)), now=NOW
    )
    loop.scheduler.wake()
    await asyncio.sleep(0.3)
    assert (await loop.store.get(created.pulse_id)).status is Status.PENDING
    loop.clock.now = NOW + timedelta(minutes=10)
    loop.scheduler.wake()

    async def done() -> bool:
        return (await loop.store.get(created.pulse_id)).status is Status.COMPLETED

    await wait_until(done)


async def test_close_stops_a_running_attempt_after_the_grace(loop: Loop) -> None:
    created, _ = await loop.store.create(NewPulse(prompt="[sleep 30]", scheduled_at=NOW), now=NOW)
    loop.scheduler.wake()

    async def started() -> bool:
        return bool(loop.agent.calls())

    await wait_until(started)
    await loop.scheduler.close(grace=0.2)
    p = await loop.store.get(created.pulse_id)
    assert p.status is Status.PENDING
    assert p.retry_count == 0
    [attempt] = p.attempts or []
    assert attempt.error is not None
    assert attempt.error.startswith("stopped")
    assert loop.scheduler.runs == {}


async def _status(loop: Loop, pulse_id: int) -> Status:
    return (await loop.store.get(pulse_id)).status


async def test_a_refused_finish_is_retried_not_left_processing(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_finish = loop.store.finish
    refusals: list[int] = []

    async def flaky_finish(attempt_id: int, outcome):  # type: ignore[no-untyped-def]
        if len(refusals) < 2:
            refusals.append(attempt_id)
            raise DatabaseError(sqlite3.OperationalError("database is locked"))
        return await real_finish(attempt_id, outcome)

    monkeypatch.setattr(loop.store, "finish", flaky_finish)
    created, _ = await loop.store.create(NewPulse(prompt="ok", scheduled_at=NOW), now=NOW)
    loop.scheduler.wake()

    async def completed() -> bool:
        return await _status(loop, created.pulse_id) is Status.COMPLETED

    await wait_until(completed)
    assert len(refusals) == 2
    assert len(loop.agent.calls()) == 1  # recorded late, never run twice


async def test_a_refused_start_record_does_not_stop_the_run(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise DatabaseError(sqlite3.OperationalError("disk I/O error"))

    monkeypatch.setattr(loop.store, "mark_started", refuse)
    created, _ = await loop.store.create(NewPulse(prompt="ok", scheduled_at=NOW), now=NOW)
    loop.scheduler.wake()

    async def completed() -> bool:
        return await _status(loop, created.pulse_id) is Status.COMPLETED

    await wait_until(completed)


async def test_a_run_that_raises_becomes_a_failed_attempt(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("unexpected")

    monkeypatch.setattr(loop.scheduler.executor, "run", broken)
    created, _ = await loop.store.create(
        NewPulse(prompt="x", scheduled_at=NOW, max_retries=0), now=NOW
    )
    loop.scheduler.wake()

    async def failed() -> bool:
        return await _status(loop, created.pulse_id) is Status.FAILED

    await wait_until(failed)
    [attempt] = (await loop.store.get(created.pulse_id)).attempts or []
    assert attempt.error == "internal error while running the agent: RuntimeError('unexpected')"
    assert loop.scheduler.runs == {}


async def test_close_during_a_slow_claim_leaves_nothing_processing(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_dispatch = loop.store.dispatch
    claiming = asyncio.Event()

    async def slow_dispatch(*args, **kwargs):  # type: ignore[no-untyped-def]
        done = await real_dispatch(*args, **kwargs)
        if done.claims:
            claiming.set()
            await asyncio.sleep(0.2)  # committed, not yet started
        return done

    monkeypatch.setattr(loop.store, "dispatch", slow_dispatch)
    created, _ = await loop.store.create(NewPulse(prompt="[sleep 30]", scheduled_at=NOW), now=NOW)
    loop.scheduler.wake()
    await claiming.wait()
    await loop.scheduler.close(grace=0.2)
    p = await loop.store.get(created.pulse_id)
    assert p.status is Status.PENDING  # stopped by the shutdown, to run again after it
    [attempt] = p.attempts or []
    assert attempt.finished_at is not None
    assert await loop.store.running() == []


async def test_a_pulse_never_starts_while_an_earlier_attempt_may_still_run(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = NOW + timedelta(hours=1)
    created, _ = await loop.store.create(NewPulse(prompt="guarded", scheduled_at=later), now=NOW)
    # Attempt 1 was cut by a restart with its agent (pid 4242) possibly still alive.
    [cut] = await loop.store.claim_due(later, 1)
    await loop.store.mark_started(cut.attempt_id, pid=4242, started_at=NOW)
    await loop.store.finish(
        cut.attempt_id,
        Outcome(
            finished_at=NOW,
            exit_code=None,
            duration_ms=0,
            is_error=True,
            error="interrupted",
            then=After(Status.PENDING, NOW, 1),
            orphan=True,
        ),
    )
    alive = {4242}
    checked: list[tuple[int, int | None]] = []
    stopped: list[int | None] = []

    async def orphan_running(ref: AttemptRef) -> bool:
        checked.append((ref.number, ref.pid))
        return ref.pid in alive

    async def stop_orphan(ref: AttemptRef) -> bool:
        stopped.append(ref.pid)
        return True

    monkeypatch.setattr(loop.scheduler.executor, "orphan_running", orphan_running)
    monkeypatch.setattr(loop.scheduler.executor, "stop_orphan", stop_orphan)
    loop.scheduler.wake()

    async def attempts(n: int) -> Pulse | None:
        p = await loop.store.get(created.pulse_id)
        done = [a for a in p.attempts or [] if a.finished_at]
        return p if len(done) >= n and p.status is not Status.PROCESSING else None

    held = await wait_until(lambda: attempts(2))
    assert loop.agent.calls() == []  # the agent was not started
    assert checked == [(1, 4242)]
    assert stopped == [4242]
    assert held.attempts is not None
    assert (held.attempts[-1].error or "").startswith("not started: attempt 1 (cut by a restart)")
    assert held.status is Status.PENDING

    # Gone by the retry: the run goes ahead and the orphan is not checked again.
    alive.clear()
    assert held.scheduled_at > NOW
    loop.clock.now = held.scheduled_at
    loop.scheduler.wake()
    done = await wait_until(lambda: attempts(3))
    assert done.status is Status.COMPLETED
    assert len(loop.agent.calls()) == 1
    assert checked == [(1, 4242), (1, 4242)]


async def test_a_create_due_sooner_than_the_armed_timer_wakes_the_loop(loop: Loop) -> None:
    later, _ = await loop.store.create(
        NewPulse(prompt="later", scheduled_at=NOW + timedelta(minutes=10)), now=NOW
    )
    loop.scheduler.wake()
    await asyncio.sleep(0.3)  # the loop now sleeps until NOW + 10 minutes
    # A create for after the armed time leaves the loop asleep; one for now wakes it.
    loop.scheduler.wake(due=NOW + timedelta(minutes=30))
    soon, _ = await loop.store.create(NewPulse(prompt="soon", scheduled_at=NOW), now=NOW)
    loop.scheduler.wake(due=soon.scheduled_at)

    async def done() -> bool:
        return (await loop.store.get(soon.pulse_id)).status is Status.COMPLETED

    await wait_until(done)
    assert (await loop.store.get(later.pulse_id)).status is Status.PENDING


async def test_a_create_after_a_wall_clock_jump_wakes_the_loop_at_once(loop: Loop) -> None:
    await loop.store.create(
        NewPulse(prompt="later", scheduled_at=NOW + timedelta(minutes=10)), now=NOW
    )
    loop.scheduler.wake()
    await asyncio.sleep(0.3)  # asleep: its timer armed on the wall time before the jump
    loop.clock.now = NOW + timedelta(hours=2)  # the wall clock jumps; monotonic time does not
    jumped = loop.clock.now
    soon, _ = await loop.store.create(NewPulse(prompt="soon", scheduled_at=jumped), now=jumped)
    loop.scheduler.wake(due=soon.scheduled_at)

    async def done() -> bool:
        return (await loop.store.get(soon.pulse_id)).status is Status.COMPLETED

    # Well before the 60 s safety wake-up that rescued it before (REEVE_LITE_MAX_SLEEP).
    started = asyncio.get_running_loop().time()
    await wait_until(done, timeout=10)
    took = asyncio.get_running_loop().time() - started
    record(
        "faults",
        "wall clock jumps 2 h forward while the loop sleeps; a pulse is created for now",
        f"run and recorded {took * 1000:.0f} ms later (up to 60 s before; clock injected)",
    )
