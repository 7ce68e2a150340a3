"""What a careful newcomer hit in the first hour, each through the real daemon."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reeve_lite.client import ApiFailure
from tests.conftest import Daemon, serve_once
from tests.daemon.test_mcp import call, mcp_session


def cli(daemon: Daemon, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", *args],
        env=daemon.env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("when", ["2020-01-01T00:00:00Z", "2020-01-01 09:00"])
def test_a_time_in_the_past_is_refused_saying_how_far_back(daemon: Daemon, when: str) -> None:
    with pytest.raises(ApiFailure) as info:
        daemon.client().create(prompt="too late", scheduled_at=when)
    failure = info.value
    assert (failure.status, failure.code, failure.field) == (422, "invalid_time", "scheduled_at")
    assert "in the past" in failure.message
    assert 'use "now" to run it at once' in failure.message
    assert failure.message.startswith(f"scheduled_at {when!r} is ")
    assert daemon.client().list(status=None)["total"] == 0


def test_a_moment_ago_is_clock_skew_and_runs_now(daemon: Daemon) -> None:
    moment_ago = (datetime.now(UTC) - timedelta(seconds=20)).isoformat()
    made = daemon.client().create(prompt="skewed", scheduled_at=moment_ago)
    daemon.wait_pulse(made["pulse_id"], "completed")


def test_reschedule_and_the_cli_refuse_the_past_too(daemon: Daemon) -> None:
    pending = daemon.client().create(prompt="later", scheduled_at="in 1 hour")
    with pytest.raises(ApiFailure, match="in the past") as info:
        daemon.client().reschedule(pending["pulse_id"], "2020-01-01T00:00:00Z")
    assert info.value.field == "scheduled_at"
    done = cli(daemon, "schedule", "2020-01-01T00:00:00Z", "too late")
    assert done.returncode == 2
    assert "in the past" in done.stderr
    assert "(scheduled_at)" in done.stderr


async def test_mcp_says_in_the_past_not_due_in_0s(daemon: Daemon) -> None:
    async with mcp_session(daemon) as session:
        result = await call(
            session, "schedule_pulse", prompt="too late", scheduled_at="2020-01-01T00:00:00Z"
        )
    assert result.is_error
    text = result.content[0].text
    assert "in the past" in text
    assert "due in 0s" not in text


async def test_an_agents_cron_pulse_keeps_the_minimum_delay_on_its_first_run(
    daemon: Daemon,
) -> None:
    before = datetime.now(UTC)
    async with mcp_session(daemon) as session:
        result = await call(
            session, "schedule_pulse", prompt="every minute", cron="* * * * *", timezone="UTC"
        )
    assert not result.is_error, result.content[0].text
    [pulse] = daemon.client().list()["pulses"]
    due = datetime.fromisoformat(pulse["scheduled_at"])
    assert due >= before + timedelta(minutes=1)  # REEVE_LITE_SELF_MIN_DELAY
    assert due.second == 0


def test_piping_show_to_head_is_quiet(make_daemon: Callable[..., Daemon]) -> None:
    # More than a pipe holds (64 KiB), so that the writer meets the closed pipe.
    daemon = make_daemon(REEVE_LITE_MAX_PROMPT_BYTES="128000")
    made = daemon.client().create(prompt="a long line\n" * 10000)
    done = subprocess.run(
        f"{sys.executable} -m reeve_lite.cli show {made['pulse_id']} | head -3",
        shell=True,
        env=daemon.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert done.stderr == ""
    assert len(done.stdout.splitlines()) == 3


async def test_mcp_schemas_suit_generic_clients(daemon: Daemon) -> None:
    async with mcp_session(daemon) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    schedule = tools["schedule_pulse"].input_schema
    props = schedule["properties"]
    # Optional arguments have their plain type (no `anyOf` with null), are left out of
    # `required`, and say what they are for.
    assert schedule["required"] == ["prompt"]
    assert props["max_retries"]["type"] == "integer"
    assert props["tags"]["type"] == "array"
    assert props["scheduled_at"]["type"] == "string"
    assert props["scheduled_at"]["default"] == "now"
    assert "default: now" in props["scheduled_at"]["description"]
    for name, tool in tools.items():
        for prop_name, prop in tool.input_schema["properties"].items():
            assert "anyOf" not in prop, (name, prop_name)
            assert prop.get("description"), (name, prop_name)
    hints = {name: tool.annotations for name, tool in tools.items()}
    assert all(hint is not None for hint in hints.values())
    read_only = {n for n, h in hints.items() if h is not None and h.read_only_hint}
    assert read_only == {"list_upcoming_pulses", "get_pulse"}
    cancel = hints["cancel_pulse"]
    assert cancel is not None
    assert (cancel.destructive_hint, cancel.idempotent_hint) == (True, True)


def test_tools_list_is_compact(daemon: Daemon) -> None:
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {}},
        },
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    done = subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", "mcp"],
        input="".join(json.dumps(r) + "\n" for r in requests),
        env=daemon.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listing = done.stdout.splitlines()[-1]
    print(f"tools/list: {len(listing.encode())} bytes")
    assert len(listing.encode()) < 24_000  # 44 KB when each repeated the whole pulse schema


async def test_mcp_refuses_an_unknown_argument_naming_the_valid_ones(daemon: Daemon) -> None:
    async with mcp_session(daemon) as session:
        result = await call(session, "schedule_pulse", prompt="x", priorty="high")
    assert result.is_error
    text = result.content[0].text
    assert text.startswith("Unknown argument 'priorty' for schedule_pulse; its arguments are: ")
    assert "priority" in text
    assert daemon.client().list(status=None)["total"] == 0


async def test_listing_with_completed_is_earliest_first(daemon: Daemon) -> None:
    first = daemon.client().create(prompt="first")
    daemon.wait_pulse(first["pulse_id"], "completed")
    second = daemon.client().create(prompt="second")
    daemon.wait_pulse(second["pulse_id"], "completed")
    later = daemon.client().create(prompt="later", scheduled_at="in 1 hour")
    async with mcp_session(daemon) as session:
        listed = await call(session, "list_upcoming_pulses", include_completed=True)
    ids = [p["pulse_id"] for p in listed.structured_content["pulses"]]
    assert ids == [first["pulse_id"], second["pulse_id"], later["pulse_id"]]


def test_a_blank_prompt_is_refused(daemon: Daemon) -> None:
    for prompt in ("   ", "\n\t "):
        with pytest.raises(ApiFailure) as info:
            daemon.client().create(prompt=prompt)
        assert (info.value.status, info.value.field) == (422, "prompt")
        assert "empty or only white space" in info.value.message
    with pytest.raises(ApiFailure) as info:
        daemon.client().create(prompt="fine", sticky_notes=["ok", "  "])
    assert info.value.field == "sticky_notes"


def test_a_long_prompt_comes_from_stdin_or_a_file(daemon: Daemon, tmp_path: Path) -> None:
    long = "Line of a long brief.\n" * 1000
    done = cli(daemon, "schedule", "in 1 hour", "-", "--json", stdin=long)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["prompt"] == long
    brief = tmp_path / "brief.txt"
    brief.write_text("From a file.\n")
    done = cli(daemon, "schedule", "in 1 hour", "--prompt-file", str(brief), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["prompt"] == "From a file.\n"
    done = cli(daemon, "schedule", "in 1 hour", "--prompt-file", str(tmp_path / "none"))
    assert done.returncode == 2
    assert "cannot read --prompt-file" in done.stderr


@pytest.mark.parametrize("where", ["socket", "db"])
def test_a_named_path_in_a_missing_directory_is_refused_leaving_nothing(
    tmp_path: Path, where: str
) -> None:
    (tmp_path / "afile").touch()
    (tmp_path / "adir").mkdir()
    paths = {
        "socket": [
            "--socket",
            str(tmp_path / "no" / "such" / "api.sock"),
            "--db",
            str(tmp_path / "x.db"),
        ],
        "db": ["--socket", str(tmp_path / "api.sock"), "--db", str(tmp_path / "adir")],
    }[where]
    done = serve_once(*paths)
    assert done.returncode == 1
    message = {
        "socket": "does not exist (make it, or choose another --socket)",
        "db": "Is a directory",
    }[where]
    assert message in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]


def test_a_database_under_a_regular_file_says_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "afile").touch()
    done = serve_once(
        "--db", str(tmp_path / "afile" / "x.db"), "--socket", str(tmp_path / "api.sock")
    )
    assert done.returncode == 1
    assert "Not a directory" in done.stderr


COMMANDS = (
    "serve",
    "schedule",
    "list",
    "show",
    "cancel",
    "reschedule",
    "status",
    "telegram",
    "mcp",
    "backup",
    "restore",
    "config",
    "doctor",
)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_description_an_example_and_real_metavars(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", command, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    text = done.stdout
    assert "\nexample:\n  " in text
    assert "VALUE" not in text
    description = text.split("\n\n")[1]
    assert description
    assert not description.startswith("options:")
    json_flag = "--json" in text
    assert json_flag == (
        command not in ("serve", "telegram", "mcp", "doctor", "backup", "restore", "config")
    )


def test_echo_agent_help_is_help(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", "echo-agent", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "stand-in agent" in done.stdout
    assert '"type"' not in done.stdout  # no stream-json: it did not run


def test_an_unquoted_time_gets_a_hint(daemon: Daemon) -> None:
    done = cli(daemon, "schedule", "in", "10", "minutes", "Call", "Bob")
    assert done.returncode == 2
    assert 'quote a time of several words: reeve-lite schedule "in 10 minutes"' in done.stderr
    assert daemon.client().list(status=None)["total"] == 0


def test_times_shown_carry_their_zone(daemon: Daemon) -> None:
    made = daemon.client().create(prompt="x", scheduled_at="in 1 hour")
    listed = cli(daemon, "list").stdout
    shown = cli(daemon, "show", str(made["pulse_id"])).stdout
    # The daemon's tests run in Europe/Berlin: CET in winter, CEST in summer.
    zone = re.compile(r"\d\d:\d\d:\d\d (CET|CEST) \(")
    assert zone.search(listed), listed
    assert zone.search(shown), shown


@pytest.mark.parametrize(
    ("text", "after"),
    [
        ("in an hour", timedelta(hours=1)),
        ("in a minute", timedelta(minutes=1)),
        ("+5m", timedelta(minutes=5)),
        ("next week", timedelta(days=7)),
    ],
)
def test_relative_times_people_type(daemon: Daemon, text: str, after: timedelta) -> None:
    before = datetime.now(UTC)
    made = daemon.client().create(prompt="x", scheduled_at=text)
    due = datetime.fromisoformat(made["scheduled_at"])
    assert before + after <= due <= datetime.now(UTC) + after


def test_a_date_with_a_month_name(daemon: Daemon) -> None:
    made = daemon.client().create(prompt="x", scheduled_at="dec 1 9am", timezone="UTC")
    due = datetime.fromisoformat(made["scheduled_at"])
    assert (due.month, due.day, due.hour, due.minute) == (12, 1, 9, 0)
    assert due > datetime.now(UTC)


def test_yesterday_is_refused_saying_why(daemon: Daemon) -> None:
    with pytest.raises(ApiFailure) as info:
        daemon.client().create(prompt="x", scheduled_at="yesterday")
    assert "is in the past: a pulse runs at a time to come" in info.value.message


@pytest.mark.parametrize(
    ("words", "cron"),
    [
        ("every day at 9am", "0 9 * * *"),
        ("every weekday at 8", "0 8 * * 1-5"),
        ("every monday 9:00", "0 9 * * 1"),
        ("every 2 hours", "0 */2 * * *"),
        ("every 15 minutes", "*/15 * * * *"),
    ],
)
def test_recurrences_in_words_become_cron_everywhere(daemon: Daemon, words: str, cron: str) -> None:
    by_when = daemon.client().create(prompt="x", scheduled_at=words, timezone="UTC")
    by_cron = daemon.client().create(prompt="y", cron=words, timezone="UTC")
    assert by_when["cron"] == by_cron["cron"] == cron
    assert by_when["scheduled_at"] == by_cron["scheduled_at"]
    done = cli(daemon, "schedule", words, "z", "--tz", "UTC")
    assert done.returncode == 0, done.stderr
    assert f"recurs: {cron} (UTC)" in done.stdout


async def test_mcp_takes_a_recurrence_in_words(daemon: Daemon) -> None:
    async with mcp_session(daemon) as session:
        made = await call(
            session,
            "schedule_pulse",
            prompt="stand-up",
            cron="every weekday at 9am",
            timezone="Europe/Berlin",
        )
    assert not made.is_error, made.content[0].text
    assert made.structured_content["cron"] == "0 9 * * 1-5"
    assert "cron '0 9 * * 1-5'" in made.content[0].text


def test_an_unreadable_recurrence_shows_the_cron_form(daemon: Daemon) -> None:
    with pytest.raises(ApiFailure) as info:
        daemon.client().create(prompt="x", scheduled_at="every fortnight")
    assert info.value.field == "scheduled_at"
    assert "give a 5-field cron expression (--cron '30 9 * * 1-5')" in info.value.message
    with pytest.raises(ApiFailure) as refused:
        daemon.client().create(prompt="x", scheduled_at="sometime soon")
    assert "every weekday at 8" in refused.value.message  # the accepted forms are listed


def test_the_agenda_expands_recurring_pulses_by_day(daemon: Daemon) -> None:
    client = daemon.client()
    once = client.create(prompt="Dentist\nbring the card", scheduled_at="in 2 hours")
    daily = client.create(prompt="Stand-up", cron="every day at 9am", timezone="Europe/Berlin")
    data = client.agenda(3)
    mine = [e for e in data["entries"] if e["pulse_id"] == daily["pulse_id"]]
    assert len(mine) in (3, 4)  # 09:00 on each of the next 3 days (4 if one is today)
    assert all(e["recurring"] for e in mine)
    [dentist] = [e for e in data["entries"] if e["pulse_id"] == once["pulse_id"]]
    assert dentist["prompt"] == "Dentist"
    times = [e["at"] for e in data["entries"]]
    assert times == sorted(times)
    shown = cli(daemon, "agenda", "--days", "3").stdout
    assert "(Europe/Berlin)" in shown
    assert "Stand-up" in shown
    assert f"#{daily['pulse_id']} ↻" in shown
    assert shown.count("  09:00  ") >= 3
    refused = cli(daemon, "agenda", "--days", "0")
    assert refused.returncode == 2
    assert "days must be a whole number from 1 to 366" in refused.stderr


def test_history_lists_runs_newest_first_with_daily_totals(daemon: Daemon) -> None:
    client = daemon.client()
    good = client.create(prompt="Water the plants")
    daemon.wait_pulse(good["pulse_id"], "completed")
    bad = client.create(prompt="[is_error] pay the bill", max_retries=0)
    daemon.wait_pulse(bad["pulse_id"], "failed")
    data = client.history("1d")
    newest, oldest = data["attempts"]
    assert (newest["pulse_id"], newest["outcome"]) == (bad["pulse_id"], "failed")
    assert newest["summary"] == "hapi exited with status 1: Credit balance is too low"
    assert (oldest["outcome"], oldest["summary"]) == ("ok", "done: Water the plants")
    days = data["days"]  # one, or two when the runs straddle midnight
    assert sum(d["runs"] for d in days) == 2
    assert sum(d["failures"] for d in days) == 1
    assert sum(d["cost_usd"] for d in days) == pytest.approx(0.0123)
    shown = cli(daemon, "history", "--since", "1d").stdout
    assert "Credit balance is too low" in shown
    if len(days) == 1:
        assert f"{days[0]['day']}      2       1  $  0.0123" in shown


def test_a_database_of_another_user_is_refused_leaving_nothing(tmp_path: Path) -> None:
    import os
    import pwd

    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    db = tmp_path / "theirs.db"
    db.write_bytes(b"")
    nobody = pwd.getpwnam("nobody")
    os.chown(db, nobody.pw_uid, nobody.pw_gid)
    before = sorted(p.name for p in tmp_path.iterdir())
    done = serve_once("--db", str(db), "--socket", str(tmp_path / "api.sock"))
    assert done.returncode == 1
    assert "it belongs to the user nobody; run the daemon as that user" in done.stderr
    assert "sudo -u nobody reeve-lite serve" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no lock, no WAL
