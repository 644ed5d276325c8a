"""A Django cache backend (``CACHES``) over any cachekit URL: memory, Redis or Memcached.

::

    CACHES = {
        "default": {
            "BACKEND": "cachekit.contrib.django.CachekitCache",
            "LOCATION": "redis://127.0.0.1:6379/0",   # or memory://, memcached://...
            "TIMEOUT": 300,
            "OPTIONS": {"namespace": "django", "serializer": "pickle"},
        }
    }

Django's semantics over cachekit's ``Cache`` / ``AsyncCache``: ``KEY_PREFIX``,
``VERSION``, ``KEY_FUNCTION`` and key warnings as in Django's own backends;
``timeout=None`` keeps an entry forever, ``0`` (or less) expires it at once.
The ``a*`` methods await an ``AsyncCache`` (one per event loop), never a thread.

Each entry is stored as ``(expires_at, value)``, so ``incr``/``decr`` keep the
entry's expiry and ``touch`` can rewrite it; both are a read and a
compare-and-set (retried on a conflicting write), since cachekit has neither
command. Backend outages fall open (``get`` returns the default, writes do
nothing, ``set_many`` returns every key) unless ``OPTIONS["fail_open"]`` is
False; ``incr``/``decr`` always raise, having no value to give.

This module holds the backend and its blocking methods; next to it live the
entry format (``_django_entries``), the ``a*`` methods (``_django_async``) and
the registry of shared caches (``_django_shared``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.core.cache.backends.base import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
    DEFAULT_TIMEOUT,
    BaseCache,
)
from django.core.exceptions import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
    ImproperlyConfigured,
)

from ..backends.base import MISSING
from ..cache import Cache
from ..errors import CacheError, SerializationError, ValueTooLargeError
from ._django_async import _AsyncMethods
from ._django_entries import (
    _FAILURES,
    Entry,
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

# The `name as name` imports are re-exports: they are imported from this module.
from ._django_entries import CAS_ATTEMPTS as CAS_ATTEMPTS
from ._django_entries import CAS_MAX_BACKOFF as CAS_MAX_BACKOFF
from ._django_entries import UnserializableValueError as UnserializableValueError
from ._django_shared import _SHARED, _SHARED_LOCK, _identity, _serializer, _Shared
from ._django_shared import close_shared_caches as close_shared_caches

__all__ = [
    "CAS_ATTEMPTS",
    "CAS_MAX_BACKOFF",
    "CachekitCache",
    "UnserializableValueError",
    "close_shared_caches",
]


# ---------------------------------------------------------------- the backend


class CachekitCache(_AsyncMethods, BaseCache):  # type: ignore[misc,unused-ignore]
    """Django's cache API over cachekit: ``BACKEND = "cachekit.contrib.django.CachekitCache"``."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        options = dict(params.get("OPTIONS") or {})
        for name in ("MAX_ENTRIES", "CULL_FREQUENCY"):
            if name in options:
                raise ImproperlyConfigured(
                    f"CachekitCache does not cull: drop OPTIONS[{name!r}] and bound the size "
                    "with the store itself (memory://?maxsize=N, Redis maxmemory, memcached -m)"
                )
        if not isinstance(location, str):
            raise ImproperlyConfigured("CachekitCache LOCATION must be one cachekit URL string")
        location = location or "memory://"
        namespace = options.pop("namespace", "django")
        serializer, serializer_id = _serializer(
            options.pop("serializer", "pickle"), options.pop("pickle_key", None)
        )
        self._fail_open = bool(options.pop("fail_open", True))
        ident = (
            location,
            namespace,
            serializer_id,
            tuple(sorted((k, _identity(v)) for k, v in options.items())),
        )
        with _SHARED_LOCK:
            shared = _SHARED.get(ident)
            if shared is None:
                shared = _SHARED[ident] = _Shared(location, namespace, serializer, options)
        self._shared = shared
        self._cache = shared.sync

    # ------------------------------------------------------------ helpers

    def _ttl(self, timeout: Any) -> float | None:
        """Seconds to keep an entry for Django's ``timeout`` (``None``: forever, ``0``: none)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        seconds = float(timeout)
        return seconds if seconds > 0 else 0.0

    def _fall_open(self) -> None:
        """Inside ``except _FAILURES``: re-raise unless this cache falls open."""
        if not self._fail_open:
            raise  # the failure being handled

    @property
    def cachekit(self) -> Cache:
        """The cachekit ``Cache`` behind this backend (stats, metrics)."""
        return self._cache

    def _now(self) -> float:
        """The wall clock, read through this module's ``time`` (the tests move it)."""
        return time.time()

    def close(self, **kwargs: Any) -> None:
        """Keep the pooled connections: Django calls this after every request."""

    # ------------------------------------------------------------ sync API

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the cached value for ``key``, or ``default``."""
        made = self.make_and_validate_key(key, version=version)
        try:
            value = _unwrap(self._cache.get(made, MISSING), self._now)
        except _FAILURES:
            self._fall_open()
            return default
        return default if value is MISSING else value

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """Whether ``key`` is cached and live."""
        return self.get(key, MISSING, version=version) is not MISSING

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        """Store ``value``; a value over the backend's size limit drops the old entry instead."""
        made = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        try:
            self._cache.set(made, _wrap(value, ttl, self._now), _store_ttl(ttl))
        except ValueTooLargeError:
            self._drop(made)  # the old value must not outlive a write (Django's memcached too)
        except SerializationError as exc:
            raise UnserializableValueError(str(exc)) from exc
        except _FAILURES:
            self._fall_open()

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Store ``value`` only if ``key`` is not cached; return whether it was stored."""
        made = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        try:
            return self._cache.add(made, _wrap(value, ttl, self._now), _store_ttl(ttl))
        except ValueTooLargeError:
            return False
        except SerializationError as exc:
            raise UnserializableValueError(str(exc)) from exc
        except _FAILURES:
            self._fall_open()
            return False

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return ``{key: value}`` for the cached keys (one round trip)."""
        made = {self.make_and_validate_key(k, version=version): k for k in keys}
        if not made:
            return {}
        try:
            found = self._cache.get_many(made)
        except _FAILURES:
            self._fall_open()
            return {}
        return _found(made, found, self._now)

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Store every item (one round trip); return the keys that could not be stored."""
        made = {self.make_and_validate_key(k, version=version): k for k in data}
        if not made:
            return []
        ttl = self._ttl(timeout)
        entries = {m: _wrap(data[k], ttl, self._now) for m, k in made.items()}
        try:
            self._cache.set_many(entries, _store_ttl(ttl))
        except ValueTooLargeError:
            # find the culprits one by one (rare): the others are stored
            return [k for m, k in made.items() if not self._set_one(m, entries[m], ttl)]
        except SerializationError as exc:
            raise UnserializableValueError(str(exc)) from exc
        except _FAILURES:
            self._fall_open()
            return list(data)
        return []

    def _set_one(self, made: str, entry: Entry, ttl: float | None) -> bool:
        try:
            self._cache.set(made, entry, _store_ttl(ttl))
        except ValueTooLargeError:
            self._drop(made)
            return False
        return True

    def _drop(self, made: str) -> None:
        try:
            self._cache.delete(made)
        except _FAILURES:
            self._fall_open()

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Remove ``key``; return whether it was cached."""
        made = self.make_and_validate_key(key, version=version)
        try:
            return self._cache.delete(made)
        except _FAILURES:
            self._fall_open()
            return False

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Remove ``keys`` (one round trip)."""
        made = [self.make_and_validate_key(k, version=version) for k in keys]
        if not made:
            return
        try:
            self._cache.delete_many(made)
        except _FAILURES:
            self._fall_open()

    def clear(self) -> None:
        """Drop every entry of this cache's namespace (all KEY_PREFIXes and versions)."""
        try:
            self._cache.clear()
        except _FAILURES:
            self._fall_open()

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give ``key`` a new expiry; return whether it was cached (a read + compare-and-set)."""
        made = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        try:
            if ttl == 0.0:
                return self._cache.delete(made)
            return bool(self._rewrite(made, lambda entry: _touch_step(entry, ttl, self._now)))
        except _FAILURES:
            self._fall_open()
            return False

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Add ``delta`` to the cached number, keeping its expiry; ``ValueError`` if absent."""
        made = self.make_and_validate_key(key, version=version)
        return self._rewrite(made, lambda entry: _incr_step(entry, key, delta, self._now))

    def incr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move ``key`` to version ``version + delta``, keeping its expiry; return the new one."""
        if version is None:
            version = self.version
        old = self.make_and_validate_key(key, version=version)
        new = self.make_and_validate_key(key, version=version + delta)
        entry = self._cache.get(old, MISSING)
        if _unwrap(entry, self._now) is MISSING:
            raise ValueError(f"Key '{key}' not found")
        self._cache.set(new, entry, _store_ttl(_remaining(entry, self._now)))
        self._cache.delete(old)
        return version + delta

    def _rewrite(self, made: str, step: Callable[[Any], _Step]) -> Any:
        """Read the raw entry, decide with ``step``, write it back only if unchanged."""
        full = self._cache.full_key(made)
        backend: Any = self._cache.backend
        codec = _Codec(self._cache.serializer)
        for attempt in range(CAS_ATTEMPTS):
            raw = backend.get(full)
            decision = step(codec.decode(full, raw))
            if decision.entry is None:
                return decision.result
            data = codec.encode(full, decision.entry)
            if backend.compare_and_set(full, raw, data, _store_ttl(decision.ttl)):
                return decision.result
            time.sleep(_backoff(attempt))
        raise CacheError(f"gave up after {CAS_ATTEMPTS} conflicting writes to {made!r}")
