"""The daemon's side of systemd's protocols, without a booted systemd: socket
activation through `systemd-socket-activate`, notify messages read from a real
datagram socket, idle exit, reload, and journald's priority prefixes."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reeve_lite.client import ApiFailure, Client
from tests.conftest import Daemon, FakeAgent, wait_for

ACTIVATE = shutil.which("systemd-socket-activate")
needs_activate = pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate missing")


@dataclass
class NotifySocket:
    """A real NOTIFY_SOCKET: a datagram socket that records what the daemon sends."""

    path: Path
    sock: socket.socket = field(init=False)
    received: list[tuple[float, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))

    def wait(self, predicate: Callable[[list[str]], bool], timeout: float = 10.0) -> list[str]:
        """The first message (since the last one read) for which `predicate` holds."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no such notify message; got {self.received}") from None
            lines = data.decode().split("\n")
            self.received.append((time.monotonic(), lines))
            if predicate(lines):
                return lines

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(tmp_path / "notify.sock")
    yield listener
    listener.close()


def test_ready_status_watchdog_and_stopping(make_daemon, notify: NotifySocket) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
    ready = notify.wait(lambda m: "READY=1" in m)
    assert "STATUS=0 pending, 0 running" in ready
    daemon.client().create(prompt="later", scheduled_at="in 1 hour", priority="low")
    status = notify.wait(lambda m: any(line.startswith("STATUS=1 pending") for line in m))
    assert any(
        line.startswith("STATUS=1 pending, next in ") and line.endswith("(low), 0 running")
        for line in status
    )
    pings = [notify.wait(lambda m: "WATCHDOG=1" in m) for _ in range(3)]
    assert all(any(line.startswith("STATUS=") for line in ping) for ping in pings)
    stamps = [t for t, m in notify.received if "WATCHDOG=1" in m]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # Half of WATCHDOG_USEC; generous bounds, only to show the period is the right one.
    assert all(0.3 < gap < 1.5 for gap in gaps), gaps
    daemon.stop()
    assert notify.wait(lambda m: "STOPPING=1" in m)


def test_no_watchdog_pings_for_another_pid(make_daemon, notify: NotifySocket) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    notify.wait(lambda m: "READY=1" in m)
    time.sleep(0.6)
    daemon.stop()
    notify.wait(lambda m: "STOPPING=1" in m)
    assert not any("WATCHDOG=1" in m for _, m in notify.received)


def test_sighup_rereads_the_configuration(
    make_daemon: Callable[..., Daemon],
    notify: NotifySocket,
    tmp_path: Path,
) -> None:
    conf = tmp_path / "reeve-lite.conf"
    conf.write_text("REEVE_LITE_MAX_CONCURRENT=1\n")
    daemon = make_daemon(NOTIFY_SOCKET=str(notify.path), REEVE_LITE_CONFIG=str(conf))
    notify.wait(lambda m: "READY=1" in m)
    pulse = daemon.client().create(prompt="stays", scheduled_at="in 1 hour")
    assert daemon.client().status()["max_concurrent"] == 1
    conf.write_text("REEVE_LITE_MAX_CONCURRENT=3\nREEVE_LITE_SOCKET_MODE=0640\n")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    notify.wait(lambda m: "RELOADING=1" in m)
    notify.wait(lambda m: "READY=1" in m)
    assert daemon.client().status()["max_concurrent"] == 3
    assert daemon.client().get(pulse["pulse_id"])["status"] == "pending"
    assert "reload: socket_mode change only with a restart" in daemon.log()
    # A broken file keeps the running configuration.
    conf.write_text("REEVE_LITE_MAX_CONCURRENT=lots\n")
    daemon.proc.send_signal(signal.SIGHUP)
    notify.wait(lambda m: "READY=1" in m)
    assert daemon.client().status()["max_concurrent"] == 3
    assert "reload failed: invalid REEVE_LITE_MAX_CONCURRENT in" in daemon.log()


def activated(
    daemon: Daemon,
    *,
    tcp: bool,
    extra: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """The daemon behind `systemd-socket-activate`, which passes it the sockets
    (named like the units' FileDescriptorName=) on the first connection."""
    assert ACTIVATE is not None
    env = daemon.env() | (extra or {})
    env.pop("REEVE_LITE_LISTEN")
    argv = [ACTIVATE, "-l", str(daemon.socket)]
    names = "api"
    if tcp:
        argv += ["-l", f"127.0.0.1:{daemon.port}"]
        names = "api:tcp"
    argv.append(f"--fdname={names}")
    for key, value in env.items():
        if key.startswith(("REEVE_LITE_", "FAKE_HAPI", "NOTIFY_SOCKET", "WATCHDOG_")):
            argv.append(f"-E{key}={value}")
    argv += [sys.executable, "-m", "reeve_lite.cli", "serve"]
    daemon.socket.parent.mkdir(parents=True, exist_ok=True)
    log = open(daemon.tmp / "activated.log", "wb")  # noqa: SIM115
    daemon.logs.append(log.name)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    wait_for(daemon.socket.exists, 10, "systemd-socket-activate to listen")
    if tcp:
        # The listeners are bound one after the other: the Unix socket existing
        # does not mean the TCP port is listening yet.
        wait_for(lambda: listening(daemon.port), 10, "the TCP listener")
    return proc


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port, read from /proc (a probe
    connection would itself trigger the activation)."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":
            return True
    return False


@pytest.fixture
def bare_daemon(tmp_path: Path, fake_agent: FakeAgent) -> Daemon:
    daemon = Daemon(tmp_path / "d", fake_agent, {})
    daemon.tmp.mkdir()
    return daemon


@needs_activate
def test_first_request_on_the_unix_socket_is_answered(bare_daemon: Daemon) -> None:
    proc = activated(bare_daemon, tcp=False)
    try:
        # The very first connection starts the daemon; its request must not be lost.
        created = bare_daemon.client().create(prompt="first", scheduled_at="in 1 hour")
        assert created["pulse_id"] == 1
        assert bare_daemon.client().status()["counts"]["pending"] == 1
        assert "using 1 socket(s) from systemd: api" in bare_daemon.log()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


@needs_activate
def test_first_request_on_tcp_is_answered(bare_daemon: Daemon) -> None:
    proc = activated(bare_daemon, tcp=True)
    try:
        assert bare_daemon.tcp_client().status()["version"]
        anonymous = Client(socket_path=bare_daemon.socket, url=bare_daemon.url)
        assert anonymous.health()["ok"] is True
        with pytest.raises(ApiFailure) as err:
            anonymous.status()
        assert err.value.status == 401
        assert bare_daemon.client().health()["ok"] is True
        assert "using 2 socket(s) from systemd: api, tcp" in bare_daemon.log()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    # The inherited socket file belongs to systemd: the daemon must not remove it.
    assert bare_daemon.socket.exists()


@needs_activate
def test_activated_tcp_without_a_token_refuses_and_says_why(bare_daemon: Daemon) -> None:
    proc = activated(bare_daemon, tcp=True, extra={"REEVE_LITE_API_TOKEN": ""})
    try:
        anonymous = Client(socket_path=bare_daemon.socket, url=bare_daemon.url)
        assert anonymous.health()["ok"] is True
        with pytest.raises(ApiFailure) as err:
            bare_daemon.tcp_client().status()
        assert err.value.status == 401
        assert "systemd passed a TCP socket but no API token is set" in bare_daemon.log()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


@needs_activate
def test_idle_exit_only_with_nothing_pending(bare_daemon: Daemon) -> None:
    proc = activated(bare_daemon, tcp=False, extra={"REEVE_LITE_IDLE_EXIT": "1s"})
    try:
        bare_daemon.client().create(prompt="keeps me up", scheduled_at="in 1 hour")
        time.sleep(2.5)
        assert proc.poll() is None  # a pending pulse keeps the daemon up
        bare_daemon.client().cancel(1)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "idle for 1s with nothing pending: exiting" in bare_daemon.log()


def test_hand_started_daemon_never_idles_out(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(REEVE_LITE_IDLE_EXIT="1s")
    time.sleep(2)
    assert daemon.proc.poll() is None
    assert daemon.client().health()["ok"]


def test_journal_priorities_when_stderr_is_the_journal(
    tmp_path: Path, fake_agent: FakeAgent
) -> None:
    daemon = Daemon(tmp_path / "d", fake_agent, {"REEVE_LITE_LOG_LEVEL": "info"})
    daemon.socket.parent.mkdir(parents=True)
    log_path = daemon.tmp / "journal.log"
    with open(log_path, "wb") as stderr:
        st = os.fstat(stderr.fileno())
        env = daemon.env() | {
            "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
            "REEVE_LITE_LOG_LEVEL": "info",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "reeve_lite.cli", "serve"],
            env=env,
            stderr=stderr,
            stdout=subprocess.DEVNULL,
        )
    try:
        wait_for(lambda: daemon.socket.exists(), 15, "the daemon to listen")
        client = daemon.client()
        wait_for(lambda: _healthy(client), 15, "the daemon to answer")
        pulse = client.create(prompt="doomed [exit 2]", max_retries=0)
        daemon.proc = proc
        daemon.wait_pulse(pulse["pulse_id"], "failed")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    lines = log_path.read_text().splitlines()
    assert any(line.startswith("<6>reeve_lite.daemon: reeve-lite") for line in lines)
    failed = [line for line in lines if f"pulse={pulse['pulse_id']} attempt=1 failed" in line]
    assert failed
    assert failed[0].startswith("<4>")
    assert all(line[:1] == "<" and line[2:3] == ">" for line in lines), lines


def _healthy(client: Client) -> bool:
    try:
        return bool(client.health()["ok"])
    except Exception:
        return False


def test_plain_log_lines_without_the_journal(daemon: Daemon) -> None:
    # The daemon may answer its first request just before it logs that it serves.
    [line] = wait_for(
        lambda: [line for line in daemon.log().splitlines() if "serving on" in line],
        10,
        "the 'serving on' line",
    )
    assert line[:4].isdigit()  # a time stamp, no priority prefix
    assert " INFO reeve_lite.daemon: reeve-lite" in line


def parse_native(datagram: bytes) -> dict[str, bytes]:
    """journald's native protocol: KEY=value lines, or KEY\\n<64-bit length><data>\\n."""
    fields: dict[str, bytes] = {}
    rest = datagram
    while rest:
        head, _, rest = rest.partition(b"\n")
        if b"=" in head:
            key, _, value = head.partition(b"=")
            fields[key.decode()] = value
        else:
            size = int.from_bytes(rest[:8], "little")
            fields[head.decode()] = rest[8 : 8 + size]
            rest = rest[8 + size + 1 :]
    return fields


def test_agent_lines_reach_the_journal_tagged_with_their_pulse(tmp_path: Path) -> None:
    from reeve_lite.systemd import MAX_JOURNAL_LINE, JournalLines

    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(tmp_path / "journal.sock"))
    journal.settimeout(5)
    lines = JournalLines(
        "reeve-pulse-42-1", {"REEVE_PULSE_ID": "42"}, path=str(tmp_path / "journal.sock")
    )
    try:
        lines.send(b'{"type":"result","result":"two\\nlines"}')
        lines.send(b"multi\nline")
        lines.send(b"x" * (MAX_JOURNAL_LINE + 100))
        first, second, third = (parse_native(journal.recv(1 << 20)) for _ in range(3))
    finally:
        lines.close()
        journal.close()
    assert first["SYSLOG_IDENTIFIER"] == b"reeve-pulse-42-1"
    assert first["REEVE_PULSE_ID"] == b"42"
    assert first["PRIORITY"] == b"6"
    assert first["MESSAGE"] == b'{"type":"result","result":"two\\nlines"}'
    assert second["MESSAGE"] == b"multi\nline"
    assert len(third["MESSAGE"]) == MAX_JOURNAL_LINE


def test_a_missing_journal_drops_lines_without_blocking(tmp_path: Path) -> None:
    from reeve_lite.systemd import JournalLines

    lines = JournalLines("reeve-pulse-1-1", {}, path=str(tmp_path / "absent.sock"))
    lines.send(b"nobody listens")
    lines.close()
    assert lines.dropped == 1
