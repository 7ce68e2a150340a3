"""The real daemon as a subprocess, driven over its Unix socket and TCP port."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket as socketlib
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reeve_lite.client import ApiFailure
from reeve_lite.store import SCHEMA_VERSION
from tests.conftest import TOKEN, Daemon, clean_env, wait_for
from tests.report import record


def at(seconds: float) -> str:
    """An ISO time `seconds` from now."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def test_pulse_runs_at_its_time_and_records_the_attempt(daemon: Daemon) -> None:
    due = at(1.5)
    created = daemon.client().create(
        prompt="Check the garden",
        scheduled_at=due,
        priority="normal",
        sticky_notes=["water the tomatoes"],
        tags=["home"],
    )
    assert created["status"] == "pending"
    assert daemon.agent.calls() == []
    pulse = daemon.wait_pulse(created["pulse_id"], "completed")
    [call] = daemon.agent.calls()
    assert call["t0"] >= datetime.fromisoformat(due).timestamp()
    assert call["t0"] - datetime.fromisoformat(due).timestamp() < 2.0
    # hapi claude <the daemon's MCP server and its tools> <Claude Code's flags>, the
    # prompt on stdin, then what hapi adds.
    assert call["received"][0] == "claude"
    assert call["allowed"] == ["mcp__reeve-lite"]
    assert call["received"][-4:] == ["--print", "--output-format", "stream-json", "--verbose"]
    assert call["prompt"] == "Check the garden\n\nReminders:\n- water the tomatoes"
    assert call["pulse_id"] == str(created["pulse_id"])
    assert call["cwd"] == str(daemon.tmp / "desk")
    assert call["socket"] == str(daemon.socket)
    assert call["leaked"] == []
    [attempt] = pulse["attempts"]
    assert attempt["exit_code"] == 0
    assert attempt["is_error"] is False
    assert attempt["session_id"] == daemon.agent.transcript_ids()[0]
    assert attempt["cost_usd"] == pytest.approx(0.0123)
    assert attempt["num_turns"] == 3
    assert attempt["result"].startswith("done: Check the garden")
    assert attempt["duration_ms"] >= 0
    assert pulse["session_id"] == attempt["session_id"]


def test_failed_run_is_retried_with_backoff_then_succeeds(daemon: Daemon) -> None:
    pulse_id = daemon.client().create(prompt="flaky [fail-times 1]")["pulse_id"]
    pulse = daemon.wait_pulse(pulse_id, "completed")
    first, second = pulse["attempts"]
    assert first["is_error"] is True
    assert first["exit_code"] == 1
    assert "exited with status 1" in first["error"]
    assert "simulated failure 1 of 1" in first["error"]
    assert second["is_error"] is False
    assert pulse["retry_count"] == 1
    gap = datetime.fromisoformat(second["started_at"]) - datetime.fromisoformat(
        first["finished_at"]
    )
    assert gap >= timedelta(seconds=0.2)  # REEVE_LITE_RETRY_BASE=0.2s


def test_retries_exhausted_leave_the_pulse_failed(daemon: Daemon) -> None:
    pulse_id = daemon.client().create(prompt="doomed [exit 3]", max_retries=2)["pulse_id"]
    pulse = daemon.wait_pulse(pulse_id, "failed")
    assert [a["exit_code"] for a in pulse["attempts"]] == [3, 3, 3]
    assert pulse["retry_count"] == 2
    assert "exited with status 3" in pulse["last_error"]
    assert len(daemon.agent.calls()) == 3


def test_an_error_result_is_a_failure_with_the_clis_reason(daemon: Daemon) -> None:
    pulse_id = daemon.client().create(prompt="[is_error]", max_retries=0)["pulse_id"]
    pulse = daemon.wait_pulse(pulse_id, "failed")
    [attempt] = pulse["attempts"]
    assert attempt["exit_code"] == 1
    assert attempt["error"] == "hapi exited with status 1: Credit balance is too low"
    assert attempt["cost_usd"] == 0
    assert attempt["session_id"] == daemon.agent.transcript_ids()[0]


def test_cancel_and_reschedule(daemon: Daemon) -> None:
    client = daemon.client()
    keep = client.create(prompt="later", scheduled_at="in 1 hour")["pulse_id"]
    drop = client.create(prompt="never", scheduled_at="in 1 hour")["pulse_id"]
    assert client.cancel(drop)["status"] == "cancelled"
    with pytest.raises(ApiFailure) as err:
        client.cancel(drop)
    assert (err.value.status, err.value.code) == (409, "not_pending")
    with pytest.raises(ApiFailure) as err:
        client.reschedule(drop, "now")
    assert err.value.status == 409
    moved = client.reschedule(keep, "in 1 second")
    assert datetime.fromisoformat(moved["scheduled_at"]) < datetime.now(UTC) + timedelta(seconds=2)
    daemon.wait_pulse(keep, "completed")
    assert [c["pulse_id"] for c in daemon.agent.calls()] == [str(keep)]
    assert client.get(drop)["attempts"] == []


def test_due_pulses_run_in_priority_order(daemon: Daemon) -> None:
    client = daemon.client()
    blocker = client.create(prompt="[sleep 2]")["pulse_id"]
    wait_for(lambda: daemon.agent.calls(), what="the blocker to start")
    ids = {}
    for priority in ("low", "deferred", "critical", "normal", "high"):
        ids[priority] = client.create(prompt=priority, priority=priority)["pulse_id"]
    for pulse_id in ids.values():
        daemon.wait_pulse(pulse_id, "completed")
    order = [int(c["pulse_id"]) for c in daemon.agent.calls()]
    assert order == [blocker] + [ids[p] for p in ("critical", "high", "normal", "low", "deferred")]


def test_same_priority_runs_earliest_due_first(daemon: Daemon) -> None:
    client = daemon.client()
    client.create(prompt="[sleep 2]")
    wait_for(lambda: daemon.agent.calls(), what="the blocker to start")
    late = client.create(prompt="b", priority="normal", scheduled_at=at(-1))["pulse_id"]
    early = client.create(prompt="a", priority="normal", scheduled_at=at(-5))["pulse_id"]
    daemon.wait_pulse(late, "completed")
    order = [int(c["pulse_id"]) for c in daemon.agent.calls()[1:]]
    assert order == [early, late]


def test_acknowledged_pulse_survives_kill_9(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon()
    pulse = daemon.client().create(prompt="remember me", scheduled_at="in 1 hour")
    daemon.kill()
    daemon.start()
    again = daemon.client().get(pulse["pulse_id"])
    assert again["prompt"] == "remember me"
    assert again["status"] == "pending"


def test_restart_recovers_a_pulse_stuck_in_processing(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon()
    pulse_id = daemon.client().create(prompt="long [sleep-first 60]")["pulse_id"]
    [call] = wait_for(lambda: daemon.agent.calls(), what="the agent to start")
    daemon.kill()
    orphan = call["pid"]
    assert Path(f"/proc/{orphan}").exists()  # the agent outlived the daemon
    daemon.start()
    pulse = daemon.wait_pulse(pulse_id, "completed")
    first, second = pulse["attempts"]
    assert first["is_error"] is True
    assert "interrupted" in first["error"]
    assert "its orphaned agent was stopped" in first["error"]
    assert second["is_error"] is False
    assert pulse["retry_count"] == 1
    wait_for(lambda: not _alive(orphan), 5, "the orphan to be gone")
    assert "recovered after a crash" in daemon.log()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(") ", 1)[1][0] != "Z"


def test_sigterm_stops_a_long_run_and_it_runs_again_after_restart(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(REEVE_LITE_SHUTDOWN_GRACE="0.5s")
    pulse_id = daemon.client().create(prompt="long [sleep-first 60]")["pulse_id"]
    [call] = wait_for(lambda: daemon.agent.calls(), what="the agent to start")
    assert daemon.stop() == 0
    assert not _alive(call["pid"])
    daemon.start()
    pulse = daemon.wait_pulse(pulse_id, "completed")
    first, second = pulse["attempts"]
    assert first["error"].startswith("stopped: the daemon shut down")
    assert pulse["retry_count"] == 0  # a shutdown is not the pulse's failure
    assert second["is_error"] is False


def test_idempotency_key_returns_the_first_pulse(daemon: Daemon) -> None:
    client = daemon.client()
    first = client.create(prompt="one", scheduled_at="in 1 hour", idempotency_key="tg:1:42")
    second = client.create(prompt="two", scheduled_at="in 2 hours", idempotency_key="tg:1:42")
    assert second == first
    assert client.list(status="pending")["total"] == 1


def test_tcp_needs_the_token_except_for_health(daemon: Daemon) -> None:
    anonymous = daemon.tcp_client(token=None)
    assert anonymous.health()["ok"] is True
    for call in (anonymous.status, lambda: anonymous.create(prompt="x"), anonymous.upcoming):
        with pytest.raises(ApiFailure) as err:
            call()
        assert (err.value.status, err.value.code) == (401, "unauthorized")
    with pytest.raises(ApiFailure) as err:
        daemon.tcp_client(token="wrong" + TOKEN).status()
    assert err.value.status == 401
    assert daemon.tcp_client().status()["counts"]["pending"] == 0
    # The Unix socket's file mode is the guard there.
    assert daemon.client().status()["max_concurrent"] == 4
    assert os.stat(daemon.socket).st_mode & 0o777 == 0o600


def test_every_operation_but_health_and_the_document_needs_the_token(daemon: Daemon) -> None:
    document = daemon.tcp_client(token=None).request("GET", "/api/openapi.json")
    checked = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            url = re.sub(r"\{[^}]+\}", "1", path)
            for token in (None, "wrong-" + TOKEN, TOKEN[:-1]):
                conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                conn.request(method.upper(), url, body=b"{}", headers=headers)
                answer = conn.getresponse()
                body = answer.read()
                conn.close()
                if operation.get("security") == []:
                    assert answer.status == 200, (method, path)
                    continue
                assert answer.status == 401, (method, path, token)
                assert json.loads(body)["error"]["code"] == "unauthorized"
                assert TOKEN[:-1].encode() not in body
            checked.append(f"{method.upper()} {path}")
    public = [
        f"{m.upper()} {p}"
        for p, ms in document["paths"].items()
        for m, op in ms.items()
        if op.get("security") == []
    ]
    assert sorted(public) == ["GET /api/health", "GET /api/openapi.json"]
    assert daemon.client().status()["counts"]["pending"] == 0
    record(
        "access",
        "TCP without the right token (none, wrong, one character short)",
        f"401 on all {len(checked) - len(public)} operations but health and the API document",
    )


def test_undecodable_token_bytes_are_a_401(daemon: Daemon) -> None:
    with socketlib.create_connection(("127.0.0.1", daemon.port), timeout=10) as conn:
        conn.sendall(
            b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer \xff\xfe\r\n\r\n"
        )
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b'"code":"unauthorized"' in answer


def test_socket_can_require_the_token(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(REEVE_LITE_SOCKET_REQUIRE_TOKEN="true")
    with pytest.raises(ApiFailure) as err:
        daemon.client().status()
    assert err.value.status == 401
    assert daemon.client(token=TOKEN).status()["version"]


def test_the_socket_gets_the_configured_mode(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(REEVE_LITE_SOCKET_MODE="0660")
    assert os.stat(daemon.socket).st_mode & 0o777 == 0o660
    assert daemon.client().status()["version"]
    record("access", "Unix socket file mode", "as configured (0600 by default, 0660 tested)")


@pytest.mark.parametrize("address", ["0.0.0.0:8765", "[::]:8765", "127.0.0.1:8765"])
def test_listen_without_token_refuses_to_start(tmp_path: Path, address: str) -> None:
    env = clean_env() | {
        "REEVE_LITE_DB": str(tmp_path / "db"),
        "REEVE_LITE_SOCKET": str(tmp_path / "s"),
        "REEVE_LITE_LISTEN": address,
    }
    done = subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "REEVE_LITE_LISTEN needs an API token" in done.stderr
    assert not (tmp_path / "db").exists()
    if address.startswith("0.0.0.0"):
        record("access", "TCP listen without a token", "refused at start, exit 1 (any address)")


def test_status_reports_counts_next_due_and_running(daemon: Daemon) -> None:
    client = daemon.client()
    future = client.create(prompt="later", scheduled_at="in 1 hour", priority="low")
    running = client.create(prompt="[sleep 2]")
    [call] = wait_for(lambda: daemon.agent.calls(), what="the agent to start")
    status = client.status()
    assert status["counts"]["pending"] == 1
    assert status["counts"]["processing"] == 1
    assert status["next_due_pulse_id"] == future["pulse_id"]
    assert status["next_due_at"] == future["scheduled_at"]
    [run] = status["running"]
    assert run["pulse_id"] == running["pulse_id"]
    assert run["pid"] == call["pid"]
    assert status["executor"] == "plain"


def test_list_pages_by_status_and_upcoming_is_in_due_order(daemon: Daemon) -> None:
    client = daemon.client()
    ids = [
        client.create(prompt=f"p{i}", scheduled_at=f"in {10 - i} hours")["pulse_id"]
        for i in range(5)
    ]
    upcoming = client.upcoming(limit=3)["pulses"]
    assert [p["pulse_id"] for p in upcoming] == ids[::-1][:3]
    page = client.list(status="pending", limit=2, offset=2)
    assert page["total"] == 5
    assert [p["pulse_id"] for p in page["pulses"]] == ids[::-1][2:4]
    client.cancel(ids[0])
    assert [p["pulse_id"] for p in client.list(status="cancelled")["pulses"]] == [ids[0]]
    assert client.list(status=None)["total"] == 5


def test_openapi_document_lists_every_operation(daemon: Daemon) -> None:
    doc = daemon.client().request("GET", "/api/openapi.json")
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {
        "/api/health",
        "/api/status",
        "/api/config",
        "/api/agenda",
        "/api/history",
        "/api/pulse/trigger",
        "/api/pulse/upcoming",
        "/api/pulses",
        "/api/pulse/{pulse_id}",
        "/api/pulse/{pulse_id}/cancel",
        "/api/pulse/{pulse_id}/reschedule",
        "/api/notify",
        "/api/openapi.json",
    }
    trigger = doc["paths"]["/api/pulse/trigger"]["post"]
    assert trigger["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PulseCreate"
    }
    schema = doc["components"]["schemas"]["PulseCreate"]
    assert schema["required"] == ["prompt"]
    assert schema["additionalProperties"] is False
    assert set(trigger["responses"]) >= {"201", "200", "401", "413", "422"}


def test_when_with_cron_means_not_before_and_keeps_the_grid(daemon: Daemon) -> None:
    client = daemon.client()
    before = datetime.now(UTC)
    now = client.create(
        prompt="tick", cron="*/5 * * * *", timezone="America/New_York", scheduled_at="now"
    )
    later = client.create(
        prompt="tock", cron="*/5 * * * *", timezone="America/New_York", scheduled_at="in 1 hour"
    )
    for pulse, earliest in ((now, before), (later, before + timedelta(hours=1))):
        due = datetime.fromisoformat(pulse["scheduled_at"])
        assert due >= earliest
        assert due < earliest + timedelta(minutes=5, seconds=1)
        assert (due.minute % 5, due.second, due.microsecond) == (0, 0, 0)
        assert pulse["timezone"] == "America/New_York"
    assert daemon.agent.calls() == []  # not run at once, off the grid


def test_durable_settings_of_the_database(daemon: Daemon) -> None:
    db = sqlite3.connect(daemon.db)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def test_second_daemon_on_the_same_socket_refuses(daemon: Daemon) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", "serve"],
        env=daemon.env() | {"REEVE_LITE_LISTEN": "", "REEVE_LITE_DB": str(daemon.tmp / "x.db")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "another daemon already answers" in done.stderr
    assert daemon.client().health()["ok"]


def test_stale_socket_file_is_replaced(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon()
    daemon.kill()
    assert daemon.socket.exists()
    daemon.start()
    assert daemon.client().health()["ok"]
    assert daemon.stop() == 0
    assert not daemon.socket.exists()


def test_sigint_is_a_clean_stop(daemon: Daemon) -> None:
    assert daemon.stop(signal.SIGINT) == 0
    assert "stopping" in daemon.log()


@pytest.mark.slow
def test_recurring_pulse_fires_twice_on_the_real_clock(daemon: Daemon) -> None:
    client = daemon.client()
    pulse = client.create(prompt="every minute", cron="* * * * *", scheduled_at="now")
    # "now" with cron is "not before now": the first run is on the next minute.
    grid = datetime.fromisoformat(pulse["scheduled_at"])
    assert (grid.second, grid.microsecond) == (0, 0)

    def runs(n: int) -> dict | None:  # type: ignore[type-arg]
        p = client.get(pulse["pulse_id"])
        done = [a for a in p["attempts"] if a["finished_at"]]
        return p if len(done) >= n and p["status"] == "pending" else None

    first = wait_for(lambda: runs(1), 75, "the first run")
    started = datetime.fromisoformat(first["attempts"][0]["started_at"])
    assert grid <= started < grid + timedelta(seconds=2)
    boundary = datetime.fromisoformat(first["scheduled_at"])
    assert boundary == grid + timedelta(minutes=1)
    second = wait_for(lambda: runs(2), 75, "the second run")
    started = datetime.fromisoformat(second["attempts"][1]["started_at"])
    assert boundary <= started < boundary + timedelta(seconds=2)
    assert datetime.fromisoformat(second["scheduled_at"]) == boundary + timedelta(minutes=1)
    assert [c["pulse_id"] for c in daemon.agent.calls()] == [str(pulse["pulse_id"])] * 2
