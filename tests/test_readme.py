"""The README is the user's manual: its settings table and commands must stay true."""

from __future__ import annotations

import re
from pathlib import Path

from reeve_lite.api import OPERATIONS
from reeve_lite.config import SETTINGS

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_has_a_row_in_the_table() -> None:
    rows = set(re.findall(r"^\| `(REEVE_LITE_[A-Z_]+)` \|", README, re.MULTILINE))
    assert rows == {s.env for s in SETTINGS}
    for setting in SETTINGS:
        flag = f"`{setting.flag}`" if setting.flag else ""
        [row] = [line for line in README.splitlines() if line.startswith(f"| `{setting.env}` |")]
        assert row.startswith(f"| `{setting.env}` | {flag} |"), row
        assert row.endswith(f"| {setting.help} |"), row


def test_every_make_target_named_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"(?:`|^)make ([a-z][a-z-]*)", README, re.MULTILINE)):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target


def test_every_operation_is_documented() -> None:
    for op in OPERATIONS:
        if op.path != "/api/openapi.json":
            assert f"{op.method} {op.path}" in README, op.path


def test_the_man_page_names_every_command_and_schedule_option() -> None:
    import argparse

    from reeve_lite.cli import _parser

    man = (ROOT / "packaging" / "reeve-lite.1").read_text().replace("\\-", "-")
    parser = _parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in sub.choices.items():
        assert f".B {name}" in man or f".BI {name} " in man, name
        if name == "schedule":
            for action in command._actions:
                for flag in action.option_strings:
                    if flag.startswith("--") and flag not in ("--help", "--json"):
                        assert flag in man, flag
