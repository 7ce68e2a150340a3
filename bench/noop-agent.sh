#!/bin/sh
# The burst's no-op agent: notes which pulse ran (one line each), and succeeds with
# the one event a run must end with.
echo "$REEVE_PULSE_ID" >> "$BENCH_AGENT_LOG"
echo '{"type":"result","subtype":"success","is_error":false,"result":"ok","num_turns":1}'
