"""Telegram Bot API: the notifier the daemon sends through (aiohttp's client).

The token is part of every request URL, so every error is scrubbed of it before
it is raised, logged or answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

MAX_TEXT = 4096  # Telegram's limit for one message


class TelegramError(Exception):
    """Telegram refused or could not be reached; never carries the token."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """`text` in pieces of at most `limit` characters, cut at line boundaries where
    a line fits, else inside the line."""
    pieces: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > limit:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:limit])
            line = line[limit:]
        if len(current) + len(line) > limit:
            pieces.append(current)
            current = ""
        current += line
    if current or not pieces:
        pieces.append(current)
    return [piece.rstrip("\n") or piece for piece in pieces]


@dataclass(frozen=True)
class Link:
    """An inline button under a message."""

    url: str
    text: str = "Open"


class BotApi:
    """A small client of the Bot API methods reeve-lite uses."""

    def __init__(self, token: str, base_url: str, session: aiohttp.ClientSession) -> None:
        self._token = token
        self._base = base_url.rstrip("/")
        self._session = session

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "<token>")

    async def call(self, method: str, payload: dict[str, Any], *, seconds: float = 30) -> Any:
        """Call `method`; its `result`, or TelegramError."""
        url = f"{self._base}/bot{self._token}/{method}"
        try:
            async with self._session.post(
                url, json=payload, timeout=aiohttp.ClientTimeout(total=seconds)
            ) as response:
                status = response.status
                try:
                    data = await response.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    data = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TelegramError(self._scrub(f"cannot reach Telegram: {exc!r}")) from None
        if not isinstance(data, dict) or not data.get("ok"):
            description = data.get("description") if isinstance(data, dict) else None
            params = data.get("parameters") if isinstance(data, dict) else None
            retry = params.get("retry_after") if isinstance(params, dict) else None
            raise TelegramError(
                self._scrub(f"Telegram {method} failed ({status}): {description or 'no answer'}"),
                status=status,
                retry_after=float(retry) if isinstance(retry, int | float) else None,
            )
        return data.get("result")

    async def send_message(
        self,
        chat_id: int,
        text: str,
        *,
        parse_mode: str | None = None,
        silent: bool = False,
        link: Link | None = None,
    ) -> int:
        """Send `text` (split when long; the link goes under the last piece);
        markup Telegram cannot parse is sent again as plain text. The messages sent."""
        pieces = split_text(text)
        for index, piece in enumerate(pieces):
            payload: dict[str, Any] = {
                "chat_id": chat_id,
                "text": piece,
                "disable_notification": silent,
            }
            if link is not None and index == len(pieces) - 1:
                payload["reply_markup"] = {
                    "inline_keyboard": [[{"text": link.text, "url": link.url}]]
                }
            if parse_mode:
                try:
                    await self.call("sendMessage", payload | {"parse_mode": parse_mode})
                    continue
                except TelegramError as exc:
                    if exc.status != 400 or "parse" not in str(exc).lower():
                        raise
            await self.call("sendMessage", payload)
        return len(pieces)
