"""Scheduling policy on the real daemon: downtime across due times (stop, move the
clock of the stored pulses back, restart), deadlines, concurrency keys, pacing of
the agent's own pulses, fire-time feedback and jitter."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reeve_lite.client import ApiFailure
from tests.conftest import Daemon, clean_env, wait_for


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _hours_ago(pulse: dict[str, Any], hours: int) -> float:
    """The hourly pulse's occurrence `hours` before its latest one that is due."""
    minute = int(pulse["cron"].split()[0])
    now = datetime.now(UTC)
    latest = now.replace(minute=minute, second=0, microsecond=0)
    if latest > now:
        latest -= timedelta(hours=1)
    return (latest - timedelta(hours=hours)).timestamp()


def _downtime(daemon: Daemon, pulse: dict[str, Any], hours: int) -> None:
    """As if the daemon had been down since the pulse's occurrence `hours` ago."""
    daemon.stop()
    back = _hours_ago(pulse, hours)
    db = sqlite3.connect(daemon.db)
    db.execute(
        "UPDATE pulses SET occurrence_at = ?, scheduled_at = ? WHERE id = ?",
        (back, back, pulse["pulse_id"]),
    )
    db.commit()
    db.close()
    daemon.start()


def _calls(daemon: Daemon, marker: str) -> list[dict[str, Any]]:
    return [c for c in daemon.agent.calls() if marker in c["prompt"]]


def _hourly(daemon: Daemon, marker: str, **fields: Any) -> dict[str, Any]:
    """An hourly pulse whose minute is half an hour from now: its latest occurrence
    is long past the grace and its next far off, so the test never runs across one
    (the counts would change with the real clock)."""
    minute = (datetime.now(UTC).minute + 30) % 60
    pulse: dict[str, Any] = daemon.client().create(
        prompt=marker, cron=f"{minute} * * * *", timezone="UTC", **fields
    )
    return pulse


def test_once_runs_one_catch_up_and_records_the_missed_hours(
    make_daemon: Callable[..., Daemon],
) -> None:
    daemon = make_daemon()
    pulse = _hourly(daemon, "once-marker")
    _downtime(daemon, pulse, 3)
    wait_for(lambda: _calls(daemon, "once-marker"), 10, "the catch-up run")
    shown = wait_for(
        lambda: (
            (p := daemon.client().get(pulse["pulse_id"]))["attempts"]
            and p["attempts"][-1]["finished_at"]
            and p
        ),
        10,
        "the catch-up to finish",
    )
    time.sleep(0.3)
    assert len(_calls(daemon, "once-marker")) == 1
    [missed] = shown["missed"]
    assert (missed["count"], missed["action"]) == (4, "caught_up")
    assert _instant(missed["first_due"]).timestamp() == _hours_ago(pulse, 3)
    assert _instant(missed["last_due"]).timestamp() == _hours_ago(pulse, 0)
    # Re-armed at the next hour, from the occurrence it ran for.
    assert shown["status"] == "pending"
    assert _instant(shown["occurrence_at"]).timestamp() == _hours_ago(pulse, 0) + 3600
    assert "start-up: 4 missed occurrence(s) of overdue pulses: 4 caught up" in daemon.log()


def test_skip_records_the_missed_hours_without_running(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon()
    pulse = _hourly(daemon, "skip-marker", on_missed="skip")
    _downtime(daemon, pulse, 2)
    shown = daemon.client().get(pulse["pulse_id"])
    assert shown["status"] == "pending"
    assert [(m["count"], m["action"]) for m in shown["missed"]] == [(3, "skipped")]
    assert _instant(shown["occurrence_at"]).timestamp() == _hours_ago(pulse, 0) + 3600
    assert "skipped 3 occurrences (on_missed=skip)" in shown["last_error"]
    assert "3 skipped" in daemon.log()
    time.sleep(0.5)
    assert _calls(daemon, "skip-marker") == []
    # The CLI shows the record.
    done = subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", "show", str(pulse["pulse_id"])],
        env=clean_env() | {"REEVE_LITE_SOCKET": str(daemon.socket)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "missed: 3 skipped, due" in done.stdout
    assert "on missed: skip" in done.stdout


def test_all_runs_each_missed_hour_up_to_the_cap(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(REEVE_LITE_CATCHUP_MAX="3", REEVE_LITE_CATCHUP_SPACING="0.2s")
    pulse = _hourly(daemon, "all-marker", on_missed="all")
    _downtime(daemon, pulse, 5)
    wait_for(lambda: len(_calls(daemon, "all-marker")) >= 3, 15, "three catch-up runs")
    shown = wait_for(
        lambda: (
            (p := daemon.client().get(pulse["pulse_id"]))["catchup_remaining"] == 0
            and p["status"] == "pending"
            and p
        ),
        10,
        "the catch-ups to end",
    )
    time.sleep(0.5)
    assert len(_calls(daemon, "all-marker")) == 3
    assert [(m["count"], m["action"]) for m in shown["missed"]] == [
        (3, "dropped"),
        (3, "caught_up"),
    ]
    starts = [_instant(a["started_at"]) for a in shown["attempts"]]
    assert all(b - a >= timedelta(seconds=0.2) for a, b in itertools.pairwise(starts))
    assert _instant(shown["occurrence_at"]).timestamp() == _hours_ago(pulse, 0) + 3600


def test_a_pulse_past_its_deadline_after_downtime_expires_unrun(
    make_daemon: Callable[..., Daemon],
) -> None:
    daemon = make_daemon()
    pulse = daemon.client().create(
        prompt="stale-marker",
        scheduled_at=(datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        expires_after="1s",
    )
    daemon.stop()
    time.sleep(2.5)
    daemon.start()
    shown = daemon.client().get(pulse["pulse_id"])
    assert shown["status"] == "expired"
    assert shown["last_error"].startswith("expired: not started by its deadline")
    assert [(m["count"], m["action"]) for m in shown["missed"]] == [(1, "expired")]
    assert shown["attempts"] == []
    assert _calls(daemon, "stale-marker") == []
    assert "1 expired" in daemon.log()


def test_a_pulse_behind_a_busy_key_expires_at_its_deadline(daemon: Daemon) -> None:
    daemon.client().create(prompt="[sleep 3] long-marker", concurrency_key="k")
    waiting = daemon.client().create(
        prompt="blocked-marker", concurrency_key="k", expires_after="1s"
    )
    # Expired at its deadline by the timer, while the long run still holds the key.
    shown = daemon.wait_pulse(waiting["pulse_id"], "expired", timeout=2.5)
    assert daemon.client().status()["running"], "the long run still holds the key"
    assert shown["attempts"] == []
    time.sleep(0.5)
    assert _calls(daemon, "blocked-marker") == []


def test_two_keys_run_side_by_side_and_one_key_never_overlaps(daemon: Daemon) -> None:
    client = daemon.client()
    made = [
        client.create(prompt="[sleep 1.5] a1", concurrency_key="a"),
        client.create(prompt="[sleep 1.5] a2", concurrency_key="a"),
        client.create(prompt="[sleep 1.5] b1", concurrency_key="b"),
    ]
    done = [daemon.wait_pulse(p["pulse_id"], "completed", timeout=10) for p in made]
    (a1,), (a2,), (b1,) = (p["attempts"] for p in done)

    def span(attempt: dict[str, Any]) -> tuple[datetime, datetime]:
        return _instant(attempt["started_at"]), _instant(attempt["finished_at"])

    # a1 and b1 ran at the same time; a2 waited for a1 to end.
    assert span(b1)[0] < span(a1)[1]
    assert span(a1)[0] < span(b1)[1]
    assert span(a2)[0] >= span(a1)[1]


def test_pulses_without_a_key_share_the_desk(daemon: Daemon) -> None:
    first = daemon.client().create(prompt="[sleep 1] d1")
    second = daemon.client().create(prompt="[sleep 1] d2")
    a = daemon.wait_pulse(first["pulse_id"], "completed")["attempts"][0]
    b = daemon.wait_pulse(second["pulse_id"], "completed")["attempts"][0]
    assert _instant(b["started_at"]) >= _instant(a["finished_at"])


# --- the agent scheduling itself (source reeve)


def test_self_scheduled_pulses_are_held_to_the_bounds(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(REEVE_LITE_SELF_MAX_PENDING="2", REEVE_LITE_SELF_MIN_DELAY="10m")
    client = daemon.client()
    with pytest.raises(ApiFailure) as err:
        client.create(prompt="soon", scheduled_at="in 2 minutes", source="reeve")
    assert (err.value.status, err.value.code, err.value.field) == (422, "pacing", "scheduled_at")
    assert "at least 10m from now (self_min_delay)" in err.value.message
    with pytest.raises(ApiFailure) as err:
        client.create(prompt="chatty", cron="*/5 * * * *", source="reeve")
    assert (err.value.code, err.value.field) == ("pacing", "cron")
    assert "fires every 5m" in err.value.message
    # Other sources are not held to them.
    client.create(prompt="user", scheduled_at="in 2 minutes", source="api")

    # A pace window is clamped to the bounds and spaced from the agent's other pulses.
    before = datetime.now(UTC)
    first = client.create(prompt="p1", pace_min="1m", pace_max="2h", source="reeve")
    second = client.create(prompt="p2", pace_min="1m", pace_max="2h", source="reeve")
    t1, t2 = _instant(first["scheduled_at"]), _instant(second["scheduled_at"])
    assert timedelta(minutes=10) <= t1 - before < timedelta(minutes=10, seconds=5)
    assert t2 - t1 == timedelta(minutes=10)
    with pytest.raises(ApiFailure) as err:
        client.create(prompt="p3", scheduled_at="in 1 hour", source="reeve")
    assert (err.value.status, err.value.code) == (429, "pacing")
    assert "self_max_pending=2" in err.value.message
    with pytest.raises(ApiFailure) as err:
        client.create(prompt="both", scheduled_at="in 1 hour", pace_min="1h", source="api")
    assert err.value.field == "pace_min"


def test_the_source_default_deadline_applies_and_never_turns_it_off(daemon: Daemon) -> None:
    client = daemon.client()
    telegram = client.create(prompt="t", scheduled_at="in 1 hour", source="telegram")
    assert telegram["expires_after"] == 3600
    assert _instant(telegram["deadline"]) - _instant(telegram["scheduled_at"]) == timedelta(hours=1)
    forever = client.create(
        prompt="t", scheduled_at="in 1 hour", source="telegram", expires_after="never"
    )
    assert forever["expires_after"] is None
    assert forever["deadline"] is None
    assert client.create(prompt="a", scheduled_at="in 1 hour")["expires_after"] is None


# --- feedback and validation


def test_a_recurring_pulse_answers_with_its_next_three_fire_times(daemon: Daemon) -> None:
    made = daemon.client().create(prompt="x", cron="30 2 * * *", timezone="Asia/Tokyo")
    fires = made["next_fire_times"]
    assert len(fires) == 3
    assert all(f["local"].endswith("T02:30:00+09:00") for f in fires)
    utc = [_instant(f["utc"]) for f in fires]
    assert [b - a for a, b in itertools.pairwise(utc)] == [timedelta(days=1)] * 2
    assert utc[0] == _instant(made["scheduled_at"])
    moved = daemon.client().reschedule(made["pulse_id"], "in 1 hour")
    assert moved["next_fire_times"][0]["utc"] == moved["scheduled_at"]
    # A one-off pulse has none.
    assert daemon.client().create(prompt="y", scheduled_at="in 1 hour")["next_fire_times"] is None


def test_jitter_delays_each_occurrence_within_its_bound(daemon: Daemon) -> None:
    made = daemon.client().create(prompt="x", cron="0 4 * * *", timezone="UTC", jitter="10m")
    late = _instant(made["scheduled_at"]) - _instant(made["occurrence_at"])
    assert timedelta(0) <= late <= timedelta(minutes=10)
    assert made["jitter"] == 600
    with pytest.raises(ApiFailure) as err:
        daemon.client().create(prompt="x", scheduled_at="in 1 hour", jitter="5m")
    assert (err.value.status, err.value.field) == (422, "jitter")
    with pytest.raises(ApiFailure) as err:
        daemon.client().create(prompt="x", cron="0 4 * * *", jitter="13h")
    assert "at most 12h" in err.value.message


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"on_missed": "sometimes"}, "on_missed"),
        ({"expires_after": "soon"}, "expires_after"),
        ({"expires_after": "0"}, "expires_after"),
        ({"expires_at": "in 1 minute", "scheduled_at": "in 1 hour"}, "expires_at"),
        ({"concurrency_key": "-flag"}, "concurrency_key"),
        ({"pace_min": "2h", "pace_max": "1h"}, "pace_max"),
    ],
)
def test_bad_policy_fields_are_422_naming_the_field(
    daemon: Daemon, fields: dict[str, str], field: str
) -> None:
    with pytest.raises(ApiFailure) as err:
        daemon.client().create(prompt="x", **fields)
    assert (err.value.status, err.value.field) == (422, field)


def test_a_second_daemon_on_the_same_database_is_refused(daemon: Daemon) -> None:
    env = daemon.env() | {"REEVE_LITE_SOCKET": str(daemon.tmp / "other.sock")}
    env.pop("REEVE_LITE_LISTEN")
    done = subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode != 0
    assert "another reeve-lite daemon is using" in done.stdout + done.stderr
    assert daemon.client().health()["ok"] is True
