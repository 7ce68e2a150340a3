"""The agent's side of a pulse, end to end through a real daemon and the fake
hapi: the tools every run gets, denials, vanished sessions, what a retry sends,
and what `status` shows while the agent retries its API."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from tests.conftest import Daemon, wait_for
from tests.report import record


def test_a_run_schedules_its_own_future_through_its_tools(daemon: Daemon) -> None:
    prompt = (
        '[mcp schedule_pulse {"prompt": "check again", "scheduled_at": "in 2 hours", '
        '"resume_current_session": true}] plan'
    )
    first = daemon.client().create(prompt=prompt)
    done = daemon.wait_pulse(first["pulse_id"], "completed")
    [attempt] = done["attempts"]
    assert attempt["denials"] == []
    assert attempt["result"].startswith("Scheduled pulse 2"), attempt["result"]
    follow_up = daemon.client().get(2)
    assert (follow_up["source"], follow_up["status"]) == ("reeve", "pending")
    assert follow_up["session_id"] == attempt["session_id"]
    record(
        "agent runs",
        "a run calls its schedule tool (fake CLI through --mcp-config)",
        "pulse of source reeve created in the run's session, no denial",
    )


def test_without_the_daemons_tools_the_call_is_denied_and_shown(
    make_daemon: Callable[..., Daemon],
) -> None:
    daemon = make_daemon(REEVE_LITE_AGENT_MCP="off")
    made = daemon.client().create(prompt="[mcp list_upcoming_pulses {}] look")
    done = daemon.wait_pulse(made["pulse_id"], "completed")
    [attempt] = done["attempts"]
    assert attempt["denials"] == ["mcp__reeve-lite__list_upcoming_pulses"]
    assert daemon.client().status()["last_denial"] == (
        f"pulse {made['pulse_id']}: mcp__reeve-lite__list_upcoming_pulses"
    )
    assert "the agent was refused mcp__reeve-lite__list_upcoming_pulses" in daemon.log()
    shown = subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", "show", str(made["pulse_id"])],
        env=daemon.env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "denied: mcp__reeve-lite__list_upcoming_pulses" in shown


def test_a_vanished_session_runs_again_as_a_new_one(daemon: Daemon) -> None:
    made = daemon.client().create(prompt="carry on", session_id="gone-7", max_retries=0)
    done = daemon.wait_pulse(made["pulse_id"], "completed")
    gone, fresh = done["attempts"]
    assert gone["is_error"] is True
    assert "No conversation found with session ID: gone-7" in gone["error"]
    assert "runs again as a new session" in gone["error"]
    assert fresh["is_error"] is False
    # Not retried with the dead id, and no retry used up.
    calls = daemon.agent.calls()
    assert [c["resume"] for c in calls] == ["gone-7", None]
    assert done["session_id"] == fresh["session_id"] != "gone-7"
    assert done["retry_count"] == 0
    record(
        "agent runs",
        "a pulse resumes a session that no longer exists",
        "attempt recorded with the CLI's reason; run at once as a new session, no retry used",
    )


def test_a_retry_resumes_its_session_with_a_note_not_another_copy(daemon: Daemon) -> None:
    made = daemon.client().create(prompt="Write the report [fail-times 2]", max_retries=3)
    done = daemon.wait_pulse(made["pulse_id"], "completed")
    assert [a["is_error"] for a in done["attempts"]] == [True, True, False]
    sessions = {a["session_id"] for a in done["attempts"]}
    assert len(sessions) == 1
    [transcript] = [daemon.agent.transcript(s) for s in sessions]
    assert transcript[0] == "Write the report [fail-times 2]"
    assert [t.count("Write the report") for t in transcript] == [1, 0, 0]
    assert transcript[1].startswith("[reeve-lite] This is attempt 2 of the same pulse.")
    assert "simulated failure 1 of 2" in transcript[1]
    record(
        "agent runs",
        "a pulse fails twice, then succeeds",
        "one session holds the prompt once and two short notes on how each attempt ended",
    )


def test_status_and_show_tell_of_api_retries_while_they_last(daemon: Daemon) -> None:
    made = daemon.client().create(prompt="[api-retry 40] slow API")
    progress = wait_for(
        lambda: next(
            (r["progress"] for r in daemon.client().status()["running"] if r["progress"]), None
        ),
        10,
        "API retry progress",
        interval=0.01,
    )
    assert progress.startswith("API retry ")
    assert progress.endswith("/10: overloaded (529)")
    shown = wait_for(
        lambda: daemon.client().get(made["pulse_id"])["progress"], 10, "progress in show"
    )
    assert shown.endswith("/10: overloaded (529)")
