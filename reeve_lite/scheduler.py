"""The scheduler: sleep exactly until the next pulse is due, claim, run, record.

There is no polling interval. The loop asks the store for the earliest due
time and sleeps until then on a wall-clock timer (`walltimer.py`: it fires at
the due time after a suspend, and at once when the clock is set), and any
change made through the API wakes it at once. Without that timer it sleeps at
most `max_sleep` at a time.
Due pulses are claimed in priority order up to `max_concurrent`; each claim
runs in a task of its own and ends with one transaction that closes the
attempt and decides the pulse's next state (completed, retried with
backoff, re-armed at its next cron occurrence, or failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from reeve_lite.agent import Brief, StreamState, compose_prompt, retry_prompt
from reeve_lite.config import Settings
from reeve_lite.executor import Executor, RunReport
from reeve_lite.models import Pulse, Status
from reeve_lite.policy import (
    DEFAULT_KEY,
    After,
    Policy,
    Review,
    after_failure,
    after_success,
    review,
)
from reeve_lite.runners import AttemptRef
from reeve_lite.store import Claim, DatabaseError, Outcome, Store
from reeve_lite.walltimer import WallTimer

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Pulses due within this window are claimed ahead, so that the claim's commit is
# off the critical path; each run still waits for its exact due instant.
DISPATCH_LEAD = timedelta(milliseconds=25)


def utc_now() -> datetime:
    """The current instant, aware, in UTC."""
    return datetime.now(UTC)


def retry_delay(retry_count: int, *, base: float, cap: float) -> float:
    """Seconds before the next try after `retry_count` earlier retries: base·2^n, capped."""
    return float(min(base * 2.0 ** min(retry_count, 62), cap))


def _not_started(reason: str) -> RunReport:
    return RunReport(
        started_at=time.time(),
        duration_ms=0,
        exit_code=None,
        failed=True,
        error=reason,
        stream=StreamState(),
        output_tail="",
    )


@dataclass
class Run:
    """An attempt in progress."""

    pulse_id: int
    attempt_id: int
    started_at: datetime
    task: asyncio.Task[None]
    key: str = DEFAULT_KEY
    pid: int | None = None
    # What the agent has said so far (its session id is known from the first event).
    stream: StreamState = field(default_factory=StreamState)


def what_to_send(claim: Claim) -> Brief:
    """What the agent is told for a claimed attempt: the prompt and the session to resume.

    A retry whose previous attempt started a session (the task is in that
    conversation already) resumes it with a short note on how that attempt
    ended, so a session never holds copies of one prompt. Any other attempt
    sends the pulse's prompt and notes, resuming the pulse's own session if it
    has one."""
    pulse, previous = claim.pulse, claim.previous
    private = (pulse.prompt, *pulse.sticky_notes)
    if previous is not None and previous.session_id and previous.session_id == pulse.session_id:
        return Brief(retry_prompt(claim.number, previous.error), previous.session_id, private)
    return Brief(compose_prompt(pulse.prompt, pulse.sticky_notes), pulse.session_id, private)


class Scheduler:
    """Owns the timer and the running attempts of one daemon."""

    def __init__(
        self, store: Store, executor: Executor, settings: Settings, *, clock: Clock = utc_now
    ) -> None:
        self.store = store
        self.executor = executor
        self.settings = settings
        self.clock = clock
        self.runs: dict[int, Run] = {}
        self.last_error: str | None = None
        self.last_denial: str | None = None
        self._wake = asyncio.Event()
        # Set whenever the queue may have changed (the loop ran): for status lines.
        self.changed = asyncio.Event()
        self._stop_runs = asyncio.Event()
        self._loop_idle = asyncio.Event()
        self._loop_idle.set()
        self._closing = False
        # The wall-clock timer (reeve_lite.walltimer) the daemon gives; without one the
        # loop sleeps at most `max_sleep` at a time.
        self.timer: WallTimer | None = None
        # While the loop sleeps with a timeout: the monotonic instant it wakes by itself
        # (else None). Monotonic: a wall-clock jump must not make a new pulse look later
        # than the armed timer.
        self._asleep_until: float | None = None

    def wake(self, *, due: datetime | None = None) -> None:
        """Re-arm the timer now (after a create, cancel or reschedule, or a finished run).

        With `due` (the earliest instant a new pulse needs the loop: its due time
        or its deadline), a loop already asleep until before then is left asleep:
        a burst of creates for later does not make it re-read the queue each time.
        """
        if (
            due is not None
            and self._asleep_until is not None
            and time.monotonic() + (due - DISPATCH_LEAD - self.clock()).total_seconds()
            > self._asleep_until
        ):
            self.changed.set()  # the status line still counts the new pulse
            return
        self._wake.set()

    @property
    def policy(self) -> Policy:
        """The scheduling policy of the current settings (they change on reload)."""
        s = self.settings
        return Policy(s.missed_grace, s.catchup_max, s.catchup_spacing)

    def _reviewer(self) -> Callable[[Pulse, datetime], Review | None]:
        """The policy review for one pass, with the settings of that moment."""
        return functools.partial(review, policy=self.policy)

    async def review_missed(self) -> dict[str, int]:
        """Apply the missed-run policies to every pulse that is overdue (at start-up:
        what fell due while the daemon was down); occurrences by what was done."""
        now = self.clock()
        overdue = now - timedelta(seconds=self.settings.missed_grace)
        done = await self.store.dispatch(
            now, now, limit=0, review=self._reviewer(), overdue=overdue
        )
        return self._log_reviews(done.reviewed)

    def _log_reviews(self, reviewed: list[tuple[Pulse, Review]]) -> dict[str, int]:
        totals: dict[str, int] = {}
        for pulse, decision in reviewed:
            for miss in decision.misses:
                totals[miss.action] = totals.get(miss.action, 0) + (miss.count or 1)
            level = logging.INFO if decision.status is Status.PENDING else logging.WARNING
            log.log(
                level,
                "pulse=%d %s; now %s",
                pulse.pulse_id,
                decision.reason or "reviewed",
                decision.status,
            )
        return totals

    async def recover(self) -> int:
        """Close attempts left open by a crash, as failed attempts whose pulses are
        retried at once (a retry is counted, so a pulse that crashes the daemon
        cannot loop forever). An orphaned agent still running is killed first."""
        now = self.clock()
        recovered = 0
        for running in await self.store.running():
            attempt = running.attempt
            # Without a pid, the agent may still have been spawned just before the
            # stop: it is looked for by its attempt id.
            stopped = await self.executor.stop_orphan(
                AttemptRef(running.pulse.pulse_id, attempt.attempt_id, attempt.number, attempt.pid)
            )
            state = after_failure(running.pulse, now, delay=0, policy=self.policy)
            if attempt.pid is None and not stopped:
                error = "interrupted: the daemon stopped before the agent started"
            else:
                note = "; its orphaned agent was stopped" if stopped else ""
                error = f"interrupted: the daemon stopped while this attempt ran{note}"
            await self.store.finish(
                attempt.attempt_id,
                Outcome(
                    finished_at=now,
                    exit_code=None,
                    duration_ms=int((now - attempt.started_at).total_seconds() * 1000),
                    is_error=True,
                    error=error,
                    orphan=attempt.pid is not None or stopped,
                    then=state,
                ),
            )
            log.warning(
                "pulse=%d attempt=%d recovered after a crash: %s, now %s",
                running.pulse.pulse_id,
                attempt.number,
                error,
                state.status,
            )
            recovered += 1
        for pulse in await self.store.orphaned_processing():
            await self.store.requeue(pulse.pulse_id, now=now, error="claim without an attempt")
            log.warning("pulse=%d was processing without an attempt; requeued", pulse.pulse_id)
            recovered += 1
        return recovered

    async def run(self) -> None:
        """The loop: claim what is due, then sleep until the next due time or a wake.
        Returns once `close()` has been called."""
        self._loop_idle.clear()
        try:
            await self._loop()
        finally:
            self._loop_idle.set()

    async def _loop(self) -> None:
        while not self._closing:
            self._wake.clear()
            self.changed.set()
            now = self.clock()
            free = self.settings.max_concurrent - len(self.runs)
            timeout: float | None = None
            wake_at: datetime | None = None
            try:
                done = await self.store.dispatch(
                    now,
                    now + DISPATCH_LEAD,
                    limit=free,
                    review=self._reviewer(),
                    overdue=now - timedelta(seconds=self.settings.missed_grace),
                )
                self._log_reviews(done.reviewed)
                for claim in done.claims:
                    self._start(claim)
                wake_at = await self._next_wake()
                if wake_at is not None:
                    timeout = max(0.0, (wake_at - self.clock()).total_seconds())
            except DatabaseError as exc:
                self.last_error = f"database: {exc}"
                log.error("scheduler cannot read the queue: %s; trying again in 1s", exc)
                timeout = 1.0
            if timeout is not None:
                if timeout == 0:
                    continue
                self._asleep_until = time.monotonic() + timeout
            if self.timer is not None:
                # The wall-clock timer fires at the due time even after a suspend, and
                # at once when the clock is set: no periodic wake-up is needed.
                when = wake_at
                if when is None and timeout is not None:  # after a database error
                    when = self.clock() + timedelta(seconds=timeout)
                self.timer.arm(when)
                timeout = None
            elif timeout is not None:
                # Without one, re-check the wall clock now and then: a jump or a
                # suspend does not move the monotonic timer asyncio sleeps on.
                timeout = min(timeout, self.settings.max_sleep)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            finally:
                self._asleep_until = None

    async def _next_wake(self) -> datetime | None:
        """When the loop must look again: the next pulse that could start (its key
        free, a slot free), or the next deadline, whichever is first."""
        times: list[datetime] = []
        if len(self.runs) < self.settings.max_concurrent:
            busy = {run.key for run in self.runs.values()}
            nxt = await self.store.next_due(busy_keys=busy)
            if nxt is not None:
                times.append(nxt.scheduled_at - DISPATCH_LEAD)
        deadline = await self.store.next_deadline()
        # A deadline already past was reviewed in this pass; never spin on one.
        if deadline is not None and deadline > self.clock():
            # Just after it: a pulse expires once its deadline has passed.
            times.append(deadline + timedelta(milliseconds=1))
        return min(times) if times else None

    def _start(self, claim: Claim) -> None:
        task = asyncio.create_task(self._execute(claim), name=f"pulse-{claim.pulse.pulse_id}")
        self.runs[claim.attempt_id] = Run(
            claim.pulse.pulse_id,
            claim.attempt_id,
            self.clock(),
            task,
            key=claim.pulse.concurrency_key or DEFAULT_KEY,
        )

    async def _execute(self, claim: Claim) -> None:
        pulse = claim.pulse
        run = self.runs[claim.attempt_id]

        async def spawned(pid: int, epoch: float) -> None:
            run.pid = pid
            run.started_at = datetime.fromtimestamp(epoch, UTC)
            late_ms = (epoch - pulse.scheduled_at.timestamp()) * 1000
            log.info(
                "pulse=%d attempt=%d started pid=%d (%.1f ms after due, %s)",
                pulse.pulse_id,
                claim.number,
                pid,
                late_ms,
                self.executor.mode,
            )
            try:
                await self.store.mark_started(claim.attempt_id, pid=pid, started_at=run.started_at)
            except DatabaseError as exc:
                # The run goes on; only an orphan after a crash could not be found.
                log.warning("pulse=%d: cannot record the agent's pid: %s", pulse.pulse_id, exc)

        try:
            try:
                blocked = await self._orphans_alive(claim)
                if blocked is not None:
                    report = _not_started(blocked)
                else:
                    report = await self.executor.run(
                        AttemptRef(pulse.pulse_id, claim.attempt_id, claim.number),
                        what_to_send(claim),
                        delay=(pulse.scheduled_at - self.clock()).total_seconds(),
                        stop=self._stop_runs,
                        on_spawn=spawned,
                        stream=run.stream,
                    )
            except Exception as exc:
                log.exception("pulse=%d attempt=%d: the run failed", pulse.pulse_id, claim.number)
                report = _not_started(f"internal error while running the agent: {exc!r}")
            await self._record(claim, report)
        finally:
            del self.runs[claim.attempt_id]
            self.wake()

    async def _orphans_alive(self, claim: Claim) -> str | None:
        """Never start a pulse while an attempt of it cut by a restart may still run:
        check each such attempt's process (or unit); stop what still runs. Returns
        why the run must wait, or None once all are known gone."""
        if not claim.orphans:
            return None
        alive = []
        for orphan in claim.orphans:
            ref = AttemptRef(claim.pulse.pulse_id, orphan.attempt_id, orphan.number, orphan.pid)
            if await self.executor.orphan_running(ref):
                await self.executor.stop_orphan(ref)
                alive.append(orphan.number)
        if alive:
            numbers = ", ".join(map(str, alive))
            return (
                f"not started: attempt {numbers} (cut by a restart) was still running; "
                "it was stopped and this pulse tries again later"
            )
        await self.store.clear_orphans([o.attempt_id for o in claim.orphans])
        return None

    async def _record(self, claim: Claim, report: RunReport) -> None:
        pulse = claim.pulse
        now = self.clock()
        if report.stopped or report.session_gone:
            # Not the pulse's fault: it runs again first thing (after the restart,
            # or as a new session), as a run already judged (however long the daemon
            # stays down, it is not "missed"; its deadline still holds).
            state = After(
                Status.PENDING,
                now,
                pulse.retry_count,
                pulse.occurrence_at,
                max(1, pulse.catchup_remaining),
                pulse.deadline,
            )
        elif report.failed:
            delay = retry_delay(
                pulse.retry_count, base=self.settings.retry_base, cap=self.settings.retry_max
            )
            state = after_failure(pulse, now, delay=delay, policy=self.policy)
        else:
            state = after_success(pulse, now, policy=self.policy)
        stream = report.stream
        await self._finish(
            claim,
            Outcome(
                finished_at=now,
                exit_code=report.exit_code,
                duration_ms=report.duration_ms,
                is_error=report.failed,
                error=report.error,
                session_id=stream.session_id,
                result=stream.result,
                output_tail=report.output_tail or None,
                cost_usd=stream.cost_usd,
                num_turns=stream.num_turns,
                then=state,
                denials=stream.denials,
                forget_session=report.session_gone,
            ),
        )
        if stream.denials:
            self.last_denial = f"pulse {pulse.pulse_id}: {', '.join(stream.denials)}"
            log.warning(
                "pulse=%d attempt=%d: the agent was refused %s (see docs/operations.md, "
                "'A denied tool')",
                pulse.pulse_id,
                claim.number,
                ", ".join(stream.denials),
            )
        if report.failed:
            self.last_error = f"pulse {pulse.pulse_id}: {report.error}"
            when = f" at {state.scheduled_at:%Y-%m-%d %H:%M:%S}Z" if state.scheduled_at else ""
            log.warning(
                "pulse=%d attempt=%d failed: %s; now %s%s",
                pulse.pulse_id,
                claim.number,
                report.error,
                state.status,
                when,
            )
        else:
            log.info(
                "pulse=%d attempt=%d succeeded in %d ms (session %s); now %s",
                pulse.pulse_id,
                claim.number,
                report.duration_ms,
                stream.session_id,
                state.status,
            )

    async def _finish(self, claim: Claim, outcome: Outcome) -> None:
        """Record an attempt's end, trying again while the database refuses: a run
        that happened must not be left open (it would be run again after a restart)."""
        delay = 0.5
        while True:
            try:
                await self.store.finish(claim.attempt_id, outcome)
                return
            except DatabaseError as exc:
                self.last_error = f"database: {exc}"
                if self._closing:
                    log.error(
                        "pulse=%d attempt=%d: cannot record the end (%s); it is recovered "
                        "at the next start",
                        claim.pulse.pulse_id,
                        claim.number,
                        exc,
                    )
                    return
                log.error(
                    "pulse=%d attempt=%d: cannot record the end (%s); trying again in %gs",
                    claim.pulse.pulse_id,
                    claim.number,
                    exc,
                    delay,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_runs.wait(), delay)
            delay = min(delay * 2, 30.0)

    async def close(self, grace: float) -> None:
        """Stop claiming; give running attempts `grace` seconds, then stop them
        (their trees are killed and the attempts recorded as stopped)."""
        self._closing = True
        self.wake()
        # A claim committed while the loop was stopping starts its run; wait for
        # the loop to end so that every run is in `self.runs` below.
        await self._loop_idle.wait()
        tasks = [run.task for run in self.runs.values()]
        if not tasks:
            return
        log.info("waiting up to %gs for %d running attempt(s)", grace, len(tasks))
        _, still = await asyncio.wait(tasks, timeout=grace)
        if still:
            log.warning("stopping %d attempt(s) still running after %gs", len(still), grace)
            self._stop_runs.set()
            await asyncio.wait(still)
