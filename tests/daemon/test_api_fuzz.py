"""Generated requests against a real daemon over TCP: Schemathesis reads the
daemon's own OpenAPI document and sends every operation valid and invalid
input; no answer may be a 5xx or differ from what the document promises."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from pydantic import BaseModel, ValidationError
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from reeve_lite.models import Notify, PulseCreate
from tests.conftest import TOKEN, Daemon
from tests.fake_telegram import BOT_TOKEN, FakeTelegram
from tests.report import record

# Per operation and generation mode; operations without inputs stop after a few.
EXAMPLES = 100
LEAST_CASES = 1000
SEEDED = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def notifying(make_daemon: Callable[..., Daemon], telegram: FakeTelegram) -> Daemon:
    # With a Telegram to send to, notify answers as in production instead of 503.
    return make_daemon(
        REEVE_LITE_TELEGRAM_TOKEN=BOT_TOKEN,
        REEVE_LITE_TELEGRAM_CHAT_IDS="42",
        REEVE_LITE_TELEGRAM_API_URL=telegram.url,
    )


@dataclass
class Tally:
    """What the generated cases did: answers per operation and status, and the
    failures (each with a curl command that repeats it)."""

    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def count(self) -> int:
        return sum(self.answers.values())

    def summary(self) -> str:
        labels = sorted({label for label, _ in self.answers})
        lines = [f"{self.count()} generated cases"]
        for label in labels:
            codes = {code: n for (name, code), n in sorted(self.answers.items()) if name == label}
            lines.append(f"  {sum(codes.values()):4d}  {label}: {codes}")
        return "\n".join(lines)


def fuzz_operation(
    operation: APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    *,
    base_url: str,
    session: requests.Session,
    tally: Tally,
) -> None:
    """Send up to EXAMPLES generated cases of `operation` and check each answer."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    checks = [*CHECKS, negative_data_rejection] if mode.is_negative else CHECKS
    label = f"{operation.label} ({mode})"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same cases on every run: CI stays stable
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def send(case: Case[Any]) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers)
        tally.answers[(label, response.status_code)] += 1
        try:
            case.validate_response(response, checks=_checks_for(case, checks), headers=headers)
        except FailureGroup as group:
            tally.failures.append(str(group))

    send()


def _checks_for(case: Case[Any], checks: list[Any]) -> list[Any]:
    """`checks`, without the negative-data check for a case that negates the
    headers: the only header the document has is the token, and every request
    here carries the right one (the access tests cover its absence), which makes
    such a case valid again whatever else it changed."""
    meta = case.meta
    header = meta.components.get(ParameterLocation.HEADER) if meta else None
    if header is not None and header.mode.is_negative:
        return [check for check in checks if check is not negative_data_rejection]
    return checks


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(3, True), (3.0, True), (True, False), ("3", False), (3.5, False), (None, True)],
)
def test_integer_fields_take_what_json_schema_calls_an_integer(value: Any, accepted: bool) -> None:
    # The document says "integer": 3.0 is one, true and "3" are not (lax pydantic
    # took true as 1); found by the generated cases below.
    fields: list[tuple[type[BaseModel], str, dict[str, Any]]] = [
        (PulseCreate, "max_retries", {"prompt": "p"}),
        (Notify, "pulse_id", {"message": "m"}),
    ]
    for model, name, extra in fields:
        body = {**extra, name: value}
        if accepted:
            assert getattr(model.model_validate(body), name) == value
        else:
            with pytest.raises(ValidationError) as info:
                model.model_validate(body)
            assert info.value.errors()[0]["loc"] == (name,)


@pytest.mark.slow
def test_every_operation_answers_as_documented(notifying: Daemon) -> None:
    # Pending pulses with small ids, so that generated ids also reach the answers
    # about a real pulse (fetched, cancelled) and not only 404.
    for n in range(SEEDED):
        notifying.client().create(prompt=f"seed {n}", scheduled_at="in 1 day")
    # Every operation but the one serving the document, which Schemathesis leaves out.
    schema = schemathesis.openapi.from_url(f"{notifying.url}/api/openapi.json")
    tally = Tally()
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document itself is sound
        operations.append(result.ok())
    with requests.Session() as session:
        for operation in operations:
            raw = operation.definition.raw
            # Input that breaks the document needs an input to break.
            takes_input = bool(raw.get("parameters") or raw.get("requestBody"))
            for mode in GenerationMode if takes_input else [GenerationMode.POSITIVE]:
                fuzz_operation(
                    operation, mode, base_url=notifying.url, session=session, tally=tally
                )
    print("\n" + tally.summary())
    failures = tally.failures
    assert not failures, f"{len(failures)} failing cases:\n\n" + "\n".join(failures[:10])
    count = tally.count()
    assert count >= LEAST_CASES
    assert not [code for _, code in tally.answers if code >= 500]
    # Still serving, and no request ended in an unhandled exception.
    assert notifying.client().health()["ok"] is True
    assert "Traceback" not in notifying.log()
    record(
        "hostile input",
        f"schemathesis over TCP: {len(operations)} operations (all but the document itself), "
        "valid and invalid input",
        f"{count} cases, 0 5xx, 0 answers off the document (status, content type, schema)",
    )
