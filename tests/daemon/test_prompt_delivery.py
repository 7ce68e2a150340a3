"""Hostile prompts end to end: sent over TCP to a real daemon, each reaches the
agent (hapi claude) on its stdin, byte for byte, never in its argv (so never in
`ps`, nor read as an option); a NUL, which no argv or terminal carries, is refused."""

from __future__ import annotations

import pytest

from reeve_lite.agent import AGENT_FLAGS, compose_prompt
from reeve_lite.client import ApiFailure
from tests.conftest import Daemon, FakeAgent
from tests.report import record

# 32 KiB exactly (the default REEVE_LITE_MAX_PROMPT_BYTES), in two- and one-byte characters.
LARGE = "ünïcödé\n" * 2730 + "x" * 8  # 12 bytes a line
PROMPTS: dict[str, tuple[str, list[str]]] = {
    "shell": ("$(touch pwned) `id`; rm -rf ~ | cat && echo '\"' > /dev/null &", []),
    "quotes and escapes": ("'single' \"double\" \\back\\slash \\n \\x00 %s {0}", []),
    "newlines": ("line one\nline two\r\n\n-- not the end\n\t-x\n", []),
    "32 KiB": (LARGE, []),
    "leading dash": ("-v --help", []),
    "leading double dash": ("--resume evil --model x", []),
    "the marker itself": ("--", []),
    "a flag with its value": ("--output-format=text", []),
    "a lone dash": ("-", []),
    "notes like flags": ("Do it", ["--resume evil", "-rf /"]),
}


def test_the_large_prompt_is_exactly_the_limit() -> None:
    assert len(LARGE.encode()) == 32768


def test_hostile_prompts_reach_the_agent_as_one_argument(
    daemon: Daemon, fake_agent: FakeAgent
) -> None:
    client = daemon.tcp_client()
    sent: dict[int, str] = {}
    for prompt, notes in PROMPTS.values():
        pulse = client.create(prompt=prompt, sticky_notes=notes or None)
        assert pulse["prompt"] == prompt
        sent[pulse["pulse_id"]] = compose_prompt(prompt, notes)
    for pulse_id in sent:
        daemon.wait_pulse(pulse_id, "completed")
    calls = {int(call["pulse_id"]): call for call in fake_agent.calls()}
    assert set(calls) == set(sent)
    for pulse_id, argument in sent.items():
        call = calls[pulse_id]
        # Every flag is the daemon's (then hapi's); the prompt came on stdin.
        assert call["received"][-4:] == list(AGENT_FLAGS)
        assert call["prompt"].encode() == argument.encode()
        assert not any(argument in word for word in call["argv"] if len(argument) > 2)
        assert call["resume"] is None
        attempt = daemon.client().get(pulse_id)["attempts"][-1]
        assert attempt["result"] == f"done: {argument[:100]}"
    record(
        "hostile input",
        "prompts through the API to the agent: shell metacharacters, quotes, newlines, "
        "32 KiB, leading -/--, flag-like sticky notes",
        f"{len(sent)} of {len(PROMPTS)} arrive on the agent's stdin byte for byte, none in argv",
    )


NUL_CASES: list[tuple[dict[str, object], str]] = [
    ({"prompt": "before\x00after"}, "prompt"),
    ({"prompt": "\x00"}, "prompt"),
    ({"prompt": "fine", "sticky_notes": ["ok", "a\x00b"]}, "sticky_notes"),
]


def test_a_nul_is_refused_naming_the_field(daemon: Daemon, fake_agent: FakeAgent) -> None:
    # An argv string ends at a NUL: the agent would get a cut prompt, so none is taken.
    for fields, field in NUL_CASES:
        with pytest.raises(ApiFailure) as info:
            daemon.tcp_client().create(**fields)
        failure = info.value
        assert (failure.status, failure.code, failure.field) == (422, "invalid_field", field)
        assert "NUL" in failure.message
    assert daemon.client().list()["total"] == 0
    assert fake_agent.calls() == []
    record(
        "hostile input",
        "prompt or sticky note with NUL, over TCP",
        f"{len(NUL_CASES)} of {len(NUL_CASES)} refused with 422 naming the field, nothing stored",
    )


def test_a_comment_is_shown_but_never_sent_to_the_agent(
    daemon: Daemon, fake_agent: FakeAgent
) -> None:
    client = daemon.client()
    made = client.create(prompt="water the plants", comment="asked by Ana on Tuesday")
    done = daemon.wait_pulse(made["pulse_id"], "completed")
    assert done["comment"] == "asked by Ana on Tuesday"
    [call] = [c for c in fake_agent.calls() if int(c["pulse_id"]) == made["pulse_id"]]
    assert call["prompt"] == "water the plants"
    assert not any("Ana" in word for word in call["argv"])
