"""An aiohttp application on 127.0.0.1, served from a thread with its own event
loop: what the tests' stand-ins (Telegram, the Anthropic API) run on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


@dataclass
class LocalServer:
    """A served application: its loop, runner, thread and base URL."""

    loop: asyncio.AbstractEventLoop
    runner: web.AppRunner
    thread: threading.Thread
    url: str

    @classmethod
    def start(
        cls,
        make_app: Callable[[], Awaitable[web.Application]],
        port: int = 0,
        what: str = "the local server",
    ) -> LocalServer:
        """Serve the application `make_app` builds (in the server's loop, so that it
        may make loop-bound objects) on `port` (a free one by default)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        made: dict[str, Any] = {}

        async def serve() -> None:
            runner = web.AppRunner(await make_app())
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
            bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            made.update(runner=runner, url=f"http://127.0.0.1:{bound}")
            ready.set()

        def run() -> None:
            loop.run_until_complete(serve())
            loop.run_forever()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{what} did not start")
        return cls(loop, made["runner"], thread, made["url"])

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` in the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        """Stop serving and end the thread."""
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
