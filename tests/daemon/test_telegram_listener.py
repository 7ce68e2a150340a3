"""`reeve-lite telegram` as a subprocess, between a fake Bot API and a real daemon."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reeve_lite.telegram_listener import EXIT_BAD_TOKEN, UNSUPPORTED
from tests.conftest import Daemon, clean_env, wait_for
from tests.fake_telegram import BOT_TOKEN, FakeTelegram

ALLOWED = 4242


@dataclass
class Listener:
    proc: subprocess.Popen[bytes]
    log_path: Path
    state: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=20)


@pytest.fixture
def start_listener(
    tmp_path: Path,
    daemon: Daemon,
    telegram: FakeTelegram,
) -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def start(token: str = BOT_TOKEN, api_url: str | None = None) -> Listener:
        state = tmp_path / "listener"
        log_path = tmp_path / f"listener-{len(started)}.log"
        env = clean_env() | {
            "REEVE_LITE_SOCKET": str(daemon.socket),
            "REEVE_LITE_DB": str(state / "unused.db"),
            "REEVE_LITE_TELEGRAM_TOKEN": token,
            "REEVE_LITE_TELEGRAM_CHAT_IDS": f"{ALLOWED}",
            "REEVE_LITE_TELEGRAM_API_URL": api_url or telegram.url,
        }
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reeve_lite.cli", "telegram"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        listener = Listener(proc, log_path, state)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop(signal.SIGKILL)


def pulses(daemon: Daemon) -> list[dict[str, Any]]:
    return list(daemon.client().list(status=None, limit=100)["pulses"])


def test_a_message_becomes_an_immediate_pulse(
    daemon: Daemon, telegram: FakeTelegram, start_listener: Callable[..., Listener]
) -> None:
    listener = start_listener()
    update = telegram.push(ALLOWED, "Remind me to call Bob\nat five")
    [pulse] = wait_for(lambda: pulses(daemon), 15, "the pulse")
    assert pulse["source"] == "telegram"
    assert pulse["tags"] == ["telegram"]
    assert pulse["priority"] == "critical"
    assert pulse["idempotency_key"] == f"telegram:{ALLOWED}:{update * 10}"
    assert pulse["prompt"] == (
        "Telegram message from Ada (@ada):\n\n> Remind me to call Bob\n> at five"
    )
    daemon.wait_pulse(pulse["pulse_id"], "completed")
    assert telegram.actions()[0] == {"chat_id": ALLOWED, "action": "typing"}
    wait_for(lambda: (listener.state / "telegram-offset").exists(), 10, "the offset")
    assert (listener.state / "telegram-offset").read_text().strip() == str(update + 1)
    assert BOT_TOKEN not in listener.log()


def test_other_chats_are_ignored_and_logged_once_without_text(
    daemon: Daemon, telegram: FakeTelegram, start_listener: Callable[..., Listener]
) -> None:
    listener = start_listener()
    telegram.push(99, "secret plans")
    telegram.push(99, "more secret plans")
    last = telegram.push(ALLOWED, "hello")
    wait_for(
        lambda: (
            (listener.state / "telegram-offset").exists()
            and (listener.state / "telegram-offset").read_text().strip() == str(last + 1)
        ),
        15,
        "all three updates to be handled",
    )
    assert [p["prompt"] for p in pulses(daemon)] == ["Telegram message from Ada (@ada):\n\n> hello"]
    assert listener.log().count("ignoring messages from chat 99") == 1
    assert "secret plans" not in listener.log()


def test_other_kinds_of_message_get_a_short_answer(
    daemon: Daemon, telegram: FakeTelegram, start_listener: Callable[..., Listener]
) -> None:
    start_listener()
    telegram.push(ALLOWED, None, photo=[{"file_id": "x"}])
    telegram.push(ALLOWED, None, photo=[{"file_id": "y"}], caption="what is this?")
    wait_for(lambda: telegram.sent(), 15, "the answer")
    assert telegram.sent()[0] == {
        "chat_id": ALLOWED,
        "text": UNSUPPORTED,
        "disable_notification": False,
    }
    [pulse] = wait_for(lambda: pulses(daemon), 15, "the captioned photo's pulse")
    assert pulse["prompt"].endswith("> what is this?")


def test_a_crash_before_the_offset_is_saved_makes_no_second_pulse(
    daemon: Daemon, telegram: FakeTelegram, start_listener: Callable[..., Listener]
) -> None:
    listener = start_listener()
    first = telegram.push(ALLOWED, "only once")
    wait_for(lambda: pulses(daemon), 15, "the pulse")
    wait_for(lambda: (listener.state / "telegram-offset").exists(), 10, "the offset")
    listener.stop(signal.SIGKILL)
    # As if the kill came between the daemon's answer and the offset's write:
    (listener.state / "telegram-offset").write_text(f"{first}\n")
    telegram.updates.insert(
        0,
        {
            "update_id": first,
            "message": {
                "message_id": first * 10,
                "chat": {"id": ALLOWED},
                "from": {"first_name": "Ada", "username": "ada"},
                "text": "only once",
            },
        },
    )
    again = start_listener()
    wait_for(
        lambda: (again.state / "telegram-offset").read_text().strip() == str(first + 1),
        15,
        "the update to be handled again",
    )
    assert len(pulses(daemon)) == 1


def test_daemon_down_for_a_while_loses_nothing(
    daemon: Daemon, telegram: FakeTelegram, start_listener: Callable[..., Listener]
) -> None:
    listener = start_listener()
    wait_for(lambda: "listening as @reeve_test_bot" in listener.log(), 15, "the listener")
    daemon.stop()
    telegram.push(ALLOWED, "sent while the daemon was down")
    wait_for(lambda: "cannot reach the daemon" in listener.log(), 15, "a retry")
    daemon.start()
    [pulse] = wait_for(lambda: pulses(daemon), 30, "the pulse after the daemon is back")
    assert pulse["prompt"].endswith("> sent while the daemon was down")


def test_429_waits_retry_after(
    daemon: Daemon, telegram: FakeTelegram, start_listener: Callable[..., Listener]
) -> None:
    telegram.rate_limit = 1
    listener = start_listener()
    telegram.push(ALLOWED, "after the limit")
    wait_for(lambda: pulses(daemon), 20, "the pulse")
    assert "Too Many Requests" in listener.log()
    assert "trying again in 1s" in listener.log()


def test_an_invalid_token_exits_without_a_restart_loop(
    telegram: FakeTelegram, start_listener: Callable[..., Listener]
) -> None:
    listener = start_listener(token="000:wrong-secret")
    assert listener.proc.wait(timeout=20) == EXIT_BAD_TOKEN
    assert "Telegram refused the bot token" in listener.log()
    assert "wrong-secret" not in listener.log()


def test_502s_back_off_and_the_message_still_arrives(
    daemon: Daemon, telegram: FakeTelegram, start_listener: Callable[..., Listener]
) -> None:
    listener = start_listener()
    wait_for(lambda: "listening as @reeve_test_bot" in listener.log(), 15, "the listener")
    telegram.fail_with = 502
    telegram.push(ALLOWED, "through the outage")
    wait_for(lambda: listener.log().count("failed (502)") >= 2, 20, "two failed polls")
    telegram.fail_with = None
    [pulse] = wait_for(lambda: pulses(daemon), 30, "the pulse after the outage")
    assert pulse["prompt"].endswith("> through the outage")
    assert "trying again in 1s" in listener.log()
    assert "trying again in 2s" in listener.log()  # the delay doubles
    assert BOT_TOKEN not in listener.log()


def test_unreachable_telegram_is_retried_and_the_token_stays_out_of_logs(
    start_listener: Callable[..., Listener],
) -> None:
    from tests.conftest import free_port

    listener = start_listener(api_url=f"http://127.0.0.1:{free_port()}")
    wait_for(lambda: listener.log().count("cannot reach Telegram") >= 2, 20, "two attempts")
    assert listener.proc.poll() is None  # it keeps trying
    listener.stop(signal.SIGKILL)
    assert BOT_TOKEN not in listener.log()
    assert "listener-secret-token" not in listener.log()


def test_a_message_whose_pulse_ends_unrun_gets_a_reply_saying_so(
    daemon: Daemon, telegram: FakeTelegram, start_listener: Callable[..., Listener]
) -> None:
    # A long run holds the Desk, so the message's pulse waits; then it is cancelled
    # (an expired pulse, past the telegram deadline, takes the same path).
    daemon.client().create(prompt="[sleep 6] busy")
    start_listener()
    telegram.push(ALLOWED, "are you there?")
    [waiting] = wait_for(
        lambda: [p for p in pulses(daemon) if p["source"] == "telegram"], 15, "the pulse"
    )
    assert waiting["deadline"] is not None  # the telegram default: 1 hour
    daemon.client().cancel(waiting["pulse_id"])
    [reply] = wait_for(telegram.sent, 15, "the reply")
    assert reply["chat_id"] == ALLOWED
    assert reply["text"] == "Not answered: this message's pulse was cancelled."


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon], telegram: FakeTelegram) -> Daemon:
    """A daemon that can notify the allowed chat (the agent's send_notification)."""
    return make_daemon(
        REEVE_LITE_TELEGRAM_TOKEN=BOT_TOKEN,
        REEVE_LITE_TELEGRAM_CHAT_IDS=str(ALLOWED),
        REEVE_LITE_TELEGRAM_API_URL=telegram.url,
    )


def _answered(listener: Listener, daemon: Daemon) -> dict[str, Any]:
    [pulse] = wait_for(lambda: pulses(daemon), 15, "the pulse")
    verdict = re.compile(rf"pulse={pulse['pulse_id']} \w+: (answer sent|answered by the agent)")
    wait_for(lambda: verdict.search(listener.log()), 30, "the listener's verdict")
    return daemon.client().get(pulse["pulse_id"])  # type: ignore[no-any-return]


def test_the_agents_own_answer_is_the_only_one(
    daemon: Daemon, telegram: FakeTelegram, start_listener: Callable[..., Listener]
) -> None:
    listener = start_listener()
    telegram.push(ALLOWED, 'Call Bob [mcp send_notification {"message": "Bob is called."}]')
    pulse = _answered(listener, daemon)
    assert pulse["status"] == "completed"
    assert pulse["attempts"][0]["notified"] == 1
    assert [m["text"] for m in telegram.sent()] == ["Bob is called."]
    assert "answered by the agent" in listener.log()


def test_a_run_that_did_not_notify_is_answered_with_its_result(
    daemon: Daemon, telegram: FakeTelegram, start_listener: Callable[..., Listener]
) -> None:
    listener = start_listener()
    telegram.push(ALLOWED, "What is on today?")
    pulse = _answered(listener, daemon)
    [reply] = telegram.sent()
    assert reply["chat_id"] == ALLOWED
    assert reply["text"] == pulse["attempts"][0]["result"]
    assert reply["text"].startswith("done: ")


def test_a_failed_run_is_answered_with_its_reason(
    make_daemon: Callable[..., Daemon],
    daemon: Daemon,
    telegram: FakeTelegram,
    start_listener: Callable[..., Listener],
) -> None:
    listener = start_listener()
    telegram.push(ALLOWED, "[is_error] book the table")
    _answered(listener, daemon)
    [reply] = telegram.sent()
    assert reply["text"] == (
        "Not answered: the agent failed (hapi exited with status 1: Credit balance is too low)."
    )
