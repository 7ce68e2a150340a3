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
