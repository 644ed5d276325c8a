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
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import pickle
import random
import threading
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

from .._async.cache import CACHE_OPTIONS
from ..aio import AsyncCache
from ..backends.aio._loops import PerLoop
from ..backends.aio.memory import AsyncMemoryBackend
from ..backends.base import MISSING
from ..backends.memory import MemoryBackend
from ..cache import Cache
from ..errors import (
    BackendRejectedError,
    BackendUnavailableError,
    CacheError,
    SerializationError,
    ValueTooLargeError,
)
from ..serializers import JsonSerializer, KeyBoundSerializer, PickleSerializer, Serializer

__all__ = [
    "CAS_ATTEMPTS",
    "CAS_MAX_BACKOFF",
    "CachekitCache",
    "UnserializableValueError",
    "close_shared_caches",
]

#: Compare-and-set rounds ``incr``/``touch`` try before giving up under contention.
CAS_ATTEMPTS = 100
#: Longest pause, in seconds, between two compare-and-set rounds (random, growing).
CAS_MAX_BACKOFF = 0.02

#: Errors of an unreachable or refusing backend: fallen open unless ``fail_open`` is False.
_FAILURES = (BackendUnavailableError, BackendRejectedError)


class UnserializableValueError(SerializationError, pickle.PicklingError):
    """A value the serializer cannot encode: also a ``pickle.PicklingError``, as Django expects."""


# ---------------------------------------------------------------- entries (no I/O)

Entry = tuple[float | None, Any]


def _wrap(value: Any, ttl: float | None) -> Entry:
    """The stored form of ``value``: its absolute expiry (``None``: never) and the value."""
    return (None if ttl is None else time.time() + ttl, value)


def _unwrap(entry: Any) -> Any:
    """The live value inside a stored entry, or ``MISSING`` (absent, expired or foreign)."""
    if type(entry) in (tuple, list) and len(entry) == 2:
        expires_at, value = entry
        if expires_at is None or time.time() < expires_at:
            return value
    return MISSING


def _remaining(entry: Entry) -> float | None:
    """Seconds ``entry`` has left (``None``: no expiry), never below a millisecond."""
    return None if entry[0] is None else max(entry[0] - time.time(), 0.001)


def _backoff(attempt: int) -> float:
    """A random pause after a lost compare-and-set, so no caller keeps losing to the others."""
    return random.random() * min(CAS_MAX_BACKOFF, 0.0005 * 2.0**attempt)


def _store_ttl(ttl: float | None) -> float:
    """The cachekit TTL for a Django one: ``inf`` keeps the entry forever."""
    return math.inf if ttl is None else ttl


# ---------------------------------------------------------------- shared caches


class _Shared:
    """The cachekit caches behind every ``CachekitCache`` with the same LOCATION and OPTIONS.

    Django builds a backend object per thread (and per async context); they all
    share one connection pool, one namespace version and one async cache per
    event loop through this object.
    """

    def __init__(
        self, location: str, namespace: str, serializer: Serializer, options: dict[str, Any]
    ) -> None:
        # the option objects stay alive with this entry: the registry names them by id()
        self.options = dict(options)
        cache_opts = {k: options.pop(k) for k in CACHE_OPTIONS if k in options}
        common: dict[str, Any] = {
            "namespace": namespace,
            "serializer": serializer,
            "fail_open": False,  # the Django layer decides, so set_many can name failed keys
        }
        self.sync = Cache.from_url(location, **common, **options, **cache_opts)
        store = self.sync.backend
        if isinstance(store, MemoryBackend):
            # the same in-process store (and namespace version) for both kinds of call
            template = AsyncCache(AsyncMemoryBackend(store), **common, **cache_opts)
        else:
            template = AsyncCache.from_url(location, **common, **options, **cache_opts)
        self._template = template
        # asyncio locks belong to one loop: one AsyncCache per loop over one shared backend
        self._per_loop: PerLoop[AsyncCache] = PerLoop(
            "CachekitCache", lambda: template.child(namespace), _keep_backend_open
        )

    def acache(self) -> AsyncCache:
        """The running event loop's ``AsyncCache``."""
        return self._per_loop.get()

    def close(self) -> None:
        """Close the sync cache's connections (the async ones close with their loops)."""
        self.sync.close()


async def _keep_backend_open(acache: AsyncCache) -> None:
    """A loop's AsyncCache needs no disposal: its backend is shared by every loop."""


_SHARED: dict[tuple[Any, ...], _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _identity(value: Any) -> Any:
    """A hashable stand-in for an option value (objects by identity: they stay alive)."""
    if value is None or isinstance(value, (str, bytes, int, float, bool)):
        return value
    return ("object", id(value))


def close_shared_caches() -> None:
    """Close every cache connection the Django backends of this process opened (tests, shutdown)."""
    with _SHARED_LOCK:
        shared = list(_SHARED.values())
        _SHARED.clear()
    for item in shared:
        item.close()


# ---------------------------------------------------------------- the backend


class CachekitCache(BaseCache):  # type: ignore[misc,unused-ignore]
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

    def close(self, **kwargs: Any) -> None:
        """Keep the pooled connections: Django calls this after every request."""

    # ------------------------------------------------------------ sync API

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the cached value for ``key``, or ``default``."""
        made = self.make_and_validate_key(key, version=version)
        try:
            value = _unwrap(self._cache.get(made, MISSING))
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
            self._cache.set(made, _wrap(value, ttl), _store_ttl(ttl))
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
            return self._cache.add(made, _wrap(value, ttl), _store_ttl(ttl))
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
        return _found(made, found)

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Store every item (one round trip); return the keys that could not be stored."""
        made = {self.make_and_validate_key(k, version=version): k for k in data}
        if not made:
            return []
        ttl = self._ttl(timeout)
        entries = {m: _wrap(data[k], ttl) for m, k in made.items()}
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
            return bool(self._rewrite(made, lambda entry: _touch_step(entry, ttl)))
        except _FAILURES:
            self._fall_open()
            return False

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Add ``delta`` to the cached number, keeping its expiry; ``ValueError`` if absent."""
        made = self.make_and_validate_key(key, version=version)
        return self._rewrite(made, lambda entry: _incr_step(entry, key, delta))

    def incr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move ``key`` to version ``version + delta``, keeping its expiry; return the new one."""
        if version is None:
            version = self.version
        old = self.make_and_validate_key(key, version=version)
        new = self.make_and_validate_key(key, version=version + delta)
        entry = self._cache.get(old, MISSING)
        if _unwrap(entry) is MISSING:
            raise ValueError(f"Key '{key}' not found")
        self._cache.set(new, entry, _store_ttl(_remaining(entry)))
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

    # ------------------------------------------------------------ async API

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the cached value for ``key``, or ``default``."""
        made = self.make_and_validate_key(key, version=version)
        try:
            value = _unwrap(await self._shared.acache().get(made, MISSING))
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
            await self._shared.acache().set(made, _wrap(value, ttl), _store_ttl(ttl))
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
            return await self._shared.acache().add(made, _wrap(value, ttl), _store_ttl(ttl))
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
        return _found(made, found)

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Store every item (one round trip); return the keys that could not be stored."""
        made = {self.make_and_validate_key(k, version=version): k for k in data}
        if not made:
            return []
        ttl = self._ttl(timeout)
        entries = {m: _wrap(data[k], ttl) for m, k in made.items()}
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
            return bool(await self._arewrite(made, lambda entry: _touch_step(entry, ttl)))
        except _FAILURES:
            self._fall_open()
            return False

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Add ``delta`` to the cached number, keeping its expiry; ``ValueError`` if absent."""
        made = self.make_and_validate_key(key, version=version)
        return await self._arewrite(made, lambda entry: _incr_step(entry, key, delta))

    async def aincr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move ``key`` to version ``version + delta``, keeping its expiry; return the new one."""
        if version is None:
            version = self.version
        old = self.make_and_validate_key(key, version=version)
        new = self.make_and_validate_key(key, version=version + delta)
        acache = self._shared.acache()
        entry = await acache.get(old, MISSING)
        if _unwrap(entry) is MISSING:
            raise ValueError(f"Key '{key}' not found")
        await acache.set(new, entry, _store_ttl(_remaining(entry)))
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


# ---------------------------------------------------------------- read-modify-write steps


class _Step:
    """What a read-modify-write decided: the entry to write (``None``: none) and the answer."""

    __slots__ = ("entry", "result", "ttl")

    def __init__(self, result: Any, entry: Entry | None = None, ttl: float | None = None) -> None:
        self.result = result
        self.entry = entry
        self.ttl = ttl


def _incr_step(entry: Any, key: Any, delta: int) -> _Step:
    value = _unwrap(entry)
    if value is MISSING:
        raise ValueError(f"Key '{key}' not found")
    new = value + delta  # a TypeError for a non-number, as in Django's own backends
    return _Step(new, (entry[0], new), _remaining(entry))


def _touch_step(entry: Any, ttl: float | None) -> _Step:
    value = _unwrap(entry)
    if value is MISSING:
        return _Step(False)
    return _Step(True, _wrap(value, ttl), ttl)


def _found(made: dict[str, Any], found: Mapping[str, Any]) -> dict[Any, Any]:
    """Django's ``get_many`` answer: the caller's keys, live values only."""
    out = {}
    for m, entry in found.items():
        value = _unwrap(entry)
        if value is not MISSING:
            out[made[m]] = value
    return out


class _Codec:
    """The cache's serializer applied to raw backend entries (key-bound when it is)."""

    def __init__(self, serializer: Serializer | None) -> None:
        if serializer is None:
            raise ImproperlyConfigured("CachekitCache needs a serializer")
        self._serializer = serializer

    def decode(self, full: str, raw: Any) -> Any:
        """The stored entry, or ``MISSING`` when absent or undecodable."""
        if raw is MISSING:
            return MISSING
        try:
            if isinstance(self._serializer, KeyBoundSerializer):
                return self._serializer.loads_for(full, raw)
            return self._serializer.loads(raw)
        except Exception:  # a lease placeholder, a foreign or corrupt entry: not a value
            return MISSING

    def encode(self, full: str, entry: Entry) -> Any:
        """The bytes to store for ``entry`` under ``full``."""
        try:
            if isinstance(self._serializer, KeyBoundSerializer):
                return self._serializer.dumps_for(full, entry)
            return self._serializer.dumps(entry)
        except SerializationError as exc:
            raise UnserializableValueError(str(exc)) from exc


def _serializer(name: Any, pickle_key: Any) -> tuple[Serializer, Any]:
    """The serializer ``OPTIONS["serializer"]`` names (``pickle`` by default), and an identity."""
    if name == "json":
        return JsonSerializer(), "json"
    if name == "pickle":
        if pickle_key is None:
            from django.utils.crypto import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
                salted_hmac,
            )

            # derived from SECRET_KEY, never SECRET_KEY itself
            key: bytes = salted_hmac(
                "cachekit.contrib.django.CachekitCache", "pickle", algorithm="sha256"
            ).digest()
        else:
            key = pickle_key.encode() if isinstance(pickle_key, str) else pickle_key
        # caches with different keys never share: identified by a digest, never the key
        return PickleSerializer(key), ("pickle", hashlib.sha256(key).hexdigest())
    if isinstance(name, str):
        raise ImproperlyConfigured(
            f"CachekitCache OPTIONS['serializer'] must be 'pickle', 'json' or a serializer, "
            f"not {name!r}"
        )
    return name, _identity(name)
