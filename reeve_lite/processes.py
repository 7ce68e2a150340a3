"""An attempt's processes: found by their environment, stopped with their groups.

Every agent run carries `REEVE_ATTEMPT_ID` and the daemon's `REEVE_LITE_SOCKET`
in its environment, and so does whatever it starts, even a helper that left
the process group with `setsid()`. That pair, read from `/proc`, is what finds
them: never a pid alone (pids are reused), never another daemon's agents.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)


def kill_tree(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False when it is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("not allowed to signal process group %d", pgid)
        return False
    return True


def process_runs_attempt(pid: int, attempt_id: int, socket: Path) -> bool:
    """True when process `pid` exists and was started for `attempt_id` by the
    daemon of `socket` (its environment says both), so that neither a reused pid
    nor another daemon's agent with the same attempt number is ever killed."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        f"REEVE_ATTEMPT_ID={attempt_id}".encode() in environ
        and f"REEVE_LITE_SOCKET={socket}".encode() in environ
    )


def processes_of_attempt(attempt_id: int, socket: Path) -> list[int]:
    """The processes started for `attempt_id` by the daemon of `socket` (the agent
    and its children), found by their environment: for an agent whose pid was never
    recorded (the daemon died between spawning it and writing its pid down)."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and process_runs_attempt(int(entry.name), attempt_id, socket)
    ]


def command_name(pid: int) -> str:
    """The process's command name (its pid when it cannot be read)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or str(pid)
    except OSError:
        return str(pid)


def stop_attempt_processes(attempt_id: int, socket: Path) -> int:
    """Kill every process started for `attempt_id` by the daemon of `socket`, each
    with its process group (a daemonized helper may have children of its own);
    how many were found. Logged, since a run should not leave any behind."""
    found = processes_of_attempt(attempt_id, socket)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            kill_tree(os.getpgid(pid))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if found:
        log.info(
            "attempt=%d: stopped %d process(es) it left behind: %s",
            attempt_id,
            len(found),
            ", ".join(command_name(pid) for pid in found[:5]),
        )
    return len(found)
