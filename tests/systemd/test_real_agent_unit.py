"""One pulse of the real Claude Code in the booted systemd container: the daemon as a
transient service of the system manager, the agent in a transient scope, the
stand-in Anthropic API on the host (the container shares its network)."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from tests.agent.clis import CLAUDE_VERSION
from tests.fake_anthropic import FakeAnthropic
from tests.report import record
from tests.systemd.conftest import AGENTS_MOUNT, Container, poll

pytestmark = [pytest.mark.systemd]

WORK = "/tmp/real-agent"
SOCKET = f"{WORK}/api.sock"


def test_a_real_claude_pulse_runs_in_a_transient_scope(container: Container) -> None:
    claude = f"{AGENTS_MOUNT}/node_modules/.bin/claude"
    assert CLAUDE_VERSION in container.run(f"{claude} --version").stdout
    with FakeAnthropic() as api:
        env = {
            "HOME": f"{WORK}/home",
            "REEVE_LITE_DB": f"{WORK}/reeve.db",
            "REEVE_LITE_SOCKET": SOCKET,
            "REEVE_LITE_DESK": f"{WORK}/desk",
            "REEVE_LITE_AGENT": "claude",
            "REEVE_LITE_AGENT_COMMAND": claude,
            "REEVE_LITE_EXECUTOR": "on",
            "ANTHROPIC_BASE_URL": api.url,
            "ANTHROPIC_API_KEY": "sk-ant-test-key",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        setenv = " ".join(f"--setenv={k}={shlex.quote(v)}" for k, v in env.items())
        container.run(
            f"mkdir -p {WORK}/home && systemd-run --unit=reeve-lite-real-agent "
            f"--property=Type=notify --collect {setenv} /usr/local/bin/reeve-lite serve"
        )
        try:

            def cli(args: str) -> Any:
                done = container.run(f"reeve-lite {args} --socket {SOCKET} --json")
                return json.loads(done.stdout)

            status = poll(lambda: cli("status"), 30, "the daemon to answer")
            assert (status["agent"], status["executor"]) == ("claude", "scope")
            made = cli("schedule now 'Report the disk usage.'")

            def done() -> dict[str, Any] | None:
                shown: dict[str, Any] = cli(f"show {made['pulse_id']}")
                return shown if shown["status"] in ("completed", "failed") else None

            pulse = poll(done, 90, "the real claude's pulse")
            [attempt] = pulse["attempts"]
            assert pulse["status"] == "completed", attempt["error"]
            assert attempt["result"] == "ok"
            assert attempt["cost_usd"] > 0
            log = container.run(
                "journalctl --no-pager -o cat -u reeve-lite-real-agent", check=False
            ).stdout
            unit = f"reeve-pulse-{made['pulse_id']}-1.scope"
            assert f"started pid={attempt['pid']}" in log
            assert "scope)" in log
            assert any("Report the disk usage." in str(b) for b in api.main_requests())
            # The scope is gone with the attempt.
            assert container.run(f"systemctl is-active {unit}", check=False).stdout.strip() in (
                "inactive",
                "failed",
                "",
            )
        finally:
            container.run("systemctl stop reeve-lite-real-agent", check=False)
    record(
        "the real agent",
        f"(h) Claude Code {CLAUDE_VERSION} in the booted systemd container",
        "pulse completed in its transient scope under the system manager",
    )
