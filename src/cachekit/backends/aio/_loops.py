"""Per-event-loop machinery of the asyncio drivers: command deadlines and per-loop pools.

``Deadline`` bounds one command without a timer of its own: a watchdog per
loop, ticking every ``TICK`` seconds while commands are pending, cancels the
tasks whose deadline has passed (``asyncio.timeout`` costs a timer handle and
two coroutine calls per command, a tenth of a loopback GET). ``PerLoop`` keeps
one pool per running loop and disposes of it in that loop.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import suppress
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

from ...errors import BackendUnavailableError

__all__ = ["TICK", "Deadline", "PerLoop"]

_R = TypeVar("_R")

#: How often a loop's watchdog looks for commands past their deadline, seconds:
#: a command ends at most this long after its deadline.
TICK: Final = 0.01

if sys.version_info >= (3, 11):

    def _cancelling(task: asyncio.Task[Any]) -> int:
        return task.cancelling()

    def _uncancel(task: asyncio.Task[Any]) -> int:
        return task.uncancel()

else:  # pragma: no cover - the test venv runs 3.11+; 3.10 tasks keep no count

    def _cancelling(task: asyncio.Task[Any]) -> int:
        return 0

    def _uncancel(task: asyncio.Task[Any]) -> int:
        return 0


class _Watchdog:
    """One per event loop: cancels the tasks of pending commands whose deadline has passed.

    It keeps no reference to its loop (the loop is the key of a weak mapping).
    """

    __slots__ = ("__weakref__", "armed", "pending")

    def __init__(self) -> None:
        self.pending: set[Deadline] = set()
        self.armed = False

    def add(self, deadline: Deadline, loop: asyncio.AbstractEventLoop) -> None:
        self.pending.add(deadline)
        if not self.armed:
            self.armed = True
            loop.call_later(TICK, self.check)

    def check(self) -> None:
        """Expire what is due; tick again while anything is pending (runs in the loop)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for deadline in [d for d in self.pending if d.at <= now]:
            self.pending.discard(deadline)
            deadline.expire()
        if self.pending:
            # the next tick, or the next deadline if it comes first: a command is cut at
            # its deadline, not up to a tick later
            soonest = min(d.at for d in self.pending) - now
            loop.call_later(min(TICK, max(soonest, 0.0)), self.check)
        else:
            self.armed = False


_WATCHDOGS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watchdog] = (
    weakref.WeakKeyDictionary()
)


class Deadline:
    """``with Deadline(seconds):`` around the awaits of one command: ``TimeoutError`` when late.

    A plain (not async) context manager, usable around ``await``. Past the
    deadline the task is cancelled (within ``TICK``), and the cancellation is
    turned into ``TimeoutError`` on the way out, as ``asyncio.timeout`` does;
    a cancellation from anyone else stays a cancellation.
    """

    __slots__ = ("at", "cancelling", "expired", "seconds", "task", "watchdog")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False

    def __enter__(self) -> Deadline:
        loop = asyncio.get_running_loop()
        watchdog = _WATCHDOGS.get(loop)
        if watchdog is None:
            watchdog = _WATCHDOGS[loop] = _Watchdog()
        task = asyncio.current_task(loop)
        if task is None:  # pragma: no cover - awaited code always runs in a task
            raise RuntimeError("a command deadline needs a running task")
        self.task = task
        self.cancelling = _cancelling(task)
        self.at = loop.time() + self.seconds
        self.watchdog = watchdog
        watchdog.add(self, loop)
        return self

    def expire(self) -> None:
        """Called by the watchdog: the deadline has passed."""
        self.expired = True
        self.task.cancel()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.watchdog.pending.discard(self)
        if not self.expired:
            return
        others = _uncancel(self.task) > self.cancelling
        if kind is asyncio.CancelledError and not others:
            raise TimeoutError(f"the command's {self.seconds} s deadline has passed") from exc


class PerLoop(Generic[_R]):
    """One resource (a pool, a client) per running event loop, built there on first use.

    asyncio connections belong to the loop that opened them, so a backend used
    from several loops (one ``asyncio.run`` after another, or loops in several
    threads) keeps one pool per loop. Each pool is disposed in its own loop:
    by ``aclose()`` for the running loop, and for every other loop when it
    shuts down (``asyncio.run`` and ``loop.shutdown_asyncgens()`` finalize the
    parked async generator that guards it).
    """

    __slots__ = ("_build", "_dispose", "_items", "_last", "closed", "what")

    def __init__(
        self, what: str, build: Callable[[], _R], dispose: Callable[[_R], Awaitable[None]]
    ) -> None:
        self.what = what
        self._build = build
        self._dispose = dispose
        self._items: dict[asyncio.AbstractEventLoop, tuple[_R, AsyncGenerator[None, None]]] = {}
        self._last: tuple[asyncio.AbstractEventLoop | None, Any] = (None, None)
        self.closed = False

    def get(self) -> _R:
        """The running loop's resource."""
        loop = asyncio.get_running_loop()
        last_loop, resource = self._last
        if last_loop is loop:
            return resource  # type: ignore[no-any-return]
        if self.closed:
            raise BackendUnavailableError(f"{self.what} is closed")
        item = self._items.get(loop)
        if item is None:
            built = self._build()
            guard = self._guard(loop, built)
            # step the guard to its yield now: from here the loop's shutdown finalizes it
            with suppress(StopIteration):
                guard.asend(None).send(None)
            item = self._items[loop] = (built, guard)
        self._last = (loop, item[0])
        return item[0]

    async def _guard(self, loop: asyncio.AbstractEventLoop, resource: _R) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            item = self._items.get(loop)
            if item is not None and item[0] is resource:
                del self._items[loop]
                if self._last[0] is loop:
                    self._last = (None, None)
                await self._dispose(resource)

    async def aclose(self) -> None:
        """Dispose of the running loop's resource; other loops' go when those loops shut down."""
        self.closed = True
        self._last = (None, None)
        item = self._items.get(asyncio.get_running_loop())
        if item is not None:
            await item[1].aclose()  # runs the guard's finally: disposes of the resource
