"""Command deadlines (``Deadline``, its per-loop watchdog) and per-loop resources (``PerLoop``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import cachekit as ck
from cachekit.backends.aio._loops import _WATCHDOGS, TICK, Deadline, PerLoop


def test_a_late_command_raises_timeout_error_within_a_tick() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError), Deadline(0.05):
            await asyncio.sleep(10)
        took = loop.time() - start
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # the cancellation was taken back
        await asyncio.sleep(0)  # and the task is not cancelled later on
        return took

    took = asyncio.run(main())
    assert 0.05 <= took < 0.3  # the deadline plus a tick, with room for a busy machine


def test_a_command_in_time_is_untouched_and_the_watchdog_stops() -> None:
    async def main() -> None:
        with Deadline(1):
            await asyncio.sleep(0.001)
        watchdog = _WATCHDOGS[asyncio.get_running_loop()]
        assert not watchdog.pending
        await asyncio.sleep(2 * TICK)
        assert watchdog.armed is False  # no ticking while nothing is pending

    asyncio.run(main())


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def command() -> None:
        with Deadline(10):
            await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.ensure_future(command())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_an_outer_timeout_is_not_mistaken_for_the_deadline() -> None:
    async def main() -> None:
        # the outer asyncio.timeout fires first: it must see its own cancellation
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                with Deadline(10):
                    await asyncio.sleep(10)
        # the inner deadline fires first: the outer timeout stays quiet
        async with asyncio.timeout(5):
            with pytest.raises(TimeoutError), Deadline(0.02):
                await asyncio.sleep(10)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0

    asyncio.run(main())


def test_per_loop_resources_are_built_per_loop_and_disposed_in_it() -> None:
    built: list[Any] = []
    disposed: list[Any] = []

    async def dispose(item: Any) -> None:
        assert asyncio.get_running_loop() is item[0]  # in the loop that built it
        disposed.append(item)

    pools: PerLoop[Any] = PerLoop(
        "test", lambda: built.append((asyncio.get_running_loop(), len(built))) or built[-1], dispose
    )

    async def use() -> Any:
        return pools.get(), pools.get()

    first = asyncio.run(use())
    assert first[0] is first[1]
    assert disposed == [first[0]]  # asyncio.run's shutdown disposed of it
    second = asyncio.run(use())
    assert second[0] is not first[0]

    async def close() -> None:
        pools.get()
        await pools.aclose()
        with pytest.raises(ck.BackendUnavailableError, match="test is closed"):
            pools.get()

    asyncio.run(close())
    assert len(disposed) == 3


def test_a_finished_loop_leaves_no_watchdog_behind() -> None:
    import gc

    async def command() -> None:
        with Deadline(1):
            await asyncio.sleep(0)

    asyncio.run(command())
    gc.collect()
    before = len(_WATCHDOGS)
    for _ in range(5):
        asyncio.run(command())
    gc.collect()
    assert len(_WATCHDOGS) <= before
