"""Who creates pulses: the source names the project itself uses.

A pulse's `source` is free text within `SOURCE_PATTERN`; these are the ones
the daemon treats specially or that its own front ends write.
"""

from __future__ import annotations

SOURCE_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"

# The agent scheduling itself (the MCP server): held to the pacing bounds.
SELF = "reeve"
# A message to the Telegram listener.
TELEGRAM = "telegram"
# The command-line client.
CLI = "cli"
# Any other REST client (the body's default).
API = "api"
