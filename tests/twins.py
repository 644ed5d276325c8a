"""One test body for ``Cache`` and ``AsyncCache``: two drivers behind one interface, ``Twin``.

A twinned module declares a ``drv`` fixture over ``TWIN_KINDS`` (``yield from
open_twin(kind)``) and builds its caches through it. The sync driver hands out
real ``Cache`` objects and threads, untouched. The async driver hands out a
blocking *view* of an ``AsyncCache``: ``view.get(k)`` runs ``await
acache.get(k)`` on the test's own event loop and returns the value; its
decorators turn the plain test function into an ``async def`` twin (same
name, parameters and key) and decorate that. What runs "in the background"
(a slow load, a waiting reader) is a thread for the sync driver and a task for
the async one; tasks run whenever the test body waits (on an event, a join, or
any call of a view), as they would on a busy event loop. Loaders are written
once as plain functions and made async with ``drv.loader(fn)``; ``started=``
and ``wait_for=`` let a loader signal that it runs and wait (blocking, or
awaiting) until the test lets it finish.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import linecache
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest

import cachekit as ck
from cachekit.aio import AsyncCache
from cachekit.backends.aio import async_backend_from_url
from cachekit.backends.aio.memory import AsyncMemoryBackend
from cachekit.backends.base import AsyncBackend

__all__ = ["TWIN_KINDS", "WAIT", "AsyncTwin", "SyncTwin", "Twin", "open_twin", "plain_to_async"]

#: Seconds; a bound for waits that normally take milliseconds.
WAIT = 10.0

Gate = Callable[[], bool] | Any  # a predicate, or an event of the driver


# ---------------------------------------------------------------- plain function -> async def

_TWIN_IDS = itertools.count()


def plain_to_async(
    fn: Callable[..., Any], before: Callable[[], Awaitable[None]] | None = None
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """An ``async def`` with ``fn``'s parameters, names and defaults that returns ``fn(...)``.

    The parameters are spelled out (not ``*args``) so the cache sees the same
    signature: the same keys, and ``self`` marks a method. ``before`` is
    awaited first.
    """
    sig = inspect.signature(fn)
    params: list[str] = []
    call: list[str] = []
    defaults: dict[str, Any] = {}
    star_done = False
    posonly_open = False
    for i, p in enumerate(sig.parameters.values()):
        if p.kind is p.POSITIONAL_ONLY:
            posonly_open = True
        elif posonly_open:
            params.append("/")
            posonly_open = False
        text = p.name
        if p.kind is p.VAR_POSITIONAL:
            text, star_done = "*" + p.name, True
            call.append("*" + p.name)
        elif p.kind is p.VAR_KEYWORD:
            text = "**" + p.name
            call.append("**" + p.name)
        elif p.kind is p.KEYWORD_ONLY:
            if not star_done:
                params.append("*")
                star_done = True
            call.append(f"{p.name}={p.name}")
        else:
            call.append(p.name)
        if p.default is not p.empty:
            defaults[f"_default_{i}"] = p.default
            text += f"=_default_{i}"
        params.append(text)
    if posonly_open:
        params.append("/")
    source = (
        f"async def _twin({', '.join(params)}):\n"
        f"    if _before is not None:\n"
        f"        await _before()\n"
        f"    return _fn({', '.join(call)})\n"
    )
    scope: dict[str, Any] = {"_fn": fn, "_before": before, **defaults}
    # a file name of its own, with its source in linecache, so tracebacks can show it
    filename = f"<async twin of {getattr(fn, '__qualname__', fn)!s} #{next(_TWIN_IDS)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), scope)  # the parameters spelled out, as fn's
    twin = scope["_twin"]
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(twin, attr, getattr(fn, attr, None))
    twin.__signature__ = sig
    twin.__annotations__ = dict(getattr(fn, "__annotations__", {}))
    return twin  # type: ignore[no-any-return]


# ---------------------------------------------------------------- the interface


class Handle:
    """Something running in the background: a thread, or a task of the test's loop."""

    def __init__(self, join: Callable[[float], bool], outcome: Callable[[], Any]) -> None:
        self._join = join
        self._outcome = outcome

    def join(self, timeout: float = WAIT) -> None:
        """Wait until it finished (fails the test after ``timeout``)."""
        assert self._join(timeout), "the background call did not finish"

    def result(self) -> Any:
        """Join it and return its result (or raise its exception)."""
        self.join()
        return self._outcome()


class Twin:
    """What a test body uses; ``SyncTwin`` and ``AsyncTwin`` implement it."""

    name = "base"
    is_async = False
    #: ``ck.Cache`` or ``AsyncCache``.
    Cache: Any = None

    def __repr__(self) -> str:
        return self.name

    def cache(self, backend: Any, **options: Any) -> Any:
        """A cache of this kind over ``backend`` (a sync backend, or an async one)."""
        raise NotImplementedError

    def from_url(self, url: str, **options: Any) -> Any:
        """A cache of this kind from a URL."""
        raise NotImplementedError

    def backend_from_url(self, url: str, **options: Any) -> Any:
        """A backend of this kind from a URL."""
        raise NotImplementedError

    def raw(self, view: Any) -> Any:
        """The cache or backend behind what ``cache`` / ``backend_from_url`` returned."""
        raise NotImplementedError

    def backend(self, backend: Any) -> Any:
        """A backend of this kind as the test body uses it (async: its methods block)."""
        raise NotImplementedError

    def run(self, value: Any) -> Any:
        """The result of ``value`` (awaited if it is awaitable)."""
        raise NotImplementedError

    def loader(
        self, fn: Callable[..., Any], *, started: Any = None, wait_for: Gate | None = None
    ) -> Callable[..., Any]:
        """A loader of this kind that sets ``started``, waits for ``wait_for``, returns ``fn()``."""
        raise NotImplementedError

    def event(self) -> Any:
        """An event that background work and the test body can both wait on."""
        raise NotImplementedError

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Handle:
        """Run a cache call in the background (a thread, or a task)."""
        raise NotImplementedError

    def later(self, delay: float, fn: Callable[[], Any]) -> Callable[[], None]:
        """Call ``fn`` after ``delay`` s in the background; return a function that stops it."""
        raise NotImplementedError

    def wait_until(self, cond: Callable[[], bool], timeout: float = WAIT) -> None:
        """Wait until ``cond()`` (background work runs meanwhile)."""
        raise NotImplementedError

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass (background work runs meanwhile)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the driver holds."""

    def view(self, cache: Any) -> Any:
        """The test body's face of a cache of this kind (the ``Cache`` itself, or a view)."""
        raise NotImplementedError

    def in_child(self) -> Twin:
        """The driver a forked child uses (an event loop does not survive fork())."""
        raise NotImplementedError

    def concurrently(
        self, n: int, fn: Callable[..., Any], *args: Any
    ) -> tuple[list[Any], list[BaseException]]:
        """Run ``fn(*args)`` ``n`` times at once; return the results and the errors raised."""
        handles = [self.spawn(fn, *args) for _ in range(n)]
        for h in handles:
            h.join(WAIT * 2)
        results: list[Any] = [None] * n
        errors: list[BaseException] = []
        for i, h in enumerate(handles):
            try:
                results[i] = h.result()
            except BaseException as exc:
                errors.append(exc)
        return results, errors


# ---------------------------------------------------------------- sync driver


class SyncTwin(Twin):
    """``Cache`` objects, plain loaders, threads."""

    name = "sync"
    Cache = ck.Cache

    def cache(self, backend: Any, **options: Any) -> Any:
        """A ``Cache`` over the sync ``backend``."""
        return ck.Cache(backend, **options)

    def from_url(self, url: str, **options: Any) -> Any:
        """``Cache.from_url``."""
        return ck.Cache.from_url(url, **options)

    def backend_from_url(self, url: str, **options: Any) -> Any:
        """The sync backend for ``url``."""
        return ck.backend_from_url(url, **options)

    def raw(self, view: Any) -> Any:
        """The cache (or backend) itself."""
        return view

    def backend(self, backend: Any) -> Any:
        """The sync backend itself."""
        return backend

    def run(self, value: Any) -> Any:
        """Sync calls already returned their value."""
        return value

    def loader(
        self,
        fn: Callable[..., Any],
        *,
        started: Any = None,
        wait_for: Gate | None = None,
    ) -> Callable[..., Any]:
        """``fn`` itself, or a wrapper that sets ``started`` then blocks until ``wait_for``."""
        if started is None and wait_for is None:
            return fn

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if started is not None:
                started.set()
            if wait_for is not None:
                self._block_until(wait_for)
            return fn(*args, **kwargs)

        return wrapper

    @staticmethod
    def _block_until(gate: Gate) -> None:
        if hasattr(gate, "wait"):
            assert gate.wait(WAIT), "the test never released the loader"
            return
        deadline = time.monotonic() + WAIT
        while not gate():
            if time.monotonic() > deadline:
                pytest.fail("condition not reached in time")
            time.sleep(0.001)

    def event(self) -> threading.Event:
        """A ``threading.Event``."""
        return threading.Event()

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Handle:
        """Call ``fn(*args, **kwargs)`` in a thread."""
        out: list[Any] = []
        errors: list[BaseException] = []

        def target() -> None:
            try:
                out.append(fn(*args, **kwargs))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target)
        thread.start()

        def join(timeout: float) -> bool:
            thread.join(timeout)
            return not thread.is_alive()

        def outcome() -> Any:
            if errors:
                raise errors[0]
            return out[0]

        return Handle(join, outcome)

    def later(self, delay: float, fn: Callable[[], Any]) -> Callable[[], None]:
        """Call ``fn`` after ``delay`` s in the background; return a function that stops it."""
        timer = threading.Timer(delay, fn)
        timer.start()

        def stop() -> None:
            timer.cancel()
            timer.join()

        return stop

    def wait_until(self, cond: Callable[[], bool], timeout: float = WAIT) -> None:
        """Poll ``cond`` (sleeping) until it is true."""
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                pytest.fail("condition not reached in time")
            time.sleep(0.001)

    def sleep(self, seconds: float) -> None:
        """Sleep (background threads run meanwhile)."""
        time.sleep(seconds)

    def close(self) -> None:
        """Nothing to release."""

    def view(self, cache: Any) -> Any:
        """The ``Cache`` itself."""
        return cache

    def in_child(self) -> Twin:
        """Threads' objects carry over a fork (the cache renews its locks)."""
        return self


# ---------------------------------------------------------------- async driver


class Blocking:
    """A coroutine method seen from the test body: calling it runs it to its result."""

    __slots__ = ("_fn", "_twin")

    def __init__(self, twin: AsyncTwin, fn: Callable[..., Awaitable[Any]]) -> None:
        self._twin = twin
        self._fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._twin.run(self._fn(*args, **kwargs))

    def coro(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """The awaitable itself (for a task)."""
        return self._fn(*args, **kwargs)


class DecoratedView:
    """A decorated ``async def`` seen from the test body: calls and helpers block."""

    def __init__(self, twin: AsyncTwin, target: Any) -> None:
        self._twin = twin
        self._target = target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._twin.run(self._target(*args, **kwargs))

    def coro(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """The awaitable of a call (for a task)."""
        return self._target(*args, **kwargs)  # type: ignore[no-any-return]

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return DecoratedView(self._twin, self._target.__get__(obj, objtype))

    def __getattr__(self, name: str) -> Any:
        if name in ("_target", "_twin"):  # not set yet (a copy): no endless recursion
            raise AttributeError(name)
        attr = getattr(self._target, name)
        if name in ("invalidate", "refresh", "uncached"):
            return Blocking(self._twin, attr)
        return attr


class AsyncView:
    """An ``AsyncCache`` seen from the test body: each awaited method blocks until done.

    ``close()`` is ``aclose()``, ``key in view`` is ``contains(key)``; the
    decorators take a plain function (made async with ``plain_to_async``) or an
    ``async def``. Attributes are read from and written to the cache itself.
    """

    def __init__(self, twin: AsyncTwin, target: AsyncCache) -> None:
        object.__setattr__(self, "_twin", twin)
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        if name in ("_target", "_twin"):  # not set yet (a copy): no endless recursion
            raise AttributeError(name)
        if name == "close":
            name = "aclose"
        attr = getattr(self._target, name)
        if name in ("cached", "writes", "evicts"):
            return self._decorator(attr)
        if inspect.iscoroutinefunction(attr):
            return Blocking(self._twin, attr)
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __contains__(self, key: str) -> bool:
        return bool(self._twin.run(self._target.contains(key)))

    def __repr__(self) -> str:
        return f"AsyncView({self._target!r})"

    def _decorator(self, factory: Callable[..., Any]) -> Callable[..., Any]:
        twin = self._twin

        def make(*args: Any, **kwargs: Any) -> Any:
            deco = factory(*args, **kwargs)

            def apply(fn: Callable[..., Any]) -> DecoratedView:
                if not inspect.iscoroutinefunction(fn):
                    fn = twin.loader(fn)
                return DecoratedView(twin, deco(fn))

            return apply

        return make


class LoopEvent:
    """An ``asyncio.Event`` the test body can wait on (running the loop meanwhile)."""

    def __init__(self, twin: AsyncTwin) -> None:
        self._twin = twin
        self._event = asyncio.Event()

    def set(self) -> None:
        """Wake every waiter."""
        self._event.set()

    def is_set(self) -> bool:
        """Whether it was set."""
        return self._event.is_set()

    def wait(self, timeout: float = WAIT) -> bool:
        """From the test body: run the loop until set (or ``timeout``)."""
        return bool(self._twin.run(self.wait_async(timeout)))

    async def wait_async(self, timeout: float = WAIT) -> bool:
        """From a task: wait until set (or ``timeout``)."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


async def _drain(tasks: set[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


class _Loop:
    """The test's own event loop (``asyncio.Runner`` is Python 3.11+)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        """Cancel what is left, finalize async generators (per-loop pools close), close."""
        loop = self.loop
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(_drain(tasks))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class AsyncTwin(Twin):
    """``AsyncCache`` objects behind blocking views, async loaders, tasks on one loop per test."""

    name = "async"
    is_async = True
    Cache = AsyncCache

    def __init__(self) -> None:
        self.runner = _Loop()
        self._adapters: dict[int, tuple[Any, AsyncBackend]] = {}

    def run(self, value: Any) -> Any:
        """Await ``value`` on the test's loop (other tasks run meanwhile); return its result."""
        if not inspect.isawaitable(value):
            return value
        return self.runner.run(_await(value))

    def async_backend(self, backend: Any) -> AsyncBackend:
        """The awaited face of a sync backend (the same object each time), or ``backend``."""
        if isinstance(backend, BackendView):
            backend = self.raw(backend)
        if isinstance(backend, AsyncBackend):
            return backend
        known = self._adapters.get(id(backend))
        if known is not None:
            return known[1]
        adapter = _adapter_class(type(backend))(backend)
        self._adapters[id(backend)] = (backend, adapter)
        return adapter

    def cache(self, backend: Any, **options: Any) -> Any:
        """A view of an ``AsyncCache`` over ``backend`` (a sync one gets its awaited face)."""
        return AsyncView(self, AsyncCache(self.async_backend(backend), **options))

    def from_url(self, url: str, **options: Any) -> Any:
        """A view of ``AsyncCache.from_url``."""
        return AsyncView(self, AsyncCache.from_url(url, **options))

    def backend_from_url(self, url: str, **options: Any) -> Any:
        """The async backend for ``url``, its awaited methods blocking."""
        return BackendView(self, async_backend_from_url(url, **options))

    def backend(self, backend: Any) -> Any:
        """A view of the async ``backend``: its awaited methods block."""
        return BackendView(self, backend)

    def raw(self, view: Any) -> Any:
        """The ``AsyncCache`` (or backend) behind a view."""
        if isinstance(view, (AsyncView, BackendView)):
            return object.__getattribute__(view, "_target")
        return view

    def loader(
        self,
        fn: Callable[..., Any],
        *,
        started: Any = None,
        wait_for: Gate | None = None,
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        """The ``async def`` twin of ``fn``: sets ``started``, awaits ``wait_for``, calls ``fn``."""
        before = None
        if started is not None or wait_for is not None:

            async def before() -> None:
                if started is not None:
                    started.set()
                if wait_for is not None:
                    await self._until(wait_for)

        return plain_to_async(fn, before)

    @staticmethod
    async def _until(gate: Gate) -> None:
        if isinstance(gate, LoopEvent):
            assert await gate.wait_async(WAIT), "the test never released the loader"
            return
        deadline = time.monotonic() + WAIT
        while not gate():
            if time.monotonic() > deadline:
                pytest.fail("condition not reached in time")
            await asyncio.sleep(0.001)

    def event(self) -> LoopEvent:
        """An event of the test's loop."""
        return LoopEvent(self)

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Handle:
        """Start a task for a view's method, a decorated function, or an ``async def``."""
        coro_of = getattr(fn, "coro", None)
        aw = coro_of(*args, **kwargs) if coro_of is not None else fn(*args, **kwargs)
        task = self.runner.get_loop().create_task(_await(aw))

        def join(timeout: float) -> bool:
            self.run(asyncio.wait([task], timeout=timeout))
            return task.done()

        return Handle(join, task.result)

    def later(self, delay: float, fn: Callable[[], Any]) -> Callable[[], None]:
        """Call ``fn`` after ``delay`` s on the loop; return a function that stops it."""
        handle = self.runner.get_loop().call_later(delay, fn)
        return handle.cancel

    def wait_until(self, cond: Callable[[], bool], timeout: float = WAIT) -> None:
        """Run the loop until ``cond`` is true."""
        self.run(self._poll(cond, timeout))

    @staticmethod
    async def _poll(cond: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                pytest.fail("condition not reached in time")
            await asyncio.sleep(0.001)

    def sleep(self, seconds: float) -> None:
        """Run the loop for ``seconds`` (tasks run meanwhile)."""
        self.run(asyncio.sleep(seconds))

    def close(self) -> None:
        """Cancel leftover tasks and close the loop (pools close with it)."""
        self.runner.close()

    def view(self, cache: Any) -> Any:
        """A view of the ``AsyncCache`` (or of the cache behind another view) on this loop."""
        return AsyncView(self, self.raw(cache))

    def in_child(self) -> Twin:
        """A driver with a loop of its own: the parent's loop is not usable after fork()."""
        return AsyncTwin()


class BackendView:
    """An async backend seen from the test body: awaited methods block; attributes pass through."""

    def __init__(self, twin: AsyncTwin, target: AsyncBackend) -> None:
        object.__setattr__(self, "_twin", twin)
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        if name in ("_target", "_twin"):  # not set yet (a copy): no endless recursion
            raise AttributeError(name)
        if name == "close":
            name = "aclose"
        attr = getattr(self._target, name)
        if inspect.iscoroutinefunction(attr):
            return Blocking(self._twin, attr)
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)


# ---------------------------------------------------------------- awaited faces of sync backends


_ADAPTERS: dict[type, type[AsyncBackend]] = {}

_CORE = ("get", "set", "add", "delete", "get_many", "set_many", "delete_many")
_OPTIONAL_AWAITED = ("compare_and_set", "server_stats")
_OPTIONAL_PLAIN = ("eviction_counts", "drop_prefix")


def _adapter_class(kind: type) -> type[AsyncBackend]:
    """An ``AsyncBackend`` class over instances of the sync backend class ``kind``.

    It has the same ``local`` flag and exactly the optional capabilities ``kind``
    has, so the cache takes the same paths (leases, drop_prefix) as over the
    sync one. A ``MemoryBackend`` gets ``AsyncMemoryBackend``.
    """
    known = _ADAPTERS.get(kind)
    if known is not None:
        return known
    if kind is ck.MemoryBackend:
        cls: type[AsyncBackend] = AsyncMemoryBackend
    elif issubclass(kind, ck.MemoryBackend):
        cls = type(f"Async{kind.__name__}", (AsyncMemoryBackend,), {"local": kind.local})
    else:
        ns: dict[str, Any] = {"local": kind.local, "__init__": _adapter_init}
        for name in _CORE + _OPTIONAL_AWAITED:
            if name in _CORE or hasattr(kind, name):
                ns[name] = _awaited(name)
        for name in _OPTIONAL_PLAIN:
            if hasattr(kind, name):
                ns[name] = _plain(name)
        ns["aclose"] = _aclose
        cls = type(f"Async{kind.__name__}", (AsyncBackend,), ns)
    _ADAPTERS[kind] = cls
    return cls


def _adapter_init(self: Any, backend: Any) -> None:
    self.backend = backend  # the store: caches over it share its namespace, as sync ones do
    self.max_value_size = backend.max_value_size
    self.server_address = backend.server_address


def _awaited(name: str) -> Callable[..., Any]:
    async def method(self: Any, *args: Any) -> Any:
        return getattr(self.backend, name)(*args)

    method.__name__ = name
    return method


def _plain(name: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any) -> Any:
        return getattr(self.backend, name)(*args)

    method.__name__ = name
    return method


async def _aclose(self: Any) -> None:
    self.backend.close()


# ---------------------------------------------------------------- the fixture


#: The two kinds of cache every twinned test runs against.
TWIN_KINDS = ("sync", "async")


def open_twin(kind: str) -> Iterator[Twin]:
    """The driver of ``kind``, closed afterwards: ``yield from`` it in a module's ``drv`` fixture.

    Each module declares its own fixture (an imported fixture would have to be
    re-exported under lint's nose, and ``pytest_plugins`` would import this
    module too late for assertion rewriting)::

        @pytest.fixture(params=TWIN_KINDS)
        def drv(request: pytest.FixtureRequest) -> Iterator[Twin]:
            yield from open_twin(request.param)
    """
    twin: Twin = SyncTwin() if kind == "sync" else AsyncTwin()
    try:
        yield twin
    finally:
        twin.close()
