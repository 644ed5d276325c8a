"""Writes: encoding, stores, invalidations, ``clear``, and ``write`` (the source, then the cache).

A write voids any load of its key in progress (its result may be older than
the write); a store the backend refused drops the older value; a write that
could not reach the backend is remembered as an invalidation to replay.

The async source of truth: ``_sync/writes.py`` is generated from this file.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from ..core.cells import KeyWrites, Write
from ..core.fresh import Fresh, grace, to_stored
from ..core.leases import LEASE_MARK
from ..errors import (
    BackendRejectedError,
    InvalidKeyError,
    SerializationError,
    ValueTooLargeError,
)
from ..policies import TTL, TTLLike, ttl_seconds
from .primitives import AsyncLock
from .reads import AsyncReads, checked

__all__ = ["AsyncWrites"]

T = TypeVar("T")


class AsyncWrites(AsyncReads):
    """The write steps of a cache."""

    def _encode(self, value: Any, full: str, key: str | None = None) -> Any:
        """Serialize ``value`` for storage under the backend key ``full``."""
        if self._dumps is None:
            if isinstance(value, bytes) and value.startswith(LEASE_MARK):
                raise SerializationError("a raw value may not start with cachekit's lease marker")
            return value
        data = self._dumps(full, value)
        limit = self._max_value
        if limit is not None and len(data) > limit:
            raise ValueTooLargeError(len(data), limit, key)
        return data

    def _ttl_seconds(self, ttl: TTLLike) -> float | None:
        return ttl_seconds(ttl, self.policy.ttl)

    def _payload(
        self, full: str, value: Any, ttl: TTLLike, delta: float = 0.0, key: str | None = None
    ) -> tuple[Any, float | None]:
        """The encoded value and backend TTL for a store of ``value`` with ``ttl``.

        A TTL with early refresh or stale-while-revalidate wraps the value in a
        ``Fresh`` envelope (its logical expiry, the load's duration ``delta``) and
        keeps it in the backend ``stale_while_revalidate`` seconds longer.
        """
        t = ttl if isinstance(ttl, TTL) else self.policy.ttl if ttl is None else None
        if t is None or not t.refreshes:
            return self._encode(value, full, key), self._ttl_seconds(ttl)
        seconds = t.sample()
        assert seconds is not None  # a refreshing TTL always has seconds
        entry = Fresh(
            value, self._wall() + seconds, delta, t.early_refresh, t.stale_while_revalidate
        )
        if self._dumps is None and not self._remote:
            # in process: the envelope itself is stored, and hits take the careful path
            self._careful = self._slow = True
            data: Any = entry
        else:
            data = self._encode(to_stored(entry), full, key)
        return data, seconds + t.stale_while_revalidate + grace(entry)

    async def _mark_flight(self, full: str) -> None:
        """Void a load of ``full`` in progress: its result may be older than this write."""
        if self._flights:
            # under the lock: a load stores (in process) only while holding it, so it
            # either sees this mark or finishes its store before this write's
            async with self._flights_lock:
                flight = self._flights.get(full)
                if flight is not None:
                    flight.invalidated = True

    async def _store(
        self, full: str, data: Any, ttl: float | None, lease: bytes | None = None
    ) -> bool:
        """Write ``data``; with ``lease``, only over that lease (compare-and-set)."""
        if self.breaker.open_until and self._skip("set"):
            self._remember_invalidation((full,))
            return False
        async with self._ordered((full,)) as go:
            if not go:
                return False
            try:
                if lease is None:
                    await self.backend.set(full, data, ttl)
                elif not await self.backend.compare_and_set(full, lease, data, ttl):  # type: ignore[attr-defined]
                    await self._answered()  # the server answered (and may be the probe)
                    return False  # a write voided our lease meanwhile: it holds the newer value
            except (ValueTooLargeError, InvalidKeyError):
                raise
            except BackendRejectedError as exc:
                # the server refused this value and kept whatever it had: drop that too,
                # the source has moved on
                self._backend_error("set", exc)
                await self._drop_quietly(full)
                return False
            except Exception as exc:
                # the server may still hold an older value: make sure it is dropped later
                self._remember_invalidation((full,))
                self._backend_error("set", exc)
                return False
            self._delivered((full,))
        self._c_sets.incr()
        if self.breaker.failures or self._pending:
            await self._backend_ok()
        return True

    async def _drop_quietly(self, full: str) -> None:
        """Delete ``full`` after a refused write; remember it if even that fails."""
        try:
            await self.backend.delete(full)
        except BackendRejectedError as exc:
            self._backend_error("delete", exc, raise_strict=False)
        except Exception as exc:
            self._remember_invalidation((full,))
            self._backend_error("delete", exc, raise_strict=False)

    async def set(self, key: str, value: Any, ttl: TTLLike = None) -> None:
        """Store ``value`` under ``key``; ``ttl`` ``None`` uses the policy's TTL.

        Raises ``SerializationError`` / ``ValueTooLargeError`` before touching
        the backend, so the previous entry stays as it was.
        """
        full = await self._full(checked(key))
        data, seconds = self._payload(full, value, ttl, key=key)
        await self._mark_flight(full)
        if self._stale is not None:
            self._stale.keep(full, value)  # the newest value, whether or not the backend took it
        await self._store(full, data, seconds)

    async def add(self, key: str, value: Any, ttl: TTLLike = None) -> bool:
        """Store ``value`` only if ``key`` is not cached; return whether it was stored."""
        full = await self._full(checked(key))
        data = self._encode(value, full, key)
        if self.breaker.open_until and self._skip("add"):
            return False
        seconds = self._ttl_seconds(ttl)
        if full in self._pending:
            # the server may still hold a value this process invalidated: it must
            # not make the add fail, so deliver that invalidation first
            await self._replay_pending()
            if full in self._pending:
                return False
        async with self._ordered((full,)) as go:
            if not go:
                return False
            try:
                added = await self.backend.add(full, data, seconds)
            except ValueTooLargeError:
                raise
            except Exception as exc:
                self._backend_error("add", exc)
                return False
        if self.breaker.failures or self._pending:
            await self._backend_ok()
        return bool(added)

    async def set_many(self, mapping: Mapping[str, Any], ttl: TTLLike = None) -> None:
        """Store every item of ``mapping`` (one round trip on remote backends)."""
        encoded = {}
        seconds = self._ttl_seconds(ttl)
        for k, v in mapping.items():
            full = await self._full(checked(k))
            encoded[full], seconds = self._payload(full, v, ttl, key=k)
        if not encoded:
            return
        for full in encoded:
            await self._mark_flight(full)
        if self.breaker.open_until and self._skip("set_many"):
            self._remember_invalidation(encoded)
            return
        async with self._ordered(encoded) as go:
            if not go:
                return
            try:
                await self.backend.set_many(encoded, seconds)
            except ValueTooLargeError:
                raise
            except BackendRejectedError as exc:
                self._backend_error("set_many", exc)
                for full in encoded:
                    await self._drop_quietly(full)
                return
            except Exception as exc:
                self._remember_invalidation(encoded)
                self._backend_error("set_many", exc)
                return
            self._delivered(encoded)
        for _ in encoded:
            self._c_sets.incr()
        if self.breaker.failures or self._pending:
            await self._backend_ok()

    async def _invalidate(self, fulls: list[str]) -> int:
        if self._stale is not None:
            self._stale.forget(fulls)
        for full in fulls:
            await self._mark_flight(full)
        if self.breaker.open_until and self._skip("delete"):
            self._remember_invalidation(fulls)
            return 0
        try:
            removed = (
                int(await self.backend.delete(fulls[0]))
                if len(fulls) == 1
                else await self.backend.delete_many(fulls)
            )
        except Exception as exc:
            self._remember_invalidation(fulls)
            self._backend_error("delete", exc)
            return 0
        self._delivered(fulls)
        if self.breaker.failures or self._pending:
            await self._backend_ok()
        for _ in range(removed):
            self._c_invalidated.incr()
        self._c_deletes.incr()
        return removed

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was cached (False also when the backend is down)."""
        return await self._invalidate([await self._full(checked(key))]) > 0

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; return how many were cached (where the backend can tell)."""
        fulls = [await self._full(checked(k)) for k in keys]
        return await self._invalidate(fulls) if fulls else 0

    async def clear(self) -> None:
        """Drop every entry of this namespace (O(1): the namespace version changes)."""
        if self._stale is not None:
            self._stale.clear()
        try:
            await self._bump_namespace()
        except Exception as exc:
            # keep our own view consistent; other processes learn it once the backend is back
            self._ns.adopt("local-" + self._new_version())
            with self._pending_lock:
                self._pending_overflow = True
                self._slow = True
                self._start_replayer()
            self._backend_error("clear", exc)

    async def write(
        self,
        key: str,
        writer: Callable[[], Awaitable[T]],
        ttl: TTLLike = None,
        *,
        cache_if: Callable[[Any], bool] | None = None,
    ) -> T:
        """Run ``writer`` (a write to the source); then store its result or invalidate ``key``.

        Write-through stores the result (only when ``cache_if(result)``, if given;
        otherwise it invalidates), cache-aside invalidates. If ``writer``
        raises, the cache is not touched. When two writes to the same key overlap
        in this process, their order at the source is unknown, so the key is
        invalidated instead of storing a value that may be the older one.
        """
        full = await self._full(checked(key))
        mine = Write()
        async with self._flights_lock:
            entry = self._writes.get(full)
            if entry is None:
                entry = self._writes[full] = KeyWrites(AsyncLock())
            if entry.active:
                mine.conflict = True
                for other in entry.active:
                    other.conflict = True
            entry.active.append(mine)
        try:
            result = await writer()
            async with entry.step:
                stores = cache_if is None or cache_if(result)
                if self.policy.stores_on_write and stores and not mine.conflict:
                    try:
                        await self.set(key, result, ttl)
                    except (SerializationError, ValueTooLargeError) as exc:
                        # the source already changed: never leave the old value behind
                        self._error_counter("encode").incr()
                        self._logs.warn(
                            "encode",
                            "encode",
                            exc,
                            "cachekit: written value for %r not cached: %s",
                            key,
                            exc,
                        )
                        await self.delete(key)
                    if mine.conflict:  # a write overlapped ours while we stored: undo
                        await self.delete(key)
                else:
                    await self.delete(key)
            return result
        finally:
            async with self._flights_lock:
                entry.active.remove(mine)
                if not entry.active:
                    del self._writes[full]
