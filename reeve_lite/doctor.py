"""`reeve-lite doctor`: can a pulse run here? One line per check, with the fix
when it fails.

The checks run as the user who types the command, in their environment: the
daemon's own environment (a systemd unit's PATH, its HOME) may differ, and the
agent check says which PATH it looked on.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reeve_lite.agent import AgentUnavailable, Profile, hapi_problem, resolve_profile
from reeve_lite.config import Settings

EXIT_FAILED = 1


@dataclass(frozen=True)
class Check:
    """One check's outcome: a line of text, and the fix when it failed."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def run(settings: Settings, *, out: Callable[[str], None] = print) -> int:
    """Run every check, print one line each; 0 when all passed, else 1."""
    results = [check_daemon(settings)]
    agent = check_agent(settings)
    results.append(agent[0])
    profile = agent[1]
    if profile is not None and profile.name == "hapi":
        results.append(check_hapi(profile))
    if profile is not None and profile.name in ("hapi", "claude"):
        results.append(check_login(profile))
    results += [check_desk(settings), check_mcp(settings)]
    if settings.telegram_token:
        results.append(check_telegram(settings))
    for result in results:
        mark = "ok  " if result.ok else "FAIL"
        out(f"{mark} {result.name}: {result.detail}")
        if not result.ok and result.fix:
            out(f"     fix: {result.fix}")
    failed = [r for r in results if not r.ok]
    out(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return EXIT_FAILED if failed else 0


def check_daemon(settings: Settings) -> Check:
    """The daemon answers `status`."""
    from reeve_lite.client import ApiFailure, Client, DaemonUnreachable

    client = Client.from_settings(settings, timeout=10)
    try:
        status = client.status()
    except DaemonUnreachable as exc:
        return Check(
            "daemon",
            False,
            str(exc),
            "start it: systemctl --user start reeve-lite.socket (or reeve-lite serve)",
        )
    except ApiFailure as exc:
        return Check("daemon", False, f"{client.where}: {exc.message}", "check the API token")
    return Check(
        "daemon",
        True,
        f"reeve-lite {status['version']} at {client.where}, agent {status.get('agent')}, "
        f"executor {status['executor']}",
    )


def check_agent(settings: Settings) -> tuple[Check, Profile | None]:
    """The agent profile resolves to a program that answers `--version`."""
    path = os.environ.get("PATH", "")
    try:
        profile = resolve_profile(settings.agent, settings.agent_command, path=path)
    except AgentUnavailable as exc:
        return Check("agent", False, str(exc)), None
    program = profile.command[0]
    try:
        done = subprocess.run(
            [program, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        return Check(
            "agent",
            False,
            f"{profile.name}: {program!r} is not on PATH ({path})",
            "install it (npm install -g @anthropic-ai/claude-code, or @twsxtd/hapi), or set "
            "REEVE_LITE_AGENT",
        ), None
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("agent", False, f"{profile.name}: {program}: {exc}"), None
    version = (done.stdout or done.stderr).strip().splitlines()
    detail = f"{profile.name}: {program} ({version[0] if version else 'no version'})"
    if done.returncode != 0 and profile.name != "command":
        return Check("agent", False, f"{detail}: --version exited {done.returncode}"), profile
    return Check("agent", True, detail), profile


def check_hapi(profile: Profile) -> Check:
    """hapi has its token and its hub answers."""
    problem = hapi_problem(os.environ, Path.home())
    if problem is not None:
        return Check("hapi", False, problem[0], problem[1])
    url = os.environ.get("HAPI_API_URL") or "the URL in hapi's settings"
    return Check("hapi", True, f"the hub at {url} accepts hapi's token")


def check_login(profile: Profile) -> Check:
    """Claude Code has a login or an API key (`claude auth status`; no network)."""
    import shutil

    claude = profile.command[0] if profile.name == "claude" else shutil.which("claude")
    if claude is None:
        return Check(
            "login",
            False,
            "hapi runs `claude`, which is not on PATH",
            "npm install -g @anthropic-ai/claude-code",
        )
    try:
        done = subprocess.run(
            [claude, "auth", "status"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        status = json.loads(done.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return Check("login", False, f"`{claude} auth status` gave no answer")
    how = status.get("authMethod") if isinstance(status, dict) else None
    if isinstance(status, dict) and status.get("loggedIn"):
        return Check("login", True, f"Claude Code is logged in ({how})")
    return Check(
        "login",
        False,
        "Claude Code is not logged in and has no API key",
        "run `claude` once as the daemon's user and /login, or give the daemon ANTHROPIC_API_KEY",
    )


def check_desk(settings: Settings) -> Check:
    """The Desk directory exists (or can be made) and is writable."""
    desk = settings.desk
    try:
        desk.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=desk, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check(
            "desk",
            False,
            f"{desk}: {exc.strerror or exc}",
            "set REEVE_LITE_DESK to a directory the daemon's user can write",
        )
    return Check("desk", True, f"{desk} is writable")


def check_mcp(settings: Settings) -> Check:
    """`reeve-lite mcp`, as a run gets it, lists its tools."""
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "reeve-lite-doctor", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in requests)
    env = {**os.environ, "REEVE_LITE_SOCKET": str(settings.socket)}
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-m", "reeve_lite.cli", "mcp"],
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("mcp", False, f"reeve-lite mcp did not answer: {exc}")
    for line in done.stdout.splitlines():
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and answer.get("id") == 2:
            tools = [t.get("name") for t in answer.get("result", {}).get("tools", [])]
            if tools:
                return Check("mcp", True, f"{len(tools)} tools: {', '.join(tools)}")
    last = (done.stderr.strip().splitlines() or ["no answer to tools/list"])[-1]
    return Check("mcp", False, f"reeve-lite mcp: {last}")


def check_telegram(settings: Settings) -> Check:
    """The bot token is accepted by Telegram's getMe."""
    import aiohttp

    from reeve_lite.telegram import BotApi, TelegramError

    async def get_me() -> object:
        assert settings.telegram_token is not None
        async with aiohttp.ClientSession() as http:
            bot = BotApi(settings.telegram_token, settings.telegram_api_url, http)
            return await bot.call("getMe", {}, seconds=15)

    try:
        me = asyncio.run(get_me())
    except TelegramError as exc:
        return Check(
            "telegram",
            False,
            str(exc),
            "check REEVE_LITE_TELEGRAM_TOKEN (or the credential telegram-token)",
        )
    name = me.get("username") if isinstance(me, dict) else None
    chats = len(settings.telegram_chat_ids)
    detail = f"bot @{name}, {chats} chat(s) allowed"
    if not chats:
        return Check("telegram", False, detail, "set REEVE_LITE_TELEGRAM_CHAT_IDS")
    return Check("telegram", True, detail)
