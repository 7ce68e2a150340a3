"""A timer on the wall clock: a Linux `timerfd` on CLOCK_REALTIME, armed at an
absolute instant, that also fires when the clock is set.

This is what systemd uses for calendar timers. Armed with `TFD_TIMER_ABSTIME`,
it fires at the right wall time even after a suspend (a monotonic timer would
fire late by the time spent asleep); with `TFD_TIMER_CANCEL_ON_SET`, a step of
the wall clock (NTP, `date -s`, a VM resumed with its clock corrected) makes
its read fail with ECANCELED, which wakes the scheduler to look again. So the
scheduler needs no periodic safety wake-up.

Python 3.11 has no `os.timerfd_create` (3.13 does): the three calls go through
ctypes to the C library. Where they are missing, `WallTimer.create` returns None
and the scheduler falls back to a bounded monotonic sleep.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import os
from collections.abc import Callable
from datetime import datetime

log = logging.getLogger(__name__)

CLOCK_REALTIME = 0
TFD_CLOEXEC = 0o2000000
TFD_NONBLOCK = 0o4000
TFD_TIMER_ABSTIME = 1 << 0
TFD_TIMER_CANCEL_ON_SET = 1 << 1
# When nothing is due, the timer is still armed (far ahead) so that a clock step
# is reported: CANCEL_ON_SET works only on an armed absolute timer.
_FAR = 365 * 86400


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.POINTER(_Itimerspec),
        ]
    except (OSError, AttributeError):
        return None
    return libc


class WallTimer:
    """One absolute wall-clock timer whose expiry (or a clock step) calls `on_fire`
    in the event loop."""

    def __init__(self, libc: ctypes.CDLL, fd: int, on_fire: Callable[[], None]) -> None:
        self._libc = libc
        self.fd = fd
        self._on_fire = on_fire
        self.clock_steps = 0
        self.armed_for: float | None = None

    @classmethod
    def create(
        cls, on_fire: Callable[[], None], loop: asyncio.AbstractEventLoop | None = None
    ) -> WallTimer | None:
        """A timer registered with the running loop, or None where timerfd is missing."""
        libc = _libc()
        if libc is None:
            return None
        fd = libc.timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            log.warning(
                "timerfd_create failed (%s); waking up every minute instead",
                os.strerror(ctypes.get_errno()),
            )
            return None
        timer = cls(libc, fd, on_fire)
        (loop or asyncio.get_running_loop()).add_reader(fd, timer._readable)
        timer.arm(None)
        return timer

    def arm(self, when: datetime | None) -> None:
        """Fire at the wall instant `when` (now if it has passed); None: only on a
        clock step."""
        at = when.timestamp() if when is not None else datetime.now().timestamp() + _FAR
        at = max(at, 1e-9)  # zero would disarm it
        seconds = int(at)
        spec = _Itimerspec(
            _Timespec(0, 0), _Timespec(seconds, round((at - seconds) * 1e9) % 1_000_000_000)
        )
        flags = TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET
        if self._libc.timerfd_settime(self.fd, flags, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        self.armed_for = at

    def _readable(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return  # re-armed meanwhile: nothing to report
        except OSError as exc:
            if exc.errno != errno.ECANCELED:
                raise
            self.clock_steps += 1
            log.info("the wall clock was set; looking at the queue again")
            # A cancelled timer stays cancelled until it is set again.
            self.arm(None)
        self._on_fire()

    def close(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Unregister and close the timer."""
        (loop or asyncio.get_running_loop()).remove_reader(self.fd)
        os.close(self.fd)
