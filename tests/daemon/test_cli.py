"""The `reeve-lite` command as a user runs it: real subprocesses, a real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Daemon, clean_env


def cli(
    *args: str,
    daemon: Daemon | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full = clean_env()
    if daemon is not None:
        full["REEVE_LITE_SOCKET"] = str(daemon.socket)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_schedule_list_show_reschedule_cancel(daemon: Daemon) -> None:
    done = cli(
        "schedule",
        "in 2 hours",
        "Water the plants",
        "--priority",
        "low",
        "--note",
        "the balcony too",
        "--tag",
        "home",
        "--comment",
        "asked by Ana",
        "--json",
        daemon=daemon,
    )
    assert done.returncode == 0, done.stderr
    pulse = json.loads(done.stdout)
    assert pulse["source"] == "cli"
    assert pulse["priority"] == "low"
    assert pulse["sticky_notes"] == ["the balcony too"]
    assert pulse["tags"] == ["home"]
    assert pulse["comment"] == "asked by Ana"
    pid = str(pulse["pulse_id"])

    listing = cli("list", daemon=daemon)
    assert listing.returncode == 0
    assert "Water the plants" in listing.stdout
    assert "1 shown of 1" in listing.stdout

    moved = cli("reschedule", pid, "tomorrow at 9am", daemon=daemon)
    assert moved.returncode == 0
    assert f"pulse {pid} rescheduled: pending" in moved.stdout

    shown = cli("show", pid, daemon=daemon, env={"REEVE_LITE_TIMEZONE": "Europe/Berlin"})
    assert "reminder: the balcony too" in shown.stdout
    assert "comment: asked by Ana" in shown.stdout
    assert "09:00:00" in shown.stdout  # 9am in the daemon's zone, shown in the same zone

    cancelled = cli("cancel", pid, daemon=daemon)
    assert cancelled.returncode == 0
    assert "cancelled" in cancelled.stdout
    again = cli("cancel", pid, daemon=daemon)
    assert again.returncode == 2
    assert "only a pending pulse can be changed" in again.stderr


def test_show_prints_attempts_and_status_summarises(daemon: Daemon) -> None:
    created = json.loads(cli("schedule", "now", "say hi", "--json", daemon=daemon).stdout)
    daemon.wait_pulse(created["pulse_id"], "completed")
    shown = cli("show", str(created["pulse_id"]), daemon=daemon)
    assert "attempt 1: ok" in shown.stdout
    assert "$0.0123" in shown.stdout
    assert "result: done: say hi" in shown.stdout
    status = cli("status", daemon=daemon)
    assert status.returncode == 0
    assert "pulses: 1 completed" in status.stdout
    as_json = json.loads(cli("status", "--json", daemon=daemon).stdout)
    assert as_json["counts"]["completed"] == 1


def test_bad_input_exits_2_with_the_reason(daemon: Daemon) -> None:
    done = cli("schedule", "whenever", "x", daemon=daemon)
    assert done.returncode == 2
    assert "cannot understand time 'whenever'" in done.stderr
    assert "(scheduled_at)" in done.stderr
    done = cli("schedule", "now", "x", "--priority", "urgent", daemon=daemon)
    assert done.returncode == 2
    assert "invalid choice: 'urgent'" in done.stderr
    done = cli("schedule", "now", "x", "--cron", "every blue moon", daemon=daemon)
    assert done.returncode == 2
    assert "(cron)" in done.stderr
    done = cli("show", "999", daemon=daemon)
    assert done.returncode == 2
    assert "no pulse 999" in done.stderr


def test_unreachable_daemon_exits_1_and_says_how_to_start_it(tmp_path: Path) -> None:
    done = cli("status", env={"REEVE_LITE_SOCKET": str(tmp_path / "none.sock")})
    assert done.returncode == 1
    assert "cannot reach the daemon" in done.stderr
    assert "reeve-lite serve" in done.stderr


def test_invalid_setting_exits_2_naming_the_variable() -> None:
    done = cli("status", env={"REEVE_LITE_MAX_CONCURRENT": "lots"})
    assert done.returncode == 2
    assert "REEVE_LITE_MAX_CONCURRENT='lots'" in done.stderr
    done = cli("status", env={"REEVE_LITE_MAX_CONCURENT": "2"})
    assert done.returncode == 2
    assert "unknown setting REEVE_LITE_MAX_CONCURENT" in done.stderr


def test_serve_flag_overrides_and_is_validated(tmp_path: Path) -> None:
    done = cli("serve", "--max-concurrent", "0", "--db", str(tmp_path / "db"))
    assert done.returncode == 2
    assert "invalid --max-concurrent='0'" in done.stderr


def test_config_without_a_daemon_shows_this_shells_settings_as_written(tmp_path: Path) -> None:
    done = cli(
        "config",
        env={"REEVE_LITE_API_TOKEN": "s3cret-value", "XDG_RUNTIME_DIR": str(tmp_path)},
    )
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].startswith("# the daemon at ")
    assert "is not reachable: the settings this shell gives a daemon it starts" in lines[0]
    assert "s3cret-value" not in done.stdout
    for line in (
        "REEVE_LITE_API_TOKEN=(hidden)",
        "REEVE_LITE_MAX_CONCURRENT=4",
        "REEVE_LITE_DEFAULT_EXPIRES_AFTER=telegram=1h,reeve=6h",
        "REEVE_LITE_AGENT_TIMEOUT=1h",
        "REEVE_LITE_SOCKET_REQUIRE_TOKEN=off",
        "REEVE_LITE_LISTEN=",
        "REEVE_LITE_AGENT_COMMAND=",
        "REEVE_LITE_SOCKET_MODE=0600",
    ):
        assert line in lines, line


def test_config_shows_the_daemons_own_settings(daemon: Daemon) -> None:
    # This shell says nothing of the agent; the daemon runs the hapi profile.
    done = cli("config", daemon=daemon)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0] == f"# the daemon's effective settings ({daemon.socket})"
    assert "REEVE_LITE_AGENT=hapi" in lines
    assert "REEVE_LITE_RETRY_BASE=0.2s" in lines
    assert "REEVE_LITE_API_TOKEN=(hidden)" in lines
    assert f"REEVE_LITE_LISTEN=127.0.0.1:{daemon.port}" in lines
    assert "test-token" not in done.stdout


def test_help_lists_the_commands() -> None:
    done = cli("--help")
    assert done.returncode == 0
    for command in ("serve", "schedule", "list", "show", "cancel", "reschedule", "status"):
        assert command in done.stdout


def test_echo_agent_speaks_stream_json() -> None:
    # As the daemon calls it with the command profile: its MCP flags first.
    done = cli(
        "echo-agent",
        "--mcp-config",
        '{"mcpServers": {}}',
        "--allowedTools",
        "mcp__reeve-lite",
        "--print",
        "--output-format",
        "stream-json",
        "--verbose",
        "--resume",
        "abc-123",
        "--",
        "-v is not a flag here",
    )
    assert done.returncode == 0
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["type"] for e in events] == ["system", "assistant", "result"]
    assert events[0]["session_id"] == "abc-123"
    assert events[-1]["result"] == "Echo: -v is not a flag here"
    assert events[-1]["is_error"] is False


def test_without_a_socket_of_its_own_a_client_uses_the_system_daemons(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from reeve_lite import client as client_module
    from reeve_lite.client import Client, DaemonUnreachable
    from reeve_lite.config import load_settings

    # The default socket (under XDG_RUNTIME_DIR) does not exist: the system's stands in.
    default = load_settings({"XDG_RUNTIME_DIR": str(tmp_path / "runtime")})
    monkeypatch.setattr(client_module, "SYSTEM_SOCKET", tmp_path / "no-system.sock")
    assert Client.from_settings(default).socket_path == default.socket
    monkeypatch.setattr(client_module, "SYSTEM_SOCKET", daemon.socket)
    found = Client.from_settings(default)
    assert found.socket_path == daemon.socket
    assert found.health()["ok"] is True
    # A socket the user names is the only one tried, by variable or by flag.
    named = load_settings({"REEVE_LITE_SOCKET": str(tmp_path / "no" / "such.sock")})
    assert Client.from_settings(named).socket_path == tmp_path / "no" / "such.sock"
    flagged = load_settings({}, overrides={"socket": str(tmp_path / "flag.sock")})
    with pytest.raises(DaemonUnreachable, match=r"flag\.sock"):
        Client.from_settings(flagged).health()
