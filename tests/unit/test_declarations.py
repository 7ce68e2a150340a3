"""A pulse field is declared in a few places; these tests hold them to each other.

The REST body (`PulseCreate`), the plan the store inserts (`NewPulse`), the
store's declaration of what it keeps (`PULSE_FIELDS`), the pulse the API shows
(`Pulse`) and the live schema of a migrated database must agree: a field added
to one and forgotten in another fails here, not in a user's hands.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from reeve_lite.models import Pulse, PulseCreate
from reeve_lite.store import PULSE_FIELDS, NewPulse, Store

# What `Pulse` shows that no pulse column holds: fetched beside it or computed.
SHOWN_ONLY = {"attempts", "missed", "next_fire_times", "progress"}
# Columns the store keeps for itself (the claiming attempt's fencing token).
STORE_ONLY = {"lease"}
# Body fields that only choose the due time (the plan turns them into scheduled_at).
REQUEST_ONLY = {"pace_min", "pace_max"}
# What the plan derives rather than takes from the request.
DERIVED = {"occurrence_at", "deadline"}


def test_the_shown_pulse_is_the_stored_one() -> None:
    assert set(Pulse.model_fields) - SHOWN_ONLY == set(PULSE_FIELDS)


def test_every_planned_field_is_stored() -> None:
    planned = {f.name for f in dataclasses.fields(NewPulse)}
    assert planned <= set(PULSE_FIELDS), planned - set(PULSE_FIELDS)


def test_every_request_field_reaches_the_plan() -> None:
    planned = {f.name for f in dataclasses.fields(NewPulse)}
    assert set(PulseCreate.model_fields) - REQUEST_ONLY == planned - DERIVED


async def test_the_declaration_is_the_live_schema(tmp_path: Path) -> None:
    path = tmp_path / "reeve.db"
    store = await Store.open(path)
    await store.close()
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(pulses)")}
    declared = {"id" if name == "pulse_id" else name for name in PULSE_FIELDS}
    assert columns == declared | STORE_ONLY


async def test_a_planned_pulse_comes_back_field_for_field(tmp_path: Path) -> None:
    """Every field of NewPulse is written and read back unchanged (the derived
    insert and row mapping lose nothing)."""
    due = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    new = NewPulse(
        prompt="p",
        scheduled_at=due,
        tags=("a", "b"),
        session_id="s-1",
        sticky_notes=("n",),
        max_retries=5,
        cron="0 9 * * *",
        timezone="Europe/Berlin",
        idempotency_key="k",
        expires_after=60.0,
        expires_at=datetime(2027, 1, 1, tzinfo=UTC),
        deadline=datetime(2026, 11, 30, 9, 1, tzinfo=UTC),
        concurrency_key="c",
        jitter=30.0,
        comment="asked by Ana",
    )
    store = await Store.open(tmp_path / "reeve.db")
    try:
        pulse, created = await store.create(new, now=due)
    finally:
        await store.close()
    assert created
    for f in dataclasses.fields(NewPulse):
        got = getattr(pulse, f.name)
        want = getattr(new, f.name)
        assert (list(got) if isinstance(want, tuple) else got) == (
            list(want) if isinstance(want, tuple) else want
        ), f.name
