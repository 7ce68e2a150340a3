"""Resource faults: a full disk under the database, the database write-locked by
another process, and a state directory that is read-only or cannot be created.
Each gives a clear error, the daemon stays up where it can, and nothing is lost."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reeve_lite.client import ApiFailure
from tests.conftest import Daemon, clean_env, wait_for
from tests.daemon.test_systemd_protocols import NotifySocket
from tests.report import record

# Holds the database's write lock (BEGIN EXCLUSIVE) until its stdin is closed.
HOLD_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


@contextmanager
def write_locked(db: Path) -> Iterator[None]:
    """Another process holds the write lock on `db` for the duration."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=10) == 0


def _create_all(
    daemon: Daemon, count: int
) -> tuple[list[ApiFailure | dict[str, object]], list[float]]:
    """`count` creates sent at once, one thread each; the answers or errors, and
    how long each took to come."""
    answers: list[ApiFailure | dict[str, object]] = []
    waits: list[float] = []

    def one(n: int) -> None:
        sent = time.monotonic()
        try:
            answers.append(daemon.client(timeout=120).create(prompt=f"while locked {n}"))
        except ApiFailure as exc:
            answers.append(exc)
        waits.append(time.monotonic() - sent)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, waits


@contextmanager
def listening(notify: NotifySocket) -> Iterator[None]:
    """Read notify messages as they arrive (so each carries its arrival time)."""
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            with contextlib.suppress(AssertionError):  # nothing within the timeout
                notify.wait(lambda _: False, timeout=0.2)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        yield
    finally:
        done.set()
        reader.join()


def _pings(notify: NotifySocket) -> list[float]:
    return [t for t, m in list(notify.received) if "WATCHDOG=1" in m]


@pytest.mark.slow  # every write waits out the lock (5 s)
def test_write_locked_database_is_a_503_and_the_watchdog_keeps_pinging(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    # systemd would kill the daemon after 6 s without a ping; it pings every 3 s.
    watchdog_usec = 6_000_000
    daemon = make_daemon(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(watchdog_usec))
    try:
        with listening(notify):
            wait_for(lambda: any("READY=1" in m for _, m in list(notify.received)), what="READY=1")
            before = daemon.client().create(prompt="before the lock", scheduled_at="in 1 hour")
            with write_locked(daemon.db):
                locked_from = time.monotonic()
                answers, waits = _create_all(daemon, 4)
                # Reads answer while writes wait for the lock.
                assert daemon.client().status()["counts"]["pending"] == 1
                assert daemon.client().get(before["pulse_id"])["prompt"] == "before the lock"
                locked_until = time.monotonic()
            wait_for(
                lambda: any(t > locked_until for t in _pings(notify)),
                what="a watchdog ping after the lock",
            )
            assert len(answers) == 4
            assert all(isinstance(a, ApiFailure) for a in answers), answers
            assert {(a.status, a.code) for a in answers if isinstance(a, ApiFailure)} == {
                (503, "database_busy")
            }
            assert "the database is busy; try again shortly" in str(answers[0])
            pings = _pings(notify)
            gaps = [b - a for a, b in itertools.pairwise(pings)]
            during = [t for t in pings if locked_from < t < locked_until]
            print(
                f"locked {locked_until - locked_from:.1f} s, creates answered after "
                f"{min(waits):.1f}-{max(waits):.1f} s, {len(during)} watchdog pings "
                f"meanwhile; gaps {[round(g, 2) for g in gaps]}"
            )
            assert during
            assert max(gaps) < watchdog_usec / 1e6
            after = daemon.client().create(prompt="after the lock")
            daemon.wait_pulse(after["pulse_id"], "completed")
            assert daemon.client().get(before["pulse_id"])["status"] == "pending"
    finally:
        daemon.stop()
        notify.close()
    record(
        "faults",
        "database write-locked by another process",
        f"4 concurrent creates 503 database_busy after {min(waits):.1f}-{max(waits):.1f} s "
        f"each, reads answered; watchdog pinged {len(during)}x in "
        f"{locked_until - locked_from:.1f} s locked (longest gap {max(gaps):.1f} s "
        f"< {watchdog_usec / 1e6:g} s); creates and runs resume after release",
    )


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a filesystem needs root (.ci/run runs as root)"
)


@contextmanager
def mounted_tmpfs(path: Path, *options: str) -> Iterator[Path]:
    """A small tmpfs at `path` (`options` such as size=2m, ro), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(("mode=0700", *options)), "tmpfs", str(path)],
        check=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def _fill(directory: Path) -> Path:
    """Write a file in `directory` until its filesystem is full; the file."""
    filler = directory / "filler"
    with open(filler, "wb") as out, pytest.raises(OSError, match="No space") as full:  # noqa: PT012
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    assert full.value.errno == errno.ENOSPC
    return filler


@needs_root
def test_full_disk_is_a_507_and_nothing_is_lost(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    with mounted_tmpfs(tmp_path / "small", "size=4m") as small:
        daemon = make_daemon(REEVE_LITE_DB=str(small / "reeve.db"))
        try:
            client = daemon.client()
            earlier = [
                client.create(prompt=f"earlier {n}", scheduled_at="in 1 hour") for n in range(3)
            ]
            running = daemon.running_pulse("runs while the disk fills [sleep 3]")
            filler = _fill(small)
            refused: ApiFailure | None = None
            stored = 0
            for n in range(200):  # the first few may still fit in the WAL's free pages
                try:
                    client.create(prompt=f"while full {n} " + "x" * 30000, scheduled_at="in 1 hour")
                    stored += 1
                except ApiFailure as exc:
                    refused = exc
                    break
            assert refused is not None, "the disk never filled up"
            print(f"full after {stored} creates: {refused.status} {refused.code}: {refused}")
            assert (refused.status, refused.code) == (507, "disk_full")
            assert "database error: database or disk is full" in daemon.log()
            assert client.health()["ok"] is True
            status = client.status()
            assert status["counts"]["pending"] == 3 + stored
            assert [client.get(p["pulse_id"])["prompt"] for p in earlier] == [
                f"earlier {n}" for n in range(3)
            ]
            # The run ended while the disk was full: its end is kept until it can be written.
            wait_for(lambda: "cannot record the end" in daemon.log(), what="the end to be refused")
            filler.unlink()
            daemon.wait_pulse(running["pulse_id"], "completed", timeout=30)
            after = client.create(prompt="after the disk was freed")
            daemon.wait_pulse(after["pulse_id"], "completed")
        finally:
            daemon.stop()
        db = sqlite3.connect(small / "reeve.db")
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            prompts = [r[0] for r in db.execute("SELECT prompt FROM pulses ORDER BY id LIMIT 3")]
        finally:
            db.close()
        assert prompts == [f"earlier {n}" for n in range(3)]
    record(
        "faults",
        "disk full under the database",
        "create 507 disk_full (SQLite: database or disk is full); health, status and reads "
        "answer; a run that ended meanwhile is recorded once space is back; integrity ok, "
        "nothing lost",
    )


def _serve(tmp_path: Path, db: Path) -> subprocess.CompletedProcess[str]:
    """Start the daemon on `db` and wait for it to exit (it should not start)."""
    (tmp_path / "run").mkdir(exist_ok=True)
    env = clean_env() | {
        "REEVE_LITE_DB": str(db),
        "REEVE_LITE_SOCKET": str(tmp_path / "run" / "api.sock"),
        "REEVE_LITE_EXECUTOR": "off",
        "REEVE_LITE_AGENT_COMMAND": "true",
    }
    return subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@needs_root
@pytest.mark.parametrize("existing", [False, True], ids=["empty", "with-database"])
def test_read_only_state_directory_is_a_clear_error(
    tmp_path: Path, make_daemon: Callable[..., Daemon], existing: bool
) -> None:
    state = tmp_path / "state"
    with mounted_tmpfs(state, "size=4m"):
        if existing:
            daemon = make_daemon(REEVE_LITE_DB=str(state / "reeve.db"))
            daemon.client().create(prompt="kept", scheduled_at="in 1 hour")
            assert daemon.stop() == 0
        subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
        done = _serve(tmp_path, state / "reeve.db")
        print(done.stderr)
        assert done.returncode != 0
        assert done.stderr.count("\n") == 1, done.stderr
        assert str(state / "reeve.db") in done.stderr
        assert "Read-only file system" in done.stderr
        if existing:  # writable again: the daemon starts and the pulse is there
            subprocess.run(["mount", "-o", "remount,rw", str(state)], check=True)
            again = make_daemon(REEVE_LITE_DB=str(state / "reeve.db"))
            assert [p["prompt"] for p in again.client().upcoming()["pulses"]] == ["kept"]
            assert again.stop() == 0
    record(
        "faults",
        f"read-only state directory ({'with a database' if existing else 'empty'})",
        "exit 1, one line naming the path (Read-only file system)",
    )


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_state_directory_that_cannot_be_created_is_a_clear_error(
    tmp_path: Path, where: str
) -> None:
    if where == "under-a-file":
        (tmp_path / "file").write_text("not a directory")
        db = tmp_path / "file" / "state" / "reeve.db"
        done = _serve(tmp_path, db)
    else:
        if os.geteuid() != 0:
            pytest.skip("mounting a filesystem needs root (.ci/run runs as root)")
        with mounted_tmpfs(tmp_path / "ro", "size=1m", "ro") as ro:
            db = ro / "state" / "reeve.db"
            done = _serve(tmp_path, db)
    print(done.stderr)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert str(db) in done.stderr
    reason = "Not a directory" if where == "under-a-file" else "Read-only file system"
    assert reason in done.stderr
    record(
        "faults",
        f"state directory cannot be created ({where.replace('-', ' ')})",
        f"exit 1, one line naming the path ({reason})",
    )


@needs_root
def test_full_disk_at_start_is_a_clear_error_and_recovery_waits_for_space(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """Restarted after a crash on a full disk, the daemon cannot record the recovery:
    it says so in one line and exits; once there is space it recovers everything."""
    with mounted_tmpfs(tmp_path / "small", "size=4m") as small:
        daemon = make_daemon(REEVE_LITE_DB=str(small / "reeve.db"))
        try:
            pulse = daemon.running_pulse("cut by the crash [sleep-first 60]")
            daemon.kill()
            filler = _fill(small)
            done = _serve(tmp_path, small / "reeve.db")
            print(done.stderr)
            assert done.returncode == 1
            assert done.stderr.count("\n") == 1, done.stderr
            assert (
                f"cannot write to the database {small / 'reeve.db'}: database or disk is full"
                in (done.stderr)
            )
            filler.unlink()
            daemon.start()
            recovered = daemon.wait_pulse(pulse["pulse_id"], "completed")
        finally:
            daemon.stop()
    first, second = recovered["attempts"]
    assert first["error"].startswith("interrupted: the daemon stopped while this attempt ran")
    assert second["is_error"] is False
    record(
        "faults",
        "disk full when the daemon restarts after a crash",
        "exit 1, one line (cannot write to the database …: database or disk is full); "
        "after freeing space the cut attempt is recovered and its pulse completes",
    )


def test_a_client_stalled_mid_body_does_not_hold_the_stop(daemon: Daemon) -> None:
    """Headers and 10 of 100 body bytes, then silence: SIGTERM still ends the daemon
    promptly (aiohttp waited 60 s for such a request before)."""
    stalled = socket.socket(socket.AF_UNIX)
    stalled.connect(str(daemon.socket))
    stalled.sendall(
        b"POST /api/pulse/trigger HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"prompt":'
    )
    time.sleep(0.3)
    assert daemon.proc is not None
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        code = daemon.proc.wait(timeout=30)
    finally:
        stalled.close()
    took = time.monotonic() - started
    assert code == 0
    record("faults", "SIGTERM with a client stalled mid-body", f"stopped in {took:.1f} s")
