"""Crash safety under load: the daemon is killed with SIGKILL at random moments
while clients create pulses and agents run, and restarted each time. Afterwards
no acknowledged pulse is missing, no pulse completed twice, every attempt cut
by a kill is closed with a reason and its pulse ran again, and the database is
sound."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reeve_lite.client import ApiFailure, DaemonUnreachable
from tests.conftest import Daemon, wait_for
from tests.report import record

CLIENTS = 8
KILLS = 20
KEYS = (None, None, "mail", "build", "notes")  # pulses without a key share the Desk
PRIORITIES = ("critical", "high", "normal", "low")


@dataclass
class Load:
    """What the client threads did: the pulses the daemon acknowledged, by id,
    with the prompt each was created with."""

    acknowledged: dict[int, str] = field(default_factory=dict)
    given_up: int = 0  # creates without a key not answered (daemon down, or died)
    unreachable: int = 0
    refused: list[str] = field(default_factory=list)  # never expected: an error answer, ...
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client_loop(daemon: Daemon, number: int, seed: int, load: Load, stop: threading.Event) -> None:
    """Create pulses until `stop`. Even-numbered clients send an idempotency key
    and repeat a create whose answer was lost until it is answered; the others
    give up on it (it may or may not have been stored) and go on."""
    rng = random.Random(seed * 100 + number)
    client = daemon.client(timeout=10)
    sequence = 0
    while not stop.is_set():
        sequence += 1
        directives = f"[sleep {rng.uniform(0, 0.2):.3f}]"
        if rng.random() < 0.1:
            directives += " [fail-times 1]"
        prompt = f"load c{number} n{sequence} {directives}"
        body: dict[str, Any] = {
            "prompt": prompt,
            "scheduled_at": (datetime.now(UTC) + timedelta(seconds=rng.uniform(0, 2))).isoformat(),
            "priority": rng.choice(PRIORITIES),
            "concurrency_key": rng.choice(KEYS),
            "max_retries": 50,  # kills count as retries; the pulse must not run out
        }
        if number % 2 == 0:
            body["idempotency_key"] = f"c{number}-n{sequence}"
        while not stop.is_set():
            try:
                pulse = client.create(**body)
            except DaemonUnreachable:
                with load.lock:
                    load.unreachable += 1
                time.sleep(rng.uniform(0.05, 0.3))
                if "idempotency_key" in body:
                    continue  # the same create again: it is acknowledged at most once
                with load.lock:
                    load.given_up += 1
                break
            except ApiFailure as exc:
                with load.lock:
                    load.refused.append(f"{exc.status} {exc.code}: {exc.message}")
                break
            except Exception as exc:  # an assertion in a thread would go unnoticed
                with load.lock:
                    load.refused.append(f"unexpected: {exc!r}")
                return
            with load.lock:
                if pulse["pulse_id"] in load.acknowledged:
                    load.refused.append(f"pulse {pulse['pulse_id']} acknowledged twice")
                load.acknowledged[pulse["pulse_id"]] = prompt
            break
        time.sleep(rng.uniform(0.3, 1.5))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _drained(daemon: Daemon) -> Callable[[], bool]:
    def check() -> bool:
        status = daemon.client().status()
        counts = status["counts"]
        return counts["pending"] == 0 and counts["processing"] == 0 and not status["running"]

    return check


@pytest.mark.slow
def test_kill_9_under_load_loses_nothing_and_doubles_nothing(
    make_daemon: Callable[..., Daemon],
) -> None:
    seed = int(os.environ.get("REEVE_LITE_CRASH_SEED", str(time.time_ns() % 1_000_000)))
    print(f"crash test seed: {seed} (set REEVE_LITE_CRASH_SEED to repeat the schedule)")
    rng = random.Random(seed)
    daemon = make_daemon(REEVE_LITE_MAX_CONCURRENT="4", REEVE_LITE_RETRY_MAX="1s")
    load = Load()
    stop = threading.Event()
    clients = [
        threading.Thread(target=_client_loop, args=(daemon, n, seed, load, stop), daemon=True)
        for n in range(CLIENTS)
    ]
    for thread in clients:
        thread.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.5))
            daemon.kill()
            daemon.start()
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=20)
    assert load.refused == []
    wait_for(_drained(daemon), 90, "every pulse to have run", interval=0.2)
    assert daemon.stop() == 0

    db = sqlite3.connect(daemon.db)
    db.row_factory = sqlite3.Row
    pulses = {r["id"]: r for r in db.execute("SELECT id, prompt, status FROM pulses")}
    attempts = db.execute(
        "SELECT id, pulse_id, number, finished_at, is_error, error FROM attempts ORDER BY id"
    ).fetchall()
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()

    # Lost: acknowledged, but not in the database with the prompt it was created with.
    lost = [
        i
        for i, prompt in load.acknowledged.items()
        if pulses.get(i, {"prompt": None})["prompt"] != prompt
    ]
    assert lost == []
    assert {r["status"] for r in pulses.values()} == {"completed"}
    assert [a["id"] for a in attempts if a["finished_at"] is None] == []

    # A run completed when the agent wrote its success result and exited 0 (its own
    # log says so) and the daemon recorded that attempt as a success.
    agent_ends = _jsonl(daemon.agent.directory / "ends.jsonl")
    agent_succeeded = {int(e["attempt_id"]) for e in agent_ends if e["success"] and e["exit"] == 0}
    recorded = {a["id"]: a["pulse_id"] for a in attempts if not a["is_error"]}
    assert set(recorded) <= agent_succeeded, "a success was recorded for a run that did not end so"
    completed = Counter(recorded[a] for a in agent_succeeded if a in recorded)
    doubled = sorted(p for p in pulses if completed[p] > 1)
    assert doubled == []
    assert all(completed[p] == 1 for p in pulses)
    # Runs the agent finished whose end the daemon never recorded (killed in between):
    # run again, at least once, as promised.
    rerun = len(agent_succeeded - set(recorded))

    # No two runs of one pulse at once: each run that ended (the others were
    # killed) ended before the pulse's next run began.
    ends_by_pid = {e["pid"]: e["t1"] for e in agent_ends}
    calls = _jsonl(daemon.agent.directory / "calls.jsonl")
    runs: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for call in calls:
        runs[call["pulse_id"]].append((call["t0"], ends_by_pid.get(call["pid"])))
    overlapping = [
        (pulse_id, earlier, later)
        for pulse_id, spans in runs.items()
        for earlier, later in zip(sorted(spans), sorted(spans)[1:], strict=False)
        if earlier[1] is not None and earlier[1] > later[0]
    ]
    assert overlapping == []

    # Every attempt cut by a kill is closed with its reason, and its pulse tried again.
    numbers: dict[int, list[int]] = defaultdict(list)
    for a in attempts:
        numbers[a["pulse_id"]].append(a["number"])
    cut = [a for a in attempts if (a["error"] or "").startswith("interrupted:")]
    assert cut, "no kill landed while an agent ran: the test proved nothing about recovery"
    assert all(max(numbers[a["pulse_id"]]) > a["number"] for a in cut)
    assert integrity == "ok"

    executed = len(calls)
    stored_unacknowledged = len(set(pulses) - set(load.acknowledged))
    summary = (
        f"acknowledged {len(load.acknowledged)}, executed {executed}, recovered {len(cut)}, "
        f"re-run {rerun}, lost {len(lost)}, doubled {len(doubled)}, integrity {integrity}"
    )
    print(
        f"crash test (seed {seed}): {summary}; creates given up {load.given_up}, "
        f"stored without an answer {stored_unacknowledged}, unreachable {load.unreachable}"
    )
    record("crash", f"kill -9 x{KILLS}, {CLIENTS} clients", summary)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_an_agent_whose_pid_was_never_recorded_is_found_and_stopped(
    make_daemon: Callable[..., Daemon],
) -> None:
    """The daemon can die between spawning the agent and writing its pid down; the
    agent is then found by its attempt id, stopped, and the pulse runs again."""
    daemon = make_daemon()
    pulse_id = daemon.client().create(prompt="long [sleep-first 60]")["pulse_id"]
    [call] = wait_for(lambda: daemon.agent.calls(), what="the agent to start")
    daemon.kill()
    db = sqlite3.connect(daemon.db)
    with db:
        db.execute("UPDATE attempts SET pid = NULL")  # as if killed before it was written
    db.close()
    assert _alive(call["pid"])
    daemon.start()
    pulse = daemon.wait_pulse(pulse_id, "completed")
    wait_for(lambda: not _alive(call["pid"]), 5, "the orphan to be gone")
    first, second = pulse["attempts"]
    assert first["error"] == (
        "interrupted: the daemon stopped while this attempt ran; its orphaned agent was stopped"
    )
    assert second["is_error"] is False
    ends = _jsonl(daemon.agent.directory / "ends.jsonl")
    assert [e["attempt_id"] for e in ends if e["success"]] == [str(second["attempt_id"])]
    record(
        "crash",
        "kill -9 after the agent spawned, before its pid was recorded",
        "the agent was found by its attempt id and stopped before the retry; completed once",
    )
