"""The pinned real agent CLIs from the npm registry, installed once per version
pair under /var/cache/reeve-lite-test/agents-claude-V-hapi-V (or
REEVE_LITE_TEST_AGENTS_DIR); an install that did not finish is made again."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CLAUDE_VERSION = "2.1.332"
HAPI_VERSION = "0.30.7"
CACHE = Path(os.environ.get("REEVE_LITE_TEST_CACHE", "/var/cache/reeve-lite-test"))


@dataclass(frozen=True)
class Clis:
    """Where the installed CLIs are, and a directory with just `claude` or both."""

    root: Path

    @property
    def claude(self) -> Path:
        return self.root / "node_modules" / ".bin" / "claude"

    @property
    def hapi(self) -> Path:
        return self.root / "node_modules" / ".bin" / "hapi"

    def path_with(self, *names: str) -> Path:
        """A directory holding only the named CLIs (for the daemon's PATH)."""
        directory = self.root / ("bin-" + "-".join(names))
        if not directory.exists():
            staging = directory.with_name(directory.name + f".{os.getpid()}")
            staging.mkdir()
            for name in names:
                (staging / name).symlink_to(getattr(self, name))
            staging.rename(directory)
        return directory


def _install(root: Path) -> None:
    if shutil.which("npm") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nodejs", "npm"], check=True)
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    subprocess.run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
            str(staging),
            f"@anthropic-ai/claude-code@{CLAUDE_VERSION}",
            f"@twsxtd/hapi@{HAPI_VERSION}",
        ],
        check=True,
        timeout=900,
    )
    # Claude Code's package ships a 500-byte placeholder that its postinstall replaces
    # with the native binary; an npm that skips install scripts leaves the stub.
    package = staging / "node_modules" / "@anthropic-ai" / "claude-code"
    if (package / "bin" / "claude.exe").stat().st_size < 1_000_000:
        subprocess.run(["node", "install.cjs"], cwd=package, check=True, timeout=300)
    staging.rename(root)


def ensure_clis() -> Clis:
    """The pinned CLIs, installed from the npm registry on first use."""
    base = Path(os.environ.get("REEVE_LITE_TEST_AGENTS_DIR", str(CACHE)))
    root = base / f"agents-claude-{CLAUDE_VERSION}-hapi-{HAPI_VERSION}"
    if not (root / "node_modules" / ".bin" / "claude").exists():
        base.mkdir(parents=True, exist_ok=True)
        _install(root)
    found = Clis(root)
    for program, expected in ((found.claude, CLAUDE_VERSION), (found.hapi, HAPI_VERSION)):
        done = subprocess.run(
            [str(program), "--version"], capture_output=True, text=True, timeout=60, check=True
        )
        assert expected in done.stdout, done.stdout
    return found
