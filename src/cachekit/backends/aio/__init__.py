"""Async backend registry: URL scheme -> ``AsyncBackend`` class, imported only when first used.

The asyncio twins of the sync backends: ``memory://`` (over a ``MemoryBackend``),
``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
``rediss+cluster://`` (``redis.asyncio``) and ``memcached://`` (a small
asyncio text-protocol client, see ``memcached.py``). They read the same URLs,
and write the same bytes, as the sync drivers of those schemes.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import suppress
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from ...errors import BackendUnavailableError, ConfigurationError
from .. import redact_url
from ..base import AsyncBackend

__all__ = ["PerLoop", "async_backend_from_url", "command_deadline", "register_async_backend"]

_R = TypeVar("_R")

# scheme -> ("module:Class" or the class itself, extra that provides its driver)
_REGISTRY: dict[str, tuple[str | type[AsyncBackend], str | None]] = {
    "memory": ("cachekit.backends.aio.memory:AsyncMemoryBackend", None),
    "redis": ("cachekit.backends.aio.redis:AsyncRedisBackend", "redis"),
    "rediss": ("cachekit.backends.aio.redis:AsyncRedisBackend", "redis"),
    "unix": ("cachekit.backends.aio.redis:AsyncRedisBackend", "redis"),
    "redis+cluster": ("cachekit.backends.aio.redis:AsyncRedisClusterBackend", "redis"),
    "rediss+cluster": ("cachekit.backends.aio.redis:AsyncRedisClusterBackend", "redis"),
    "memcached": ("cachekit.backends.aio.memcached:AsyncMemcachedBackend", "memcached"),
}


def register_async_backend(scheme: str, target: str | type[AsyncBackend]) -> None:
    """Register an async backend class (or its ``"module:Class"`` path) for a URL scheme."""
    if isinstance(target, type) and not issubclass(target, AsyncBackend):
        raise ConfigurationError(f"{target!r} is not a cachekit AsyncBackend")
    _REGISTRY[scheme.lower()] = (target, None)


def _resolve(scheme: str) -> type[AsyncBackend]:
    entry = _REGISTRY.get(scheme)
    if entry is None:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigurationError(
            f"no cachekit async backend for URL scheme {scheme!r} (known: {known})"
        )
    target, extra = entry
    if isinstance(target, type):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: pip install 'cachekit-py[{extra}]'" if extra else ""
        raise ConfigurationError(
            f"async backend for {scheme}:// needs a driver that is not installed ({exc.name}){hint}"
        ) from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, AsyncBackend)):
        raise ConfigurationError(f"{target} is not a cachekit AsyncBackend")
    return cls


def async_backend_from_url(url: str, **options: Any) -> AsyncBackend:
    """Build the async backend that serves ``url``'s scheme (no connection is opened yet)."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        raise ConfigurationError(f"malformed cache URL {redact_url(url)!r}") from None
    if not scheme:
        raise ConfigurationError(
            f"cache URL {redact_url(url)!r} has no scheme (e.g. memory://, redis://)"
        )
    return _resolve(scheme).from_url(url, **options)


class _Deadline310:
    """``asyncio.timeout`` for Python 3.10: cancels the task when the time is up."""

    __slots__ = ("_delay", "_expired", "_handle", "_task")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._expired = False
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None

    def _fire(self) -> None:
        self._expired = True
        if self._task is not None:
            self._task.cancel()

    async def __aenter__(self) -> None:
        self._task = asyncio.current_task()
        self._handle = asyncio.get_running_loop().call_later(self._delay, self._fire)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._expired and kind is asyncio.CancelledError:
            raise TimeoutError("the command's deadline has passed") from exc


def command_deadline(seconds: float) -> Any:
    """An async context manager that raises ``TimeoutError`` when ``seconds`` have passed."""
    if sys.version_info >= (3, 11):
        return asyncio.timeout(seconds)
    return _Deadline310(seconds)  # pragma: no cover - the test venv runs 3.11+


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
