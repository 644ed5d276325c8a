"""Generated from ``_async/state.py`` by ``scripts/unasync.py``: do not edit.

An async cache's configuration and state: what every other part of it reads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from cachetools import LRUCache

from ..backends.base import Backend
from ..core.cells import namespace_for
from ..core.logs import Logs, trace_log
from ..core.stale import StaleValues
from ..errors import ConfigurationError
from ..policies import CacheAside, Policy, TTLLike
from ..resilience import CircuitBreaker
from ..serializers import JsonSerializer, KeyBoundSerializer, PassthroughSerializer, Serializer
from ..stats import Counter, Histogram
from .primitives import IS_ASYNC, Background, Lock

__all__ = ["State"]

#: Every live cache of this kind, so a forked child can renew their locks.
_LIVE: weakref.WeakSet[State] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for state in list(_LIVE):
        state._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class State:
    """The configuration, counters and shared tables of one cache (no behaviour)."""

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
            raise ConfigurationError(
                f"backend must be a cachekit {Backend.__name__}, not {backend!r}"
            )
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

        # Serve-stale (off unless asked for): the last good value this process saw
        # per key, served for up to ``stale_ttl`` s when the backend or the loader fails.
        if stale_ttl < 0 or stale_maxsize < 1:
            raise ConfigurationError("stale_ttl must be >= 0 and stale_maxsize >= 1")
        self.stale_ttl = stale_ttl
        self._stale_maxsize = stale_maxsize
        self._stale = StaleValues(stale_ttl, stale_maxsize, timer) if stale_ttl else None

        # Per-key tracing is decided once: checking the logger on every hit would cost
        # a tenth of an in-process hit.
        self._trace = trace_log.isEnabledFor(logging.DEBUG)
        # True while reads must take the careful path: a remote backend (its
        # namespace version is re-checked), serve-stale, tracing, failures, or
        # pending invalidations.
        self._careful = self._remote or self._stale is not None or self._trace
        self._slow = self._careful
        self._logs = Logs(namespace, backend.server_address or type(backend).__name__)

        # counters: hot-path increments are single C calls
        self._c_hits, self._c_misses = Counter(), Counter()
        self._c_loads, self._c_load_failures = Counter(), Counter()
        self._c_coalesced, self._c_sets, self._c_deletes = Counter(), Counter(), Counter()
        self._c_invalidated, self._c_stale = Counter(), Counter()
        self._c_revalidated, self._c_refresh_started = Counter(), Counter()
        self._c_refresh_done, self._c_refresh_failed = Counter(), Counter()
        self._c_refresh_skipped = Counter()
        self._errors: dict[str, Counter] = {}
        self._hit, self._miss = self._c_hits.incr, self._c_misses.incr
        self.load_duration = Histogram()

        # invalidations that could not be delivered, replayed once the backend answers
        self._pending: dict[str, None] = {}
        self._pending_overflow = False
        # guards _pending (never held across I/O, so a threading lock suits both kinds)
        self._pending_lock = threading.Lock()
        # held while a replay deletes: a write to a pending key waits for it, so a
        # replay can never remove a value written after the invalidation it delivers
        self._replay_lock = Lock()
        self._replayer: Any = None
        self._closed = False
        # freshness: expiries are wall-clock times every process agrees on (or the
        # injected timer, in tests); background reloads run here, one per key at a time
        self._wall = time.time if timer is time.monotonic else timer
        self._background = Background()
        self._reloading: set[str] = set()
        # per key, the expiry of the newest entry a reload was started for: readers still
        # holding that entry (or an older one) must not start another
        self._reloaded: LRUCache[str, float] = LRUCache(4096)
        self._incident = False
        self._replay_after = 0.0

        # one namespace version per store
        # (an in-process async driver wraps a MemoryBackend: caches over either share it)
        store = getattr(backend, "backend", backend) if backend.local else backend
        self._ns = namespace_for(store, namespace)
        tables = self._tables = self._ns.tables(IS_ASYNC, Lock)
        self._flights = tables.flights
        self._flights_lock = tables.flights_lock
        self._writes = tables.writes
        self._refresh_lock = tables.refresh_lock
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
        self._leases = self._remote and hasattr(backend, "compare_and_set")
        self._version_key = f"ck:{len(namespace)}:{namespace}:v"
        if not self._remote and not self._ns.prefix:
            # In process, the shared cell is the only view there is: no record in the
            # store (it would take a slot and be counted when pushed out).
            self._ns.adopt(self._new_version())
        _LIVE.add(self)

    def _after_fork(self) -> None:
        """In a forked child: renew the locks (another parent thread may have held one).

        The pending invalidations stay: the child delivers them too (harmless).
        """
        self._pending_lock = threading.Lock()
        self._replay_lock = Lock()
        self._replayer = None
        # the shared tables were renewed first (their hook was registered earlier)
        self._flights_lock = self._tables.flights_lock
        self._refresh_lock = self._tables.refresh_lock
        self.breaker.reset_lock()
        if self._stale is not None:
            self._stale.reset_lock()

    @staticmethod
    def _new_version() -> str:
        import secrets

        return secrets.token_hex(4)

    def reloads_pending(self) -> bool:
        """Whether background reloads (early refresh, stale-while-revalidate) are running."""
        return bool(self._reloading)

    def _error_counter(self, operation: str) -> Counter:
        c = self._errors.get(operation)
        if c is None:
            c = self._errors.setdefault(operation, Counter())
        return c
