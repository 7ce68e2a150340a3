"""Cold start: socket activation to the first answer, `reeve-lite mcp` to its
`initialize` answer, and a CLI `status` round trip, beside `python -c pass`.

    python -m bench.cold_start [--runs 9]

Medians of RUNS fresh processes each. Socket activation goes through
`systemd-socket-activate` (a fresh, empty database each time, its schema made
beforehand as an earlier start would have): the clock starts at
the client's connect, which is what starts the daemon. The MCP server is
driven by the SDK's own stdio client. `status` runs the installed
`reeve-lite` command against a daemon that is already up.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, clean_env, daemon_env, met, p50, print_rows, running_daemon
from reeve_lite.client import Client
from reeve_lite.store import Store

ACTIVATE = shutil.which("systemd-socket-activate")


def command_ms(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def activation_ms(tmp: Path) -> float:
    """One activation: connect to the listening socket, time to the health answer."""
    assert ACTIVATE is not None
    tmp.mkdir()
    asyncio.run(_installed(tmp / "reeve.db"))
    env = daemon_env(tmp)
    argv = [ACTIVATE, "-l", str(tmp / "api.sock"), "--fdname=api"]
    argv += [f"-E{k}={v}" for k, v in env.items() if k.startswith("REEVE_LITE_")]
    argv += [sys.executable, "-m", "reeve_lite.cli", "serve"]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (tmp / "api.sock").exists():
            if time.monotonic() > deadline:
                raise SystemExit("systemd-socket-activate did not listen")
            time.sleep(0.01)
        client = Client(socket_path=tmp / "api.sock", timeout=30)
        start = time.perf_counter()
        client.health()
        return (time.perf_counter() - start) * 1000
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _installed(db: Path) -> None:
    """A database as an earlier start left it (the first start also creates the schema)."""
    await (await Store.open(db)).close()


async def mcp_initialize_ms() -> float:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "reeve_lite.cli", "mcp"],
        env={"REEVE_LITE_SOCKET": "/nonexistent/reeve-lite.sock"},
    )
    start = time.perf_counter()
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return (time.perf_counter() - start) * 1000


def reeve_lite_command() -> list[str]:
    """The installed `reeve-lite` beside this Python, else the module."""
    script = Path(sys.executable).with_name("reeve-lite")
    return [str(script)] if script.exists() else [sys.executable, "-m", "reeve_lite.cli"]


def rows(runs: int = 9) -> list[Row]:
    """Median start-up times beside `python -c pass`."""
    floor = p50([command_ms([sys.executable, "-c", "pass"]) for _ in range(runs)])
    base = f"{floor:.0f} ms (python -c pass)"

    def row(figure: str, values: list[float], goal: float) -> Row:
        ms = p50(values)
        return Row(
            figure, f"{ms:.0f} ms", base, f"{ms / floor:.1f}", f"<= {goal:.0f} ms", met(ms <= goal)
        )

    found = []
    if ACTIVATE is None:
        found.append(
            Row(
                "socket activation to first answer",
                "not measured: no systemd-socket-activate",
                goal="<= 300 ms",
            )
        )
    else:
        with tempfile.TemporaryDirectory(prefix="reeve-bench-") as name:
            times = [activation_ms(Path(name) / str(n)) for n in range(runs)]
        found.append(row("socket activation to first answer", times, 300))
    found.append(
        row(
            "reeve-lite mcp to initialize answer",
            [asyncio.run(mcp_initialize_ms()) for _ in range(runs)],
            500,
        )
    )
    with tempfile.TemporaryDirectory(prefix="reeve-bench-") as name:
        tmp = Path(name)
        with running_daemon(tmp):
            env = clean_env() | {"REEVE_LITE_SOCKET": str(tmp / "api.sock")}
            argv = [*reeve_lite_command(), "status"]
            times = [command_ms(argv, env) for _ in range(runs)]
    found.append(row("CLI status round trip", times, 250))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    print_rows(rows(parser.parse_args().runs))


if __name__ == "__main__":
    main()
