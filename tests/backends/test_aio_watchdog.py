"""No async remote driver blocks the event loop: a hung server costs one deadline, no more.

While a call to a server that accepts connections and never answers is
pending, a task sleeping 10 ms in a loop is never held up for 100 ms, and the
call ends with ``BackendUnavailableError`` within twice the 250 ms deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import cachekit as ck
from cachekit.backends.aio import async_backend_from_url
from cachekit.backends.base import AsyncBackend
from tests.faultkit import StallServer

DEADLINE = 0.25

URLS = {
    "redis": "redis://127.0.0.1:{port}/0",
    "redis-cluster": "redis+cluster://127.0.0.1:{port}",
    "memcached": "memcached://127.0.0.1:{port}",
}

CALLS: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "get": lambda b: b.get("k"),
    "get_many": lambda b: b.get_many(["k1", "k2", "k3"]),
    "set": lambda b: b.set("k", b"v", 10),
    "set_many": lambda b: b.set_many({"k1": b"v", "k2": b"v"}, 10),
    "add": lambda b: b.add("k", b"v", 10),
    "delete": lambda b: b.delete("k"),
    "delete_many": lambda b: b.delete_many(["k1", "k2"]),
    "compare_and_set": lambda b: b.compare_and_set("k", b"v", b"w", 10),
    "server_stats": lambda b: b.server_stats(),
}


async def watched(call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """Run ``call`` (it must fail as unavailable) beside a 10 ms ticker: (duration, longest gap)."""
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.03)  # the ticker is running
    start = loop.time()
    with pytest.raises(ck.BackendUnavailableError) as info:
        await call()
    took = loop.time() - start
    done.set()
    await task
    assert info.value.__cause__ is not None
    return took, max(gaps)


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("kind", sorted(URLS))
def test_a_hung_server_costs_one_deadline_and_never_blocks_the_loop(kind: str, call: str) -> None:
    with StallServer() as stall:

        async def main() -> tuple[float, float]:
            backend: AsyncBackend = async_backend_from_url(URLS[kind].format(port=stall.port))
            try:
                return await watched(lambda: CALLS[call](backend))
            finally:
                await backend.aclose()

        took, gap = asyncio.run(main())
    assert took < 2 * DEADLINE, f"{kind} {call} took {took:.3f} s"
    assert gap < 0.1, f"the loop stalled {gap:.3f} s during {kind} {call}"
