"""Loads: single-flight, leases, and storing a loaded value only if no write overtook it.

One loader runs per key at a time in a process (others wait for its result,
never longer than ``lease_ttl``); across processes a lease on the key lets a
concurrent write void a stale load (and, with ``lease_wait``, lets a miss wait
for another process's load). A loader that asks for its own key is refused.

The async source of truth: ``_sync/loads.py`` is generated from this file.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from ..backends.base import MISSING
from ..core.cells import Flight
from ..core.fresh import Fresh, due
from ..errors import (
    CacheError,
    ConfigurationError,
    InvalidKeyError,
    ReentrantLoadError,
    SerializationError,
    ValueTooLargeError,
)
from ..keys import encode_key
from ..policies import TTLLike
from .leases import AsyncLeases
from .primitives import AsyncEvent, current_owner
from .reads import checked

__all__ = ["AsyncLoads", "LoadTTL"]

T = TypeVar("T")

#: A TTL, or a function of the loaded value that returns one (e.g. short for ``None``).
LoadTTL = TTLLike | Callable[[Any], TTLLike]
#: A predicate on a loaded value: store it only when true (the caller gets it either way).
CacheIf = Callable[[Any], bool] | None


class AsyncLoads(AsyncLeases):
    """The load steps of a cache."""

    async def _join(self, full: str, fresh: bool = False) -> tuple[Flight, bool]:
        """Return the flight for ``full`` and whether this caller leads it.

        With ``fresh`` (``refresh``) a load in progress is voided and replaced.
        """
        async with self._flights_lock:
            flight = self._flights.get(full)
            if (
                flight is not None
                and not flight.invalidated
                and not fresh
                and flight.owner == current_owner()
            ):
                raise ReentrantLoadError(
                    f"the loader of {full!r} asked for its own key: it would wait on itself"
                )
            # A load that a write has voided may return a value older than that write:
            # a caller arriving now must not wait for it, but start a fresh load.
            if flight is not None and not flight.invalidated:
                if not fresh:
                    if flight.event is None:
                        flight.event = AsyncEvent()
                    return flight, False
                flight.invalidated = True
            flight = self._flights[full] = Flight(current_owner())
            return flight, True

    async def _land(self, full: str, flight: Flight) -> None:
        async with self._flights_lock:
            if self._flights.get(full) is flight:  # a fresh load may have replaced ours
                del self._flights[full]
            event = flight.event  # no waiter can join once the flight is gone
        if event is not None:
            event.set()

    async def _wait(
        self, flight: Flight, loader: Callable[[], Awaitable[Any]] | None = None
    ) -> Any:
        """Wait for another caller's load; after ``lease_ttl`` s, load without it."""
        self._c_coalesced.incr()
        assert flight.event is not None  # set by _join for every waiter
        if not await flight.event.wait(self.lease_ttl):
            # Never wait forever (a hung loader, or two loads waiting on each other):
            # load ourselves, and store nothing, as the other load may.
            self._logs.warn(
                "wait",
                "load",
                None,
                "cachekit: waited %.1f s for another load in namespace %r; loading without it",
                self.lease_ttl,
                self.namespace,
            )
            if loader is None:
                return MISSING
            return await self._run_loader(loader)
        if flight.error is not None:
            if isinstance(flight.error, Exception):
                raise flight.error  # the loader's own failure reaches every waiter
            # The leader was cancelled or interrupted (its error is not the loader's):
            # load for ourselves rather than inherit its cancellation.
            if loader is None:
                return MISSING
            return await self._run_loader(loader)
        return flight.value

    async def _run_loader(self, loader: Callable[[], Awaitable[T]]) -> T:
        """Call ``loader``, counting the load (or its failure) and its duration."""
        started = time.perf_counter()
        try:
            value = await loader()
        except BaseException:
            self._c_load_failures.incr()
            raise
        self._c_loads.incr()
        self.load_duration.observe(time.perf_counter() - started)
        return value

    async def _load(
        self,
        full: str,
        loader: Callable[[], Awaitable[T]],
        ttl: LoadTTL,
        fresh: bool = False,
        cache_if: CacheIf = None,
    ) -> T:
        """Run ``loader`` once per key at a time; others wait for its result.

        The result is stored only if no write to the key happened meanwhile: over
        a lease (remote), or checked and stored under the flights lock (in process).
        With ``fresh`` (``refresh``) a load in progress is superseded and the value
        is stored over whatever the key held when the refresh started.
        """
        flight, leader = await self._join(full, fresh)
        if not leader:
            return await self._wait(flight, loader)  # type: ignore[no-any-return]
        try:
            # While the backend is failing, don't pay a second timeout for a lease or
            # a store: the value goes to the caller, the cache is skipped.
            failing = bool(self.breaker.failures)
            leased = self._leases and not failing
            lease: bytes | None = None
            if leased and fresh:
                lease = await self._take_over(full)
            elif leased:
                lease, busy, found = await self._take_lease(full)
                if found is not MISSING:
                    # another caller's load landed after our lookup missed: use it
                    self._c_coalesced.incr()
                    flight.value = found
                    return found  # type: ignore[no-any-return]
                if busy and self.lease_wait:
                    # another process is loading this key: wait for its value, not the source
                    found = await self._await_lease(full)
                    if found is not MISSING:
                        self._c_coalesced.incr()
                        flight.value = found
                        return found  # type: ignore[no-any-return]
                    lease, busy, found = await self._take_lease(full)
                    if found is not MISSING:
                        self._c_coalesced.incr()
                        flight.value = found
                        return found  # type: ignore[no-any-return]
            started = self._timer()
            try:
                value = await self._run_loader(loader)
            except BaseException as exc:
                if lease is not None:
                    await self._release_lease(full, lease)  # waiters elsewhere load at once
                stale = self._stale_value(full) if isinstance(exc, Exception) else MISSING
                if stale is not MISSING:
                    self._logs.warn(
                        "stale",
                        "load",
                        exc,
                        "cachekit: loader for %r failed (%s); serving its last value",
                        full,
                        exc,
                    )
                    flight.value = stale
                    return stale  # type: ignore[no-any-return]
                flight.error = exc
                raise
            flight.value = value
            if not failing and not flight.invalidated and (lease is not None or not leased):
                delta = self._timer() - started  # XFetch's delta, on the cache's clock
                await self._store_loaded(full, value, ttl, lease, flight, cache_if, delta)
            elif lease is not None:
                await self._release_lease(full, lease)
            return value
        finally:
            await self._land(full, flight)

    async def _store_loaded(
        self,
        full: str,
        value: Any,
        ttl: LoadTTL,
        lease: bytes | None,
        flight: Flight,
        cache_if: CacheIf = None,
        delta: float = 0.0,
    ) -> None:
        """Cache a loaded value unless a write voided its load; encode failures are logged.

        Over a lease the backend's compare-and-set decides; without one the check
        and the store happen under the flights lock, which every write takes to void
        a load, so no write can fall between them.
        """
        if cache_if is not None and not cache_if(value):
            if lease is not None:
                await self._release_lease(full, lease)  # the next caller loads at once
            return
        try:
            if callable(ttl):
                ttl = ttl(value)
            data, seconds = self._payload(full, value, ttl, delta)
        except (SerializationError, ValueTooLargeError, ConfigurationError) as exc:
            self._error_counter("encode").incr()
            self._logs.warn(
                "encode", "encode", exc, "cachekit: loaded value for %r not cached: %s", full, exc
            )
            if lease is not None:
                await self._release_lease(full, lease)
            return
        try:
            if lease is not None:
                if await self._store(full, data, seconds, lease) and self._stale is not None:
                    self._stale.keep(full, value)
                return
            async with self._flights_lock:
                if flight.invalidated:
                    return
                stored = await self._store(full, data, seconds)
            if stored and self._stale is not None:
                self._stale.keep(full, value)
        except (ValueTooLargeError, InvalidKeyError) as exc:
            self._error_counter("encode").incr()
            self._logs.warn(
                "encode", "encode", exc, "cachekit: loaded value for %r not cached: %s", full, exc
            )
        except CacheError:
            if not self.fail_open:
                raise

    async def get_many_or_load(
        self,
        keys: Iterable[str],
        loader: Callable[[list[str]], Awaitable[Mapping[str, Any]]],
        ttl: LoadTTL = None,
        *,
        cache_if: CacheIf = None,
    ) -> dict[str, Any]:
        """Return cached values for ``keys``, loading all misses with one ``loader(missing)`` call.

        Keys the loader does not return are neither cached nor in the result.
        Loads are race-guarded like ``get_or_load``.
        """
        keys = list(dict.fromkeys(checked(k) for k in keys))
        found = await self.get_many(keys)
        missing = [k for k in keys if k not in found]
        if not missing:
            return found
        fulls = {k: await self._full(k) for k in missing}
        led: dict[str, Flight] = {}
        waiting: dict[str, Flight] = {}
        try:
            for k in missing:
                flight, leader = await self._join(fulls[k])
                (led if leader else waiting)[k] = flight
            if led:
                failing = bool(self.breaker.failures)
                leased = self._leases and not failing
                leases = {k: (await self._take_lease(fulls[k]))[0] for k in led} if leased else {}
                # (a value another caller stored meanwhile is not reused here: one
                # loader call serves every key of the batch anyway)
                try:
                    loaded = dict(await self._run_loader(lambda: loader(list(led))))
                except BaseException as exc:
                    for flight in led.values():
                        flight.error = exc
                    for k, lease in leases.items():
                        if lease is not None:
                            await self._release_lease(fulls[k], lease)  # others load at once
                    raise
                for k, flight in led.items():
                    lease = leases.get(k)
                    if k not in loaded:
                        flight.value = MISSING
                        if lease is not None:
                            await self._release_lease(fulls[k], lease)
                        continue
                    value = flight.value = loaded[k]
                    found[k] = value
                    if not failing and not flight.invalidated and (lease is not None or not leased):
                        await self._store_loaded(fulls[k], value, ttl, lease, flight, cache_if)
                    elif lease is not None:
                        await self._release_lease(fulls[k], lease)
        finally:
            for k, flight in led.items():
                await self._land(fulls[k], flight)
        for k, flight in waiting.items():
            value = await self._wait(flight)
            if value is not MISSING:
                found[k] = value
        return {k: found[k] for k in keys if k in found}

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        ttl: LoadTTL = None,
        *,
        cache_if: CacheIf = None,
    ) -> T:
        """Return the cached value, or run ``loader`` (once per key at a time) and cache it.

        With ``cache_if``, the loaded value is stored only when ``cache_if(value)``.
        """
        key = checked(key)
        value = await self._lookup(key)
        if value is not MISSING:
            if type(value) is Fresh:
                return await self._serve_fresh(  # type: ignore[no-any-return]
                    await self._full(key), value, loader, ttl, cache_if
                )
            return value  # type: ignore[no-any-return]
        return await self._load(await self._full(key), loader, ttl, cache_if=cache_if)

    # ------------------------------------------------------------ freshness

    async def _serve_fresh(
        self,
        full: str,
        entry: Fresh,
        loader: Callable[[], Awaitable[Any]],
        ttl: LoadTTL,
        cache_if: CacheIf,
    ) -> Any:
        """A hit on an entry with freshness data: its value now, and a reload behind if due."""
        now = self._wall()
        if now >= entry.expires:
            self._c_revalidated.incr()  # past expiry, inside the stale-while-revalidate window
        if (
            due(entry, now)
            and full not in self._reloading
            and entry.expires > self._reloaded.get(full, float("-inf"))
        ):
            await self._start_reload(full, entry, loader, ttl, cache_if)
        return entry.value

    async def _start_reload(
        self,
        full: str,
        entry: Fresh,
        loader: Callable[[], Awaitable[Any]],
        ttl: LoadTTL,
        cache_if: CacheIf,
    ) -> None:
        """Reload ``full`` in the background: one at a time per key (per fleet with leases)."""
        if self._leases and not self.breaker.open_until:
            # across processes: the first to take this short lock reloads, the others serve
            lock = encode_key(full + ":refresh")
            try:
                if not await self.backend.add(lock, b"1", max(1.0, 4 * entry.delta)):
                    return
            except Exception as exc:
                self._backend_error("lease", exc, raise_strict=False)
                return
        self._reloading.add(full)
        self._reloaded[full] = entry.expires

        async def reload() -> None:
            failure: Exception | None = None
            try:
                await self._load(full, loader, ttl, fresh=True, cache_if=cache_if)
            except Exception as exc:
                failure = exc
            finally:
                self._reloading.discard(full)  # before counting: a counted reload is over
                if failure is not None:
                    self._reloaded.pop(full, None)  # a later hit may try again
            if failure is None:
                self._c_refresh_done.incr()
                return
            self._c_refresh_failed.incr()
            self._logs.warn(
                "refresh",
                "load",
                failure,
                "cachekit: background reload of %r failed (%s); the old value serves on",
                full,
                failure,
            )

        if self._background.submit(reload, f"cachekit-reload-{self.namespace}"):
            self._c_refresh_started.incr()
        else:
            self._reloading.discard(full)
            self._c_refresh_skipped.incr()

    async def refresh(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        ttl: LoadTTL = None,
        *,
        cache_if: CacheIf = None,
    ) -> T:
        """Run ``loader`` now and store its result, unless a write to ``key`` overlaps it."""
        full = await self._full(checked(key))
        return await self._load(full, loader, ttl, fresh=True, cache_if=cache_if)
