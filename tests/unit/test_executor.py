"""The executor against real subprocesses: the fake agent, and the ways a run can fail."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from reeve_lite.agent import Brief, StreamState, compose_prompt
from reeve_lite.config import Settings
from reeve_lite.executor import Executor, RunReport
from reeve_lite.processes import process_runs_attempt
from reeve_lite.runners import (
    AttemptRef,
    Manager,
    escape_for_unit,
    scope_argv,
    service_argv,
    unenforced_limits,
)
from tests.conftest import FakeAgent, wait_for
from tests.unit.test_scheduler import settings_for


def test_sticky_notes_are_added_under_reminders() -> None:
    assert compose_prompt("Do it", []) == "Do it"
    assert compose_prompt("Do it", ["a", "b"]) == "Do it\n\nReminders:\n- a\n- b"


def test_stream_parser_takes_session_result_and_cost_and_skips_noise() -> None:
    state = StreamState()
    for line in [
        b"\x1b[1mhapi\x1b[0m banner",
        b'{"type":"system","subtype":"init","session_id":"s1","tools":[]}',
        b"{not json",
        b"[1, 2]",
        b'{"type":"assistant","message":{"content":[{"type":"text","text":"hi"}]}}',
        b'{"type":"result","subtype":"success","is_error":false,"session_id":"s2",'
        b'"result":"all done","num_turns":4,"total_cost_usd":0.25}',
    ]:
        state.feed(line)
    assert (state.session_id, state.is_error, state.result) == ("s2", False, "all done")
    assert (state.cost_usd, state.num_turns) == (0.25, 4)


def test_stream_parser_reads_error_results() -> None:
    state = StreamState()
    state.feed(b'{"type":"system","subtype":"init","session_id":"s1"}')
    state.feed(
        b'{"type":"result","subtype":"error_max_turns","is_error":true,'
        b'"errors":["Error: too many turns"],"num_turns":true}'
    )
    assert state.is_error is True
    assert state.errors == ["Error: too many turns"]
    assert state.session_id == "s1"
    assert state.num_turns is None  # a bool is not a count
    bare = StreamState()
    bare.feed(b'{"type":"result","subtype":"error_during_execution"}')
    assert bare.is_error
    assert bare.errors == ["error_during_execution"]


def test_scope_prefix_carries_the_limits(tmp_path: Path, fake_agent: FakeAgent) -> None:
    settings = settings_for(
        tmp_path,
        fake_agent,
        REEVE_LITE_SCOPE_MEMORY_MAX="512M",
        REEVE_LITE_SCOPE_CPU_QUOTA="50%",
        REEVE_LITE_SCOPE_TASKS_MAX="64",
    )
    argv = scope_argv(settings, user=True, unit="reeve-pulse-4-2.scope")
    assert argv[:3] == ["systemd-run", "--user", "--scope"]
    assert "--unit=reeve-pulse-4-2.scope" in argv
    assert {
        "--property=MemoryMax=512M",
        "--property=CPUQuota=50%",
        "--property=TasksMax=64",
    } <= set(argv)
    assert argv[-1] == "--"


def test_executor_on_without_systemd_is_a_clear_error(
    tmp_path: Path, fake_agent: FakeAgent
) -> None:
    if Path("/run/systemd/system").is_dir():
        pytest.skip("systemd is running here; the error is for machines without it")
    with pytest.raises(RuntimeError, match="no systemd manager"):
        Executor(settings_for(tmp_path, fake_agent, REEVE_LITE_EXECUTOR="on"))


async def run(
    settings: Settings,
    prompt: str,
    *,
    env: dict[str, str] | None = None,
    stop: asyncio.Event | None = None,
    session: str | None = None,
    on_spawn: Callable[[int, float], Awaitable[None]] | None = None,
    delay: float = 0.0,
) -> RunReport:
    async def ignore(_pid: int, _epoch: float) -> None:
        pass

    executor = Executor(settings, env=env)
    return await executor.run(
        AttemptRef(pulse_id=7, attempt_id=70, number=1),
        Brief(prompt, session),
        stop=stop or asyncio.Event(),
        on_spawn=on_spawn or ignore,
        delay=delay,
    )


@pytest.fixture
def agent_env(fake_agent: FakeAgent) -> dict[str, str]:
    return dict(os.environ) | fake_agent.env()


@pytest.mark.parametrize(
    "prompt",
    [
        "-v --help",
        "$(touch /tmp/pwned) `id` ; rm -rf ~ | cat && echo '\"' > /dev/null",
        "line one\nline two\n\n-- not the end",
        "x" * 32768,
        "--resume evil",
    ],
)
async def test_hostile_prompts_arrive_on_stdin_byte_for_byte(
    tmp_path: Path,
    fake_agent: FakeAgent,
    agent_env: dict[str, str],
    prompt: str,
) -> None:
    report = await run(settings_for(tmp_path, fake_agent), prompt, env=agent_env)
    assert report.failed is False, report.error
    [call] = fake_agent.calls()
    assert call["prompt"] == prompt
    # Not in argv (nor in `ps`): hapi's own flags come last, as it appends them.
    assert prompt not in call["argv"]
    assert call["argv"][-4:] == ["--settings", call["argv"][-3], "--add-dir", "/tmp/hapi-blobs"]
    assert call["resume"] is None


async def test_a_command_gets_the_prompt_after_the_end_of_flags(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    settings = settings_for(
        tmp_path, fake_agent, REEVE_LITE_AGENT="auto", REEVE_LITE_AGENT_COMMAND=fake_agent.command
    )
    report = await run(settings, "-rf /", env=agent_env)
    assert report.failed is False, report.error
    [call] = fake_agent.calls()
    received = call["received"]
    assert received[-6:] == [
        "--print",
        "--output-format",
        "stream-json",
        "--verbose",
        "--",
        "-rf /",
    ]
    assert call["prompt"] == "-rf /"


async def test_resume_passes_the_session(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    fake_agent.add_session("abc")
    report = await run(settings_for(tmp_path, fake_agent), "go", env=agent_env, session="abc")
    assert report.stream.session_id == "abc"
    assert fake_agent.calls()[0]["resume"] == "abc"
    assert fake_agent.transcript("abc") == ["go"]


async def test_a_vanished_session_is_reported_as_gone(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    report = await run(settings_for(tmp_path, fake_agent), "go", env=agent_env, session="gone-1")
    assert report.failed
    assert report.session_gone
    assert report.error is not None
    assert "No conversation found with session ID: gone-1" in report.error


async def test_each_run_gets_the_daemons_mcp_server_and_only_its_tools(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    settings = settings_for(tmp_path, fake_agent)
    await run(settings, "go", env=agent_env)
    [call] = fake_agent.calls()
    assert call["allowed"] == ["mcp__reeve-lite"]
    [config] = call["mcp_config"]
    server = json.loads(config)["mcpServers"]["reeve-lite"]
    assert server["args"] == ["-I", "-m", "reeve_lite.cli", "mcp"]
    assert server["env"]["REEVE_LITE_SOCKET"] == str(settings.socket)
    assert server["env"]["REEVE_PULSE_ID"] == "7"
    off = settings_for(tmp_path, fake_agent, REEVE_LITE_AGENT_MCP="off")
    await run(off, "go", env=agent_env)
    assert (fake_agent.calls()[1]["allowed"], fake_agent.calls()[1]["mcp_config"]) == ([], [])


async def test_unit_variables_and_secrets_do_not_reach_the_agent(
    tmp_path: Path,
    fake_agent: FakeAgent,
    agent_env: dict[str, str],
) -> None:
    env = agent_env | {
        "NOTIFY_SOCKET": "/run/x",
        "WATCHDOG_USEC": "1",
        "WATCHDOG_PID": "1",
        "LISTEN_FDS": "1",
        "LISTEN_PID": "1",
        "LISTEN_FDNAMES": "api",
        "REEVE_LITE_API_TOKEN": "secret",
        "REEVE_LITE_TELEGRAM_TOKEN": "123:bot",
        "REEVE_LITE_TOKEN_FILE": "/etc/reeve-lite/token",
        "CREDENTIALS_DIRECTORY": "/run/credentials/reeve-lite.service",
        "ANTHROPIC_API_KEY": "the user's own",
    }
    await run(settings_for(tmp_path, fake_agent), "go", env=env)
    [call] = fake_agent.calls()
    assert call["leaked"] == []
    assert (call["pulse_id"], call["attempt_id"]) == ("7", "70")
    assert call["has_api_key"]  # the agent's own key is the user's, and stays


async def test_missing_agent_is_a_clear_failure(tmp_path: Path, fake_agent: FakeAgent) -> None:
    settings = settings_for(
        tmp_path,
        fake_agent,
        REEVE_LITE_AGENT="command",
        REEVE_LITE_AGENT_COMMAND="/nonexistent/hapi",
    )
    report = await run(settings, "go")
    assert report.failed
    assert report.exit_code is None
    assert report.error == (
        "agent command not found: '/nonexistent/hapi' is not on the daemon's PATH "
        "(install it, or set REEVE_LITE_AGENT_COMMAND)"
    )


async def test_agent_that_is_not_executable(tmp_path: Path, fake_agent: FakeAgent) -> None:
    script = tmp_path / "hapi"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    settings = settings_for(
        tmp_path, fake_agent, REEVE_LITE_AGENT="command", REEVE_LITE_AGENT_COMMAND=str(script)
    )
    report = await run(settings, "go")
    if os.geteuid() == 0 and os.access(script, os.X_OK):
        pytest.skip("root may execute anything here")
    assert report.failed
    assert report.error is not None
    assert "not executable" in report.error


async def test_crash_is_reported_with_the_signal(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    report = await run(settings_for(tmp_path, fake_agent), "[crash]", env=agent_env)
    assert report.failed
    assert report.exit_code == -9
    assert report.error is not None
    assert report.error.startswith("hapi killed by signal SIGKILL")
    assert len(fake_agent.calls()) == 1
    # Known from init, before the crash.
    assert report.stream.session_id == fake_agent.transcript_ids()[0]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _group_members(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().split(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


async def test_timeout_kills_the_whole_tree(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    settings = settings_for(tmp_path, fake_agent, REEVE_LITE_AGENT_TIMEOUT="1s")
    report = await run(settings, "[grandchild] [sleep 60]", env=agent_env)
    assert report.timed_out
    assert report.failed
    assert report.error == "timed out after 1s; the run's processes were killed"
    pid = fake_agent.calls()[0]["pid"]
    wait_for(lambda: not _group_members(pid), 5, "the process group to be gone")


async def test_grandchildren_left_behind_are_killed(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    report = await run(settings_for(tmp_path, fake_agent), "[grandchild]", env=agent_env)
    assert report.failed is False
    assert (fake_agent.directory / "grandchild-7").exists()
    pid = fake_agent.calls()[0]["pid"]
    wait_for(lambda: not _group_members(pid), 5, "the grandchild to be gone")


async def test_flood_of_output_keeps_only_the_tail(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    settings = settings_for(tmp_path, fake_agent, REEVE_LITE_OUTPUT_TAIL_BYTES="4096")
    report = await run(settings, "[spam 20]", env=agent_env)
    assert report.failed is False
    assert len(report.output_tail.encode()) <= 4096
    assert report.output_tail.rstrip().endswith("}")  # the result event is the last line
    assert report.stream.result is not None
    assert report.stream.result.startswith("done:")


async def test_stop_event_ends_the_run(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(settings_for(tmp_path, fake_agent), "[sleep 60]", env=agent_env, stop=stop)
    )
    await asyncio.to_thread(wait_for, fake_agent.calls, 10, "the agent to start")
    stop.set()
    report = await task
    assert report.stopped
    assert report.failed
    assert not _alive(fake_agent.calls()[0]["pid"])


async def test_banner_before_the_json_is_tolerated(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    report = await run(settings_for(tmp_path, fake_agent), "[banner] hi", env=agent_env)
    assert report.failed is False
    assert report.stream.cost_usd == pytest.approx(0.0123)
    assert "hapi v0.0-fake" in report.output_tail


async def test_deeply_nested_json_line_is_skipped(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    report = await run(settings_for(tmp_path, fake_agent), "[nested] hi", env=agent_env)
    assert report.failed is False, report.error
    assert report.stream.result == "done: [nested] hi"


async def test_unusable_desk_is_a_clear_failure(tmp_path: Path, fake_agent: FakeAgent) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = settings_for(tmp_path, fake_agent, REEVE_LITE_DESK=str(blocker / "desk"))
    report = await run(settings, "go")
    assert report.failed
    assert report.error is not None
    assert report.error.startswith(f"cannot use the Desk directory '{blocker / 'desk'}'")
    assert fake_agent.calls() == []


async def test_stop_before_the_due_instant_spawns_nothing(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    stop = asyncio.Event()

    async def on_spawn(pid: int, epoch: float) -> None:
        raise AssertionError("spawned after stop")

    task = asyncio.create_task(
        run(
            settings_for(tmp_path, fake_agent),
            "go",
            env=agent_env,
            stop=stop,
            on_spawn=on_spawn,
            delay=5.0,
        )
    )
    await asyncio.sleep(0.05)
    stop.set()
    report = await task
    assert report.stopped
    assert fake_agent.calls() == []


async def test_failing_on_spawn_still_reaps_the_agent(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    pids: list[int] = []

    async def on_spawn(pid: int, epoch: float) -> None:
        pids.append(pid)
        raise RuntimeError("database gone")

    with pytest.raises(RuntimeError, match="database gone"):
        await run(
            settings_for(tmp_path, fake_agent), "[sleep 30]", env=agent_env, on_spawn=on_spawn
        )
    assert not _alive(pids[0])


def test_service_prefix_passes_variables_by_name_only(
    tmp_path: Path, fake_agent: FakeAgent
) -> None:
    settings = settings_for(tmp_path, fake_agent, REEVE_LITE_AGENT_TIMEOUT="90s")
    argv = service_argv(
        settings,
        unit="reeve-pulse-4-2.service",
        names=["ANTHROPIC_API_KEY", "REEVE_PULSE_ID"],
        timeout=90,
    )
    assert argv[:2] == ["systemd-run", "--user"]
    assert {
        "--wait",
        "--pipe",
        "--collect",
        "--property=Type=exec",
        "--property=RuntimeMaxSec=90",
        f"--property=WorkingDirectory={settings.desk}",
        "--setenv=ANTHROPIC_API_KEY",
        "--setenv=REEVE_PULSE_ID",
    } <= set(argv)
    assert not any(
        "=" in arg.removeprefix("--setenv=") for arg in argv if arg.startswith("--setenv=")
    )
    assert argv[-1] == "--"


def test_dollars_are_escaped_for_a_transient_service() -> None:
    assert escape_for_unit(["hapi", "cost $5 and $HOME", "$$"]) == [
        "hapi",
        "cost $$5 and $$HOME",
        "$$$$",
    ]


def test_limits_without_a_controller_are_reported(tmp_path: Path, fake_agent: FakeAgent) -> None:
    settings = settings_for(tmp_path, fake_agent, REEVE_LITE_SCOPE_CPU_QUOTA="")
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io pids\n")
    assert unenforced_limits(settings, Manager("system"), root) == ["scope_memory_max"]
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert unenforced_limits(settings, Manager("system"), root) == []
    # No unified hierarchy at all: nothing can be promised.
    assert unenforced_limits(settings, Manager("user"), tmp_path / "none") == [
        "scope_memory_max",
        "scope_tasks_max",
    ]


async def test_an_orphan_without_a_recorded_pid_is_found_by_its_attempt(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    # An agent spawned just before the daemon died: its pid was never written down.
    # Beside it, another daemon's agent that happens to run an attempt 4711 too.
    settings = settings_for(tmp_path, fake_agent)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours, theirs = (
        subprocess.Popen(
            sleeper,
            env=agent_env | {"REEVE_ATTEMPT_ID": "4711", "REEVE_LITE_SOCKET": str(socket)},
            start_new_session=True,
        )
        for socket in (settings.socket, tmp_path / "another-daemon.sock")
    )
    try:
        executor = Executor(settings, env=agent_env)
        mine, other = AttemptRef(7, 4711, 1), AttemptRef(7, 4712, 1)
        for environ in (Path(f"/proc/{p.pid}/environ") for p in (ours, theirs)):
            wait_for(environ.read_bytes, 5, "the environment")
        assert await executor.orphan_running(mine)
        assert not await executor.orphan_running(other)
        assert await executor.stop_orphan(mine)
        assert ours.wait(timeout=5) == -9
        assert not await executor.orphan_running(mine)
        assert theirs.poll() is None, "another daemon's agent was killed"
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()


async def test_an_orphan_with_its_pid_is_stopped_with_what_it_detached(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    # The agent's pid was recorded, but it had detached a helper with setsid()
    # (as hapi's runner is): both are gone once the orphan is stopped.
    settings = settings_for(tmp_path, fake_agent)
    helper_pid = tmp_path / "helper.pid"
    script = (
        "import subprocess, sys, time; "
        "h = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
        "start_new_session=True); "
        f"open({str(helper_pid)!r}, 'w').write(str(h.pid)); time.sleep(60)"
    )
    env = agent_env | {"REEVE_ATTEMPT_ID": "4711", "REEVE_LITE_SOCKET": str(settings.socket)}
    agent = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    try:
        helper = int(wait_for(lambda: helper_pid.exists() and helper_pid.read_text(), 5, "helper"))
        assert os.getpgid(helper) != os.getpgid(agent.pid)  # out of the agent's group
        executor = Executor(settings, env=agent_env)
        assert await executor.stop_orphan(AttemptRef(7, 4711, 1, pid=agent.pid))
        assert agent.wait(timeout=5) == -9
        assert not process_runs_attempt(helper, 4711, settings.socket), "the helper still runs"
    finally:
        agent.kill()
        agent.wait()


async def test_a_delayed_run_never_starts_before_its_instant(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    # The run wakes early and yields until the instant: never a spawn before it.
    settings = settings_for(tmp_path, fake_agent)
    for delay in (0.0005, 0.002, 0.0043, 0.02):
        spawned: list[float] = []

        async def note(_pid: int, epoch: float, into: list[float] = spawned) -> None:
            into.append(epoch)

        instant = time.time() + delay
        report = await run(settings, "hello", env=agent_env, on_spawn=note, delay=delay)
        assert not report.failed
        assert spawned[0] >= instant


async def test_a_helper_that_left_the_process_group_is_stopped_with_the_attempt(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    # As hapi's runner does: double fork, setsid(), parent pid 1, same environment.
    report = await run(settings_for(tmp_path, fake_agent), "[daemonize] go", env=agent_env)
    assert report.failed is False, report.error
    helper = int((fake_agent.directory / "daemon-7").read_text())
    wait_for(lambda: not _alive(helper), 5, "the detached helper to be gone")
    assert report.leftovers == 1


async def test_api_retries_show_while_the_run_waits(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    stream = StreamState()
    seen: list[str | None] = []

    async def watch(_pid: int, _epoch: float) -> None:
        async def poll() -> None:
            for _ in range(200):
                seen.append(stream.progress())
                await asyncio.sleep(0.01)

        asyncio.get_running_loop().create_task(poll())

    executor = Executor(settings_for(tmp_path, fake_agent), env=agent_env)
    report = await executor.run(
        AttemptRef(7, 70, 1),
        Brief("[api-retry 3] go"),
        stop=asyncio.Event(),
        on_spawn=watch,
        stream=stream,
    )
    assert report.failed is False, report.error
    assert "API retry 3/10: overloaded (529)" in seen
    assert stream.progress() is None  # the answer came: no retry in progress


async def test_denied_tools_are_reported_and_the_run_still_counts(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    report = await run(settings_for(tmp_path, fake_agent), "[deny Bash] go", env=agent_env)
    assert report.failed is False
    assert report.stream.denials == ["Bash"]


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        ("[is_error] do the secret thing", "hapi exited with status 1: Credit balance is too low"),
        (
            "[fail-times 1] do the secret thing",
            "hapi exited with status 1: API Error: 500 simulated failure 1 of 1",
        ),
    ],
)
async def test_failure_reason_is_the_clis_own_and_never_the_prompt(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str], prompt: str, reason: str
) -> None:
    report = await run(settings_for(tmp_path, fake_agent), prompt, env=agent_env)
    assert report.failed
    assert report.exit_code == 1
    assert report.error == reason
    assert report.stream.cost_usd == 0.0  # the real CLI's integer 0


async def test_hapi_without_its_token_says_how_to_fix_it(
    tmp_path: Path, fake_agent: FakeAgent, agent_env: dict[str, str]
) -> None:
    env = {k: v for k, v in agent_env.items() if k != "CLI_API_TOKEN"} | {"HOME": str(tmp_path)}
    report = await run(settings_for(tmp_path, fake_agent), "go", env=env)
    assert report.error == (
        "hapi exited with status 1: error: CLI_API_TOKEN is required. Set it via environment "
        "variable or run `hapi auth login`. (fix: run `hapi auth login` as the daemon's user, "
        "or set CLI_API_TOKEN in its environment)"
    )
