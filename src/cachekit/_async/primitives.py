"""What the async cache waits with: asyncio locks, events, sleeps and background tasks.

The sync twin (``_sync/primitives.py``) has the same names over ``threading``;
the generated sync cache imports those instead. Nothing else differs between
the two caches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "IS_ASYNC",
    "AsyncBackground",
    "AsyncEvent",
    "AsyncLock",
    "cancel",
    "current_owner",
    "sleep",
    "spawn",
]

#: Which twin this is (the decorators refuse functions of the other kind).
IS_ASYNC = True


class AsyncLock:
    """A lock held across awaits; ``acquire(timeout)`` gives up after ``timeout`` s."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> None:
        await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()

    async def acquire(self, timeout: float) -> bool:
        """Take the lock within ``timeout`` s; return whether it was taken."""
        if not self._lock.locked():
            return await self._lock.acquire()  # free: taken without suspending
        if timeout <= 0:
            return False
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout)
        except TimeoutError:
            return False
        return True

    def release(self) -> None:
        """Give the lock back."""
        self._lock.release()

    def locked(self) -> bool:
        """True while someone holds the lock."""
        return self._lock.locked()


class AsyncEvent:
    """A one-shot signal that waiters wait for with a timeout."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        """Wake every waiter."""
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s; return whether the event was set."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


async def sleep(seconds: float) -> None:
    """Pause this task."""
    await asyncio.sleep(seconds)


def current_owner() -> Any:
    """Who is running: the current task (a loader asking for its own key is the same one)."""
    return asyncio.current_task()


def spawn(target: Callable[[], Awaitable[None]], name: str) -> asyncio.Task[None]:
    """Run ``target`` in the background (a task of the running loop)."""
    return asyncio.get_running_loop().create_task(target(), name=name)  # type: ignore[arg-type]


def is_running(task: Any) -> bool:
    """Whether a background job started by ``spawn`` is still running."""
    return task is not None and not task.done()


class AsyncBackground:
    """Background reloads as tracked tasks: at most ``limit`` at a time, cancelled on close."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, job: Callable[[], Awaitable[None]], name: str) -> bool:
        """Start ``job``; False (and nothing started) when ``limit`` jobs already run."""
        if len(self._tasks) >= self.limit:
            return False
        coro: Any = job()
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def close(self) -> None:
        """Cancel every job still running, and wait until they are gone."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def cancel(task: Any) -> None:
    """Stop a background job started by ``spawn`` (it is cancelled)."""
    if task is not None and not task.done():
        task.cancel()
