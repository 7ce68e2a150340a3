"""A 1-second polling loop over a reeve-lite database: the baseline of the idle figures.

    python -m bench.poller DB

Once a second it runs the store's own claim query (what a scheduler without a
timer must do), until it is terminated.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from reeve_lite.store import Store


async def poll(db: Path) -> None:
    store = await Store.open(db)
    loop = asyncio.get_running_loop()
    tick = loop.time()
    try:
        while True:
            await store.claim_due(datetime.now(UTC), 8)
            tick += 1.0
            await asyncio.sleep(max(0.0, tick - loop.time()))
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(poll(Path(sys.argv[1])))
