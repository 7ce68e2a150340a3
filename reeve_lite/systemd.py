"""What the daemon needs of systemd: inherited sockets, notify messages, journald logging.

All of it degrades to nothing when systemd is not there: no `LISTEN_FDS`
means bind our own sockets, no `NOTIFY_SOCKET` means notifications are not
sent, no `JOURNAL_STREAM` means plain log lines with a time stamp.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping

import sdnotify

SD_LISTEN_FDS_START = 3
# syslog priorities by logging level, for journald's `<N>` line prefixes.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    25: 5,  # NOTICE
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def socket_activated(env: Mapping[str, str] | None = None) -> bool:
    """Whether systemd passed sockets to this process (`LISTEN_PID` is ours)."""
    env = os.environ if env is None else env
    return env.get("LISTEN_PID", "") == str(os.getpid())


def listen_sockets(env: Mapping[str, str] | None = None) -> dict[str, list[socket.socket]]:
    """Sockets passed by socket activation, by their `FileDescriptorName=`.

    Only trusted when `LISTEN_PID` is this process; the fds are made
    close-on-exec so that agent runs never inherit them.
    """
    env = os.environ if env is None else env
    if not socket_activated(env):
        return {}
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return {}
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    found: dict[str, list[socket.socket]] = {}
    for index in range(count):
        fd = SD_LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        name = names[index] if index < len(names) else "unknown"
        found.setdefault(name, []).append(socket.socket(fileno=fd))
    return found


def watchdog_period(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between `WATCHDOG=1` pings (half of `WATCHDOG_USEC`), or None when
    systemd watches nothing or watches another process (`WATCHDOG_PID`)."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID") or os.getpid())
    except ValueError:
        return None
    if usec <= 0 or pid != os.getpid():
        return None
    return usec / 2_000_000


class Notifier:
    """sd_notify messages; silent when there is no `NOTIFY_SOCKET`."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._sd = sdnotify.SystemdNotifier() if self.enabled else None

    def send(self, *lines: str) -> None:
        """Send `KEY=value` lines as one datagram."""
        if self._sd is not None:
            # sdnotify encodes latin-1 and drops what fails: keep it ASCII.
            text = "\n".join(lines).encode("ascii", "replace").decode("ascii")
            self._sd.notify(text)

    def ready(self, status: str) -> None:
        """The daemon serves requests."""
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """The configuration is being re-read (`READY=1` follows)."""
        self.send("RELOADING=1", "STATUS=reloading the configuration")

    def stopping(self) -> None:
        """The daemon is shutting down."""
        self.send("STOPPING=1", "STATUS=stopping")


JOURNAL_SOCKET = "/run/systemd/journal/socket"
MAX_JOURNAL_LINE = 16384


class JournalLines:
    """Agent output lines to the journal, tagged with their pulse (`journalctl -t
    reeve-pulse-42-1`, or `journalctl REEVE_PULSE_ID=42`), over journald's native
    protocol. Never blocks: a line the journal cannot take at once is dropped."""

    def __init__(
        self, identifier: str, fields: Mapping[str, str], path: str = JOURNAL_SOCKET
    ) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._path = path
        head = {"SYSLOG_IDENTIFIER": identifier, "PRIORITY": "6", **fields}
        self._head = b"".join(f"{k}={v}\n".encode() for k, v in head.items())
        self.dropped = 0

    def send(self, line: bytes) -> None:
        """One line of output (without its newline)."""
        text = line[:MAX_JOURNAL_LINE]
        # The binary-safe field form: a newline in the text cannot end the field.
        payload = self._head + b"MESSAGE\n" + len(text).to_bytes(8, "little") + text + b"\n"
        try:
            self._sock.sendto(payload, self._path)
        except OSError:
            self.dropped += 1

    def close(self) -> None:
        """Release the socket."""
        self._sock.close()


def journal_attached(env: Mapping[str, str] | None = None) -> bool:
    """True when stderr is the journal stream systemd gave us (`JOURNAL_STREAM`)."""
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (ValueError, OSError):
        return False


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = _PRIORITY.get(record.levelno, 6)
        # One entry per line; continuation lines keep the priority.
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def setup_logging(level: str, env: Mapping[str, str] | None = None) -> None:
    """Log to stderr: journald priority prefixes under systemd, time stamps otherwise."""
    handler = logging.StreamHandler(sys.stderr)
    if journal_attached(env):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiosqlite").setLevel(logging.INFO)  # its debug is every statement
