"""A local stand-in for the Telegram Bot API (aiohttp, in a thread of its own).

It checks the bot token in the path like Telegram does, records every call,
answers `getMe` and `sendMessage`, refuses MarkdownV2 with an unescaped `_` or
`*` as Telegram does ("can't parse entities"), and can be told to fail.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.local_server import LocalServer

# The bot token the fake answers to; tests check it never reaches a log.
BOT_TOKEN = "123456:telegram-secret-token"


@dataclass
class FakeTelegram:
    token: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail_with: int | None = None  # answer every call with this HTTP status
    rate_limit: int = 0  # answer this many getUpdates calls with 429, retry_after 1
    updates: list[dict[str, Any]] = field(default_factory=list)
    next_update_id: int = 100
    _arrived: asyncio.Condition | None = None
    stopping: bool = False
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _server: LocalServer | None = None

    def start(self) -> FakeTelegram:
        async def make() -> web.Application:
            self._arrived = asyncio.Condition()  # bound to the server's loop
            app = web.Application()
            app.router.add_post("/bot{token}/{method}", self._handle)
            return app

        self._server = LocalServer.start(make, what="the fake Telegram Bot API")
        self._loop = self._server.loop
        self.url = self._server.url
        return self

    def stop(self) -> None:
        assert self._server is not None

        async def release() -> None:
            self.stopping = True
            assert self._arrived is not None
            async with self._arrived:
                self._arrived.notify_all()  # release every long poll still waiting

        self._server.call(release())
        self._server.stop()

    def push(self, chat_id: int, text: str | None = None, **message: Any) -> int:
        """A user writes to the bot; the update id."""
        assert self._loop is not None
        update_id = self.next_update_id
        self.next_update_id += 1
        body = {
            "message_id": update_id * 10,
            "chat": {"id": chat_id, "type": "private"},
            "from": {"id": chat_id, "first_name": "Ada", "username": "ada"},
            "date": 0,
            **message,
        }
        if text is not None:
            body["text"] = text
        update = {"update_id": update_id, "message": body}

        async def add() -> None:
            self.updates.append(update)
            assert self._arrived is not None
            async with self._arrived:
                self._arrived.notify_all()

        asyncio.run_coroutine_threadsafe(add(), self._loop).result(10)
        return update_id

    def actions(self) -> list[dict[str, Any]]:
        return [payload for method, payload in self.calls if method == "sendChatAction"]

    def sent(self) -> list[dict[str, Any]]:
        return [payload for method, payload in self.calls if method == "sendMessage"]

    async def _get_updates(self, payload: dict[str, Any]) -> web.Response:
        if self.rate_limit > 0:
            self.rate_limit -= 1
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 1},
                },
                status=429,
            )
        offset = int(payload.get("offset", 0))
        # An offset confirms every update before it, as Telegram does.
        self.updates = [u for u in self.updates if u["update_id"] >= offset]
        if not self.updates and not self.stopping:
            assert self._arrived is not None
            with contextlib.suppress(TimeoutError):
                async with self._arrived:
                    await asyncio.wait_for(self._arrived.wait(), float(payload.get("timeout", 0)))
        return web.json_response({"ok": True, "result": list(self.updates)})

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        payload = await request.json()
        method = request.match_info["method"]
        self.calls.append((method, payload))
        if self.fail_with is not None:
            return web.json_response(
                {"ok": False, "error_code": self.fail_with, "description": "Bad Gateway"},
                status=self.fail_with,
            )
        if method == "getUpdates":
            return await self._get_updates(payload)
        if method == "getMe":
            return web.json_response(
                {"ok": True, "result": {"id": 1, "is_bot": True, "username": "reeve_test_bot"}}
            )
        if method == "sendMessage":
            text = payload.get("text", "")
            if len(text) > 4096:
                return web.json_response(
                    {
                        "ok": False,
                        "error_code": 400,
                        "description": "Bad Request: message is too long",
                    },
                    status=400,
                )
            if payload.get("parse_mode") == "MarkdownV2" and any(
                c in text.replace("\\_", "").replace("\\*", "") for c in "_*"
            ):
                return web.json_response(
                    {
                        "ok": False,
                        "error_code": 400,
                        "description": "Bad Request: can't parse entities: "
                        "Can't find end of the entity",
                    },
                    status=400,
                )
            return web.json_response(
                {
                    "ok": True,
                    "result": {
                        "message_id": len(self.calls),
                        "chat": {"id": payload["chat_id"]},
                        "text": text,
                    },
                }
            )
        return web.json_response(
            {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
        )
