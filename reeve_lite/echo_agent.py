"""A stand-in agent that answers any prompt in Claude Code's stream-json.

`reeve-lite echo-agent --print --output-format stream-json --verbose [--resume ID] -- PROMPT`
prints an init event, an assistant message that echoes the prompt, and a
success result, so that a pulse can be watched end to end without `hapi`.
"""

from __future__ import annotations

import json
import sys
import uuid

# Claude Code flags that take a value; the rest are switches.
_VALUED = {
    "--output-format",
    "--resume",
    "-r",
    "--model",
    "--input-format",
    "--session-id",
    "--permission-mode",
    "--max-turns",
    "--append-system-prompt",
    # What the daemon adds: its MCP server and the permission for its tools.
    "--mcp-config",
    "--allowedTools",
    "--allowed-tools",
    "--settings",
    "--add-dir",
}


def parse(argv: list[str]) -> tuple[str | None, str]:
    """(session to resume, prompt) from Claude-style arguments."""
    resume: str | None = None
    words: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            words += argv[i + 1 :]
            break
        if arg in _VALUED and i + 1 < len(argv):
            if arg in ("--resume", "-r"):
                resume = argv[i + 1]
            i += 2
            continue
        if not arg.startswith("-"):
            words.append(arg)
        i += 1
    return resume, " ".join(words)


def main(argv: list[str]) -> int:
    """Print the stream-json of one echoed turn; always succeeds."""
    resume, prompt = parse(argv)
    session = resume or str(uuid.uuid4())
    answer = f"Echo: {prompt}" if prompt else "Echo: (empty prompt)"
    events = [
        {"type": "system", "subtype": "init", "session_id": session, "tools": [], "model": "echo"},
        {
            "type": "assistant",
            "session_id": session,
            "message": {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        },
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "session_id": session,
            "result": answer,
            "num_turns": 1,
            "total_cost_usd": 0.0,
            "duration_ms": 0,
        },
    ]
    for event in events:
        sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()
    return 0
