"""A local user floods the daemon's TCP port with half-sent requests while the
daemon is held to 1024 descriptors: the owner's `status` over the Unix socket
still answers, a due pulse still runs, and the log says so once, not 10,000 times
a second. Root only (another user, prlimit)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.conftest import TOKEN, Daemon
from tests.report import record

FLOODER = r"""
import socket, sys, time
port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
held, end, made = [], time.monotonic() + seconds, 0
while time.monotonic() < end:
    held = [s for s in held if s.fileno() != -1]
    while len(held) < count and time.monotonic() < end:
        s = socket.socket()
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")  # half the headers
            held.append(s)
            made += 1
        except OSError:
            s.close()
            time.sleep(0.01)
    time.sleep(0.2)
    for s in list(held):  # drop the ones the daemon closed, to open others
        try:
            s.setblocking(False)
            if s.recv(1) == b"":
                s.close()
        except BlockingIOError:
            pass
        except OSError:
            s.close()
print(made)
"""


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: another user, prlimit")
def test_a_tcp_flood_by_another_user_leaves_the_owner_served(
    make_daemon: Callable[..., Daemon],
) -> None:
    daemon = make_daemon(REEVE_LITE_LOG_LEVEL="info")
    assert daemon.proc is not None
    subprocess.run(["prlimit", f"--pid={daemon.proc.pid}", "--nofile=1024:1024"], check=True)
    flooder = subprocess.Popen(
        [
            "prlimit",
            "--nofile=4096:4096",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            FLOODER,
            str(daemon.port),
            "1100",
            "14",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)  # the flood is on: the TCP cap is full
        started = time.monotonic()
        status = daemon.client(timeout=5).status()
        latency = time.monotonic() - started
        assert status["version"]
        made = daemon.client().create(prompt="due during the flood")
        done = daemon.wait_pulse(made["pulse_id"], "completed", timeout=20)
        assert done["attempts"][0]["is_error"] is False
        assert flooder.poll() is None, "the flood ended before the checks"
    finally:
        out, _ = flooder.communicate(timeout=60)
    log = daemon.log()
    assert "Too many open files" not in log
    warnings = log.count("connection(s) refused or closed in the last minute")
    assert 1 <= warnings <= 2
    record(
        "faults",
        f"TCP flood by another user: {out.strip()} half-sent requests, daemon held to 1024 fds",
        f"owner's status over the Unix socket answered in {latency * 1000:.0f} ms; a due "
        f"pulse ran; {warnings} log line(s) about it",
    )


def test_headers_that_never_end_are_cut(daemon: Daemon) -> None:
    import socket

    conn = socket.create_connection(("127.0.0.1", daemon.port))
    try:
        conn.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")
        conn.settimeout(30)  # the header deadline is 10 s; a timeout here fails the test
        assert conn.recv(1) == b""
    finally:
        conn.close()


def test_a_chunked_upload_is_limited_like_a_plain_body(daemon: Daemon) -> None:
    import socket

    conn = socket.create_connection(("127.0.0.1", daemon.port))
    conn.settimeout(30)
    sent = 0
    answer = b""
    try:
        conn.sendall(
            b"POST /api/pulse/trigger HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
        closed = False
        end = time.monotonic() + 30
        try:
            while time.monotonic() < end:
                conn.sendall(chunk)
                sent += 0x10000
        except OSError:
            closed = True  # the daemon answered and closed: the upload stops there
        with contextlib.suppress(OSError):
            answer = conn.recv(4096)
    finally:
        conn.close()
    assert closed, f"the daemon read {sent} bytes for 30 s without closing"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert daemon.client().list(status=None)["total"] == 0


def test_accept_errors_are_logged_once_a_minute() -> None:
    import logging

    from reeve_lite.guard import AcceptErrorFilter

    accept_filter = AcceptErrorFilter()

    def record_of(msg: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, None)

    passed = [
        accept_filter.filter(record_of("socket.accept() out of system resource"))
        for _ in range(10_000)
    ]
    assert passed.count(True) == 1
    assert accept_filter.filter(record_of("Task exception was never retrieved"))
