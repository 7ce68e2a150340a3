"""The README is the user's manual: its settings table and commands must stay true."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from reeve_lite.api import OPERATIONS
from reeve_lite.config import SETTINGS
from tests.conftest import TOKEN, Daemon, clean_env

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


def _shell_block(after: str) -> str:
    """The first ```sh block after the line `after` in the README."""
    start = README.index(after)
    block = README.index("```sh\n", start) + len("```sh\n")
    return README[block : README.index("```", block)]


def test_the_curl_examples_work_as_written(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """The REST section's examples, copied in order, against a real daemon whose
    socket is where the README says (a user's XDG_RUNTIME_DIR), with the token in
    ~/.config/reeve-lite/token; only the TCP port is this test's own."""
    runtime = tmp_path / "xdg"
    home = tmp_path / "home"
    (home / ".config" / "reeve-lite").mkdir(parents=True)
    (home / ".config" / "reeve-lite" / "token").write_text(TOKEN + "\n")
    daemon = make_daemon()
    runtime.mkdir()
    (runtime / "reeve-lite").symlink_to(daemon.socket.parent)  # where a user's daemon is
    script = _shell_block("## The REST API").replace("8765", str(daemon.port))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=clean_env() | {"XDG_RUNTIME_DIR": str(runtime), "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # curl prints the answers back to back (the pulse id went to $ID, not here).
    answers, text, decoder = [], done.stdout.strip(), json.JSONDecoder()
    while text:
        answer, end = decoder.raw_decode(text)
        answers.append(answer)
        text = text[end:].lstrip()
    assert answers[0]["version"]  # status over the socket
    assert answers[-2]["status"] == "cancelled"
    assert answers[-1]["version"]  # status over TCP, with the token
    [pulse] = daemon.client().list(status=None)["pulses"]
    assert (pulse["prompt"], pulse["status"]) == ("Check the build", "cancelled")
