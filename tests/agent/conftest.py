"""The real-agent tier: the real Claude Code and hapi CLIs from the npm registry
(tests/agent/clis.py), against a local stand-in for the Anthropic API
(tests/fake_anthropic.py) and a local hapi hub. Run with `make test-agent`
(`pytest -m agent`)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.agent.clis import Clis, ensure_clis
from tests.conftest import Daemon, free_port, wait_for
from tests.fake_anthropic import FakeAnthropic


@pytest.fixture(scope="session")
def clis() -> Clis:
    """The pinned CLIs (installed from the npm registry on first use)."""
    return ensure_clis()


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    """The stand-in for the Anthropic Messages API, on a local port."""
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


def agent_settings(tmp: Path, api: FakeAnthropic, path: Path) -> dict[str, str]:
    """A daemon's environment for the real CLIs: its own HOME (Claude Code keeps
    its sessions there), the stand-in API, the CLIs on PATH and no agent setting."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {
        "HOME": str(home),
        "PATH": f"{path}:/usr/local/bin:/usr/bin:/bin",
        "ANTHROPIC_BASE_URL": api.url,
        "ANTHROPIC_API_KEY": "sk-ant-test-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "REEVE_LITE_AGENT": "auto",
        "REEVE_LITE_AGENT_TIMEOUT": "120s",
    }


@pytest.fixture
def claude_daemon(
    make_daemon: Callable[..., Daemon], tmp_path: Path, clis: Clis, anthropic: FakeAnthropic
) -> Daemon:
    """A daemon whose PATH has the real `claude` only."""
    return make_daemon(**agent_settings(tmp_path, anthropic, clis.path_with("claude")))


@dataclass
class Hub:
    """A local `hapi hub` and what the CLI needs to reach it."""

    url: str
    token: str
    home: Path
    proc: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        return {"HAPI_API_URL": self.url, "CLI_API_TOKEN": self.token, "HAPI_HOME": str(self.home)}


@pytest.fixture
def hub(tmp_path: Path, clis: Clis) -> Iterator[Hub]:
    """`hapi hub --no-relay` on a local port, with a token of its own."""
    home = tmp_path / "hapi-home"
    port = free_port()
    token = "reeve" + secrets.token_hex(12)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HAPI_HOME": str(home),
        "CLI_API_TOKEN": token,
        "HAPI_LISTEN_HOST": "127.0.0.1",
        "HAPI_LISTEN_PORT": str(port),
        "HAPI_IOS_PUSH": "off",
        "HAPI_ANDROID_PUSH": "off",
    }
    with open(tmp_path / "hub.log", "wb") as log:
        proc = subprocess.Popen(
            [str(clis.hapi), "hub", "--no-relay"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return True
        except OSError:
            assert proc.poll() is None, (tmp_path / "hub.log").read_text(errors="replace")
            return False

    wait_for(ready, 60, "hapi's hub", interval=0.1)
    yield Hub(url, token, home, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.1)
