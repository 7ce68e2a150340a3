"""The wall-clock timer against the real timerfd: it fires at an absolute wall
time, re-arms, and reports a clock step. Setting the machine's clock is not done
here; the step is exercised by injection (a read that fails with ECANCELED)."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from reeve_lite.walltimer import WallTimer


async def test_it_fires_at_the_absolute_wall_time() -> None:
    fired: list[float] = []
    timer = WallTimer.create(lambda: fired.append(time.time()))
    assert timer is not None
    try:
        at = datetime.now(UTC) + timedelta(milliseconds=300)
        timer.arm(at)
        for _ in range(200):
            if fired:
                break
            await asyncio.sleep(0.01)
        [when] = fired
        assert when >= at.timestamp()
        # Re-armed for later, it stays quiet until then.
        timer.arm(datetime.now(UTC) + timedelta(hours=1))
        await asyncio.sleep(0.3)
        assert len(fired) == 1
        # A time already past fires at once.
        timer.arm(datetime.now(UTC) - timedelta(minutes=5))
        for _ in range(100):
            if len(fired) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(fired) == 2
    finally:
        timer.close()


async def test_a_clock_step_is_reported_and_the_timer_stays_usable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fired: list[str] = []
    timer = WallTimer.create(lambda: fired.append("wake"))
    assert timer is not None
    try:
        real_read = os.read

        def cancelled(fd: int, n: int) -> bytes:
            if fd == timer.fd:
                raise OSError(errno.ECANCELED, "Operation canceled")
            return real_read(fd, n)

        timer.arm(datetime.now(UTC) - timedelta(seconds=1))  # readable now
        monkeypatch.setattr(os, "read", cancelled)
        for _ in range(100):
            if fired:
                break
            await asyncio.sleep(0.01)
        monkeypatch.setattr(os, "read", real_read)
        assert fired == ["wake"]
        assert timer.clock_steps == 1
        assert timer.armed_for is not None
        assert timer.armed_for > time.time() + 86400  # re-armed, far ahead
    finally:
        timer.close()
