"""`reeve-lite mcp` driven by the mcp SDK's own stdio client against a real daemon."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from reeve_lite.models import Pulse
from tests.conftest import Daemon, clean_env, modules_loaded_by

TOOLS = {
    "schedule_pulse",
    "list_upcoming_pulses",
    "get_pulse",
    "cancel_pulse",
    "reschedule_pulse",
    "send_notification",
    "send_message_with_link",
}


@asynccontextmanager
async def mcp_session(daemon: Daemon, **env: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "reeve_lite.cli", "mcp"],
        env=clean_env() | {"REEVE_LITE_SOCKET": str(daemon.socket)} | env,
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    return await session.call_tool(tool, arguments)


async def test_tools_are_listed_with_their_schemas(daemon: Daemon) -> None:
    async with mcp_session(daemon) as session:
        listed = (await session.list_tools()).tools
    tools = {tool.name: tool for tool in listed}
    assert set(tools) == TOOLS
    schedule = tools["schedule_pulse"]
    assert "tomorrow at 9am" in (schedule.description or "")
    props = schedule.input_schema["properties"]
    assert schedule.input_schema["required"] == ["prompt"]
    assert props["priority"]["enum"] == ["critical", "high", "normal", "low", "deferred"]
    assert props["prompt"]["maxLength"] == 32768
    assert schedule.output_schema is not None
    assert "pulse_id" in schedule.output_schema["properties"]


async def test_every_tool_against_the_daemon(daemon: Daemon) -> None:
    async with mcp_session(daemon) as session:
        made = await call(
            session,
            "schedule_pulse",
            scheduled_at="in 2 hours",
            prompt="Check on the deploy",
            sticky_notes=["it was flaky"],
            tags=["ops"],
        )
        assert made.is_error is False
        pulse = made.structured_content
        assert made.content[0].text.startswith(f"Scheduled pulse {pulse['pulse_id']} for ")
        stored = daemon.client().get(pulse["pulse_id"])
        assert (stored["source"], stored["sticky_notes"], stored["tags"]) == (
            "reeve",
            ["it was flaky"],
            ["ops"],
        )

        listed = await call(session, "list_upcoming_pulses")
        assert [p["pulse_id"] for p in listed.structured_content["pulses"]] == [pulse["pulse_id"]]
        assert "Check on the deploy" in listed.content[0].text

        moved = await call(
            session,
            "reschedule_pulse",
            pulse_id=pulse["pulse_id"],
            new_scheduled_at="tomorrow at 9am",
        )
        assert moved.is_error is False
        assert (
            daemon.client().get(pulse["pulse_id"])["scheduled_at"]
            == (moved.structured_content["scheduled_at"])
        )

        shown = await call(session, "get_pulse", pulse_id=pulse["pulse_id"])
        assert shown.structured_content["attempts"] == []
        assert "is pending" in shown.content[0].text

        cancelled = await call(session, "cancel_pulse", pulse_id=pulse["pulse_id"])
        assert cancelled.structured_content["status"] == "cancelled"
        assert daemon.client().get(pulse["pulse_id"])["status"] == "cancelled"
        everything = await call(session, "list_upcoming_pulses", include_completed=True)
        assert everything.structured_content["total"] == 1


async def test_mistakes_are_tool_errors_that_say_how_to_fix_them(daemon: Daemon) -> None:
    async with mcp_session(daemon) as session:
        bad_time = await call(session, "schedule_pulse", scheduled_at="whenever", prompt="x")
        assert bad_time.is_error is True
        assert "cannot understand time 'whenever'" in bad_time.content[0].text
        assert "Call again with one of the accepted forms" in bad_time.content[0].text
        unknown = await call(session, "cancel_pulse", pulse_id=999)
        assert unknown.is_error is True
        assert "list_upcoming_pulses" in unknown.content[0].text
        done = daemon.client().create(prompt="ran", scheduled_at="in 1 hour")
        daemon.client().cancel(done["pulse_id"])
        twice = await call(
            session, "reschedule_pulse", pulse_id=done["pulse_id"], new_scheduled_at="now"
        )
        assert twice.is_error is True
        assert "only a pending pulse can be changed" in twice.content[0].text
        schema = await call(session, "schedule_pulse", scheduled_at="now", prompt="")
        assert schema.is_error is True
        no_session = await call(
            session, "schedule_pulse", scheduled_at="now", prompt="x", resume_current_session=True
        )
        assert no_session.is_error is True
        assert "REEVE_PULSE_ID is not set" in no_session.content[0].text
        # The server is still alive after all that.
        assert (await call(session, "list_upcoming_pulses")).is_error is False
    assert daemon.client().list(status="pending")["total"] == 0


async def test_resume_current_session_uses_the_running_pulse(daemon: Daemon) -> None:
    running = daemon.running_pulse()
    async with mcp_session(daemon, REEVE_PULSE_ID=str(running["pulse_id"])) as session:
        made = await call(
            session,
            "schedule_pulse",
            scheduled_at="in 1 hour",
            prompt="follow up",
            resume_current_session=True,
        )
    assert made.is_error is False
    [session_id] = daemon.agent.transcript_ids()
    assert made.structured_content["session_id"] == session_id


async def test_unreachable_daemon_is_a_tool_error(daemon: Daemon, tmp_path: Any) -> None:
    params_env = {"REEVE_LITE_SOCKET": str(tmp_path / "nobody.sock")}
    daemon_elsewhere = Daemon(tmp_path, daemon.agent, {})
    async with mcp_session(daemon_elsewhere, **params_env) as session:
        result = await call(session, "list_upcoming_pulses")
    assert result.is_error is True
    assert "cannot reach the daemon" in result.content[0].text


def test_the_mcp_command_imports_nothing_of_the_daemon() -> None:
    daemon_modules = ("daemon", "store", "scheduler", "api", "executor")
    assert (
        modules_loaded_by(
            "reeve_lite.cli, reeve_lite.mcp_server",
            ("aiohttp", "aiosqlite", "croniter"),
            tuple(f"reeve_lite.{m}" for m in daemon_modules),
        )
        == []
    )


async def test_pacing_bounds_come_back_as_advice_and_pace_lets_the_daemon_pick(
    daemon: Daemon,
) -> None:
    async with mcp_session(daemon) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert "pace_min" in tools["schedule_pulse"].input_schema["properties"]
        too_soon = await call(session, "schedule_pulse", scheduled_at="now", prompt="again")
        assert too_soon.is_error is True
        text = too_soon.content[0].text
        assert "at least 1m from now (self_min_delay)" in text
        assert "pace_min and pace_max" in text
        paced = await call(
            session, "schedule_pulse", prompt="check the build", pace_min="5s", pace_max="30m"
        )
        assert paced.is_error is False
        pulse = paced.structured_content
        # Clamped up to the one-minute bound, and expiring by the source's default.
        due = datetime.fromisoformat(pulse["scheduled_at"])
        assert timedelta(seconds=55) < due - datetime.now(UTC) <= timedelta(minutes=1)
        assert pulse["expires_after"] == 6 * 3600
        recurring = await call(
            session,
            "schedule_pulse",
            prompt="standup",
            cron="30 9 * * 1-5",
            timezone="Asia/Tokyo",
            on_missed="skip",
        )
        assert recurring.is_error is False
        assert "next fire times:" in recurring.content[0].text
        assert "T09:30:00+09:00" in recurring.content[0].text
        assert recurring.structured_content["on_missed"] == "skip"
        assert len(recurring.structured_content["next_fire_times"]) == 3


def test_the_mcp_command_does_not_import_the_mcp_sdk() -> None:
    # Importing the SDK alone takes longer than the start-up budget (500 ms).
    sdk = ("mcp", "mcp_types", "anyio")
    assert modules_loaded_by("reeve_lite.cli, reeve_lite.mcp_server", sdk) == []


def test_protocol_edges_of_the_stdio_server(tmp_path: Any) -> None:
    """Raw JSON-RPC lines: pings, notifications, unknown methods, garbage, bad arguments."""
    import io
    import json

    from reeve_lite.client import Client
    from reeve_lite.mcp_server import Server, build_tools, serve

    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "1999"}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
        {"jsonrpc": "2.0", "id": 3, "method": "resources/list"},
        "not json",
        "[" * 100_000,
        '{"jsonrpc": "2.0", "id": 9, "method": "ping", "params": "\xff"}',
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "nope"}},
        {
            "jsonrpc": "2.0",
            "id": 5,
            "method": "tools/call",
            "params": {"name": "get_pulse", "arguments": {"pulse_id": 0}},
        },
    ]
    stdin = io.BytesIO(
        b"".join(
            (line if isinstance(line, str) else json.dumps(line)).encode() + b"\n" for line in lines
        )
    )
    stdout = io.BytesIO()
    client = Client(socket_path=tmp_path / "nobody.sock")
    serve(Server(build_tools(client, env={})), stdin, stdout)
    answers = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [a.get("id") for a in answers] == [1, 2, 3, None, None, 9, 4, 5]
    assert answers[0]["result"]["protocolVersion"] == "2025-11-25"
    assert answers[1]["result"] == {}
    assert answers[2]["error"]["code"] == -32601
    assert answers[3]["error"]["code"] == -32700
    assert answers[4]["error"]["code"] == -32700  # nested too deep: refused, not a crash
    assert answers[5]["error"]["code"] == -32602  # params that are not an object
    assert answers[6]["result"]["isError"] is True
    assert "schedule_pulse" in answers[6]["result"]["content"][0]["text"]
    assert answers[7]["result"]["isError"] is True
    assert "pulse_id" in answers[7]["result"]["content"][0]["text"]


def test_a_defect_in_a_tool_fails_the_call_not_the_session(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from reeve_lite.mcp_server import PulseArgs, Server, Tool

    def broken(_args: Any) -> dict[str, Any]:
        raise KeyError("next_fire_times")

    server = Server({"get_pulse": Tool("get_pulse", "d", PulseArgs, Pulse, broken)})
    call = {"name": "get_pulse", "arguments": {"pulse_id": 1}}
    answer = server.handle({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call})
    assert answer is not None
    assert answer["result"]["isError"] is True
    assert "failed inside reeve-lite" in answer["result"]["content"][0]["text"]
    assert "KeyError: 'next_fire_times'" in capsys.readouterr().err
    ping = server.handle({"jsonrpc": "2.0", "id": 2, "method": "ping"})
    assert ping == {"jsonrpc": "2.0", "id": 2, "result": {}}


@pytest.mark.parametrize(
    ("tool", "field", "arguments"),
    [
        ("get_pulse", "pulse_id", {"pulse_id": True}),
        ("cancel_pulse", "pulse_id", {"pulse_id": "3"}),
        ("list_upcoming_pulses", "limit", {"limit": False}),
        ("schedule_pulse", "max_retries", {"prompt": "p", "max_retries": True}),
    ],
)
def test_numbers_are_json_integers_as_on_the_api(
    tool: str, field: str, arguments: dict[str, Any], tmp_path: Any
) -> None:
    from reeve_lite.client import Client
    from reeve_lite.mcp_server import Server, build_tools

    server = Server(build_tools(Client(socket_path=tmp_path / "nobody.sock"), env={}))
    answer = server.call(tool, arguments)
    assert answer["isError"] is True
    assert f"{field}: Value error, must be a whole number" in answer["content"][0]["text"]
