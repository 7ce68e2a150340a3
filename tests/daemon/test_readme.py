"""The README and docs/ are the user's manual: its tables, commands, examples and
links must stay true."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from reeve_lite.api import OPERATIONS
from reeve_lite.config import SETTINGS
from tests.conftest import TOKEN, Daemon, clean_env

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()
OPERATIONS_DOC = (ROOT / "docs" / "operations.md").read_text()
# The manual: the README and every page of docs/.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_setting_has_a_row_in_the_table() -> None:
    rows = set(re.findall(r"^\| `(REEVE_LITE_[A-Z_]+)` \|", OPERATIONS_DOC, re.MULTILINE))
    assert rows == {s.env for s in SETTINGS}
    for setting in SETTINGS:
        flag = f"`{setting.flag}`" if setting.flag else ""
        [row] = [
            line for line in OPERATIONS_DOC.splitlines() if line.startswith(f"| `{setting.env}` |")
        ]
        assert row.startswith(f"| `{setting.env}` | {flag} |"), row
        assert row.endswith(f"| {setting.help} |"), row


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_make_target_named_exists(page: Path) -> None:
    makefile = (ROOT / "Makefile").read_text()
    text = page.read_text()
    for target in set(re.findall(r"(?:`|^)make ([a-z][a-z-]*)", text, re.MULTILINE)):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target


def test_every_operation_is_documented() -> None:
    for op in OPERATIONS:
        if op.path != "/api/openapi.json":
            assert f"{op.method} {op.path}" in API, op.path


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


def _shell_block(text: str, after: str) -> str:
    """The first ```sh block after the line `after` in `text`."""
    start = text.index(after)
    block = text.index("```sh\n", start) + len("```sh\n")
    return text[block : text.index("```", block)]


def test_the_curl_examples_work_as_written(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """The REST section's examples in docs/api.md, copied in order, against a real
    daemon whose socket is where they say (a user's XDG_RUNTIME_DIR), with the token
    in ~/.config/reeve-lite/token; only the TCP port is this test's own."""
    runtime = tmp_path / "xdg"
    home = tmp_path / "home"
    (home / ".config" / "reeve-lite").mkdir(parents=True)
    (home / ".config" / "reeve-lite" / "token").write_text(TOKEN + "\n")
    daemon = make_daemon()
    runtime.mkdir()
    (runtime / "reeve-lite").symlink_to(daemon.socket.parent)  # where a user's daemon is
    script = _shell_block(API, "## The REST API").replace("8765", str(daemon.port))
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


def test_the_quick_start_curl_example_works_as_written(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """The README's curl example, against a real daemon whose socket is where a
    user's is (XDG_RUNTIME_DIR): it creates the pulse, then lists it."""
    runtime = tmp_path / "xdg"
    daemon = make_daemon()
    runtime.mkdir()
    (runtime / "reeve-lite").symlink_to(daemon.socket.parent)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _shell_block(README, "**With curl**")],
        env=clean_env() | {"XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    decoder = json.JSONDecoder()
    created, end = decoder.raw_decode(done.stdout)
    upcoming = json.loads(done.stdout[end:])
    assert created["status"] == "pending"
    assert [p["pulse_id"] for p in upcoming["pulses"]] == [created["pulse_id"]]
    [pulse] = daemon.client().list(status=None)["pulses"]
    assert (pulse["prompt"], pulse["status"]) == ("Check the build", "pending")


_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """`text` without its code blocks and code spans, where a link is only text."""
    return re.sub(r"`[^`]*`", "", _FENCE.sub("", text))


def _anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown page: lowercase, all but
    letters, digits, `-`, `_` and spaces dropped, spaces as `-`, repeats numbered."""
    anchors: set[str] = set()
    for title in re.findall(r"^#{1,6} +(.+?) *$", _FENCE.sub("", text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def test_the_anchors_are_githubs() -> None:
    text = "# The MCP server: the agent schedules itself\n## What `doctor` prints\n## A\n## A\n"
    assert _anchors(text) == {
        "the-mcp-server-the-agent-schedules-itself",
        "what-doctor-prints",
        "a",
        "a-1",
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in _LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page.resolve()
        missing = not linked.is_file() or ROOT.resolve() not in linked.parents
        if missing or (anchor and anchor not in _anchors(linked.read_text())):
            broken.append(target)
    assert broken == [], f"{page.name}: {broken}"


def test_the_readme_links_every_page_of_the_manual() -> None:
    linked = {target.partition("#")[0] for target in _LINK.findall(_prose(README))}
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in linked, page.name
