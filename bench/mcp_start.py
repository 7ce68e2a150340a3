"""Start-up of `reeve-lite mcp`: process start to the answer of `initialize`.

    python -m bench.mcp_start [--runs 9]

Beside it, in the same run: `python -c pass` (the interpreter's floor) and
`python -c "import mcp.server.mcpserver"` (the SDK's import alone), so the
share that is reeve-lite's own is visible. It prints; it never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


async def initialize_ms() -> float:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "reeve_lite.cli", "mcp"],
        env={"REEVE_LITE_SOCKET": "/nonexistent/reeve-lite.sock"},
    )
    start = time.perf_counter()
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return (time.perf_counter() - start) * 1000


def command_ms(*argv: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], check=True)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    rows = {
        "python -c pass": [command_ms("-c", "pass") for _ in range(args.runs)],
        "import mcp.server.mcpserver": [
            command_ms("-c", "import mcp.server.mcpserver") for _ in range(args.runs)
        ],
        "reeve-lite mcp to initialize": [asyncio.run(initialize_ms()) for _ in range(args.runs)],
    }
    print(f"{'ms (' + str(args.runs) + ' runs)':<32}{'min':>8}{'median':>8}{'max':>8}")
    for label, values in rows.items():
        print(f"{label:<32}{min(values):>8.0f}{statistics.median(values):>8.0f}{max(values):>8.0f}")
    own = statistics.median(rows["reeve-lite mcp to initialize"]) - statistics.median(
        rows["import mcp.server.mcpserver"]
    )
    print(f"goal: initialize <= 500 ms; beyond the SDK's own import: {own:.0f} ms")


if __name__ == "__main__":
    main()
