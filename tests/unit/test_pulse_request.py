"""`PulseRequest`: the one create request of the client, built by the CLI and the MCP server.

No daemon: a client that records what it would send stands in for the socket.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from reeve_lite.cli import _call, _parser
from reeve_lite.client import Client, PulseRequest
from reeve_lite.mcp_server import ScheduleArgs, Server, build_tools
from reeve_lite.models import PulseCreate

PULSE = {
    "pulse_id": 1,
    "status": "pending",
    "scheduled_at": "2026-12-01T09:00:00+00:00",
    "priority": "normal",
    "source": "reeve",
    "prompt": "p",
    "cron": None,
    "timezone": None,
    "session_id": None,
    "last_error": None,
}


class Recorder(Client):
    """Records each request instead of sending it; answers with one pulse."""

    def __init__(self) -> None:
        super().__init__(socket_path=Path("/nonexistent/api.sock"))
        self.sent: list[tuple[str, str, dict[str, Any] | None]] = []

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        self.sent.append((method, path, body))
        return dict(PULSE)


def test_the_request_has_exactly_the_fields_of_the_api_body() -> None:
    # A field added to PulseCreate without the client fails here.
    ours = {f.name: f for f in dataclasses.fields(PulseRequest)}
    assert set(ours) == set(PulseCreate.model_fields)
    required = {n for n, f in ours.items() if f.default is dataclasses.MISSING}
    assert required == {n for n, f in PulseCreate.model_fields.items() if f.is_required()}


def test_only_the_fields_that_are_set_are_sent() -> None:
    request = PulseRequest(prompt="p", max_retries=0, tags=[], cron=None)
    client = Recorder()
    client.create(request)
    assert client.sent == [
        ("POST", "/api/pulse/trigger", {"prompt": "p", "tags": [], "max_retries": 0})
    ]


def test_keywords_make_the_same_request_and_unknown_ones_are_refused() -> None:
    client = Recorder()
    client.create(prompt="p", scheduled_at="in 1 hour")
    client.create(PulseRequest(prompt="p", scheduled_at="in 1 hour"))
    assert client.sent[0] == client.sent[1]
    with pytest.raises(TypeError):
        client.create(prompt="p", shceduled_at="in 1 hour")
    with pytest.raises(TypeError):
        client.create(PulseRequest(prompt="p"), priority="low")
    assert len(client.sent) == 2


def test_the_cli_sends_every_schedule_option() -> None:
    argv = [
        "schedule",
        "in 1 hour",
        "p",
        "--priority=low",
        "--cron=0 9 * * *",
        "--tz=UTC",
        "--note=a",
        "--note=b",
        "--tag=t",
        "--session=s",
        "--max-retries=0",
        "--key=k",
        "--on-missed=all",
        "--expires-after=1h",
        "--expires-at=in 2 hours",
        "--concurrency-key=c",
        "--jitter=5m",
    ]
    client = Recorder()
    _call(_parser().parse_args(argv), client)
    assert client.sent == [
        (
            "POST",
            "/api/pulse/trigger",
            {
                "prompt": "p",
                "scheduled_at": "in 1 hour",
                "priority": "low",
                "source": "cli",
                "tags": ["t"],
                "session_id": "s",
                "sticky_notes": ["a", "b"],
                "max_retries": 0,
                "cron": "0 9 * * *",
                "timezone": "UTC",
                "idempotency_key": "k",
                "on_missed": "all",
                "expires_after": "1h",
                "expires_at": "in 2 hours",
                "concurrency_key": "c",
                "jitter": "5m",
            },
        )
    ]
    client = Recorder()
    _call(_parser().parse_args(["schedule", "now", "p"]), client)
    body = {"prompt": "p", "scheduled_at": "now", "priority": "normal", "source": "cli"}
    assert client.sent == [("POST", "/api/pulse/trigger", body)]


def test_schedule_pulse_arguments_are_request_fields() -> None:
    # schedule_pulse passes its arguments on by name; only this one is its own.
    own = {"resume_current_session"}
    request_fields = {f.name for f in dataclasses.fields(PulseRequest)}
    assert set(ScheduleArgs.model_fields) - own <= request_fields


def test_schedule_pulse_sends_its_arguments_with_source_reeve() -> None:
    client = Recorder()
    server = Server(build_tools(client, env={}))
    answer = server.call("schedule_pulse", {"prompt": "p", "pace_min": "1m", "pace_max": "2h"})
    assert answer["isError"] is False
    assert client.sent == [
        (
            "POST",
            "/api/pulse/trigger",
            {
                "prompt": "p",
                "priority": "normal",
                "source": "reeve",
                "on_missed": "once",
                "pace_min": "1m",
                "pace_max": "2h",
            },
        )
    ]
