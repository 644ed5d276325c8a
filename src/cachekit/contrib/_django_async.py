"""The ``a*`` half of ``CachekitCache``: each method awaits the event loop's ``AsyncCache``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from django.core.cache.backends.base import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
    DEFAULT_TIMEOUT,
)

from ..backends.base import MISSING
from ..errors import CacheError, SerializationError, ValueTooLargeError
from ._django_entries import (
    _FAILURES,
    CAS_ATTEMPTS,
    UnserializableValueError,
    _backoff,
    _Codec,
    _found,
    _incr_step,
    _remaining,
    _Step,
    _store_ttl,
    _touch_step,
    _unwrap,
    _wrap,
)
from ._django_shared import _Shared


class _AsyncMethods:
    """Django's ``a*`` cache methods over ``AsyncCache``, mixed into ``CachekitCache``."""

    _shared: _Shared
    version: int

    if TYPE_CHECKING:  # provided by CachekitCache and Django's BaseCache

        def make_and_validate_key(self, key: Any, version: int | None = None) -> str: ...
        def _ttl(self, timeout: Any) -> float | None: ...
        def _fall_open(self) -> None: ...
        def _now(self) -> float: ...

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the cached value for ``key``, or ``default``."""
        made = self.make_and_validate_key(key, version=version)
        try:
            value = _unwrap(await self._shared.acache().get(made, MISSING), self._now)
        except _FAILURES:
            self._fall_open()
            return default
        return default if value is MISSING else value

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        """Whether ``key`` is cached and live."""
        return await self.aget(key, MISSING, version=version) is not MISSING

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        """Store ``value``; a value over the backend's size limit drops the old entry instead."""
        made = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        try:
            await self._shared.acache().set(made, _wrap(value, ttl, self._now), _store_ttl(ttl))
        except ValueTooLargeError:
            await self._adrop(made)
        except SerializationError as exc:
            raise UnserializableValueError(str(exc)) from exc
        except _FAILURES:
            self._fall_open()

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Store ``value`` only if ``key`` is not cached; return whether it was stored."""
        made = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        try:
            return await self._shared.acache().add(
                made, _wrap(value, ttl, self._now), _store_ttl(ttl)
            )
        except ValueTooLargeError:
            return False
        except SerializationError as exc:
            raise UnserializableValueError(str(exc)) from exc
        except _FAILURES:
            self._fall_open()
            return False

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return ``{key: value}`` for the cached keys (one round trip)."""
        made = {self.make_and_validate_key(k, version=version): k for k in keys}
        if not made:
            return {}
        try:
            found = await self._shared.acache().get_many(made)
        except _FAILURES:
            self._fall_open()
            return {}
        return _found(made, found, self._now)

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Store every item (one round trip); return the keys that could not be stored."""
        made = {self.make_and_validate_key(k, version=version): k for k in data}
        if not made:
            return []
        ttl = self._ttl(timeout)
        entries = {m: _wrap(data[k], ttl, self._now) for m, k in made.items()}
        acache = self._shared.acache()
        try:
            await acache.set_many(entries, _store_ttl(ttl))
        except ValueTooLargeError:
            failed = []
            for m, k in made.items():
                try:
                    await acache.set(m, entries[m], _store_ttl(ttl))
                except ValueTooLargeError:
                    await self._adrop(m)
                    failed.append(k)
            return failed
        except SerializationError as exc:
            raise UnserializableValueError(str(exc)) from exc
        except _FAILURES:
            self._fall_open()
            return list(data)
        return []

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        """Remove ``key``; return whether it was cached."""
        made = self.make_and_validate_key(key, version=version)
        try:
            return await self._shared.acache().delete(made)
        except _FAILURES:
            self._fall_open()
            return False

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Remove ``keys`` (one round trip)."""
        made = [self.make_and_validate_key(k, version=version) for k in keys]
        if not made:
            return
        try:
            await self._shared.acache().delete_many(made)
        except _FAILURES:
            self._fall_open()

    async def aclear(self) -> None:
        """Drop every entry of this cache's namespace (all KEY_PREFIXes and versions)."""
        try:
            await self._shared.acache().clear()
        except _FAILURES:
            self._fall_open()

    async def atouch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Give ``key`` a new expiry; return whether it was cached (a read + compare-and-set)."""
        made = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        try:
            if ttl == 0.0:
                return await self._shared.acache().delete(made)
            return bool(
                await self._arewrite(made, lambda entry: _touch_step(entry, ttl, self._now))
            )
        except _FAILURES:
            self._fall_open()
            return False

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Add ``delta`` to the cached number, keeping its expiry; ``ValueError`` if absent."""
        made = self.make_and_validate_key(key, version=version)
        return await self._arewrite(made, lambda entry: _incr_step(entry, key, delta, self._now))

    async def aincr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move ``key`` to version ``version + delta``, keeping its expiry; return the new one."""
        if version is None:
            version = self.version
        old = self.make_and_validate_key(key, version=version)
        new = self.make_and_validate_key(key, version=version + delta)
        acache = self._shared.acache()
        entry = await acache.get(old, MISSING)
        if _unwrap(entry, self._now) is MISSING:
            raise ValueError(f"Key '{key}' not found")
        await acache.set(new, entry, _store_ttl(_remaining(entry, self._now)))
        await acache.delete(old)
        return version + delta

    async def _adrop(self, made: str) -> None:
        try:
            await self._shared.acache().delete(made)
        except _FAILURES:
            self._fall_open()

    async def _arewrite(self, made: str, step: Callable[[Any], _Step]) -> Any:
        """``_rewrite``, awaited."""
        acache = self._shared.acache()
        full = await acache.full_key(made)
        backend: Any = acache.backend
        codec = _Codec(acache.serializer)
        for attempt in range(CAS_ATTEMPTS):
            raw = await backend.get(full)
            decision = step(codec.decode(full, raw))
            if decision.entry is None:
                return decision.result
            data = codec.encode(full, decision.entry)
            if await backend.compare_and_set(full, raw, data, _store_ttl(decision.ttl)):
                return decision.result
            await asyncio.sleep(_backoff(attempt))
        raise CacheError(f"gave up after {CAS_ATTEMPTS} conflicting writes to {made!r}")
