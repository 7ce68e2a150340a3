"""The `reeve-lite` command: the daemon (`serve`) and a client for everything else.

Exit status: 0 done; 1 the daemon is unreachable or failed; 2 bad input
(a bad flag, setting or value the daemon refused).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any
from zoneinfo import ZoneInfo

from reeve_lite import __version__, sources
from reeve_lite.config import SETTINGS, ConfigError, Settings, load_settings
from reeve_lite.timeparse import describe_instant as _when
from reeve_lite.timeparse import format_duration

PRIORITIES = ("critical", "high", "normal", "low", "deferred")
STATUSES = (
    "pending",
    "processing",
    "completed",
    "failed",
    "cancelled",
    "expired",
    "skipped",
    "all",
)
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reeve-lite",
        description="The pulse queue of a proactive AI agent: schedule prompts for the agent "
        "CLI and run them on time. `serve` runs the daemon; the other commands talk to it.",
        epilog="Settings come from REEVE_LITE_* variables; `reeve-lite config` lists them.",
    )
    parser.add_argument("--version", action="version", version=f"reeve-lite {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    for setting in SETTINGS:
        if setting.flag:
            serve.add_argument(
                setting.flag,
                dest=setting.name,
                metavar=setting_metavar(setting),
                help=f"{setting.help} (env {setting.env})",
            )

    # What every client command takes; `client` adds --json for those that answer data.
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--socket", metavar="PATH", help="daemon's Unix socket (env REEVE_LITE_SOCKET)"
    )
    connection.add_argument(
        "--url",
        metavar="URL",
        help="daemon's http(s) URL instead of the socket (env REEVE_LITE_URL)",
    )
    connection.add_argument(
        "--token-file", dest="token_file", metavar="PATH", help="file with the API token"
    )
    client = argparse.ArgumentParser(add_help=False, parents=[connection])
    client.add_argument("--json", action="store_true", help="print the JSON answer")

    _add_schedule(sub, client)

    p = sub.add_parser("list", parents=[client], help="list pulses")
    p.add_argument("--status", choices=STATUSES, default="pending")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)

    for name, text in (("show", "show a pulse and its attempts"), ("cancel", "cancel a pulse")):
        p = sub.add_parser(name, parents=[client], help=text)
        p.add_argument("pulse_id", type=int, metavar="ID")

    p = sub.add_parser("reschedule", parents=[client], help="move a pending pulse")
    p.add_argument("pulse_id", type=int, metavar="ID")
    p.add_argument("when", metavar="WHEN")

    sub.add_parser("status", parents=[client], help="the daemon's queue summary")
    p = sub.add_parser(
        "agenda",
        parents=[client],
        help="every fire time of the coming days, by day",
        description="Every fire time in the next days, recurring pulses expanded, grouped "
        "by day in your time zone: time, priority, source, the prompt's first line, id.",
    )
    p.add_argument(
        "--days", type=int, default=7, metavar="N", help="how many days ahead (default 7)"
    )
    p = sub.add_parser(
        "history",
        parents=[client],
        help="recent runs, newest first, and totals per day",
        description="Recent attempts, newest first (outcome, duration, cost, the first "
        "line of the result or error), then runs, failures and cost per day.",
    )
    p.add_argument(
        "--since",
        metavar="DURATION|WHEN",
        default="7d",
        help="how far back: '3d', '12h', or a time such as 2026-11-01 (default 7d)",
    )
    p.add_argument(
        "--limit", type=int, default=50, metavar="N", help="how many runs at most (default 50)"
    )
    sub.add_parser(
        "telegram",
        parents=[connection],
        help="run the Telegram listener",
        description="Long-poll the Telegram bot: a message from an allowed chat becomes an "
        "immediate pulse.",
    )
    sub.add_parser(
        "mcp",
        parents=[connection],
        help="serve MCP on stdio (for Claude Code)",
        description="An MCP server on stdin/stdout whose tools schedule, list, "
        "show, move and cancel pulses through the daemon.",
    )
    _add_maintenance(sub, connection)
    for name, command in sub.choices.items():
        command.description = command.description or _capital(command_help(sub, name))
        if name in EXAMPLES:
            command.epilog = "example:\n" + "\n".join(f"  {e}" for e in EXAMPLES[name])
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def _add_schedule(sub: Any, client: argparse.ArgumentParser) -> None:
    """`schedule`: every field of a pulse a user may set."""
    p = sub.add_parser(
        "schedule",
        parents=[client],
        help="schedule a pulse",
        description="Schedule PROMPT for the agent at WHEN: 'now', 'in 5 minutes', "
        "'2h', 'tomorrow at 9am', 'tonight', 'at 17:30', 'monday 9am', or ISO 8601.",
    )
    p.add_argument("when", metavar="WHEN")
    p.add_argument(
        "prompt",
        metavar="PROMPT",
        nargs="?",
        help="what the agent is asked to do; '-' reads it from standard input",
    )
    p.add_argument(
        "--prompt-file",
        metavar="PATH",
        help="read the prompt from this file instead (for a long prompt)",
    )
    p.add_argument("--priority", choices=PRIORITIES, default="normal")
    p.add_argument(
        "--cron", metavar="EXPR", help="5-field cron expression: recur, e.g. '30 9 * * 1-5'"
    )
    p.add_argument("--tz", dest="timezone", metavar="ZONE", help="IANA zone of WHEN and --cron")
    p.add_argument(
        "--note", dest="sticky_notes", action="append", metavar="TEXT", help="reminder (repeatable)"
    )
    p.add_argument("--tag", dest="tags", action="append", metavar="TAG", help="tag (repeatable)")
    p.add_argument(
        "--session", dest="session_id", metavar="SESSION_ID", help="agent session to resume"
    )
    p.add_argument(
        "--max-retries", type=int, dest="max_retries", metavar="N", help="retries after a failure"
    )
    p.add_argument("--key", dest="idempotency_key", metavar="KEY", help="idempotency key")
    p.add_argument(
        "--on-missed",
        choices=("once", "all", "skip"),
        help="when it could not start on time: one catch-up run (once, the default), "
        "one per missed occurrence (all), or none (skip)",
    )
    p.add_argument(
        "--expires-after",
        metavar="DURATION",
        help="never start an occurrence later than this after its time ('never': no limit)",
    )
    p.add_argument("--expires-at", metavar="WHEN", help="never start after this instant")
    p.add_argument(
        "--concurrency-key",
        metavar="KEY",
        help="pulses with the same key never overlap (default: the Desk's)",
    )
    p.add_argument("--jitter", metavar="DURATION", help="with --cron: start up to this much late")
    p.add_argument(
        "--comment", metavar="TEXT", help="for whoever reads the queue; not sent to the agent"
    )


def _add_maintenance(sub: Any, connection: argparse.ArgumentParser) -> None:
    """The commands that look after the installation: backup, restore, config,
    doctor, and the stand-in agent."""
    p = sub.add_parser(
        "backup",
        help="copy the database to a dated file, keeping the last N",
        description="A consistent copy of the live database (SQLite's online "
        "backup), safe while the daemon runs.",
    )
    p.add_argument(
        "--dir",
        dest="directory",
        metavar="PATH",
        help="where (default: backups/ beside the database)",
    )
    p.add_argument(
        "--keep", type=int, default=7, metavar="N", help="how many backups to keep (default 7)"
    )
    p.add_argument("--db", metavar="PATH", help="the database (default: REEVE_LITE_DB)")

    p = sub.add_parser(
        "restore",
        help="put a backup in place of the database (the daemon stopped)",
        description="Check FILE (a backup made by `reeve-lite backup`) and put it in place "
        "of the database; the database it replaces is kept beside it. The daemon must be "
        "stopped: systemctl stop reeve-lite.socket reeve-lite.service.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--db", metavar="PATH", help="the database (default: REEVE_LITE_DB)")

    p = sub.add_parser("config", help="print the effective settings (secrets hidden)")
    p.add_argument(
        "--template",
        action="store_true",
        help="print a configuration file with every setting commented out at its "
        "default for the system service",
    )
    sub.add_parser(
        "doctor",
        parents=[connection],
        help="check that pulses can run: daemon, agent CLI, Desk, MCP tools, Telegram",
        description="One line per check, with the fix when it fails; exit status 1 when "
        "any check fails.",
    )
    sub.add_parser(
        "echo-agent",
        add_help=False,
        help="stand-in agent that answers in Claude Code's stream-json",
    )


# One or two examples for each command's --help.
EXAMPLES = {
    "serve": ["reeve-lite serve --agent claude --max-concurrent 2"],
    "schedule": [
        'reeve-lite schedule "tomorrow at 9am" "Plan the day" --priority high',
        'reeve-lite schedule "monday 9am" "Weekly review" --cron "0 9 * * 1" --tz Europe/Berlin',
        "reeve-lite schedule now - < brief.txt",
    ],
    "list": ["reeve-lite list --status failed --limit 10"],
    "show": ["reeve-lite show 12"],
    "cancel": ["reeve-lite cancel 12"],
    "reschedule": ['reeve-lite reschedule 12 "in 2 hours"'],
    "status": ["reeve-lite status --json"],
    "agenda": ["reeve-lite agenda --days 3"],
    "history": ["reeve-lite history --since 3d"],
    "telegram": ["REEVE_LITE_TELEGRAM_CHAT_IDS=123456 reeve-lite telegram"],
    "mcp": ["claude mcp add -s user reeve-lite -- reeve-lite mcp"],
    "backup": ["reeve-lite backup --keep 14"],
    "restore": [
        "reeve-lite restore ~/.local/state/reeve-lite/backups/reeve-lite-20261126T030000Z.db"
    ],
    "config": ["reeve-lite config", "reeve-lite config --template > reeve-lite.conf"],
    "doctor": ["reeve-lite doctor"],
    "echo-agent": ["REEVE_LITE_AGENT_COMMAND='reeve-lite echo-agent' reeve-lite serve"],
}


def command_help(sub: Any, name: str) -> str:
    """The one-line help a subcommand was added with."""
    for action in sub._choices_actions:  # argparse keeps them there
        if action.dest == name:
            return str(action.help or "")
    return ""


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:] + ("." if text and not text.endswith(".") else "")


def setting_metavar(setting: Any) -> str:
    """What a `serve` flag takes, from its setting's parser."""
    names = {
        "_duration": "DURATION",
        "_path": "PATH",
        "_optional_path": "PATH",
        "_listen": "HOST:PORT",
        "_zone": "ZONE",
        "_command": "COMMAND",
        "_optional_command": "COMMAND",
    }
    name = getattr(setting.parse, "__name__", "")
    if name in names:
        return names[name]
    if name == "parse" and setting.name == "agent":  # a _choice
        return "{auto,hapi,claude,command}"
    return "N" if "int" in getattr(setting.parse, "__qualname__", "") else setting.name.upper()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `reeve-lite` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["echo-agent"]:
        from reeve_lite import echo_agent

        if argv[1:] in (["--help"], ["-h"]):
            print(echo_agent.__doc__)
            return 0
        return echo_agent.main(argv[1:])
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "schedule" and not extra[0].startswith("-"):
            # `schedule in 10 minutes Call Bob`: the time took one word, the prompt another.
            parser.exit(
                EXIT_USAGE,
                f"reeve-lite: schedule takes WHEN and PROMPT, each one argument; quote a "
                f'time of several words: reeve-lite schedule "in 10 minutes" "…" '
                f"(got {' '.join([args.when, args.prompt or '', *extra]).strip()!r})\n",
            )
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "config" and args.template:
        # The defaults, whatever this environment says (a package build runs it).
        from reeve_lite.config import config_template

        print(config_template(), end="")
        return 0
    overrides = {k: getattr(args, k, None) for k in ("socket", "url", "token_file")}
    if args.command == "serve":
        overrides.update({s.name: getattr(args, s.name) for s in SETTINGS if s.flag})
    try:
        settings = load_settings(overrides=overrides)
    except ConfigError as exc:
        print(f"reeve-lite: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "serve":
        from reeve_lite.daemon import serve
        from reeve_lite.systemd import setup_logging

        setup_logging(settings.log_level)
        return serve(settings, lambda: load_settings(overrides=overrides))
    if args.command == "config":
        _print_config(settings)
        return 0
    if args.command == "backup":
        return _backup(args, settings)
    if args.command == "restore":
        return _restore(args, settings)
    if args.command == "telegram":
        from reeve_lite.systemd import setup_logging
        from reeve_lite.telegram_listener import run as listen

        setup_logging(settings.log_level)
        return listen(settings, settings.db.parent)
    if args.command == "doctor":
        from reeve_lite.doctor import run as doctor

        return doctor(settings)
    if args.command == "mcp":
        from reeve_lite.client import Client
        from reeve_lite.mcp_server import run

        return run(Client.from_settings(settings))
    # `reeve-lite show 8 | head -3`: a reader that goes away ends the command
    # quietly, as it ends `cat` (SIGPIPE), rather than with a traceback.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    return _client_command(args, settings)


def _backup(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from reeve_lite.backup import BackupError, backup

    if args.keep < 1:
        print("reeve-lite: --keep must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    db = Path(args.db) if args.db else settings.db
    directory = Path(args.directory) if args.directory else db.parent / "backups"
    try:
        target = backup(db, directory, keep=args.keep)
    except (BackupError, OSError) as exc:
        print(f"reeve-lite: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(target)
    return 0


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from reeve_lite.backup import BackupError, restore

    db = Path(args.db) if args.db else settings.db
    try:
        kept = restore(Path(args.file), db)
    except (BackupError, OSError) as exc:
        print(f"reeve-lite: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"restored {args.file} to {db}" + (f"; the previous database is {kept}" if kept else ""))
    return 0


def _read_prompt(args: argparse.Namespace) -> str:
    """The prompt of `schedule`: the argument, standard input for `-`, or --prompt-file."""
    if args.prompt_file is not None:
        if args.prompt is not None:
            raise UsageError("give the prompt or --prompt-file, not both")
        try:
            with open(args.prompt_file, encoding="utf-8") as handle:
                return handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --prompt-file {args.prompt_file}: {exc}") from None
    if args.prompt is None:
        raise UsageError(
            "give the prompt (or '-' to read it from standard input, or --prompt-file)"
        )
    if args.prompt == "-":
        return sys.stdin.read()
    return str(args.prompt)


class UsageError(Exception):
    """A command line the client cannot act on; the message says why."""


def _client_command(args: argparse.Namespace, settings: Settings) -> int:
    from reeve_lite.client import ApiFailure, Client, DaemonUnreachable

    if args.command == "schedule":
        try:
            args.prompt = _read_prompt(args)
        except UsageError as exc:
            print(f"reeve-lite: {exc}", file=sys.stderr)
            return EXIT_USAGE

    client = Client.from_settings(settings)
    try:
        data = _call(args, client)
    except DaemonUnreachable as exc:
        print(f"reeve-lite: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ApiFailure as exc:
        where = f" ({exc.field})" if exc.field else ""
        print(f"reeve-lite: {exc.message}{where}", file=sys.stderr)
        return EXIT_USAGE if exc.status < 500 else EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        _print_human(args.command, data, settings.zone)
    return 0


def _call(args: argparse.Namespace, client: Any) -> Any:
    command = args.command
    if command == "schedule":
        from reeve_lite.client import PulseRequest

        request = PulseRequest(
            prompt=args.prompt,
            scheduled_at=args.when,
            priority=args.priority,
            source=sources.CLI,
            cron=args.cron,
            timezone=args.timezone,
            sticky_notes=args.sticky_notes,
            tags=args.tags,
            session_id=args.session_id,
            max_retries=args.max_retries,
            idempotency_key=args.idempotency_key,
            on_missed=args.on_missed,
            expires_after=args.expires_after,
            expires_at=args.expires_at,
            concurrency_key=args.concurrency_key,
            comment=args.comment,
            jitter=args.jitter,
        )
        return client.create(request)
    if command == "list":
        status = None if args.status == "all" else args.status
        return client.list(status=status, limit=args.limit, offset=args.offset)
    if command == "show":
        return client.get(args.pulse_id)
    if command == "cancel":
        return client.cancel(args.pulse_id)
    if command == "reschedule":
        return client.reschedule(args.pulse_id, args.when)
    if command == "agenda":
        return client.agenda(args.days)
    if command == "history":
        return client.history(args.since, args.limit)
    return client.status()


# --- human-readable output


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_human(command: str, data: Any, zone: ZoneInfo) -> None:
    if command == "list":
        _print_table(data["pulses"], zone)
        shown = data["offset"] + len(data["pulses"])
        print(
            f"{len(data['pulses'])} shown of {data['total']}"
            + (f" (next page: --offset {shown})" if shown < data["total"] else "")
        )
    elif command == "agenda":
        _print_agenda(data, zone)
    elif command == "history":
        _print_history(data, zone)
    elif command == "status":
        counts = ", ".join(f"{n} {s}" for s, n in data["counts"].items() if n)
        print(
            f"reeve-lite {data['version']}, up {format_duration(data['uptime_s'])}, "
            f"agent {data.get('agent') or '?'}, executor {data['executor']}, "
            f"max {data['max_concurrent']} at once"
        )
        print(f"pulses: {counts or 'none'}")
        print(
            f"next due: {_when(data['next_due_at'], zone)}"
            + (f", pulse {data['next_due_pulse_id']}" if data["next_due_pulse_id"] else "")
        )
        for run in data["running"]:
            progress = f" ({run['progress']})" if run.get("progress") else ""
            print(
                f"running: pulse {run['pulse_id']} since {_when(run['started_at'], zone)}"
                + progress
            )
        if data["last_error"]:
            print(f"last error: {data['last_error']}")
        if data.get("last_denial"):
            print(f"last denied tools: {data['last_denial']}")
    else:
        _print_pulse(
            data,
            zone,
            verb={"schedule": "scheduled", "cancel": "cancelled", "reschedule": "rescheduled"}.get(
                command
            ),
        )


def _print_agenda(data: dict[str, Any], zone: ZoneInfo) -> None:
    from datetime import datetime

    day = None
    for entry in data["entries"]:
        at = datetime.fromisoformat(entry["at"]).astimezone(zone)
        if at.date() != day:
            day = at.date()
            print(f"{at:%a %d %b %Y} ({zone.key})")
        mark = " ↻" if entry["recurring"] else ""
        print(
            f"  {at:%H:%M}  {entry['priority']:<8}  {entry['source']:<8}  "
            f"{_short(entry['prompt'], 50):<50}  #{entry['pulse_id']}{mark}"
        )
    if not data["entries"]:
        print("nothing planned")
    if data["truncated"]:
        print("(more fire times than shown: fewer --days)")


def _print_history(data: dict[str, Any], zone: ZoneInfo) -> None:
    for a in data["attempts"]:
        took = f"{a['duration_ms'] / 1000:.1f}s" if a["duration_ms"] is not None else "-"
        cost = f"${a['cost_usd']:.4f}" if a["cost_usd"] is not None else "-"
        summary = a["summary"] or a["prompt"]
        print(
            f"{_when(a['started_at'], zone):<42}  {a['outcome']:<7}  {took:>7}  {cost:>8}  "
            f"#{a['pulse_id']}.{a['number']}  {_short(summary, 60)}"
        )
    if not data["attempts"]:
        print("no runs")
    print(f"\n{'day':<10}  {'runs':>5}  {'failed':>6}  {'cost':>9}   ({data['timezone']})")
    for day in data["days"]:
        print(f"{day['day']:<10}  {day['runs']:>5}  {day['failures']:>6}  ${day['cost_usd']:>8.4f}")


def _print_fire_times(p: dict[str, Any]) -> None:
    for fire in p.get("next_fire_times") or []:
        print(f"{'fires':>10}: {fire['utc']}  ({fire['local']} {p['timezone']})")


def _print_table(pulses: list[dict[str, Any]], zone: ZoneInfo) -> None:
    header = f"{'ID':>6}  {'DUE':<38}  {'PRIORITY':<8}  {'STATUS':<10}  {'TRIES':>5}  PROMPT"
    print(header)
    for p in pulses:
        tries = f"{p['retry_count']}/{p['max_retries']}"
        print(
            f"{p['pulse_id']:>6}  {_when(p['scheduled_at'], zone):<38}  {p['priority']:<8}  "
            f"{p['status']:<10}  {tries:>5}  {_short(p['prompt'], 50)}"
        )


def _print_pulse(p: dict[str, Any], zone: ZoneInfo, verb: str | None) -> None:
    if verb:
        print(f"pulse {p['pulse_id']} {verb}: {p['status']}, due {_when(p['scheduled_at'], zone)}")
        if p.get("cron"):
            print(f"{'recurs':>10}: {p['cron']} ({p['timezone']})")
        _print_fire_times(p)
        return
    expires = p.get("expires_after")
    rows = [
        ("pulse", p["pulse_id"]),
        ("status", p["status"]),
        ("due", _when(p["scheduled_at"], zone)),
        ("priority", p["priority"]),
        ("source", p["source"]),
        ("comment", p.get("comment")),
        ("tries", f"{p['retry_count']} of {p['max_retries']} retries"),
        ("recurs", f"{p['cron']} ({p['timezone']})" if p["cron"] else None),
        ("jitter", format_duration(p["jitter"]) if p.get("jitter") else None),
        ("on missed", p.get("on_missed")),
        ("expires", f"{format_duration(expires)} after its time" if expires else None),
        ("ends", _when(p["expires_at"], zone) if p.get("expires_at") else None),
        ("deadline", _when(p["deadline"], zone) if p.get("deadline") else None),
        ("key", p.get("concurrency_key")),
        ("catch-ups", p.get("catchup_remaining") or None),
        ("session", p["session_id"]),
        ("tags", ", ".join(p["tags"]) or None),
        ("last error", p["last_error"]),
        ("now", p.get("progress")),
    ]
    for key, value in rows:
        if value is not None:
            print(f"{key:>10}: {value}")
    _print_fire_times(p)
    for m in p.get("missed") or []:
        count = "more than 20000" if m["count"] is None else m["count"]
        span = _when(m["first_due"], zone)
        if m["last_due"] != m["first_due"]:
            span += f" to {_when(m['last_due'], zone)}"
        print(f"{'missed':>10}: {count} {m['action'].replace('_', ' ')}, due {span}")
    print(f"{'prompt':>10}: {p['prompt']}")
    for note in p["sticky_notes"]:
        print(f"{'reminder':>10}: {note}")
    for a in p.get("attempts") or []:
        outcome = "running" if a["finished_at"] is None else ("failed" if a["is_error"] else "ok")
        cost = f", ${a['cost_usd']:.4f}" if a["cost_usd"] is not None else ""
        took = f", {a['duration_ms']} ms" if a["duration_ms"] is not None else ""
        print(
            f"  attempt {a['number']}: {outcome}, {_when(a['started_at'], zone)}{took}{cost}"
            + (f", exit {a['exit_code']}" if a["exit_code"] is not None else "")
        )
        if a["error"]:
            print(f"    error: {a['error']}")
        if a.get("denials"):
            print(f"    denied: {', '.join(a['denials'])}")
        if a["result"]:
            print(f"    result: {_short(a['result'], 200)}")


def _print_config(settings: Settings) -> None:
    """The daemon's effective settings when it answers, else this shell's; the
    first line says which."""
    from reeve_lite.client import ApiFailure, Client, DaemonUnreachable
    from reeve_lite.config import settings_text

    client = Client.from_settings(settings, timeout=5)
    try:
        shown = client.request("GET", "/api/config")["settings"]
        print(f"# the daemon's effective settings ({client.where})")
    except (DaemonUnreachable, ApiFailure) as exc:
        shown = settings_text(settings)
        why = "is not reachable" if isinstance(exc, DaemonUnreachable) else "refused"
        print(
            f"# the daemon at {client.where} {why}: the settings this shell gives "
            "a daemon it starts"
        )
    for name, value in shown.items():
        print(f"{name}={value}")


if __name__ == "__main__":
    sys.exit(main())
