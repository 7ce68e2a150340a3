"""The daemon: open the store, recover, serve the API, run the scheduler, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from reeve_lite import __version__
from reeve_lite.agent import AgentUnavailable
from reeve_lite.api import Context, make_app
from reeve_lite.config import RESTART_ONLY, ConfigError, Settings
from reeve_lite.executor import Executor, watch_children_with_pidfd
from reeve_lite.guard import AcceptErrorFilter, Guard, per_listener_cap, raise_nofile_limit
from reeve_lite.scheduler import Scheduler
from reeve_lite.store import DatabaseError, Store, StoreError, lock_writer
from reeve_lite.systemd import Notifier, listen_sockets, socket_activated, watchdog_period
from reeve_lite.telegram import BotApi
from reeve_lite.timeparse import format_duration
from reeve_lite.walltimer import WallTimer

log = logging.getLogger(__name__)


SERVER_STOP_GRACE = 3.0  # seconds for open requests once the daemon stops


class GuardedSite(web.SockSite):
    """A listener whose connections go through a `Guard` (a cap, a header deadline)."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, guard: Guard) -> None:
        super().__init__(runner, sock)
        self.guard = guard

    async def start(self) -> None:
        """Listen, every connection guarded."""
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.factory(server), sock=self._sock, backlog=self._backlog
        )


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


def bind_unix_socket(path: Path, mode: int) -> socket.socket:
    """Bind and listen on `path` with file mode `mode`, replacing a stale socket
    file but refusing to take over one that a live daemon still answers on. A
    missing directory is made (`run` has refused one the user named)."""
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


EXIT_RESTART = 75  # EX_TEMPFAIL: idled out, but a pulse came in meanwhile


class Daemon:
    """One running reeve-lite daemon."""

    def __init__(self, settings: Settings, *, loader: Callable[[], Settings] | None = None) -> None:
        self.settings = settings
        self.notifier = Notifier()
        self._loader = loader
        self._stop = asyncio.Event()
        self._bound_socket: Path | None = None
        self._activated = False
        self._idled_out = False
        self._last_activity = time.monotonic()
        self._background: set[asyncio.Task[None]] = set()
        self._lock_fd: int | None = None

    def request_stop(self) -> None:
        """Begin a clean shutdown (SIGTERM, SIGINT)."""
        self._stop.set()

    def touch(self) -> None:
        """Note activity (a request): the idle timer starts again."""
        self._last_activity = time.monotonic()

    async def run(self) -> int:
        """Serve until asked to stop; the exit status."""
        s = self.settings
        if s.listen and not s.api_token:
            raise StartupError(
                "REEVE_LITE_LISTEN needs an API token: set the credential api-token, "
                "--token-file or REEVE_LITE_API_TOKEN"
            )
        if "socket" in s.explicit and not s.socket.parent.is_dir() and not socket_activated():
            # Before the database is touched: a failed start leaves nothing behind.
            raise StartupError(
                f"cannot bind {s.socket}: the directory {s.socket.parent} does not exist "
                "(make it, or choose another --socket)"
            )
        try:
            executor = Executor(s)
        except RuntimeError as exc:
            raise StartupError(str(exc)) from None
        try:
            lock = lock_writer(s.db)
        except (OSError, StoreError) as exc:
            raise StartupError(f"cannot use the database {s.db}: {exc}") from None
        self._lock_fd = lock  # held for the life of the process
        try:
            store = await Store.open(s.db)
        except (OSError, StoreError) as exc:
            raise StartupError(f"cannot open the database {s.db}: {exc}") from None
        except Exception as exc:  # sqlite3.Error and friends, with the path for context
            raise StartupError(f"cannot open the database {s.db}: {exc}") from None
        try:
            return await self._serve(store, executor)
        finally:
            await store.close()

    async def _serve(self, store: Store, executor: Executor) -> int:
        s = self.settings
        scheduler = Scheduler(store, executor, s)
        try:
            recovered = await scheduler.recover()
            missed = await scheduler.review_missed()
        except DatabaseError as exc:  # e.g. a full disk: nothing can be recorded yet
            raise StartupError(f"cannot write to the database {s.db}: {exc}") from None
        if recovered:
            log.warning("recovered %d attempt(s) interrupted by the last stop", recovered)
        if missed:
            log.warning(
                "start-up: %s missed occurrence(s) of overdue pulses: %s",
                sum(missed.values()),
                ", ".join(
                    f"{n} {action.replace('_', ' ')}" for action, n in sorted(missed.items())
                ),
            )
        else:
            log.info("start-up: no missed occurrences")
        http = aiohttp.ClientSession() if s.telegram_token else None
        bot = (
            BotApi(s.telegram_token, s.telegram_api_url, http)
            if s.telegram_token and http
            else None
        )
        ctx = Context(store=store, scheduler=scheduler, settings=s, on_request=self.touch, bot=bot)
        # A client that stalls mid-request must not hold the stop: after the agents'
        # grace, open requests get SERVER_STOP_GRACE, so the whole stop stays well
        # inside the units' TimeoutStopSec=60 (30 s grace + 5 s kill + this).
        runner = web.AppRunner(
            make_app(ctx),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=SERVER_STOP_GRACE,
            # After an answer to an unread body (413), read what follows for at most
            # this long before closing (aiohttp's default, 10 s, read 7 MB of junk).
            lingering_time=1.0,
        )
        await runner.setup()
        try:
            logging.getLogger("asyncio").addFilter(AcceptErrorFilter())
            socks = self._sockets()
            cap = per_listener_cap(len(socks), raise_nofile_limit())
            for sock in socks:
                name = "the Unix socket" if sock.family == socket.AF_UNIX else "TCP"
                await GuardedSite(runner, sock, Guard(name, cap)).start()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            loop.add_signal_handler(
                signal.SIGHUP, lambda: self._spawn(self._reload(ctx, scheduler))
            )
            scheduler.timer = WallTimer.create(scheduler.wake)
            ticker = asyncio.create_task(scheduler.run(), name="scheduler")
            pending = await store.count_pending()
            log.info(
                "reeve-lite %s serving on %s%s; %d pending; executor %s; database %s",
                __version__,
                s.socket,
                f" and {s.listen[0]}:{s.listen[1]}" if s.listen else "",
                pending,
                executor.mode,
                s.db,
            )
            self.notifier.ready(await self._status_line(store, scheduler))
            if (period := watchdog_period()) is not None:
                self._spawn(self._watchdog(store, scheduler, period))
            if self.notifier.enabled:
                self._spawn(self._status_updates(store, scheduler))
            if self._activated:
                self._spawn(self._idle_exit(store, scheduler))
            await self._stop.wait()
            log.info("stopping")
            self.notifier.stopping()
            for task in self._background:
                task.cancel()
            await scheduler.close(self.settings.shutdown_grace)
            await ticker
            if scheduler.timer is not None:
                scheduler.timer.close()
        finally:
            await runner.cleanup()
            if http is not None:
                await http.close()
            if self._bound_socket is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._bound_socket.unlink()
        if self._idled_out and await store.count_pending():
            log.warning("a pulse came in while idling out; exiting for systemd to restart")
            return EXIT_RESTART
        return 0

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _status_line(self, store: Store, scheduler: Scheduler) -> str:
        pending = await store.count_pending()
        nxt = await store.next_due()
        next_in = (nxt.scheduled_at - scheduler.clock()).total_seconds() if nxt else None
        return status_line(pending, len(scheduler.runs), next_in, nxt.priority if nxt else None)

    async def _watchdog(self, store: Store, scheduler: Scheduler, period: float) -> None:
        """Ping systemd only while the loop runs and the database answers; the
        ping carries a fresh status line, so idle costs no extra wake-up."""
        while True:
            await asyncio.sleep(period)
            try:
                line = await asyncio.wait_for(self._status_line(store, scheduler), period)
            except (TimeoutError, DatabaseError) as exc:
                log.warning("the database did not answer the watchdog check: %r", exc)
                continue
            self.notifier.send("WATCHDOG=1", f"STATUS={line}")

    async def _status_updates(self, store: Store, scheduler: Scheduler) -> None:
        """Keep `systemctl status` current: a new line after each change, at most
        one a second."""
        last = None
        while True:
            await scheduler.changed.wait()
            scheduler.changed.clear()
            try:
                line = await self._status_line(store, scheduler)
            except DatabaseError:
                continue
            if line != last:
                self.notifier.send(f"STATUS={line}")
                last = line
            await asyncio.sleep(1.0)

    async def _idle_exit(self, store: Store, scheduler: Scheduler) -> None:
        """Exit after `idle_exit` with nothing pending, running or asked; the socket
        starts the daemon again on the next request."""
        while True:
            idle = self.settings.idle_exit
            if idle <= 0:
                await asyncio.sleep(3600)  # disabled; a reload may enable it
                continue
            remaining = self._last_activity + idle - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            if scheduler.runs or await store.count_pending():
                self.touch()
                continue
            log.info(
                "idle for %s with nothing pending: exiting (the socket starts reeve-lite "
                "again on the next request)",
                format_duration(idle),
            )
            self._idled_out = True
            self.request_stop()
            return

    async def _reload(self, ctx: Context, scheduler: Scheduler) -> None:
        """SIGHUP: re-read the configuration; pending pulses and runs go on."""
        self.notifier.reloading()
        old = self.settings
        try:
            if self._loader is None:
                raise ConfigError("no configuration source to re-read")
            new = self._loader()
            if old.listen and not new.api_token:
                raise ConfigError("the API token is gone, but the TCP listener needs one")
        except ConfigError as exc:
            log.error("reload failed: %s; the running configuration stays", exc)
        else:
            stuck = [name for name in RESTART_ONLY if getattr(new, name) != getattr(old, name)]
            if stuck:
                log.warning("reload: %s change only with a restart", ", ".join(stuck))
            new = dataclasses.replace(new, **{name: getattr(old, name) for name in RESTART_ONLY})
            self.settings = ctx.settings = scheduler.settings = new
            scheduler.executor.settings = new
            try:
                scheduler.executor.profile = scheduler.executor.resolve_profile()
            except AgentUnavailable as exc:
                log.error(
                    "reload: %s; runs keep the agent %s", exc, scheduler.executor.profile.name
                )
            logging.getLogger().setLevel(new.log_level.upper())
            scheduler.wake()
            log.info("configuration re-read from %s", new.config)
        self.notifier.ready(await self._status_line(ctx.store, scheduler))

    def _sockets(self) -> list[socket.socket]:
        s = self.settings
        inherited = listen_sockets()
        if inherited:
            self._activated = True
            socks = [sock for group in inherited.values() for sock in group]
            log.info("using %d socket(s) from systemd: %s", len(socks), ", ".join(inherited))
            if "tcp" in inherited and not s.api_token:
                log.error(
                    "systemd passed a TCP socket but no API token is set: every TCP request "
                    "but /api/health is refused (give the credential api-token)"
                )
            return socks
        socks = [bind_unix_socket(s.socket, s.socket_mode)]
        self._bound_socket = s.socket
        if s.listen:
            socks.append(bind_tcp(*s.listen))
        return socks


def serve(settings: Settings, loader: Callable[[], Settings] | None = None) -> int:
    """Run the daemon in this process; the exit status. `loader` re-reads the
    settings on SIGHUP."""
    watch_children_with_pidfd()
    daemon = Daemon(settings, loader=loader)
    try:
        return asyncio.run(daemon.run())
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EROFS, errno.ENOSPC):
            log.error("cannot start: %s", exc)
            return 1
        raise
