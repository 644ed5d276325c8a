"""The ``Cache`` facade: one namespace, one default policy, over any backend.

It builds and namespaces keys, serializes values, runs one loader per key at
a time (single-flight), counts every event, and falls open when the backend
fails: errors are counted and logged once per incident, a circuit breaker
stops paying timeouts, and invalidations that could not be delivered are
replayed when the backend answers again.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from cachetools import LRUCache

from .backends import backend_from_url
from .backends.base import MISSING, Backend, SupportsCompareAndSet, SupportsEvictionCounts
from .errors import (
    BackendUnavailableError,
    CacheError,
    ConfigurationError,
    InvalidKeyError,
    SerializationError,
    ValueTooLargeError,
)
from .keys import MAX_KEY_LENGTH, encode_key, namespace_prefix
from .policies import CacheAside, Policy, TTLLike, as_ttl
from .resilience import CircuitBreaker
from .serializers import JsonSerializer, PickleSerializer, Serializer
from .stats import Counter, Histogram, Stats

__all__ = ["Cache"]

log = logging.getLogger("cachekit")
T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

if TYPE_CHECKING:
    from .decorators import CachedCallable

#: Seconds to wait before replaying pending invalidations again after a failed replay.
REPLAY_BACKOFF = 0.5

#: Leading bytes of a lease placeholder; no serializer's output starts with a NUL byte.
LEASE_MARK = b"\x00ck-lease:"
#: What a lease is swapped for when its load stores nothing: read as a miss.
RELEASED = LEASE_MARK + b"released"

#: A TTL, or a function of the loaded value that returns one (e.g. short for ``None``).
LoadTTL = TTLLike | Callable[[Any], TTLLike]

#: Invalidations remembered during an outage; past this the namespace is cleared instead.
MAX_PENDING_INVALIDATIONS = 10_000


class _Flight:
    """One in-progress load that other callers of the same key wait for."""

    __slots__ = ("error", "event", "invalidated", "value")

    def __init__(self) -> None:
        # created by the first waiter (under the flights lock): most loads have none
        self.event: threading.Event | None = None
        self.value: Any = None
        self.error: BaseException | None = None
        self.invalidated = False


class _Write:
    """One write in progress; ``conflict`` is set when another write to its key overlaps."""

    __slots__ = ("conflict",)

    def __init__(self) -> None:
        self.conflict = False


class _Namespace:
    """The current key prefix of a namespace, shared by caches over one backend."""

    __slots__ = (
        "check_at",
        "flights",
        "flights_lock",
        "lock",
        "name",
        "prefix",
        "version",
        "writes",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        # in-progress loads, shared by every Cache over this backend and namespace
        self.flights: dict[str, _Flight] = {}
        self.flights_lock = threading.Lock()
        # writes in progress per key (guarded by flights_lock), to spot overlapping writers
        self.writes: dict[str, list[_Write]] = {}
        self.version = ""
        self.prefix = ""
        self.check_at = 0.0
        self.lock = threading.Lock()

    def adopt(self, version: str) -> None:
        self.version = version
        self.prefix = namespace_prefix(self.name, 0)[:-2] + version + ":"


_CELLS: weakref.WeakKeyDictionary[Backend, dict[str, _Namespace]] = weakref.WeakKeyDictionary()
_CELLS_LOCK = threading.Lock()


def _cell_for(backend: Backend, namespace: str) -> _Namespace:
    with _CELLS_LOCK:
        cells = _CELLS.setdefault(backend, {})
        cell = cells.get(namespace)
        if cell is None:
            cell = cells[namespace] = _Namespace(namespace)
        return cell


def _serializer_from_name(name: str, secret: str | None) -> Serializer | None:
    if name == "json":
        return JsonSerializer()
    if name == "pickle":
        if not secret:
            raise ConfigurationError("serializer=pickle needs a signing key (pickle_key=...)")
        return PickleSerializer(secret.encode())
    if name in ("none", "passthrough"):
        return None
    raise ConfigurationError(f"unknown serializer {name!r} (json, pickle, none)")


class Cache:
    """A namespaced cache with a default policy over one backend.

    ``get`` never raises because the backend is down; with ``fail_open=False``
    backend failures raise ``BackendUnavailableError`` instead.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        namespace: str = "default",
        ttl: TTLLike = None,
        policy: Policy | None = None,
        serializer: Serializer | None = None,
        fail_open: bool = True,
        breaker: CircuitBreaker | None = None,
        namespace_check_interval: float = 1.0,
        lease_ttl: float = 10.0,
        lease_wait: float = 0.0,
        stale_ttl: float = 0.0,
        stale_maxsize: int = 10_000,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(backend, Backend):
            raise ConfigurationError(f"backend must be a cachekit Backend, not {backend!r}")
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError("namespace must be a non-empty string")
        self.backend = backend
        self.namespace = namespace
        self.policy: Policy = (policy or CacheAside()).with_ttl(ttl)
        if serializer is None and not backend.local:
            serializer = JsonSerializer()
        self.serializer = serializer
        self.fail_open = fail_open
        self.breaker = breaker or CircuitBreaker()
        self._timer = timer
        self._check_interval = namespace_check_interval
        self._remote = not backend.local
        self._max_value = backend.max_value_size
        self._backend_get = backend.get
        # True while reads must take the careful path: a remote backend (its
        # namespace version is re-checked), failures, or pending invalidations.
        # Serve-stale (off unless asked for): the last good value this process saw
        # per key, served for up to ``stale_ttl`` s when the backend or the loader fails.
        if stale_ttl < 0 or stale_maxsize < 1:
            raise ConfigurationError("stale_ttl must be >= 0 and stale_maxsize >= 1")
        self.stale_ttl = stale_ttl
        self._stale_maxsize = stale_maxsize
        self._stale: LRUCache[str, tuple[Any, float]] | None = (
            LRUCache(stale_maxsize) if stale_ttl else None
        )
        self._stale_lock = threading.Lock()
        self._careful = self._remote or self._stale is not None
        self._slow = self._careful

        # counters: hot-path increments are single C calls
        self._c_hits, self._c_misses = Counter(), Counter()
        self._c_loads, self._c_load_failures = Counter(), Counter()
        self._c_coalesced, self._c_sets, self._c_deletes = Counter(), Counter(), Counter()
        self._c_invalidated, self._c_stale = Counter(), Counter()
        self._errors: dict[str, Counter] = {}
        self._errors_lock = threading.Lock()
        self._hit, self._miss = self._c_hits.incr, self._c_misses.incr
        self.load_duration = Histogram()

        self._pending: dict[str, None] = {}
        self._pending_overflow = False
        self._pending_lock = threading.Lock()
        self._incident = False
        self._replay_after = 0.0

        self._ns = _cell_for(backend, namespace)
        self._flights = self._ns.flights
        self._flights_lock = self._ns.flights_lock
        self.lease_ttl = lease_ttl
        if not 0.0 <= lease_wait <= lease_ttl:
            raise ConfigurationError("lease_wait must be between 0 and lease_ttl seconds")
        #: Seconds a miss waits for another process's load of the same key (0: load at once).
        self.lease_wait = lease_wait
        self._leases = self._remote and isinstance(backend, SupportsCompareAndSet)
        self._version_key = f"ck:{len(namespace)}:{namespace}:v"
        with self._ns.lock:
            if not self._ns.prefix:
                self._refresh_namespace(force=True)

    # ------------------------------------------------------------ construction

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "default",
        ttl: TTLLike = None,
        policy: Policy | None = None,
        serializer: Serializer | None = None,
        **options: Any,
    ) -> Cache:
        """Build a cache over the backend that serves ``url`` (``memory://``, ``redis://``, ...).

        A ``serializer=json|pickle|none`` query parameter picks the serializer;
        ``fail_open``, ``breaker`` and ``timer`` keywords go to the ``Cache``,
        any other keyword to the backend.
        """
        from urllib.parse import parse_qs, urlsplit

        query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
        if serializer is None and "serializer" in query:
            serializer = _serializer_from_name(query["serializer"], options.pop("pickle_key", None))
        names = (
            "fail_open",
            "breaker",
            "timer",
            "namespace_check_interval",
            "lease_ttl",
            "lease_wait",
            "stale_ttl",
            "stale_maxsize",
        )
        cache_opts: dict[str, Any] = {k: options.pop(k) for k in names if k in options}
        if "timer" in cache_opts and urlsplit(url).scheme.lower() == "memory":
            options.setdefault("timer", cache_opts["timer"])  # expiry happens in the backend
        backend = backend_from_url(url, **options)
        return cls(
            backend,
            namespace=namespace,
            ttl=ttl,
            policy=policy,
            serializer=serializer,
            **cache_opts,
        )

    def child(self, namespace: str) -> Cache:
        """Return a cache in another namespace sharing this one's backend, policy and breaker."""
        return Cache(
            self.backend,
            namespace=namespace,
            policy=self.policy,
            serializer=self.serializer,
            fail_open=self.fail_open,
            breaker=self.breaker,
            namespace_check_interval=self._check_interval,
            lease_ttl=self.lease_ttl,
            lease_wait=self.lease_wait,
            stale_ttl=self.stale_ttl,
            stale_maxsize=self._stale_maxsize,
            timer=self._timer,
        )

    def __repr__(self) -> str:
        return (
            f"Cache({type(self.backend).__name__}, namespace={self.namespace!r}, {self.policy!r})"
        )

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()

    # ------------------------------------------------------------ keys

    def _refresh_namespace(self, force: bool = False) -> None:
        """Re-read the namespace version from the backend (another process may have cleared)."""
        cell = self._ns
        cell.check_at = self._timer() + self._check_interval
        if cell.prefix and self.breaker.open_until and not self.breaker.allow():
            return  # keep the known version; don't pay a timeout while the breaker is open
        try:
            raw = self.backend.get(self._version_key)
            if raw is MISSING:
                # Never fall back to a fixed version: entries written under an
                # older one could resurface. A fresh version orphans them.
                candidate = secrets.token_hex(4)
                if not self.backend.add(self._version_key, candidate.encode(), None):
                    raw = self.backend.get(self._version_key)
                else:
                    raw = candidate.encode()
        except Exception as exc:
            if force and not cell.prefix:
                cell.adopt("local-" + secrets.token_hex(4))
            self._backend_error("namespace", exc, raise_strict=False)
            return
        if self.breaker.failures:
            self.breaker.record_success()  # we may have been the half-open probe
        if self._pending_overflow:
            # A clear() (or too many invalidations) could not reach the server: the
            # version there is the old one. Deliver the clear now instead of adopting it.
            version = secrets.token_hex(4)
            try:
                self.backend.set(self._version_key, version.encode(), None)
            except Exception as exc:
                self._backend_error("namespace", exc, raise_strict=False)
                return
            cell.adopt(version)
            with self._pending_lock:
                self._pending_overflow = False
                self._pending.clear()
            return
        version = raw.decode() if isinstance(raw, (bytes, bytearray)) else str(raw)
        if version != cell.version:
            cell.adopt(version)

    def _full(self, key: str) -> str:
        cell = self._ns
        if self._remote and self._timer() >= cell.check_at:
            with cell.lock:
                if self._timer() >= cell.check_at:
                    self._refresh_namespace()
        full = cell.prefix + key
        return encode_key(full) if len(full) > MAX_KEY_LENGTH else full

    def full_key(self, key: str) -> str:
        """Return the backend key that ``key`` is stored under (for debugging)."""
        return self._full(_checked(key))

    # ------------------------------------------------------------ failure handling

    def _error_counter(self, operation: str) -> Counter:
        c = self._errors.get(operation)
        if c is None:
            with self._errors_lock:
                c = self._errors.setdefault(operation, Counter())
        return c

    def _backend_error(self, operation: str, exc: BaseException, raise_strict: bool = True) -> None:
        """Count and log a backend failure; raise it in strict mode."""
        self._error_counter(operation).incr()
        self._slow = True
        opened = self.breaker.record_failure()
        if not self._incident:
            self._incident = True
            log.warning(
                "cachekit: backend %s failed during %s for namespace %r (%s: %s); "
                "falling through to the source until it answers again",
                type(self.backend).__name__,
                operation,
                self.namespace,
                type(exc).__name__,
                exc,
            )
        elif opened:
            log.info("cachekit: circuit breaker opened for namespace %r", self.namespace)
        else:
            log.debug("cachekit: %s failed again: %s", operation, exc)
        if raise_strict and not self.fail_open:
            if isinstance(exc, BackendUnavailableError):
                raise exc
            raise BackendUnavailableError(f"{operation} failed: {exc}") from exc

    def _backend_ok(self) -> None:
        """Note a successful backend call after failures; replay lost invalidations."""
        if self.breaker.record_success() or self._incident:
            self._incident = False
            log.warning(
                "cachekit: backend %s answers again for namespace %r",
                type(self.backend).__name__,
                self.namespace,
            )
        if (self._pending or self._pending_overflow) and self._timer() >= self._replay_after:
            self._replay_pending()
        self._slow = self._careful or bool(self._pending) or bool(self.breaker.failures)

    def _skip(self, operation: str) -> bool:
        """True when the breaker is open and this call must not reach the backend."""
        if self.breaker.allow():
            return False
        if not self.fail_open:
            raise BackendUnavailableError(
                f"{operation} skipped: circuit breaker is open for namespace {self.namespace!r}"
            )
        return True

    def _remember_invalidation(self, keys: Iterable[str]) -> None:
        with self._pending_lock:
            for k in keys:
                if len(self._pending) >= MAX_PENDING_INVALIDATIONS:
                    self._pending_overflow = True
                    self._pending.clear()
                    break
                self._pending[k] = None
            self._slow = True

    def _replay_pending(self) -> None:
        with self._pending_lock:
            keys, overflow = list(self._pending), self._pending_overflow
        try:
            if overflow:
                self._bump_namespace()
            elif keys:
                self.backend.delete_many(keys)
        except Exception as exc:
            # e.g. one pool node still down: retry later, not after every successful call
            self._replay_after = self._timer() + REPLAY_BACKOFF
            self._backend_error("replay", exc, raise_strict=False)
            return
        if self.breaker.failures:
            self.breaker.record_success()  # the replay may have been the half-open probe
        with self._pending_lock:
            for k in keys:
                self._pending.pop(k, None)
            if overflow:
                self._pending_overflow = False
        log.info(
            "cachekit: replayed %s lost invalidation(s) for namespace %r",
            "a namespace clear for" if overflow else len(keys),
            self.namespace,
        )

    # ------------------------------------------------------------ encoding

    def _encode(self, value: Any, key: str | None = None) -> Any:
        if self.serializer is None:
            return value
        data = self.serializer.dumps(value)
        limit = self._max_value
        if limit is not None and len(data) > limit:
            raise ValueTooLargeError(len(data), limit, key)
        return data

    def _undecodable(self, raw: bytes) -> bool:
        if self.serializer is None:
            return False
        try:
            self.serializer.loads(raw)
        except SerializationError:
            return True
        return False

    def _decode(self, full: str, raw: Any) -> Any:
        if self.serializer is None:
            return raw
        try:
            return self.serializer.loads(raw)
        except SerializationError as exc:
            if isinstance(raw, bytes) and raw.startswith(LEASE_MARK):
                return MISSING  # another caller is loading this key: a plain miss
            self._error_counter("decode").incr()
            log.warning(
                "cachekit: undecodable entry %r in namespace %r treated as a miss: %s",
                full,
                self.namespace,
                exc,
            )
            return MISSING

    # ------------------------------------------------------------ reads

    def _lookup(self, key: str) -> Any:
        """Return the live value for an already valid ``key``, or ``MISSING``; counts hit/miss."""
        if self._slow:
            return self._lookup_slow(self._full(key))
        full = self._ns.prefix + key
        if len(full) > MAX_KEY_LENGTH:
            full = encode_key(full)
        try:
            raw = self._backend_get(full)
        except Exception as exc:
            self._miss()
            self._backend_error("get", exc)
            return MISSING
        if raw is MISSING:
            self._miss()
            return MISSING
        if self.serializer is not None:
            raw = self._decode(full, raw)
            if raw is MISSING:
                self._miss()
                return MISSING
        self._hit()
        return raw

    def _lookup_slow(self, full: str) -> Any:
        """``_lookup`` while the backend is failing or invalidations are pending.

        Its tail repeats ``_lookup``'s on purpose: the fast path is kept free of
        one more function call (it is about a tenth of an in-process hit).
        """
        if self._pending and full in self._pending:
            if self.breaker.allow():
                self._replay_pending()
            if full in self._pending:  # still undelivered: the server may hold a stale value
                if not self.fail_open:
                    raise BackendUnavailableError(
                        f"get skipped: an invalidation of this key is pending for namespace "
                        f"{self.namespace!r} until the backend answers"
                    )
                # only our own newest write can be remembered here: deletes forget theirs
                return self._stale_or_miss(full)
        if self.breaker.open_until and self._skip("get"):
            return self._stale_or_miss(full)
        try:
            raw = self._backend_get(full)
        except Exception as exc:
            self._backend_error("get", exc)
            return self._stale_or_miss(full)
        if self.breaker.failures or self._pending:
            self._backend_ok()
        if raw is MISSING:
            self._miss()
            return MISSING
        if self.serializer is not None:
            raw = self._decode(full, raw)
            if raw is MISSING:
                self._miss()
                return MISSING
        self._hit()
        if self._stale is not None:
            self._keep(full, raw)
        return raw

    # ------------------------------------------------------------ serve-stale

    def _keep(self, full: str, value: Any) -> None:
        """Remember the last good value of ``full`` (serve-stale only)."""
        if self._stale is not None:
            with self._stale_lock:
                self._stale[full] = (value, self._timer())

    def _forget(self, fulls: Iterable[str]) -> None:
        if self._stale is not None:
            with self._stale_lock:
                for full in fulls:
                    self._stale.pop(full, None)

    def _stale_value(self, full: str) -> Any:
        """The remembered value of ``full`` if it is at most ``stale_ttl`` old, else MISSING."""
        if self._stale is None:
            return MISSING
        with self._stale_lock:
            entry = self._stale.get(full)
        if entry is None or self._timer() - entry[1] > self.stale_ttl:
            return MISSING
        self._c_stale.incr()
        return entry[0]

    def _stale_or_miss(self, full: str) -> Any:
        value = self._stale_value(full)
        if value is MISSING:
            self._miss()
        else:
            self._hit()
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """Return the cached value for ``key``, or ``default`` (also when the backend is down)."""
        value = self._lookup(_checked(key))
        return default if value is MISSING else value

    def __contains__(self, key: str) -> bool:
        return self._lookup(_checked(key)) is not MISSING

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the cached keys (one round trip on remote backends)."""
        keys = list(dict.fromkeys(_checked(k) for k in keys))  # a repeated key counts once
        if keys:
            self._full(keys[0])  # re-reads the namespace version if it is due
        prefix = self._ns.prefix
        fulls = {(f if len(f := prefix + k) <= MAX_KEY_LENGTH else encode_key(f)): k for k in keys}
        if self._pending:
            for full in [f for f in fulls if f in self._pending]:
                del fulls[full]
        if not fulls or (self.breaker.open_until and self._skip("get_many")):
            for _ in keys:
                self._miss()
            return {}
        try:
            found = self.backend.get_many(list(fulls))
        except Exception as exc:
            for _ in keys:
                self._miss()
            self._backend_error("get_many", exc)
            return {}
        if self.breaker.failures or self._pending:
            self._backend_ok()
        out: dict[str, Any] = {}
        loads = self.serializer.loads if self.serializer is not None else None
        for full, raw in found.items():
            try:
                out[fulls[full]] = raw if loads is None else loads(raw)
            except SerializationError:  # a lease, or a corrupt entry: counted and logged
                value = self._decode(full, raw)
                if value is not MISSING:
                    out[fulls[full]] = value
        for _ in range(len(out)):
            self._hit()
        for _ in range(len(keys) - len(out)):
            self._miss()
        return out

    # ------------------------------------------------------------ writes

    def _ttl_seconds(self, ttl: TTLLike) -> float | None:
        return as_ttl(ttl, self.policy.ttl).sample()

    def _mark_flight(self, full: str) -> None:
        if self._flights:
            flight = self._flights.get(full)
            if flight is not None:
                flight.invalidated = True

    def _store(self, full: str, data: Any, ttl: float | None, lease: bytes | None = None) -> bool:
        """Write ``data``; with ``lease``, only over that lease (compare-and-set)."""
        if self.breaker.open_until and self._skip("set"):
            self._remember_invalidation((full,))
            return False
        try:
            if lease is None:
                self.backend.set(full, data, ttl)
            elif not self.backend.compare_and_set(full, lease, data, ttl):  # type: ignore[attr-defined]
                return False  # a write voided our lease meanwhile: it holds the newer value
        except (ValueTooLargeError, InvalidKeyError):
            raise
        except Exception as exc:
            # the server may still hold an older value: make sure it is dropped later
            self._remember_invalidation((full,))
            self._backend_error("set", exc)
            return False
        self._c_sets.incr()
        if self.breaker.failures or self._pending:
            self._backend_ok()
        return True

    def set(self, key: str, value: Any, ttl: TTLLike = None) -> None:
        """Store ``value`` under ``key``; ``ttl`` ``None`` uses the policy's TTL.

        Raises ``SerializationError`` / ``ValueTooLargeError`` before touching
        the backend, so the previous entry stays as it was.
        """
        full = self._full(_checked(key))
        data = self._encode(value, key)
        self._mark_flight(full)
        if self._stale is not None:
            self._keep(full, value)  # the newest value, whether or not the backend took it
        self._store(full, data, self._ttl_seconds(ttl))

    def add(self, key: str, value: Any, ttl: TTLLike = None) -> bool:
        """Store ``value`` only if ``key`` is not cached; return whether it was stored."""
        full = self._full(_checked(key))
        data = self._encode(value, key)
        if self.breaker.open_until and self._skip("add"):
            return False
        try:
            added = self.backend.add(full, data, self._ttl_seconds(ttl))
        except ValueTooLargeError:
            raise
        except Exception as exc:
            self._backend_error("add", exc)
            return False
        if self.breaker.failures or self._pending:
            self._backend_ok()
        return added

    def set_many(self, mapping: Mapping[str, Any], ttl: TTLLike = None) -> None:
        """Store every item of ``mapping`` (one round trip on remote backends)."""
        encoded = {self._full(_checked(k)): self._encode(v, k) for k, v in mapping.items()}
        if not encoded:
            return
        for full in encoded:
            self._mark_flight(full)
        if self.breaker.open_until and self._skip("set_many"):
            self._remember_invalidation(encoded)
            return
        try:
            self.backend.set_many(encoded, self._ttl_seconds(ttl))
        except ValueTooLargeError:
            raise
        except Exception as exc:
            self._remember_invalidation(encoded)
            self._backend_error("set_many", exc)
            return
        for _ in encoded:
            self._c_sets.incr()
        if self.breaker.failures or self._pending:
            self._backend_ok()

    def _invalidate(self, fulls: list[str]) -> int:
        self._forget(fulls)
        for full in fulls:
            self._mark_flight(full)
        if self.breaker.open_until and self._skip("delete"):
            self._remember_invalidation(fulls)
            return 0
        try:
            removed = (
                int(self.backend.delete(fulls[0]))
                if len(fulls) == 1
                else self.backend.delete_many(fulls)
            )
        except Exception as exc:
            self._remember_invalidation(fulls)
            self._backend_error("delete", exc)
            return 0
        if self._pending:
            with self._pending_lock:
                for full in fulls:
                    self._pending.pop(full, None)
        if self.breaker.failures or self._pending:
            self._backend_ok()
        for _ in range(removed):
            self._c_invalidated.incr()
        self._c_deletes.incr()
        return removed

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was cached (False also when the backend is down)."""
        return self._invalidate([self._full(_checked(key))]) > 0

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; return how many were cached (where the backend can tell)."""
        fulls = [self._full(_checked(k)) for k in keys]
        return self._invalidate(fulls) if fulls else 0

    def _bump_namespace(self) -> None:
        version = secrets.token_hex(4)
        self.backend.set(self._version_key, version.encode(), None)
        with self._ns.lock:
            self._ns.adopt(version)
            self._ns.check_at = self._timer() + self._check_interval

    def clear(self) -> None:
        """Drop every entry of this namespace (O(1): the namespace version changes)."""
        if self._stale is not None:
            with self._stale_lock:
                self._stale.clear()
        try:
            self._bump_namespace()
        except Exception as exc:
            # keep our own view consistent; other processes learn it once the backend is back
            with self._ns.lock:
                self._ns.adopt("local-" + secrets.token_hex(4))
            with self._pending_lock:
                self._pending_overflow = True
            self._backend_error("clear", exc)

    # ------------------------------------------------------------ loading

    def _join(self, full: str) -> tuple[_Flight, bool]:
        """Return the flight for ``full`` and whether this caller leads it."""
        with self._flights_lock:
            flight = self._flights.get(full)
            # A load that a write has voided may return a value older than that write:
            # a caller arriving now must not wait for it, but start a fresh load.
            if flight is not None and not flight.invalidated:
                if flight.event is None:
                    flight.event = threading.Event()
                return flight, False
            flight = self._flights[full] = _Flight()
            return flight, True

    def _land(self, full: str, flight: _Flight) -> None:
        with self._flights_lock:
            if self._flights.get(full) is flight:  # a fresh load may have replaced ours
                del self._flights[full]
            event = flight.event  # no waiter can join once the flight is gone
        if event is not None:
            event.set()

    def _wait(self, flight: _Flight) -> Any:
        self._c_coalesced.incr()
        assert flight.event is not None  # set by _join for every waiter
        flight.event.wait()
        if flight.error is not None:
            raise flight.error
        return flight.value

    def _take_lease(self, full: str) -> tuple[bytes | None, bool]:
        """Put a lease on a missing key so a concurrent write can void a stale load.

        Returns ``(token, busy)``: the lease token, or ``None`` when this load must
        not be stored (someone else holds a lease or already stored a value, or the
        backend failed); ``busy`` is True when another caller's load holds the key.
        """
        if self.breaker.open_until and not self.breaker.allow():
            return None, False  # the backend is being skipped: don't pay a timeout
        token = LEASE_MARK + secrets.token_hex(8).encode()
        try:
            if self.backend.add(full, token, self.lease_ttl):
                if self.breaker.failures:
                    self._backend_ok()  # the lease may have been the half-open probe
                return token, False
            current = self.backend.get(full)
            if isinstance(current, bytes) and current.startswith(LEASE_MARK):
                return None, current != RELEASED
            # A corrupt entry (not a lease, not decodable): take its place, or the key
            # would never be cached again until it expired.
            if (
                isinstance(current, bytes)
                and self._undecodable(current)
                and self.backend.compare_and_set(full, current, token, self.lease_ttl)  # type: ignore[attr-defined]
            ):
                return token, False
        except Exception as exc:
            self._backend_error("lease", exc, raise_strict=False)
        return None, False

    def _await_lease(self, full: str) -> Any:
        """Wait up to ``lease_wait`` s for another process's load of ``full``; MISSING if none."""
        deadline = time.monotonic() + self.lease_wait
        pause = 0.001
        while True:
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            try:
                raw = self.backend.get(full)
            except Exception as exc:
                self._backend_error("get", exc, raise_strict=False)
                return MISSING
            if raw is MISSING or raw == RELEASED:
                return MISSING  # that load failed or gave up: load ourselves
            if not (isinstance(raw, bytes) and raw.startswith(LEASE_MARK)):
                return self._decode(full, raw)
            if time.monotonic() >= deadline:
                return MISSING
            pause = min(pause * 2, 0.05)

    def _load(self, full: str, loader: Callable[[], T], ttl: LoadTTL, guard: bool = True) -> T:
        """Run ``loader`` once per key at a time; others wait for its result.

        With ``guard`` (lazy loads) the result is stored only if no write to the
        key happened meanwhile; without it (``refresh``) it is stored as a write.
        """
        flight, leader = self._join(full)
        if not leader:
            return self._wait(flight)  # type: ignore[no-any-return]
        try:
            leased = guard and self._leases
            lease, busy = self._take_lease(full) if leased else (None, False)
            if busy and self.lease_wait:
                # another process is loading this key: wait for its value, not the source
                found = self._await_lease(full)
                if found is not MISSING:
                    self._c_coalesced.incr()
                    flight.value = found
                    return found  # type: ignore[no-any-return]
                lease, busy = self._take_lease(full)
            started = time.perf_counter()
            try:
                value = loader()
            except BaseException as exc:
                self._c_load_failures.incr()
                if lease is not None:
                    self._release_lease(full, lease)  # waiters elsewhere load at once
                stale = self._stale_value(full) if isinstance(exc, Exception) else MISSING
                if stale is not MISSING:
                    log.warning(
                        "cachekit: loader for %r failed (%s); serving its last value", full, exc
                    )
                    flight.value = stale
                    return stale  # type: ignore[no-any-return]
                flight.error = exc
                raise
            self._c_loads.incr()
            self.load_duration.observe(time.perf_counter() - started)
            flight.value = value
            if not guard or (not flight.invalidated and (lease is not None or not leased)):
                self._store_loaded(full, value, ttl, lease)
            return value
        finally:
            self._land(full, flight)

    def _store_loaded(self, full: str, value: Any, ttl: LoadTTL, lease: bytes | None) -> None:
        """Cache a loaded value (only over our own lease, if any); encode failures are logged."""
        if callable(ttl):
            ttl = ttl(value)
        if self._stale is not None:
            self._keep(full, value)
        try:
            self._store(full, self._encode(value, full), self._ttl_seconds(ttl), lease)
        except (SerializationError, ValueTooLargeError) as exc:
            self._error_counter("encode").incr()
            log.warning("cachekit: loaded value for %r not cached: %s", full, exc)
            if lease is not None:
                self._release_lease(full, lease)
        except CacheError:
            if not self.fail_open:
                raise

    def _release_lease(self, full: str, lease: bytes) -> None:
        try:
            # Swap our lease for a short-lived released marker (read as a miss): unlike a
            # delete, a compare-and-set can never remove a newer write.
            self.backend.compare_and_set(full, lease, RELEASED, 1.0)  # type: ignore[attr-defined]
        except Exception as exc:
            self._backend_error("lease", exc, raise_strict=False)

    def get_many_or_load(
        self,
        keys: Iterable[str],
        loader: Callable[[list[str]], Mapping[str, Any]],
        ttl: LoadTTL = None,
    ) -> dict[str, Any]:
        """Return cached values for ``keys``, loading all misses with one ``loader(missing)`` call.

        Keys the loader does not return are neither cached nor in the result.
        Loads are race-guarded like ``get_or_load``.
        """
        keys = list(dict.fromkeys(_checked(k) for k in keys))
        found = self.get_many(keys)
        missing = [k for k in keys if k not in found]
        if not missing:
            return found
        fulls = {k: self._full(k) for k in missing}
        led: dict[str, _Flight] = {}
        waiting: dict[str, _Flight] = {}
        for k in missing:
            flight, leader = self._join(fulls[k])
            (led if leader else waiting)[k] = flight
        try:
            if led:
                leases = {k: self._take_lease(fulls[k])[0] for k in led} if self._leases else {}
                started = time.perf_counter()
                try:
                    loaded = dict(loader(list(led)))
                except BaseException as exc:
                    for flight in led.values():
                        flight.error = exc
                    self._c_load_failures.incr()
                    raise
                self._c_loads.incr()
                self.load_duration.observe(time.perf_counter() - started)
                for k, flight in led.items():
                    if k not in loaded:
                        flight.value = MISSING
                        if leases.get(k) is not None:
                            self._release_lease(fulls[k], leases[k])  # type: ignore[arg-type]
                        continue
                    value = flight.value = loaded[k]
                    found[k] = value
                    lease = leases.get(k)
                    if not flight.invalidated and (lease is not None or not self._leases):
                        self._store_loaded(fulls[k], value, ttl, lease)
        finally:
            for k, flight in led.items():
                self._land(fulls[k], flight)
        for k, flight in waiting.items():
            value = self._wait(flight)
            if value is not MISSING:
                found[k] = value
        return {k: found[k] for k in keys if k in found}

    def get_or_load(self, key: str, loader: Callable[[], T], ttl: LoadTTL = None) -> T:
        """Return the cached value, or run ``loader`` (once per key at a time) and cache it."""
        key = _checked(key)
        value = self._lookup(key)
        if value is not MISSING:
            return value  # type: ignore[no-any-return]
        return self._load(self._full(key), loader, ttl)

    def refresh(self, key: str, loader: Callable[[], T], ttl: LoadTTL = None) -> T:
        """Run ``loader`` now and store its result, whatever is cached."""
        return self._load(self._full(_checked(key)), loader, ttl, guard=False)

    def write(self, key: str, writer: Callable[[], T], ttl: TTLLike = None) -> T:
        """Run ``writer`` (a write to the source); then store its result or invalidate ``key``.

        Write-through stores the result, cache-aside invalidates. If ``writer``
        raises, the cache is not touched. When two writes to the same key overlap
        in this process, their order at the source is unknown, so the key is
        invalidated instead of storing a value that may be the older one.
        """
        full = self._full(_checked(key))
        mine = _Write()
        with self._flights_lock:
            active = self._ns.writes.setdefault(full, [])
            if active:
                mine.conflict = True
                for other in active:
                    other.conflict = True
            active.append(mine)
        try:
            result = writer()
            if self.policy.stores_on_write and not mine.conflict:
                try:
                    self.set(key, result, ttl)
                except (SerializationError, ValueTooLargeError) as exc:
                    # the source already changed: never leave the old value behind
                    self._error_counter("encode").incr()
                    log.warning("cachekit: written value for %r not cached: %s", key, exc)
                    self.delete(key)
                if mine.conflict:  # a write overlapped ours while we stored: undo
                    self.delete(key)
            else:
                self.delete(key)
            return result
        finally:
            with self._flights_lock:
                active = self._ns.writes[full]
                active.remove(mine)
                if not active:
                    del self._ns.writes[full]

    # ------------------------------------------------------------ decorators

    def cached(
        self, ttl: TTLLike = None, *, key: str | Callable[..., str] | None = None
    ) -> Callable[[Callable[P, R]], CachedCallable[P, R]]:
        """Decorate a function with lazy loading: see ``cachekit.decorators.cached``."""
        from .decorators import cached

        return cached(self, ttl=ttl, key=key)

    def writes(
        self, *, key: str | Callable[..., str], ttl: TTLLike = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a writer: after it succeeds, store its result or invalidate, per policy."""
        from .decorators import writes

        return writes(self, key=key, ttl=ttl)

    def evicts(
        self, *, key: str | Callable[..., str]
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a function: after it succeeds, invalidate the entry named by ``key``."""
        from .decorators import evicts

        return evicts(self, key=key)

    # ------------------------------------------------------------ stats

    def stats(self) -> Stats:
        """Return a snapshot of this cache's counters."""
        capacity = expired = 0
        if isinstance(self.backend, SupportsEvictionCounts):
            capacity, expired = self.backend.eviction_counts()
        errors = {op: c.value for op, c in list(self._errors.items())}
        return Stats(
            namespace=self.namespace,
            hits=self._c_hits.value,
            misses=self._c_misses.value,
            loads=self._c_loads.value,
            load_failures=self._c_load_failures.value,
            coalesced=self._c_coalesced.value,
            sets=self._c_sets.value,
            deletes=self._c_deletes.value,
            errors=sum(errors.values()),
            evictions_capacity=capacity,
            evictions_expired=expired,
            evictions_invalidated=self._c_invalidated.value,
            stale_served=self._c_stale.value,
            circuit_open=self.breaker.is_open,
            errors_by_operation=errors,
        )


def _checked(key: object) -> str:
    if type(key) is str and key:
        return key
    from .keys import validate_key

    return validate_key(key)
