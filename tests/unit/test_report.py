"""The reliability summary's recording and table."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import report


def test_rows_are_printed_grouped_by_area_without_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "report.jsonl"
    monkeypatch.setenv(report.REPORT_VARIABLE, str(target))
    report.record("crash", "kill -9", "lost 0")
    report.record("access", "401 without token", "ok")
    report.record("crash", "integrity_check", "ok")
    report.record("a new area", "first", "ok")
    report.record("crash", "integrity_check", "ok")  # a test run twice: one row
    assert report.main([str(target)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:] == [
        "| crash | integrity_check | ok |",
        "| crash | kill -9 | lost 0 |",
        "| access | 401 without token | ok |",
        "| a new area | first | ok |",
    ]


def test_without_the_variable_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(report.REPORT_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    report.record("crash", "kill -9", "lost 0")
    assert list(tmp_path.iterdir()) == []
    assert report.main([str(tmp_path / "none.jsonl")]) == 1
