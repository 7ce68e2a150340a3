"""`reeve-lite telegram`: messages to the bot become immediate pulses.

Long-polls `getUpdates`. A text (or a caption) from an allowed chat becomes a
pulse through the daemon, with the idempotency key `telegram:CHAT:MESSAGE`, and
only once the daemon has acknowledged it does the offset move on, persisted
atomically. So a crash at any point neither loses a message nor makes a second
pulse of it: the update comes again, and the daemon answers with the first pulse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import aiohttp

from reeve_lite import sources
from reeve_lite.client import ApiFailure, Client, DaemonUnreachable, PulseRequest
from reeve_lite.config import Settings
from reeve_lite.telegram import BotApi, TelegramError

log = logging.getLogger(__name__)

EXIT_BAD_TOKEN = 78  # EX_CONFIG; the unit does not restart on it
POLL_SECONDS = 50
MAX_BACKOFF = 60.0
NOTICE = 25  # between INFO and WARNING: journald priority 5
UNSUPPORTED = "I can read text messages and captions; this kind of message is not supported."


def load_offset(path: Path) -> int:
    """The next update id to ask for (0 when nothing was read yet)."""
    try:
        return int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return 0
    except ValueError:
        log.warning("%s is not a number; starting from the oldest pending update", path)
        return 0


def save_offset(path: Path, offset: int) -> None:
    """Write the offset so that a crash leaves either the old or the new one."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as handle:
        handle.write(f"{offset}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def pulse_prompt(message: dict[str, Any], text: str) -> str:
    """The prompt of a message's pulse: who wrote, and what, quoted."""
    sender = message.get("from") or {}
    name = sender.get("first_name") or "someone"
    if sender.get("username"):
        name += f" (@{sender['username']})"
    quoted = "\n".join(f"> {line}" for line in text.splitlines() or [""])
    return f"Telegram message from {name}:\n\n{quoted}"


class Listener:
    """One bot's long-poll loop."""

    def __init__(self, settings: Settings, bot: BotApi, client: Client, state: Path) -> None:
        self.settings = settings
        self.bot = bot
        self.client = client
        self.offset_file = state / "telegram-offset"
        self._ignored: set[int] = set()
        self._typing: set[asyncio.Task[None]] = set()

    async def run(self) -> int:
        """Poll until cancelled; the exit status."""
        try:
            me = await self._retrying(self.bot.call, "getMe", {})
        except TelegramError as exc:
            log.error("Telegram refused the bot token (%s); fix it and start again", exc)
            return EXIT_BAD_TOKEN
        log.info(
            "listening as @%s for chats %s",
            me.get("username"),
            ", ".join(map(str, self.settings.telegram_chat_ids)),
        )
        offset = load_offset(self.offset_file)
        while True:
            updates = await self._retrying(
                self.bot.call,
                "getUpdates",
                {"offset": offset, "timeout": POLL_SECONDS, "allowed_updates": ["message"]},
                seconds=POLL_SECONDS + 15,
            )
            for update in updates:
                await self._handle(update)
                offset = int(update["update_id"]) + 1
                save_offset(self.offset_file, offset)

    async def _retrying(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call Telegram, waiting out network errors, 5xx answers and 429s."""
        delay = 1.0
        while True:
            try:
                return await method(*args, **kwargs)
            except TelegramError as exc:
                if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else delay
                log.warning("%s; trying again in %gs", exc, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, MAX_BACKOFF)

    async def _handle(self, update: dict[str, Any]) -> None:
        message = update.get("message")
        if not isinstance(message, dict):
            return
        chat = int(message.get("chat", {}).get("id", 0))
        if chat not in self.settings.telegram_chat_ids:
            if chat not in self._ignored:
                self._ignored.add(chat)
                log.log(
                    NOTICE,
                    "ignoring messages from chat %d (not in REEVE_LITE_TELEGRAM_CHAT_IDS)",
                    chat,
                )
            return
        text = message.get("text") or message.get("caption")
        if not isinstance(text, str) or not text.strip():
            await self._reply(chat, UNSUPPORTED)
            return
        key = f"telegram:{chat}:{message.get('message_id')}"
        request = PulseRequest(
            prompt=pulse_prompt(message, text),
            scheduled_at="now",
            priority=self.settings.telegram_priority,
            source=sources.TELEGRAM,
            tags=[sources.TELEGRAM],
            idempotency_key=key,
        )
        pulse = await self._create(chat, request)
        if pulse is not None:
            log.info("pulse=%d from chat %d (%s)", pulse["pulse_id"], chat, key)
            task = asyncio.create_task(self._typing_while_runs(chat, pulse["pulse_id"]))
            self._typing.add(task)
            task.add_done_callback(self._typing.discard)

    async def _create(self, chat: int, request: PulseRequest) -> dict[str, Any] | None:
        """Create the pulse, waiting for the daemon as long as it takes; None when the
        daemon refuses the message for good (the user is told why)."""
        delay = 1.0
        while True:
            try:
                created: dict[str, Any] = await asyncio.to_thread(self.client.create, request)
                return created
            except DaemonUnreachable as exc:
                log.warning("%s; trying again in %gs", exc, delay)
            except ApiFailure as exc:
                if exc.status < 500:
                    log.error("the daemon refused a message: %s", exc.message)
                    await self._reply(chat, f"Not scheduled: {exc.message}")
                    return None
                log.warning("the daemon answered %d; trying again in %gs", exc.status, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    async def _reply(self, chat: int, text: str) -> None:
        with contextlib.suppress(TelegramError):
            await self.bot.send_message(chat, text)

    async def _typing_while_runs(self, chat: int, pulse_id: int) -> None:
        """Show the bot as typing while the message's pulse is pending or running,
        then answer the message once (see `closing_answer`)."""
        loop = asyncio.get_running_loop()
        typed = -TYPING_EVERY
        while True:
            if loop.time() - typed >= TYPING_EVERY:
                typed = loop.time()
                with contextlib.suppress(TelegramError):
                    await self.bot.call("sendChatAction", {"chat_id": chat, "action": "typing"})
            await asyncio.sleep(LOOK_EVERY)
            try:
                pulse = await asyncio.to_thread(self.client.get, pulse_id)
            except DaemonUnreachable:
                continue  # a restart: the pulse is still there, and so is its answer
            except ApiFailure:
                return
            if pulse["status"] not in ("pending", "processing"):
                answer = closing_answer(pulse)
                if answer is not None:
                    await self._reply(chat, answer)
                log.info(
                    "pulse=%d %s: %s",
                    pulse_id,
                    pulse["status"],
                    "answered by the agent" if answer is None else "answer sent",
                )
                return


def closing_answer(pulse: dict[str, Any]) -> str | None:
    """What the bot says once a message's pulse has ended, or None when the agent
    already answered (it notified during one of the pulse's attempts): each
    message gets exactly one answer."""
    attempts = pulse.get("attempts") or []
    if any(a.get("notified") for a in attempts):
        return None
    status = pulse["status"]
    why = f" ({pulse['last_error']})" if pulse.get("last_error") else ""
    if status in UNANSWERED:
        # Silence would look like a lost message: say why there is no answer.
        return f"Not answered: this message's pulse was {status}{why}."
    if status == "failed":
        return f"Not answered: the agent failed{why}."
    result = str(next((a["result"] for a in reversed(attempts) if a.get("result")), "")).strip()
    if not result:
        return "Done (the agent gave no answer text)."
    return result if len(result) <= MAX_ANSWER else result[: MAX_ANSWER - 1] + "…"


TYPING_EVERY = 4.5  # seconds; Telegram shows "typing" for about 5 s
LOOK_EVERY = 0.5  # seconds: how soon after its pulse ends a message is answered
# The longest answer sent from a run's result (Telegram splits it in messages of 4096).
MAX_ANSWER = 12000
# Pulses that end without running the agent (expired: past its deadline, which is
# REEVE_LITE_DEFAULT_EXPIRES_AFTER's telegram=1h unless changed).
UNANSWERED = ("expired", "skipped", "cancelled")


async def _main(settings: Settings, state: Path) -> int:
    assert settings.telegram_token is not None
    async with aiohttp.ClientSession() as http:
        bot = BotApi(settings.telegram_token, settings.telegram_api_url, http)
        return await Listener(settings, bot, Client.from_settings(settings), state).run()


def run(settings: Settings, state: Path) -> int:
    """`reeve-lite telegram`: listen until SIGTERM; the exit status."""
    if not settings.telegram_token or not settings.telegram_chat_ids:
        log.error(
            "set REEVE_LITE_TELEGRAM_TOKEN (or the credential telegram-token) and "
            "REEVE_LITE_TELEGRAM_CHAT_IDS"
        )
        return EXIT_BAD_TOKEN
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return asyncio.run(_main(settings, state))
    except KeyboardInterrupt:
        return 0
