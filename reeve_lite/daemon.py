"""The daemon: open the store, recover, serve the API, run the scheduler, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import stat
from pathlib import Path

from aiohttp import web

from reeve_lite import __version__
from reeve_lite.api import Context, make_app
from reeve_lite.config import Settings
from reeve_lite.executor import Executor, watch_children_with_pidfd
from reeve_lite.models import Status
from reeve_lite.scheduler import Scheduler
from reeve_lite.store import Store, StoreError
from reeve_lite.systemd import Notifier, listen_sockets
from reeve_lite.timeparse import format_duration

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


def bind_unix_socket(path: Path, mode: int) -> socket.socket:
    """Bind and listen on `path` with file mode `mode`, replacing a stale socket
    file but refusing to take over one that a live daemon still answers on."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755 if mode & 0o070 else 0o700)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise StartupError(f"{path} exists and is not a socket; remove it or set --socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # left behind by a daemon that died
        else:
            raise StartupError(f"another daemon already answers on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # never visible with looser rights, even for an instant
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot bind {path}: {exc.strerror}") from None
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    """Bind and listen on HOST:PORT."""
    try:
        sock = socket.create_server((host, port), reuse_port=False, backlog=128)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def status_line(pending: int, running: int, next_in: float | None, priority: str | None) -> str:
    """The one-line summary systemd shows, e.g. `3 pending, next in 4m12s (normal), 1 running`."""
    parts = [f"{pending} pending"]
    if next_in is not None:
        parts.append(f"next in {format_duration(max(0.0, next_in))} ({priority})")
    parts.append(f"{running} running")
    return ", ".join(parts)


class Daemon:
    """One running reeve-lite daemon."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.notifier = Notifier()
        self._stop = asyncio.Event()
        self._bound_socket: Path | None = None

    def request_stop(self) -> None:
        """Begin a clean shutdown (SIGTERM, SIGINT)."""
        self._stop.set()

    async def run(self) -> None:
        """Serve until asked to stop."""
        s = self.settings
        if s.listen and not s.api_token:
            raise StartupError(
                "REEVE_LITE_LISTEN needs an API token: set the credential api-token, "
                "--token-file or REEVE_LITE_API_TOKEN"
            )
        try:
            executor = Executor(s)
        except RuntimeError as exc:
            raise StartupError(str(exc)) from None
        try:
            store = await Store.open(s.db)
        except (OSError, StoreError) as exc:
            raise StartupError(f"cannot open the database {s.db}: {exc}") from None
        except Exception as exc:  # sqlite3.Error and friends, with the path for context
            raise StartupError(f"cannot open the database {s.db}: {exc}") from None
        try:
            await self._serve(store, executor)
        finally:
            await store.close()

    async def _serve(self, store: Store, executor: Executor) -> None:
        s = self.settings
        scheduler = Scheduler(store, executor, s)
        recovered = await scheduler.recover()
        if recovered:
            log.warning("recovered %d attempt(s) interrupted by the last stop", recovered)
        app = make_app(Context(store=store, scheduler=scheduler, settings=s))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            for sock in self._sockets():
                await web.SockSite(runner, sock).start()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            ticker = asyncio.create_task(scheduler.run(), name="scheduler")
            counts = await store.counts()
            log.info(
                "reeve-lite %s serving on %s%s; %d pending; executor %s; database %s",
                __version__,
                s.socket,
                f" and {s.listen[0]}:{s.listen[1]}" if s.listen else "",
                counts[Status.PENDING],
                executor.mode,
                s.db,
            )
            nxt = await store.next_due()
            next_in = (nxt.scheduled_at - scheduler.clock()).total_seconds() if nxt else None
            self.notifier.ready(
                status_line(
                    counts[Status.PENDING],
                    len(scheduler.runs),
                    next_in,
                    nxt.priority if nxt else None,
                )
            )
            await self._stop.wait()
            log.info("stopping")
            self.notifier.stopping()
            await scheduler.close(s.shutdown_grace)
            await ticker
        finally:
            await runner.cleanup()
            if self._bound_socket is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._bound_socket.unlink()

    def _sockets(self) -> list[socket.socket]:
        s = self.settings
        inherited = listen_sockets()
        if inherited:
            socks = [sock for group in inherited.values() for sock in group]
            log.info("using %d socket(s) from systemd: %s", len(socks), ", ".join(inherited))
            return socks
        socks = [bind_unix_socket(s.socket, s.socket_mode)]
        self._bound_socket = s.socket
        if s.listen:
            socks.append(bind_tcp(*s.listen))
        return socks


def serve(settings: Settings) -> int:
    """Run the daemon in this process; the exit status."""
    watch_children_with_pidfd()
    daemon = Daemon(settings)
    try:
        asyncio.run(daemon.run())
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EROFS, errno.ENOSPC):
            log.error("cannot start: %s", exc)
            return 1
        raise
    return 0
