"""Connection guards for the API's listeners: a cap on open connections, and a
deadline for a request's headers.

aiohttp has neither: 1,100 loopback connections that each sent half a request
and went silent held every descriptor of the daemon (its status timed out, a due
pulse failed with "Too many open files", asyncio logged 10,000 tracebacks a
second). Each listener now gets its own cap, so a flood of one (TCP) cannot
take the descriptors the other (the owner's Unix socket) and the agents need;
a connection whose headers are not complete `header_timeout` seconds after it
opened (or after its last response) is closed; and refusals are logged once a
minute, with their count.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0  # seconds for a request's headers
LOG_EVERY = 60.0  # seconds between two log lines about refused connections
# Descriptors kept for everything but the listeners: the database, the agents'
# pipes, systemd-run, the journal, Telegram.
RESERVED_FDS = 128
MAX_PER_LISTENER = 256


def raise_nofile_limit() -> int:
    """Raise the soft descriptor limit to the hard one; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def per_listener_cap(listeners: int, nofile: int) -> int:
    """Open connections one listener may hold: all of them together leave
    `RESERVED_FDS` free, and none holds more than `MAX_PER_LISTENER`."""
    share = (nofile - RESERVED_FDS) // max(1, listeners)
    return max(8, min(MAX_PER_LISTENER, share))


class Guard:
    """The open connections of one listener."""

    def __init__(self, name: str, limit: int, header_timeout: float = HEADER_TIMEOUT) -> None:
        self.name = name
        self.limit = limit
        self.header_timeout = header_timeout
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        self._unlogged = 0
        self._logged_at = -LOG_EVERY

    def factory(self, inner: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory that guards the protocols `inner` makes."""
        return lambda: _Guarded(self, inner())

    def note(self, what: str) -> None:
        """Count a refused or timed-out connection; log at most once a minute."""
        if what == "refused":
            self.refused += 1
        else:
            self.timed_out += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            log.warning(
                "%s: %d connection(s) refused or closed in the last minute (at most %d "
                "open; headers due within %gs); %d open now",
                self.name,
                self._unlogged,
                self.limit,
                self.header_timeout,
                self.open,
            )
            self._logged_at = now
            self._unlogged = 0


class _Transport:
    """The transport as the inner protocol sees it: a write means a response."""

    def __init__(self, real: asyncio.Transport, on_write: Callable[[], None]) -> None:
        self._real = real
        self._on_write = on_write

    def write(self, data: Any) -> None:
        self._on_write()
        self._real.write(data)

    def writelines(self, data: Any) -> None:
        self._on_write()
        self._real.writelines(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Guarded(asyncio.Protocol):
    """One connection: counted against the cap, its headers on a deadline."""

    def __init__(self, guard: Guard, inner: Any) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._counted = False
        self._awaiting_headers = True
        self._tail = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        guard = self._guard
        if guard.open >= guard.limit:
            guard.note("refused")
            transport.abort()
            return
        guard.open += 1
        self._counted = True
        self._transport = transport
        self._arm()
        self._inner.connection_made(_Transport(transport, self._responded))

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.header_timeout, self._expired)

    def _responded(self) -> None:
        # The next bytes begin another request: its headers are on a deadline again.
        if not self._awaiting_headers:
            self._awaiting_headers = True
            self._tail = b""
            self._arm()

    def _expired(self) -> None:
        self._timer = None
        if self._awaiting_headers and self._transport is not None:
            self._guard.note("timed out")
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._awaiting_headers = False
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counted:
            self._guard.open -= 1
            self._counted = False
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class AcceptErrorFilter(logging.Filter):
    """Lets through one of asyncio's "socket.accept() out of system resource" errors
    a minute (out of descriptors, asyncio logs one per loop iteration), with the
    count of the ones held back."""

    def __init__(self) -> None:
        super().__init__()
        self._held = 0
        self._passed_at = -LOG_EVERY

    def filter(self, record: logging.LogRecord) -> bool:
        """False for an accept() error logged less than a minute after the last."""
        if "accept" not in str(record.msg):
            return True
        now = time.monotonic()
        if now - self._passed_at < LOG_EVERY:
            self._held += 1
            return False
        if self._held:
            record.msg = f"{record.msg} ({self._held} more in the last minute)"
            record.exc_info = None  # the traceback is the same each time
        self._passed_at, self._held = now, 0
        return True
