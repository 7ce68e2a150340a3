"""Pulses run by the real Claude Code and hapi CLIs (see conftest.py): the stand-in
API plays the model, everything else is real: the daemon, the CLI, its MCP client
talking to `reeve-lite mcp`, hapi and its hub."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reeve_lite.processes import processes_of_attempt
from tests.agent.clis import CLAUDE_VERSION, HAPI_VERSION, Clis
from tests.agent.conftest import Hub, agent_settings
from tests.conftest import Daemon, wait_for
from tests.daemon.test_doctor import doctor
from tests.fake_anthropic import ERRORS, FakeAnthropic
from tests.fake_telegram import BOT_TOKEN, FakeTelegram
from tests.report import record

pytestmark = pytest.mark.agent

CHAT = 4242


def conversation(body: dict[str, Any]) -> str:
    """Every text of a Messages request's conversation, in one string."""
    parts: list[str] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
            continue
        for block in content or []:
            if block.get("type") == "text":
                parts.append(block["text"])
            elif block.get("type") == "tool_result":
                inner = block.get("content")
                parts.append(json.dumps(inner) if not isinstance(inner, str) else inner)
    return "\n".join(parts)


def finished(daemon: Daemon, pulse_id: int, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        pulse: dict[str, Any] = daemon.client().get(pulse_id)
        return pulse if pulse["status"] in ("completed", "failed") else None

    return wait_for(done, timeout, f"pulse {pulse_id} to end", interval=0.1)  # type: ignore[no-any-return]


def timed(name: str) -> Callable[[float], None]:
    start = time.monotonic()

    def end(extra: float = 0) -> None:
        print(f"\n[agent tier] {name}: {time.monotonic() - start + extra:.1f} s")

    return end


def test_a_pulse_runs_the_real_claude_with_no_agent_setting(
    claude_daemon: Daemon, anthropic: FakeAnthropic
) -> None:
    end = timed("(a) claude, no agent setting")
    made = claude_daemon.client().create(prompt="Say hello to the user.")
    pulse = finished(claude_daemon, made["pulse_id"])
    [attempt] = pulse["attempts"]
    assert pulse["status"] == "completed", attempt["error"]
    assert attempt["exit_code"] == 0
    assert uuid.UUID(attempt["session_id"])
    assert attempt["cost_usd"] > 0
    assert attempt["num_turns"] == 1
    assert attempt["result"] == "ok"
    assert attempt["denials"] == []
    assert claude_daemon.client().status()["agent"] == "claude"
    [body] = anthropic.main_requests()
    assert "Say hello to the user." in conversation(body)
    end(0)
    record(
        "the real agent",
        f"(a) Claude Code {CLAUDE_VERSION}, no agent setting",
        f"pulse completed: session, cost ${attempt['cost_usd']:.4f}, 1 turn",
    )


def test_the_model_schedules_and_the_next_pulse_resumes_its_session(
    make_daemon: Callable[..., Daemon], tmp_path: Path, clis: Clis, anthropic: FakeAnthropic
) -> None:
    end = timed("(b)+(c) schedule tool, then --resume")
    # The agent's own pulses may be due 2 s ahead here (1 minute by default).
    claude_daemon = make_daemon(
        **agent_settings(tmp_path, anthropic, clis.path_with("claude")),
        REEVE_LITE_SELF_MIN_DELAY="2s",
    )
    anthropic.set_script(
        [
            {
                "match": "Plan the week",
                "text": "I will look again later.",
                "tool_use": {
                    "name": "mcp__reeve-lite__schedule_pulse",
                    "input": {
                        "prompt": "Check the plan again",
                        "scheduled_at": "in 3 seconds",
                        "resume_current_session": True,
                    },
                },
            }
        ]
    )
    made = claude_daemon.client().create(prompt="Plan the week with the user.")
    first = finished(claude_daemon, made["pulse_id"])
    [attempt] = first["attempts"]
    assert first["status"] == "completed", attempt["error"]
    assert attempt["denials"] == []
    # The tool ran: the model got its answer, and the pulse exists.
    [_, after_tool] = anthropic.main_requests()
    assert '"pulse_id":2' in conversation(after_tool).replace(" ", "")
    follow_up = claude_daemon.client().get(2)
    assert (follow_up["source"], follow_up["status"]) == ("reeve", "pending")
    assert follow_up["session_id"] == attempt["session_id"]
    record(
        "the real agent",
        "(b) the model calls mcp__reeve-lite__schedule_pulse",
        "pulse of source reeve created in the running session, no denial",
    )

    # (c) It runs with --resume, and the model sees the first conversation.
    second = finished(claude_daemon, 2)
    [resumed] = second["attempts"]
    assert second["status"] == "completed", resumed["error"]
    assert resumed["session_id"] == attempt["session_id"]
    last = conversation(anthropic.main_requests()[-1])
    assert "Plan the week with the user." in last
    assert "Check the plan again" in last
    end(0)
    record(
        "the real agent",
        "(c) that pulse runs with --resume",
        "same session; the API request holds the first conversation and the new prompt",
    )


def test_an_api_refusal_is_a_failure_with_its_reason(
    claude_daemon: Daemon, anthropic: FakeAnthropic
) -> None:
    end = timed("(d) API refusal")
    anthropic.set_script([ERRORS["credit"]])
    made = claude_daemon.client().create(prompt="Summarise the news.", max_retries=0)
    pulse = finished(claude_daemon, made["pulse_id"])
    [attempt] = pulse["attempts"]
    assert pulse["status"] == "failed"
    assert attempt["exit_code"] == 1
    assert attempt["error"] == "claude exited with status 1: Credit balance is too low"
    assert "Summarise the news" not in claude_daemon.log()
    end(0)
    record(
        "the real agent",
        "(d) the API refuses (400 invalid_request_error, credit)",
        f"failed attempt recorded: {attempt['error']}",
    )


def test_a_vanished_session_runs_again_fresh(
    claude_daemon: Daemon, anthropic: FakeAnthropic
) -> None:
    end = timed("(e) vanished session")
    gone = str(uuid.uuid4())
    made = claude_daemon.client().create(prompt="Carry on.", session_id=gone, max_retries=0)
    pulse = finished(claude_daemon, made["pulse_id"])
    first, second = pulse["attempts"]
    assert f"No conversation found with session ID: {gone}" in first["error"]
    assert pulse["status"] == "completed", second["error"]
    assert second["session_id"] not in (None, gone)
    assert pulse["retry_count"] == 0
    assert len(anthropic.main_requests()) == 1  # the resume never reached the API
    end(0)
    record(
        "the real agent",
        "(e) --resume of a session the CLI does not have",
        "recorded with the CLI's reason, then run at once as a new session (no retry used)",
    )


def test_a_pulse_through_real_hapi_and_its_hub_leaves_nothing_behind(
    make_daemon: Callable[..., Daemon],
    tmp_path: Path,
    clis: Clis,
    anthropic: FakeAnthropic,
    hub: Hub,
) -> None:
    end = timed("(f) hapi")
    settings = agent_settings(tmp_path, anthropic, clis.path_with("hapi", "claude")) | hub.env()
    daemon = make_daemon(**settings)
    made = daemon.client().create(prompt="Water the plants. [hapi]")
    pulse = finished(daemon, made["pulse_id"])
    [attempt] = pulse["attempts"]
    assert pulse["status"] == "completed", attempt["error"]
    assert daemon.client().status()["agent"] == "hapi"
    assert uuid.UUID(attempt["session_id"])
    assert attempt["result"] == "ok"
    # hapi's runner (setsid, parent pid 1, our environment) went with the attempt.
    assert processes_of_attempt(attempt["attempt_id"], daemon.socket) == []
    assert "stopped 1 process(es) it left behind" in daemon.log()
    # hapi's own session hooks ran: the prompt reached the model on stdin, whole.
    assert any("Water the plants. [hapi]" in conversation(b) for b in anthropic.main_requests())
    end(0)
    record(
        "the real agent",
        f"(f) hapi {HAPI_VERSION} with a local hub",
        "pulse completed; hapi's detached runner stopped with the attempt",
    )


def test_a_telegram_message_is_answered_once_by_the_real_claude(
    make_daemon: Callable[..., Daemon],
    tmp_path: Path,
    clis: Clis,
    anthropic: FakeAnthropic,
    telegram: FakeTelegram,
) -> None:
    end = timed("(g) telegram")
    settings = agent_settings(tmp_path, anthropic, clis.path_with("claude")) | {
        "REEVE_LITE_TELEGRAM_TOKEN": BOT_TOKEN,
        "REEVE_LITE_TELEGRAM_CHAT_IDS": str(CHAT),
        "REEVE_LITE_TELEGRAM_API_URL": telegram.url,
    }
    daemon = make_daemon(**settings)
    anthropic.set_script(
        [
            {
                "match": "Is the door locked",
                "tool_use": {
                    "name": "mcp__reeve-lite__send_notification",
                    "input": {"message": "Yes, the door is locked."},
                },
            },
            {"text": "I told the user."},
        ]
    )
    listener = subprocess.Popen(
        [sys.executable, "-m", "reeve_lite.cli", "telegram"],
        env=daemon.env(),
        stdout=open(tmp_path / "listener.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    try:
        telegram.push(CHAT, "Is the door locked?")
        wait_for(
            lambda: "answered by the agent" in (tmp_path / "listener.log").read_text(),
            90,
            "the listener to see the pulse answered",
            interval=0.2,
        )
    finally:
        listener.send_signal(signal.SIGTERM)
        listener.wait(timeout=20)
    sent = telegram.sent()
    assert [(m["chat_id"], m["text"]) for m in sent] == [(CHAT, "Yes, the door is locked.")]
    [pulse] = daemon.client().list(status=None)["pulses"]
    assert daemon.client().get(pulse["pulse_id"])["attempts"][0]["notified"] == 1
    end(0)
    record(
        "the real agent",
        "(g) a Telegram message, answered by the real claude",
        "exactly one sendMessage to the chat: the agent's send_notification",
    )


def test_doctor_passes_against_the_real_clis_and_hub(
    make_daemon: Callable[..., Daemon],
    tmp_path: Path,
    clis: Clis,
    anthropic: FakeAnthropic,
    hub: Hub,
) -> None:
    settings = agent_settings(tmp_path, anthropic, clis.path_with("hapi", "claude")) | hub.env()
    daemon = make_daemon(**settings)
    done = doctor(daemon)
    assert done.returncode == 0, done.stdout
    assert (
        f"ok   agent: hapi: {clis.path_with('hapi', 'claude')}/hapi (hapi version: " in done.stdout
    )
    assert f"ok   hapi: the hub at {hub.url} accepts hapi's token" in done.stdout
    assert "ok   login: Claude Code is logged in (api_key)" in done.stdout
    wrong = doctor(daemon, CLI_API_TOKEN="not-the-hubs-token")
    assert wrong.returncode == 1
    assert f"FAIL hapi: hapi's hub at {hub.url} refuses its token (401)" in wrong.stdout
    record(
        "the real agent",
        "reeve-lite doctor against the real CLIs and hub",
        "all checks pass; a wrong hapi token is named with its fix",
    )
