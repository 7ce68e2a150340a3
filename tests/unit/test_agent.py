"""The agent protocol: profiles and their argv, the stream parser on lines the real
Claude Code 2.1.332 printed, the verdict, and redaction of private text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reeve_lite.agent import (
    AgentUnavailable,
    Profile,
    StreamState,
    compose_prompt,
    judge,
    mcp_config,
    redact,
    resolve_profile,
    retry_prompt,
)

# Lines as the real CLI printed them (trimmed of fields the parser does not read).
INIT = (
    b'{"type":"system","subtype":"init","cwd":"/desk","session_id":"25207329-6299",'
    b'"tools":["Bash","mcp__reeve-lite__schedule_pulse"],"mcp_servers":[{"name":"reeve-lite",'
    b'"status":"connected","source":"dynamic"}],"model":"claude-opus-5-5"}'
)
RETRY = (
    b'{"type":"system","subtype":"api_retry","attempt":3,"max_retries":10,"retry_delay_ms":582,'
    b'"error_status":529,"error":"overloaded","session_id":"25207329-6299"}'
)
CREDIT = (
    b'{"type":"result","subtype":"success","is_error":true,"api_error_status":400,'
    b'"duration_ms":120,"num_turns":1,"result":"Credit balance is too low",'
    b'"session_id":"25207329-6299","total_cost_usd":0,"permission_denials":[],'
    b'"terminal_reason":"api_error"}'
)
GONE = (
    b'{"type":"result","subtype":"error_during_execution","duration_ms":0,"is_error":true,'
    b'"num_turns":0,"session_id":"11111111-2222","total_cost_usd":0,"permission_denials":[],'
    b'"errors":["No conversation found with session ID: 11111111-2222"]}'
)
DENIED = (
    b'{"type":"result","subtype":"success","is_error":false,"num_turns":2,"result":"ok",'
    b'"session_id":"s","total_cost_usd":0.02,"permission_denials":[{"tool_name":'
    b'"mcp__reeve-lite__list_upcoming_pulses","tool_use_id":"toolu_1","tool_input":{}}]}'
)
RESUMED = (
    b'{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok",'
    b'"session_id":"s","total_cost_usd":0.0211,"model_usage_since_last_result":'
    b'{"claude-opus-5-5":{"costUSD":0.0106}}}'
)


def feed(*lines: bytes) -> StreamState:
    state = StreamState()
    for line in lines:
        state.feed(line)
    return state


def verdict(state: StreamState, code: int | None = 1, tail: str = "", **kw: object) -> str | None:
    return judge(code, state, tail, timed_out=False, stopped=False, timeout=60, **kw).error  # type: ignore[arg-type]


def test_a_failed_run_is_its_result_text_though_the_subtype_says_success() -> None:
    state = feed(INIT, CREDIT)
    assert state.is_error
    assert state.cost_usd == 0.0
    assert (
        verdict(state, program="claude") == "claude exited with status 1: Credit balance is too low"
    )


def test_a_vanished_session_is_told_apart() -> None:
    state = feed(GONE)
    assert state.session_gone
    result = judge(1, state, "", timed_out=False, stopped=False, timeout=60)
    assert result.session_gone
    assert result.error is not None
    assert "No conversation found" in result.error
    # The same error after an init event is not a vanished session.
    assert not feed(INIT, GONE).session_gone


def test_api_retries_are_progress_and_the_reason_when_the_run_dies() -> None:
    state = feed(INIT, RETRY)
    assert state.progress() == "API retry 3/10: overloaded (529)"
    assert verdict(state, code=-9) == (
        "agent killed by signal SIGKILL: API unreachable after 3 retries: overloaded (529)"
    )


def test_denials_are_listed_and_do_not_fail_the_run() -> None:
    state = feed(INIT, DENIED)
    assert state.denials == ["mcp__reeve-lite__list_upcoming_pulses"]
    assert verdict(state, code=0) is None


def test_the_cost_of_a_resumed_run_is_its_own_not_the_sessions() -> None:
    assert feed(INIT, RESUMED).cost_usd == 0.0106


def test_a_clean_exit_without_a_result_is_a_failure() -> None:
    assert verdict(feed(INIT), code=0, tail="some noise") == (
        "agent exited without a result event: some noise"
    )


def test_a_known_failure_under_a_stack_trace_is_found_with_its_fix() -> None:
    tail = (
        "error: CLI_API_TOKEN is required. Set it via environment variable or run `hapi auth "
        "login`.\n    at main (/$bunfs/root/hapi:1:2)\nBun v1.4.2 (Linux x64)\n"
    )
    error = verdict(StreamState(), tail=tail, program="hapi")
    assert error is not None
    assert error.startswith("hapi exited with status 1: error: CLI_API_TOKEN is required")
    assert error.endswith(
        "(fix: run `hapi auth login` as the daemon's user, or set CLI_API_TOKEN in its environment)"
    )


def test_the_prompt_and_secrets_never_reach_an_error() -> None:
    prompt = "Tell Alice the door code is 4711\nand water the plants"
    tail = f"Command failed: /usr/bin/hapi claude --print -- {prompt}\n"
    error = verdict(StreamState(), tail=tail, private=[prompt, "tok-123456"])
    assert error is not None
    assert "4711" not in error
    assert "Alice" not in error
    assert "plants" not in error
    # A prompt cut short in the output is still recognised by its first line.
    tail = "Command failed: hapi -- Tell Alice the door code is 47…\n"
    assert "Alice" not in (verdict(StreamState(), tail=tail, private=[prompt]) or "")
    assert redact("token tok-123456 leaked", ["tok-123456"]) == "token […] leaked"


def test_profiles_resolve_from_path_hapi_first(tmp_path: Path) -> None:
    for name in ("hapi", "claude"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    hapi = resolve_profile("auto", (), path=str(tmp_path))
    assert (hapi.name, hapi.command) == ("hapi", (str(tmp_path / "hapi"), "claude"))
    (tmp_path / "hapi").unlink()
    claude = resolve_profile("auto", (), path=str(tmp_path))
    assert (claude.name, claude.command) == ("claude", (str(tmp_path / "claude"),))
    command = resolve_profile("auto", ("my-agent", "-x"), path=str(tmp_path))
    assert (command.name, command.command) == ("command", ("my-agent", "-x"))
    (tmp_path / "claude").unlink()
    with pytest.raises(AgentUnavailable, match=r"neither `hapi` nor `claude`.*REEVE_LITE_AGENT"):
        resolve_profile("auto", (), path=str(tmp_path))
    with pytest.raises(AgentUnavailable, match="REEVE_LITE_AGENT_COMMAND"):
        resolve_profile("command", (), path=str(tmp_path))


def test_argv_of_each_profile() -> None:
    config = mcp_config(Path("/run/r/api.sock"), pulse_id=3, attempt_id=9, python="/py")
    hapi = Profile("hapi", ("/bin/hapi", "claude")).argv("-x", session_id="s1", mcp_config=config)
    assert hapi == [
        "/bin/hapi",
        "claude",
        "--mcp-config",
        config,
        "--allowedTools",
        "mcp__reeve-lite",
        "--resume",
        "s1",
        "--print",
        "--output-format",
        "stream-json",
        "--verbose",
    ]
    command = Profile("command", ("agent",)).argv("-x", session_id=None, mcp_config=config)
    assert command[-2:] == ["--", "-x"]
    off = Profile("claude", ("claude",), mcp=False).argv("p", session_id=None, mcp_config=config)
    assert "--mcp-config" not in off
    assert "--allowedTools" not in off
    server = json.loads(config)["mcpServers"]["reeve-lite"]
    assert server == {
        "command": "/py",
        "args": ["-I", "-m", "reeve_lite.cli", "mcp"],
        "env": {
            "REEVE_LITE_SOCKET": "/run/r/api.sock",
            "REEVE_PULSE_ID": "3",
            "REEVE_ATTEMPT_ID": "9",
        },
    }


def test_prompt_composition_and_the_retry_note() -> None:
    assert compose_prompt("Do it", []) == "Do it"
    assert compose_prompt("Do it", ["a", "b"]) == "Do it\n\nReminders:\n- a\n- b"
    note = retry_prompt(2, "claude exited with status 1: API Error: 500")
    assert "attempt 2" in note
    assert "API Error: 500" in note
    assert "Do it" not in note
