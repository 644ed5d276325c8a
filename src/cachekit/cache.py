"""The ``Cache`` facade: one namespace, one default policy, over any backend.

It builds and namespaces keys, serializes values, runs one loader per key at
a time (single-flight), counts every event, and falls open when the backend
fails: errors are counted and logged once per incident, a circuit breaker
stops paying timeouts, and invalidations that could not be delivered are
replayed when the backend answers again.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from cachetools import LRUCache

from .backends import backend_from_url
from .backends.base import (
    MISSING,
    Backend,
    SupportsCompareAndSet,
    SupportsDropPrefix,
    SupportsEvictionCounts,
)
from .errors import (
    BackendRejectedError,
    BackendUnavailableError,
    CacheError,
    ConfigurationError,
    InvalidKeyError,
    ReentrantLoadError,
    SerializationError,
    ValueTooLargeError,
)
from .keys import MAX_KEY_LENGTH, encode_key, namespace_prefix
from .policies import CacheAside, Policy, TTLLike, ttl_seconds
from .resilience import CircuitBreaker
from .serializers import (
    JsonSerializer,
    KeyBoundSerializer,
    PassthroughSerializer,
    PickleSerializer,
    Serializer,
)
from .stats import Counter, Histogram, Stats

__all__ = ["Cache"]

log = logging.getLogger("cachekit")
#: Per-key hits and misses at DEBUG level, for troubleshooting (off the fast path unless on).
trace_log = logging.getLogger("cachekit.trace")

#: A warning of one kind is logged once per this many seconds; repeats go to DEBUG.
LOG_EVERY = 60.0
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

#: Longest a write to a key with a pending invalidation waits for a replay in flight.
REPLAY_LOCK_WAIT = 0.25

#: Seconds between background attempts to deliver pending invalidations: other
#: processes may read a value this one invalidated during an outage for about
#: this long (plus one command deadline) after the server answers again.
REPLAY_INTERVAL = 0.25


class _Flight:
    """One in-progress load that other callers of the same key wait for."""

    __slots__ = ("error", "event", "invalidated", "thread", "value")

    def __init__(self) -> None:
        # created by the first waiter (under the flights lock): most loads have none
        self.event: threading.Event | None = None
        self.value: Any = None
        self.error: BaseException | None = None
        self.invalidated = False
        # the leader's thread: a loader that asks for its own key is caught at once
        self.thread = threading.get_ident()


class _Write:
    """One write in progress; ``conflict`` is set when another write to its key overlaps."""

    __slots__ = ("conflict",)

    def __init__(self) -> None:
        self.conflict = False


class _KeyWrites:
    """The writes in progress on one key, and the lock their cache updates take in turn."""

    __slots__ = ("active", "step")

    def __init__(self) -> None:
        self.active: list[_Write] = []
        # One cache update at a time per key: an overlapping writer's invalidation
        # can never land before the other writer's store and leave it behind.
        self.step = threading.Lock()


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
        self.writes: dict[str, _KeyWrites] = {}
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
        return PassthroughSerializer()  # values go to the backend as they are
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
        if isinstance(serializer, PassthroughSerializer):
            serializer = None  # asked for explicitly: values are stored as they are
        elif serializer is None and not backend.local:
            serializer = JsonSerializer()
        self.serializer = serializer
        # payloads bound to the full backend key (signed pickle, encryption) get it
        self._dumps: Callable[[str, Any], Any] | None = None
        self._loads: Callable[[str, Any], Any] | None = None
        if isinstance(serializer, KeyBoundSerializer):
            self._dumps, self._loads = serializer.dumps_for, serializer.loads_for
        elif serializer is not None:
            dumps, loads = serializer.dumps, serializer.loads
            self._dumps = lambda _key, value: dumps(value)
            self._loads = lambda _key, data: loads(data)
        # remote reads always go through _decode: without a serializer it still
        # has to tell a lease placeholder from a value
        self._decodes = serializer is not None or not backend.local
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
        # Per-key tracing is decided once: checking the logger on every hit would cost
        # a tenth of an in-process hit.
        self._trace = trace_log.isEnabledFor(logging.DEBUG)
        self._careful = self._remote or self._stale is not None or self._trace
        self._slow = self._careful
        self._warned: dict[str, float] = {}

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
        # held while a replay deletes: a write to a pending key waits for it, so a
        # replay can never remove a value written after the invalidation it delivers
        self._replay_lock = threading.RLock()
        self._replayer: threading.Thread | None = None
        self._closed = False
        self._incident = False
        self._replay_after = 0.0

        self._ns = _cell_for(backend, namespace)
        self._flights = self._ns.flights
        self._flights_lock = self._ns.flights_lock
        if not (isinstance(lease_ttl, (int, float)) and 0 < lease_ttl < float("inf")):
            raise ConfigurationError(
                f"lease_ttl must be a number of seconds > 0 (it bounds every wait for "
                f"another caller's load), got {lease_ttl!r}"
            )
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
        self._closed = True
        self.backend.close()

    # ------------------------------------------------------------ keys

    def _refresh_namespace(self, force: bool = False) -> None:
        """Re-read the namespace version from the backend (another process may have cleared)."""
        cell = self._ns
        cell.check_at = self._timer() + self._check_interval
        if not self._remote:
            # In process, the shared cell is the only view there is: no record in the
            # store (it would take a slot and be counted when pushed out).
            if not cell.prefix:
                cell.adopt(secrets.token_hex(4))
            return
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
            # we may have been the half-open probe (not _backend_ok: a replay from
            # here could bump the namespace under the lock we hold)
            self.breaker.record_success()
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

    def _fields(self, operation: str, exc: BaseException | None = None) -> dict[str, Any]:
        """Structured fields for a log record (``extra=``); never a credential."""
        return {
            "cachekit_namespace": self.namespace,
            "cachekit_backend": self.backend.server_address or type(self.backend).__name__,
            "cachekit_operation": operation,
            "cachekit_error": type(exc).__name__ if exc is not None else None,
        }

    def _warn(
        self, kind: str, operation: str, exc: BaseException | None, msg: str, *args: Any
    ) -> None:
        """Log a warning of ``kind`` once per ``LOG_EVERY`` s; repeats go to DEBUG."""
        now = time.monotonic()
        last = self._warned.get(kind)
        level = logging.DEBUG
        if last is None or now - last >= LOG_EVERY:
            self._warned[kind] = now
            level = logging.WARNING
        log.log(level, msg, *args, extra=self._fields(operation, exc))

    def _backend_error(self, operation: str, exc: BaseException, raise_strict: bool = True) -> None:
        """Count and log a backend failure; raise it in strict mode."""
        self._error_counter(operation).incr()
        if isinstance(exc, BackendRejectedError):
            # The server answered: this command (or its data) is at fault, not the
            # server. Never a reason to stop reading from it.
            self._warn(
                "rejected:" + operation,
                operation,
                exc,
                "cachekit: backend %s refused %s for namespace %r (%s); "
                "counted, the backend stays in use",
                type(self.backend).__name__,
                operation,
                self.namespace,
                exc,
            )
            if raise_strict and not self.fail_open:
                raise exc
            return
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
                extra=self._fields(operation, exc),
            )
        elif opened:
            log.info(
                "cachekit: circuit breaker opened for namespace %r",
                self.namespace,
                extra=self._fields(operation, exc),
            )
        else:
            log.debug(
                "cachekit: %s failed again: %s", operation, exc, extra=self._fields(operation, exc)
            )
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
                extra=self._fields("recovery"),
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
            self._start_replayer()

    def _start_replayer(self) -> None:
        """Start the background replay thread unless it runs (call under the pending lock)."""
        if self._remote and (self._replayer is None or not self._replayer.is_alive()):
            self._replayer = threading.Thread(
                target=self._replay_loop, name=f"cachekit-replay-{self.namespace}", daemon=True
            )
            self._replayer.start()

    def _replay_loop(self) -> None:
        """Deliver pending invalidations as soon as the backend answers, with or without traffic.

        Other processes read whatever the server holds: the sooner a lost
        invalidation is replayed, the shorter they can read a value this process
        invalidated. Each attempt is also the breaker's probe.
        """
        stop = threading.Event()
        while not self._closed and (self._pending or self._pending_overflow):
            stop.wait(REPLAY_INTERVAL)
            if self._closed:
                return
            with self._pending_lock:
                if not (self._pending or self._pending_overflow):
                    return
            self._replay_pending()

    @contextlib.contextmanager
    def _ordered(self, fulls: Iterable[str]) -> Iterator[bool]:
        """Around a write: yields whether it may go ahead; call ``_delivered`` once it landed.

        A write to a key whose invalidation is still pending holds the replay lock,
        so a replay can neither delete the newer value nor run between the write and
        the end of the key's pending state (readers treat a pending key as a miss
        until the write has landed). If a replay holds the lock for longer than
        a command may take, the write is skipped: the key stays pending and a later
        load caches it once the invalidation is delivered.
        """
        pending = self._pending
        if not pending or not any(f in pending for f in fulls):
            yield True
            return
        if not self._replay_lock.acquire(timeout=REPLAY_LOCK_WAIT):
            yield False
            return
        try:
            yield True
        finally:
            self._replay_lock.release()

    def _delivered(self, fulls: Iterable[str]) -> None:
        """After a successful write of ``fulls``: their pending invalidations are void."""
        if self._pending:
            with self._pending_lock:
                for full in fulls:
                    self._pending.pop(full, None)

    def _replay_pending(self) -> None:
        with self._replay_lock:
            with self._pending_lock:
                keys, overflow = list(self._pending), self._pending_overflow
            if not keys and not overflow:
                return
            try:
                if overflow:
                    self._bump_namespace()
                else:
                    self.backend.delete_many(keys)
            except Exception as exc:
                # e.g. one pool node still down: retry later, not after every successful call
                self._replay_after = self._timer() + REPLAY_BACKOFF
                self._backend_error("replay", exc, raise_strict=False)
                return
            with self._pending_lock:
                for k in keys:
                    self._pending.pop(k, None)
                if overflow:
                    self._pending_overflow = False
        if self.breaker.failures or self.breaker.open_until:
            self.breaker.record_success()  # the replay may have been the half-open probe
        self._slow = self._careful or bool(self._pending) or bool(self.breaker.failures)
        log.info(
            "cachekit: replayed %s lost invalidation(s) for namespace %r",
            "a namespace clear for" if overflow else len(keys),
            self.namespace,
        )

    # ------------------------------------------------------------ encoding

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

    def _undecodable(self, full: str, raw: bytes) -> bool:
        if self._loads is None:
            return False
        try:
            self._loads(full, raw)
        except Exception:
            return True
        return False

    def _decode(self, full: str, raw: Any) -> Any:
        if self._loads is None:
            if isinstance(raw, bytes) and raw.startswith(LEASE_MARK):
                return MISSING  # another caller is loading this key: a plain miss
            return raw
        try:
            return self._loads(full, raw)
        except Exception as exc:  # a crafted or corrupt entry is a miss, whatever it raises
            if isinstance(raw, bytes) and raw.startswith(LEASE_MARK):
                return MISSING  # a lease: no serializer's output starts with a NUL byte
            self._error_counter("decode").incr()
            self._warn(
                "decode",
                "decode",
                exc,
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
            if self._trace:
                return self._traced(self._full(key))
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
        if self._decodes:
            raw = self._decode(full, raw)
            if raw is MISSING:
                self._miss()
                return MISSING
        self._hit()
        return raw

    def _traced(self, full: str) -> Any:
        """``_lookup_slow``, logging the outcome per key on ``cachekit.trace`` (DEBUG)."""
        value = self._lookup_slow(full)
        trace_log.debug(
            "cachekit: %s %r in namespace %r",
            "miss" if value is MISSING else "hit",
            full,
            self.namespace,
            extra=self._fields("get"),
        )
        return value

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
        if (self._pending or self._pending_overflow) and self.breaker.open_until:
            # This call is the half-open probe: deliver the lost invalidations first,
            # so a recovered server never answers with a value this process dropped.
            self._replay_pending()
            if self.breaker.open_until:
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
        if self._decodes:
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
        loads = self._loads
        for full, raw in found.items():
            try:
                if loads is None:
                    if isinstance(raw, bytes) and raw.startswith(LEASE_MARK):
                        continue  # a load in progress: a miss
                    out[fulls[full]] = raw
                else:
                    out[fulls[full]] = loads(full, raw)
            except Exception:  # a lease, or a corrupt entry: counted and logged
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
        return ttl_seconds(ttl, self.policy.ttl)

    def _mark_flight(self, full: str) -> None:
        """Void a load of ``full`` in progress: its result may be older than this write."""
        if self._flights:
            # under the lock: a load stores (in process) only while holding it, so it
            # either sees this mark or finishes its store before this write's
            with self._flights_lock:
                flight = self._flights.get(full)
                if flight is not None:
                    flight.invalidated = True

    def _store(self, full: str, data: Any, ttl: float | None, lease: bytes | None = None) -> bool:
        """Write ``data``; with ``lease``, only over that lease (compare-and-set)."""
        if self.breaker.open_until and self._skip("set"):
            self._remember_invalidation((full,))
            return False
        with self._ordered((full,)) as go:
            if not go:
                return False
            try:
                if lease is None:
                    self.backend.set(full, data, ttl)
                elif not self.backend.compare_and_set(full, lease, data, ttl):  # type: ignore[attr-defined]
                    self._answered()  # the server answered (and may be the probe)
                    return False  # a write voided our lease meanwhile: it holds the newer value
            except (ValueTooLargeError, InvalidKeyError):
                raise
            except BackendRejectedError as exc:
                # the server refused this value and kept whatever it had: drop that too,
                # the source has moved on
                self._backend_error("set", exc)
                self._drop_quietly(full)
                return False
            except Exception as exc:
                # the server may still hold an older value: make sure it is dropped later
                self._remember_invalidation((full,))
                self._backend_error("set", exc)
                return False
            self._delivered((full,))
        self._c_sets.incr()
        if self.breaker.failures or self._pending:
            self._backend_ok()
        return True

    def _drop_quietly(self, full: str) -> None:
        """Delete ``full`` after a refused write; remember it if even that fails."""
        try:
            self.backend.delete(full)
        except BackendRejectedError as exc:
            self._backend_error("delete", exc, raise_strict=False)
        except Exception as exc:
            self._remember_invalidation((full,))
            self._backend_error("delete", exc, raise_strict=False)

    def set(self, key: str, value: Any, ttl: TTLLike = None) -> None:
        """Store ``value`` under ``key``; ``ttl`` ``None`` uses the policy's TTL.

        Raises ``SerializationError`` / ``ValueTooLargeError`` before touching
        the backend, so the previous entry stays as it was.
        """
        full = self._full(_checked(key))
        data = self._encode(value, full, key)
        seconds = self._ttl_seconds(ttl)
        self._mark_flight(full)
        if self._stale is not None:
            self._keep(full, value)  # the newest value, whether or not the backend took it
        self._store(full, data, seconds)

    def add(self, key: str, value: Any, ttl: TTLLike = None) -> bool:
        """Store ``value`` only if ``key`` is not cached; return whether it was stored."""
        full = self._full(_checked(key))
        data = self._encode(value, full, key)
        if self.breaker.open_until and self._skip("add"):
            return False
        seconds = self._ttl_seconds(ttl)
        with self._ordered((full,)) as go:
            if not go:
                return False
            if full in self._pending:
                # the server may still hold a value this process invalidated: it must
                # not make the add fail, so deliver that invalidation first
                self._replay_pending()
                if full in self._pending:
                    return False
            try:
                added = self.backend.add(full, data, seconds)
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
        encoded = {}
        for k, v in mapping.items():
            full = self._full(_checked(k))
            encoded[full] = self._encode(v, full, k)
        if not encoded:
            return
        seconds = self._ttl_seconds(ttl)
        for full in encoded:
            self._mark_flight(full)
        if self.breaker.open_until and self._skip("set_many"):
            self._remember_invalidation(encoded)
            return
        with self._ordered(encoded) as go:
            if not go:
                return
            try:
                self.backend.set_many(encoded, seconds)
            except ValueTooLargeError:
                raise
            except BackendRejectedError as exc:
                self._backend_error("set_many", exc)
                for full in encoded:
                    self._drop_quietly(full)
                return
            except Exception as exc:
                self._remember_invalidation(encoded)
                self._backend_error("set_many", exc)
                return
            self._delivered(encoded)
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
        if self._remote:
            self.backend.set(self._version_key, version.encode(), None)
        with self._ns.lock:
            old = self._ns.prefix
            self._ns.adopt(version)
            self._ns.check_at = self._timer() + self._check_interval
        if not self._remote and isinstance(self.backend, SupportsDropPrefix):
            self.backend.drop_prefix(old)  # free the old entries now, not when pushed out

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
                self._slow = True
                self._start_replayer()
            self._backend_error("clear", exc)

    # ------------------------------------------------------------ loading

    def _join(self, full: str, fresh: bool = False) -> tuple[_Flight, bool]:
        """Return the flight for ``full`` and whether this caller leads it.

        With ``fresh`` (``refresh``) a load in progress is voided and replaced.
        """
        with self._flights_lock:
            flight = self._flights.get(full)
            if (
                flight is not None
                and not flight.invalidated
                and not fresh
                and flight.thread == threading.get_ident()
            ):
                raise ReentrantLoadError(
                    f"the loader of {full!r} asked for its own key: it would wait on itself"
                )
            # A load that a write has voided may return a value older than that write:
            # a caller arriving now must not wait for it, but start a fresh load.
            if flight is not None and not flight.invalidated:
                if not fresh:
                    if flight.event is None:
                        flight.event = threading.Event()
                    return flight, False
                flight.invalidated = True
            flight = self._flights[full] = _Flight()
            return flight, True

    def _land(self, full: str, flight: _Flight) -> None:
        with self._flights_lock:
            if self._flights.get(full) is flight:  # a fresh load may have replaced ours
                del self._flights[full]
            event = flight.event  # no waiter can join once the flight is gone
        if event is not None:
            event.set()

    def _wait(self, flight: _Flight, loader: Callable[[], Any] | None = None) -> Any:
        """Wait for another caller's load; after ``lease_ttl`` s, load without it."""
        self._c_coalesced.incr()
        assert flight.event is not None  # set by _join for every waiter
        if not flight.event.wait(self.lease_ttl):
            # Never wait forever (a hung loader, or two loads waiting on each other
            # across threads): load ourselves, and store nothing, as the other load may.
            self._warn(
                "wait",
                "load",
                None,
                "cachekit: waited %.1f s for another load in namespace %r; loading without it",
                self.lease_ttl,
                self.namespace,
            )
            if loader is None:
                return MISSING
            return self._run_loader(loader)
        if flight.error is not None:
            raise flight.error
        return flight.value

    def _run_loader(self, loader: Callable[[], T]) -> T:
        """Call ``loader``, counting the load (or its failure) and its duration."""
        started = time.perf_counter()
        try:
            value = loader()
        except BaseException:
            self._c_load_failures.incr()
            raise
        self._c_loads.incr()
        self.load_duration.observe(time.perf_counter() - started)
        return value

    def _answered(self) -> None:
        """Note that the backend answered (it may have been the half-open probe)."""
        if self.breaker.failures or self.breaker.open_until or self._pending:
            self._backend_ok()

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
                self._answered()
                return token, False
            current = self.backend.get(full)
            self._answered()
            if current == RELEASED:
                # a load that gave up: take over its key (a compare-and-set, so a
                # write that got there first is kept)
                if self.backend.compare_and_set(full, RELEASED, token, self.lease_ttl):  # type: ignore[attr-defined]
                    return token, False
                return None, False
            if isinstance(current, bytes) and current.startswith(LEASE_MARK):
                return None, True
            # A corrupt entry (not a lease, not decodable): take its place, or the key
            # would never be cached again until it expired.
            if (
                isinstance(current, bytes)
                and self._undecodable(full, current)
                and self.backend.compare_and_set(full, current, token, self.lease_ttl)  # type: ignore[attr-defined]
            ):
                return token, False
        except Exception as exc:
            self._backend_error("lease", exc, raise_strict=False)
        return None, False

    def _take_over(self, full: str) -> bytes | None:
        """For ``refresh``: what the key holds now (or a new lease), to compare-and-set over.

        ``None`` when the backend failed or another caller got in first: then the
        refreshed value is not stored.
        """
        if self.breaker.open_until and not self.breaker.allow():
            return None
        try:
            current = self.backend.get(full)
            if current is MISSING:
                token = LEASE_MARK + secrets.token_hex(8).encode()
                current = token if self.backend.add(full, token, self.lease_ttl) else None
            self._answered()
        except Exception as exc:
            self._backend_error("lease", exc, raise_strict=False)
            return None
        return current if isinstance(current, bytes) else None

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

    def _load(self, full: str, loader: Callable[[], T], ttl: LoadTTL, fresh: bool = False) -> T:
        """Run ``loader`` once per key at a time; others wait for its result.

        The result is stored only if no write to the key happened meanwhile: over
        a lease (remote), or checked and stored under the flights lock (in process).
        With ``fresh`` (``refresh``) a load in progress is superseded and the value
        is stored over whatever the key held when the refresh started.
        """
        flight, leader = self._join(full, fresh)
        if not leader:
            return self._wait(flight, loader)  # type: ignore[no-any-return]
        try:
            # While the backend is failing, don't pay a second timeout for a lease or
            # a store: the value goes to the caller, the cache is skipped.
            failing = bool(self.breaker.failures)
            leased = self._leases and not failing
            lease: bytes | None = None
            if leased and fresh:
                lease = self._take_over(full)
            elif leased:
                lease, busy = self._take_lease(full)
                if busy and self.lease_wait:
                    # another process is loading this key: wait for its value, not the source
                    found = self._await_lease(full)
                    if found is not MISSING:
                        self._c_coalesced.incr()
                        flight.value = found
                        return found  # type: ignore[no-any-return]
                    lease, busy = self._take_lease(full)
            try:
                value = self._run_loader(loader)
            except BaseException as exc:
                if lease is not None:
                    self._release_lease(full, lease)  # waiters elsewhere load at once
                stale = self._stale_value(full) if isinstance(exc, Exception) else MISSING
                if stale is not MISSING:
                    self._warn(
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
                self._store_loaded(full, value, ttl, lease, flight)
            elif lease is not None:
                self._release_lease(full, lease)
            return value
        finally:
            self._land(full, flight)

    def _store_loaded(
        self, full: str, value: Any, ttl: LoadTTL, lease: bytes | None, flight: _Flight
    ) -> None:
        """Cache a loaded value unless a write voided its load; encode failures are logged.

        Over a lease the backend's compare-and-set decides; without one the check
        and the store happen under the flights lock, which every write takes to void
        a load, so no write can fall between them.
        """
        try:
            if callable(ttl):
                ttl = ttl(value)
            seconds = self._ttl_seconds(ttl)
            data = self._encode(value, full)
        except (SerializationError, ValueTooLargeError, ConfigurationError) as exc:
            self._error_counter("encode").incr()
            self._warn(
                "encode", "encode", exc, "cachekit: loaded value for %r not cached: %s", full, exc
            )
            if lease is not None:
                self._release_lease(full, lease)
            return
        try:
            if lease is not None:
                if self._store(full, data, seconds, lease) and self._stale is not None:
                    self._keep(full, value)
                return
            with self._flights_lock:
                if flight.invalidated:
                    return
                stored = self._store(full, data, seconds)
            if stored and self._stale is not None:
                self._keep(full, value)
        except (ValueTooLargeError, InvalidKeyError) as exc:
            self._error_counter("encode").incr()
            self._warn(
                "encode", "encode", exc, "cachekit: loaded value for %r not cached: %s", full, exc
            )
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
        try:
            for k in missing:
                flight, leader = self._join(fulls[k])
                (led if leader else waiting)[k] = flight
            if led:
                failing = bool(self.breaker.failures)
                leased = self._leases and not failing
                leases = {k: self._take_lease(fulls[k])[0] for k in led} if leased else {}
                try:
                    loaded = dict(self._run_loader(lambda: loader(list(led))))
                except BaseException as exc:
                    for flight in led.values():
                        flight.error = exc
                    for k, lease in leases.items():
                        if lease is not None:
                            self._release_lease(fulls[k], lease)  # others load at once
                    raise
                for k, flight in led.items():
                    lease = leases.get(k)
                    if k not in loaded:
                        flight.value = MISSING
                        if lease is not None:
                            self._release_lease(fulls[k], lease)
                        continue
                    value = flight.value = loaded[k]
                    found[k] = value
                    if not failing and not flight.invalidated and (lease is not None or not leased):
                        self._store_loaded(fulls[k], value, ttl, lease, flight)
                    elif lease is not None:
                        self._release_lease(fulls[k], lease)
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
        """Run ``loader`` now and store its result, unless a write to ``key`` overlaps it."""
        return self._load(self._full(_checked(key)), loader, ttl, fresh=True)

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
            entry = self._ns.writes.get(full)
            if entry is None:
                entry = self._ns.writes[full] = _KeyWrites()
            if entry.active:
                mine.conflict = True
                for other in entry.active:
                    other.conflict = True
            entry.active.append(mine)
        try:
            result = writer()
            with entry.step:
                if self.policy.stores_on_write and not mine.conflict:
                    try:
                        self.set(key, result, ttl)
                    except (SerializationError, ValueTooLargeError) as exc:
                        # the source already changed: never leave the old value behind
                        self._error_counter("encode").incr()
                        self._warn(
                            "encode",
                            "encode",
                            exc,
                            "cachekit: written value for %r not cached: %s",
                            key,
                            exc,
                        )
                        self.delete(key)
                    if mine.conflict:  # a write overlapped ours while we stored: undo
                        self.delete(key)
                else:
                    self.delete(key)
            return result
        finally:
            with self._flights_lock:
                entry.active.remove(mine)
                if not entry.active:
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
