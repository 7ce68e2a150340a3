"""Fixtures: a real daemon as a subprocess, on a temporary socket and TCP port,
running the fake agent in `fake_hapi.py`."""

from __future__ import annotations

import ast
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reeve_lite.client import Client, DaemonUnreachable
from tests.fake_telegram import BOT_TOKEN, FakeTelegram

FAKE_HAPI = Path(__file__).with_name("fake_hapi.py")
TOKEN = "test-token-5f3a9c"


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    interval: float = 0.02,
) -> Any:
    """Poll `predicate` every `interval` seconds until it returns something truthy;
    fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def modules_loaded_by(
    imports: str, packages: tuple[str, ...], names: tuple[str, ...] = ()
) -> list[str]:
    """The modules of `packages` (top-level names) and the modules `names` that
    `import {imports}` loads, in a fresh interpreter."""
    probe = (
        f"import sys, {imports}; print(sorted(m for m in sys.modules "
        f"if m.split('.')[0] in {packages!r} or m in {names!r}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return list(ast.literal_eval(done.stdout.strip()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FakeAgent:
    """The fake agent, installed as `hapi` and `claude` in a directory of its own,
    and what it recorded."""

    directory: Path

    @property
    def bin(self) -> Path:
        """A directory with `hapi` and `claude` (the fake) for the daemon's PATH."""
        path = self.directory.parent / "agent-bin"
        if not path.exists():
            path.mkdir(parents=True)
            for name, mode in (("hapi", ""), ("claude", "FAKE_AGENT_AS=claude ")):
                script = path / name
                script.write_text(
                    f"#!/bin/sh\n{mode}exec {shlex.quote(sys.executable)} "
                    f'{shlex.quote(str(FAKE_HAPI))} "$@"\n'
                )
                script.chmod(0o755)
        return path

    @property
    def command(self) -> str:
        """The fake as a REEVE_LITE_AGENT_COMMAND: `hapi claude`."""
        return shlex.join([sys.executable, str(FAKE_HAPI), "claude"])

    def env(self) -> dict[str, str]:
        """What a daemon needs to run the fake as its `hapi` profile."""
        return {
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "REEVE_LITE_AGENT": "hapi",
            "CLI_API_TOKEN": "fake-cli-token",
            "FAKE_HAPI_DIR": str(self.directory),
        }

    def add_session(self, session_id: str) -> None:
        """Make a session the fake knows, as if an earlier run had started it."""
        sessions = self.directory / "sessions"
        sessions.mkdir(parents=True, exist_ok=True)
        (sessions / session_id).touch()

    def transcript_ids(self) -> list[str]:
        """The sessions the fake made or resumed, oldest first."""
        sessions = self.directory / "sessions"
        paths = sorted(sessions.iterdir(), key=lambda p: p.stat().st_mtime_ns)
        return [p.name for p in paths]

    def transcript(self, session_id: str) -> list[str]:
        """The prompts a session received, in order."""
        path = self.directory / "sessions" / session_id
        return [json.loads(line) for line in path.read_text().splitlines()]

    def calls(self) -> list[dict[str, Any]]:
        path = self.directory / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def fake_agent(tmp_path: Path) -> FakeAgent:
    return FakeAgent(tmp_path / "agent")


def clean_env() -> dict[str, str]:
    """The test process's environment without any REEVE_LITE_* or systemd variables."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REEVE_LITE_", "NOTIFY_SOCKET", "LISTEN_", "WATCHDOG_"))
    }


def serve_once(*args: str) -> subprocess.CompletedProcess[str]:
    """`reeve-lite serve ARGS` in a clean environment (any agent command will do),
    run to its exit: for a daemon that must refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "reeve_lite.cli", "serve", *args],
        env=clean_env() | {"REEVE_LITE_AGENT_COMMAND": "true"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class Daemon:
    """A daemon subprocess and the ways to reach it."""

    tmp: Path
    agent: FakeAgent
    settings: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.tmp / "run" / "api.sock"

    @property
    def db(self) -> Path:
        return self.tmp / "state" / "reeve.db"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = clean_env()
        env.update(
            REEVE_LITE_DB=str(self.db),
            REEVE_LITE_SOCKET=str(self.socket),
            REEVE_LITE_LISTEN=f"127.0.0.1:{self.port}",
            REEVE_LITE_API_TOKEN=TOKEN,
            REEVE_LITE_DESK=str(self.tmp / "desk"),
            REEVE_LITE_TIMEZONE="Europe/Berlin",
            REEVE_LITE_RETRY_BASE="0.2s",
            REEVE_LITE_EXECUTOR="off",
            REEVE_LITE_SHUTDOWN_GRACE="2s",
            REEVE_LITE_LOG_LEVEL="debug",
        )
        env.update(self.agent.env())
        env.update(self.settings)
        return env

    def start(self) -> Daemon:
        # A socket the user names must be in a directory that exists.
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.tmp / f"daemon-{len(self.logs)}.log", "wb")  # noqa: SIM115
        self.logs.append(log.name)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reeve_lite.cli", "serve"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            try:
                self.client().health()
            except DaemonUnreachable:
                return False
            return True

        wait_for(up, 15, "the daemon to answer")
        return self

    def client(self, **kwargs: Any) -> Client:
        return Client(socket_path=self.socket, **kwargs)

    def tcp_client(self, token: str | None = TOKEN) -> Client:
        return Client(socket_path=self.socket, url=self.url, token=token)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return "".join(Path(name).read_text(errors="replace") for name in self.logs)

    def running_pulse(self, prompt: str = "[sleep 60] work") -> dict[str, Any]:
        """A pulse whose agent is running and has told its session id. By default it
        runs long enough for any test on a loaded machine; stopping the daemon ends it."""
        pulse: dict[str, Any] = self.client().create(prompt=prompt)
        wait_for(
            lambda: any(
                r["pulse_id"] == pulse["pulse_id"] and r.get("session_id")
                for r in self.client().status()["running"]
            ),
            10,
            "the agent's session id",
        )
        return pulse

    def wait_pulse(self, pulse_id: int, status: str, timeout: float = 15.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            pulse = self.client().get(pulse_id)
            return pulse if pulse["status"] == status else None

        return wait_for(reached, timeout, f"pulse {pulse_id} to be {status}")  # type: ignore[no-any-return]


@pytest.fixture
def make_daemon(tmp_path: Path, fake_agent: FakeAgent) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(**settings: str) -> Daemon:
        daemon = Daemon(tmp_path / f"d{len(started)}", fake_agent, settings)
        daemon.tmp.mkdir()
        started.append(daemon)
        return daemon.start()

    yield make
    for daemon in started:
        daemon.stop()


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon()


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    """A fake Telegram Bot API on a local port, answering to BOT_TOKEN."""
    fake = FakeTelegram(BOT_TOKEN).start()
    yield fake
    fake.stop()
