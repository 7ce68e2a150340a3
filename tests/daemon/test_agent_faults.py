"""Agent faults end to end, in the real daemon: each ends as a recorded attempt
with a clear reason, leaves no process behind, and the queue goes on. (The
executor's own tests cover the same faults one level down.)"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, wait_for
from tests.report import record


def _gone(pid: int) -> bool:
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


@dataclass(frozen=True)
class Fault:
    """A way the agent can fail, and the reason the attempt must carry."""

    check: str  # the summary row
    prompt: str
    reason: str  # the attempt's error starts with this
    settings: tuple[tuple[str, str], ...] = ()
    broken_command: str | None = None  # "missing" or "not-executable": every run fails
    every_run: bool = False  # the next pulse fails the same way


FAULTS = [
    Fault(
        "agent command missing",
        "go",
        "agent command not found: '",
        broken_command="missing",
    ),
    Fault(
        "agent command not executable",
        "go",
        "agent command not executable: '",
        broken_command="not-executable",
    ),
    Fault("agent crashes (SIGKILL)", "[crash]", "hapi killed by signal SIGKILL"),
    Fault(
        "agent hangs past the timeout, with a grandchild",
        "[grandchild] [sleep 60]",
        "timed out after 1s; the run's processes were killed",
        settings=(("REEVE_LITE_AGENT_TIMEOUT", "1s"),),
    ),
    Fault(
        "agent reports an API refusal (is_error result, exit 1)",
        "[is_error]",
        "hapi exited with status 1: Credit balance is too low",
    ),
    Fault(
        "hapi without its token",
        "go",
        "hapi exited with status 1: error: CLI_API_TOKEN is required. Set it via environment",
        settings=(("CLI_API_TOKEN", ""),),
        every_run=True,
    ),
]


def _command(tmp_path: Path, broken: str) -> str:
    if broken == "missing":
        return str(tmp_path / "nowhere" / "hapi")
    script = tmp_path / "hapi"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)  # no execute bit: refused even to root
    return str(script)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.check for f in FAULTS])
def test_agent_fault_is_a_recorded_failure_and_the_queue_goes_on(
    make_daemon: Callable[..., Daemon], tmp_path: Path, fault: Fault
) -> None:
    settings = dict(fault.settings)
    if fault.broken_command is not None:
        settings["REEVE_LITE_AGENT"] = "command"
        settings["REEVE_LITE_AGENT_COMMAND"] = _command(tmp_path, fault.broken_command)
    daemon = make_daemon(**settings)
    client = daemon.client()
    faulty = client.create(prompt=fault.prompt, priority="high", max_retries=0)
    following = client.create(prompt="the next pulse", priority="normal", max_retries=0)

    failed = daemon.wait_pulse(faulty["pulse_id"], "failed", timeout=30)
    [attempt] = failed["attempts"]
    assert attempt["is_error"] is True
    assert attempt["finished_at"] is not None
    assert attempt["error"].startswith(fault.reason), attempt["error"]
    assert failed["last_error"] == attempt["error"]
    assert fault.reason in daemon.log()  # the log says it too

    # The queue goes on: the next pulse runs (with a broken command it fails the same way).
    after = daemon.wait_pulse(
        following["pulse_id"],
        "failed" if fault.broken_command or fault.every_run else "completed",
        timeout=30,
    )
    assert len(after["attempts"]) == 1

    # Nothing the run started is left: the agent, and what it left in its group.
    calls = [c for c in daemon.agent.calls() if c["pulse_id"] == str(faulty["pulse_id"])]
    assert len(calls) == (0 if fault.broken_command or fault.every_run else 1)
    for call in calls:
        wait_for(partial(_gone, int(call["pid"])), 5, "the agent to be gone")
    grandchild = daemon.agent.directory / f"grandchild-{faulty['pulse_id']}"
    if "[grandchild]" in fault.prompt:
        pid = int(grandchild.read_text())
        wait_for(lambda: not _alive(pid), 5, "the grandchild to be gone")
    reason = attempt["error"].replace(f"{tmp_path}/", "")
    record("agent faults", fault.check, f"failed attempt recorded: {reason}; the queue went on")


def test_grandchildren_of_a_successful_run_are_killed(daemon: Daemon) -> None:
    pulse = daemon.client().create(prompt="[grandchild] [sleep 0.5]")
    done = daemon.wait_pulse(pulse["pulse_id"], "completed")
    pid = int((daemon.agent.directory / f"grandchild-{pulse['pulse_id']}").read_text())
    wait_for(lambda: not _alive(pid), 5, "the grandchild to be gone")
    assert done["attempts"][0]["is_error"] is False
    record(
        "agent faults",
        "agent leaves a grandchild behind",
        "the run succeeded; its grandchild (in the agent's process group) was killed with it",
    )


def test_a_detached_helper_of_a_run_is_stopped_with_its_attempt(daemon: Daemon) -> None:
    # hapi leaves `hapi runner start-sync` behind: its own session, parent pid 1.
    pulse = daemon.client().create(prompt="[daemonize] go")
    done = daemon.wait_pulse(pulse["pulse_id"], "completed")
    pid = int((daemon.agent.directory / f"daemon-{pulse['pulse_id']}").read_text())
    wait_for(lambda: not _alive(pid), 5, "the detached helper to be gone")
    assert done["attempts"][0]["is_error"] is False
    assert "stopped 1 process(es) it left behind" in daemon.log()
    record(
        "agent faults",
        "agent leaves a detached helper (setsid, parent pid 1, as hapi's runner)",
        "found by the attempt id in its environment and stopped when the attempt ended",
    )


def test_a_100_mb_flood_keeps_the_tail_in_bounded_memory(
    make_daemon: Callable[..., Daemon],
) -> None:
    daemon = make_daemon(REEVE_LITE_OUTPUT_TAIL_BYTES="16384")
    assert daemon.proc is not None
    client = daemon.client()
    # A first ordinary run, so the baseline includes everything a run needs.
    daemon.wait_pulse(client.create(prompt="warm up")["pulse_id"], "completed")
    before = _peak_rss_kib(daemon.proc.pid)
    flood: dict[str, Any] = client.create(prompt="[spam 100]")
    done = daemon.wait_pulse(flood["pulse_id"], "completed", timeout=60)
    after = _peak_rss_kib(daemon.proc.pid)
    [attempt] = done["attempts"]
    # The success result comes after the 100 MiB of noise in the same pipe: the
    # daemon read all of it to get there.
    assert attempt["result"] == "done: [spam 100]"
    tail = attempt["output_tail"]
    assert len(tail.encode()) <= 16384
    assert tail.rstrip().endswith("}")  # the result event is the last line
    assert "x" * 1000 in tail  # the noise before it is in the tail too
    growth_mib = (after - before) / 1024
    print(f"daemon peak RSS {before / 1024:.1f} MiB before the flood, {after / 1024:.1f} after")
    assert growth_mib < 25, f"the daemon's peak memory grew {growth_mib:.1f} MiB"
    record(
        "agent faults",
        "agent prints 100 MiB",
        f"daemon peak RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB; "
        f"16 KiB tail kept, result parsed",
    )
