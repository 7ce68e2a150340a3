"""`reeve-lite doctor` against a real daemon, with the fake agent on PATH."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import Daemon, free_port


def doctor(daemon: Daemon, **env: str) -> subprocess.CompletedProcess[str]:
    """`reeve-lite doctor` in the daemon's environment, with `env` on top."""
    return subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", "doctor"],
        env=daemon.env() | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_check_passes_with_claude(daemon: Daemon) -> None:
    done = doctor(daemon, REEVE_LITE_AGENT="claude", ANTHROPIC_API_KEY="sk-ant-x")
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ok   daemon: reeve-lite ")
    assert f"agent: claude: {daemon.agent.bin}/claude (2.1.332 (Claude Code))" in lines[1]
    assert lines[2] == "ok   login: Claude Code is logged in (api_key)"
    assert lines[3].startswith("ok   desk: ")
    assert lines[4].startswith("ok   mcp: 7 tools: schedule_pulse, ")
    assert lines[-1] == "5 passed, 0 failed"


def test_a_claude_without_login_says_how_to_log_in(daemon: Daemon) -> None:
    env = {k: v for k, v in daemon.env().items() if k != "ANTHROPIC_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", "doctor"],
        env=env | {"REEVE_LITE_AGENT": "claude"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "FAIL login: Claude Code is not logged in and has no API key" in done.stdout
    assert "fix: run `claude` once as the daemon's user and /login" in done.stdout


def test_a_missing_hub_and_daemon_fail_with_their_fixes(daemon: Daemon) -> None:
    hub = f"http://127.0.0.1:{free_port()}"
    done = doctor(daemon, HAPI_API_URL=hub, REEVE_LITE_SOCKET=str(daemon.tmp / "nobody.sock"))
    assert done.returncode == 1
    out = done.stdout
    assert "FAIL daemon: " in out
    assert "fix: start it: systemctl --user start reeve-lite.socket" in out
    assert f"FAIL hapi: hapi's hub at {hub} does not answer" in out
    assert "fix: start it (`hapi hub`)" in out
    assert out.splitlines()[-1] == "3 passed, 3 failed"


def test_no_agent_at_all_says_what_to_install(daemon: Daemon) -> None:
    done = doctor(daemon, PATH=str(daemon.tmp / "nothing"), REEVE_LITE_AGENT="auto")
    assert done.returncode == 1
    assert "FAIL agent: no agent CLI found: neither `hapi` nor `claude`" in done.stdout
