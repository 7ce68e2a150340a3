"""A local stand-in for the Telegram Bot API (aiohttp, in a thread of its own).

It checks the bot token in the path like Telegram does, records every call,
answers `getMe` and `sendMessage`, refuses MarkdownV2 with an unescaped `_` or
`*` as Telegram does ("can't parse entities"), and can be told to fail.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class FakeTelegram:
    token: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail_with: int | None = None  # answer every call with this HTTP status
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    def start(self) -> FakeTelegram:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/bot{token}/{method}", self._handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()

        def run() -> None:
            assert self._loop is not None
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        assert self._loop is not None
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def sent(self) -> list[dict[str, Any]]:
        return [payload for method, payload in self.calls if method == "sendMessage"]

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
