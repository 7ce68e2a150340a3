"""The benchmark's agent: notes its first instant, answers in stream-json, exits.

Run as `python -I -S bench/agent.py ...`; `$BENCH_AGENT_LOG` receives one line
`PULSE_ID FIRST_INSTANT` per run.
"""

import time

T0 = time.time()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

with open(os.environ["BENCH_AGENT_LOG"], "a") as log:
    log.write(f"{os.environ.get('REEVE_PULSE_ID', '-')} {T0!r}\n")
session = "bench-" + os.environ.get("REEVE_PULSE_ID", "-")
for event in (
    {"type": "system", "subtype": "init", "session_id": session},
    {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "session_id": session,
        "result": "ok",
        "num_turns": 1,
        "total_cost_usd": 0.0,
    },
):
    sys.stdout.write(json.dumps(event) + "\n")
