#!/bin/sh
# The burst's no-op agent: notes which pulse ran (one line each), succeeds.
echo "$REEVE_PULSE_ID" >> "$BENCH_AGENT_LOG"
