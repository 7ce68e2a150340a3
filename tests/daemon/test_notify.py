"""Notifications: MCP tools → the daemon's notify endpoint → a local fake Telegram."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reeve_lite.telegram import MAX_TEXT, split_text
from tests.conftest import Daemon
from tests.daemon.test_mcp import call, mcp_session
from tests.fake_telegram import BOT_TOKEN, FakeTelegram


@pytest.fixture
def notifying(make_daemon: Callable[..., Daemon], telegram: FakeTelegram) -> Daemon:
    return make_daemon(
        REEVE_LITE_TELEGRAM_TOKEN=BOT_TOKEN,
        REEVE_LITE_TELEGRAM_CHAT_IDS="42, -1009",
        REEVE_LITE_TELEGRAM_API_URL=telegram.url,
        REEVE_LITE_SESSION_URL="https://hapi.example/s/{session_id}",
    )


async def test_send_notification_reaches_every_chat(
    notifying: Daemon, telegram: FakeTelegram
) -> None:
    async with mcp_session(notifying) as session:
        normal = await call(session, "send_notification", message="The build is green.")
        silent = await call(session, "send_notification", message="FYI", priority="silent")
        urgent = await call(
            session,
            "send_notification",
            message="Disk full!",
            priority="critical",
            parse_mode="HTML",
        )
    assert (normal.is_error, silent.is_error, urgent.is_error) == (False, False, False)
    assert normal.content[0].text == "Sent to 2 chat(s)."
    assert normal.structured_content["chats"] == [42, -1009]
    sent = telegram.sent()
    assert [m["chat_id"] for m in sent] == [42, -1009] * 3
    assert [m["text"] for m in sent[:2]] == ["The build is green."] * 2
    assert [m["disable_notification"] for m in sent] == [False, False, True, True, False, False]
    assert sent[4]["text"].startswith("\u203c\ufe0f Disk full!")
    assert sent[4]["parse_mode"] == "HTML"
    assert "parse_mode" not in sent[0]


async def test_rejected_markup_is_sent_again_as_plain_text(
    notifying: Daemon, telegram: FakeTelegram
) -> None:
    async with mcp_session(notifying) as session:
        result = await call(
            session, "send_notification", message="snake_case_name", parse_mode="MarkdownV2"
        )
    assert result.is_error is False
    first, second = telegram.sent()[:2]
    assert first["parse_mode"] == "MarkdownV2"
    assert "parse_mode" not in second
    assert second["text"] == "snake_case_name"


async def test_link_button_and_long_texts(notifying: Daemon, telegram: FakeTelegram) -> None:
    long = "\n".join(f"line {i:05d} " + "x" * 80 for i in range(100))  # about 9,000 chars
    async with mcp_session(notifying) as session:
        linked = await call(
            session,
            "send_message_with_link",
            message="PR ready",
            link_url="https://git.example/pr/7",
            link_text="Review",
        )
        split = await call(session, "send_notification", message=long)
    assert linked.structured_content["link"] == "https://git.example/pr/7"
    assert telegram.sent()[0]["reply_markup"] == {
        "inline_keyboard": [[{"text": "Review", "url": "https://git.example/pr/7"}]]
    }
    pieces = [m["text"] for m in telegram.sent()[2:] if m["chat_id"] == 42]
    assert len(pieces) == 3
    assert all(len(p) <= MAX_TEXT for p in pieces)
    assert "\n".join(pieces) == long  # cut at line boundaries, nothing lost
    assert split.structured_content["messages"] == 6


async def test_a_running_pulse_links_to_its_session(
    notifying: Daemon, telegram: FakeTelegram
) -> None:
    running = notifying.running_pulse()
    async with mcp_session(notifying, REEVE_PULSE_ID=str(running["pulse_id"])) as session:
        result = await call(session, "send_notification", message="Halfway there")
    [session_id] = notifying.agent.transcript_ids()
    assert result.structured_content["link"] == f"https://hapi.example/s/{session_id}"
    button = telegram.sent()[0]["reply_markup"]["inline_keyboard"][0][0]
    assert button == {"text": "Open session", "url": f"https://hapi.example/s/{session_id}"}


async def test_without_telegram_the_tool_says_what_to_do(daemon: Daemon) -> None:
    async with mcp_session(daemon) as session:
        result = await call(session, "send_notification", message="hello")
    assert result.is_error is True
    assert "notifications are not configured" in result.content[0].text
    assert "tell the user in your answer instead" in result.content[0].text


async def test_telegram_failure_is_reported_without_the_token(
    notifying: Daemon, telegram: FakeTelegram
) -> None:
    telegram.fail_with = 502
    async with mcp_session(notifying) as session:
        result = await call(session, "send_notification", message="hello")
    assert result.is_error is True
    assert "Telegram sendMessage failed (502)" in result.content[0].text
    assert BOT_TOKEN not in result.content[0].text
    assert "notification not sent" in notifying.log()
    assert BOT_TOKEN not in notifying.log()
    assert "telegram-secret-token" not in notifying.log()


def test_split_text_cuts_at_lines_and_inside_overlong_lines() -> None:
    assert split_text("short") == ["short"]
    assert split_text("") == [""]
    text = "a" * 3000 + "\n" + "b" * 3000
    assert split_text(text) == ["a" * 3000, "b" * 3000]
    huge = "c" * 10000
    assert split_text(huge) == ["c" * 4096, "c" * 4096, "c" * 1808]
