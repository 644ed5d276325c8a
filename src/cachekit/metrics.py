"""Prometheus export: a collector that reads each cache's plain counters at scrape time.

Nothing here runs on the hot path. A ``Cache`` counts hits, misses, loads and
errors in lock-free integer counters (``cachekit.stats``); the collector
registered by ``register_prometheus`` turns them into metric families only
when Prometheus scrapes. One collector serves every cache of a registry, so
two caches never register clashing family names.

Multi-process servers (gunicorn): each worker calls
``start_multiprocess_export(cache)``, which copies its counters every second
into prometheus-client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``);
the process that serves ``/metrics`` sums them with ``MultiProcessCollector``.
That export lives in ``metrics_multiprocess``; import its names from here.
See ``docs/metrics.md``.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from .aio import AsyncCache
from .backends.base import Backend, SupportsEvictionCounts, SupportsServerStats
from .cache import Cache
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .metrics_multiprocess import MultiprocessExporter as MultiprocessExporter
    from .metrics_multiprocess import export_multiprocess as export_multiprocess
    from .metrics_multiprocess import start_multiprocess_export as start_multiprocess_export
    from .sqlalchemy.repository import CachedRepository

try:
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client import values as _prom_values
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.utils import floatToGoString
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ConfigurationError(
        "cachekit.metrics needs prometheus-client; install it with: "
        "pip install 'cachekit-py[prometheus]'"
    ) from exc

# prometheus-client's helpers are untyped; pin the signatures we rely on
_go_string: Callable[[float], str] = floatToGoString
_multi_process_value: Callable[[], Any] = _prom_values.MultiProcessValue

__all__ = [
    "MultiprocessExporter",
    "backend_label",
    "export_multiprocess",
    "register_prometheus",
    "serve_metrics",
    "start_multiprocess_export",
    "unregister_prometheus",
]

log = logging.getLogger("cachekit.metrics")

_LABELS = ("cache", "backend")

#: What can be exported: a ``Cache`` or ``AsyncCache``, or a ``CachedRepository``
#: (its own row counters).
Exported: TypeAlias = "Cache | AsyncCache | CachedRepository[Any]"


def _counted(target: Exported) -> Cache:
    """Return the ``Cache`` whose counters ``target`` exports: itself, or a repository's rows.

    A repository keeps its rows in a child cache of its own (namespace
    ``<cache namespace>/<table>``, the ``cache`` label of its series), whose
    counters are what ``repo.stats()`` returns.
    """
    if isinstance(target, (Cache, AsyncCache)):
        return target  # type: ignore[return-value]  # the same counters and attributes
    # a repository exists only if its module was imported: no SQLAlchemy import here
    repository = sys.modules.get("cachekit.sqlalchemy.repository")
    if repository is not None and isinstance(target, repository.RepositoryBase):  # sync or async
        rows: Cache = target.binding.rows
        return rows
    raise ConfigurationError(
        f"the metrics export needs a cachekit Cache, AsyncCache or CachedRepository, not {target!r}"
    )


# family name (counters without "_total") -> (type, help, extra label names)
_FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cachekit_hits": ("counter", "Lookups that found a live entry.", ()),
    "cachekit_misses": ("counter", "Lookups that found nothing (incl. backend down).", ()),
    "cachekit_loads": ("counter", "Loader runs that returned a value.", ()),
    "cachekit_load_failures": ("counter", "Loader runs that raised.", ()),
    "cachekit_evictions": (
        "counter",
        "Entries removed: capacity and expired where the backend can tell, "
        "invalidated by delete/evicts.",
        ("reason",),
    ),
    "cachekit_errors": ("counter", "Backend and codec failures, by operation.", ("operation",)),
    "cachekit_stale_served": ("counter", "Stale values served because the backend failed.", ()),
    "cachekit_coalesced": ("counter", "Callers that waited for another caller's load.", ()),
    "cachekit_stale_revalidated": (
        "counter",
        "Hits past expiry answered with the old value while it reloads (stale-while-revalidate).",
        (),
    ),
    "cachekit_refreshes": (
        "counter",
        "Background reloads (early refresh, stale-while-revalidate) by outcome; "
        "skipped = the background queue was full.",
        ("outcome",),
    ),
    "cachekit_circuit_open": ("gauge", "1 while the circuit breaker skips the backend.", ()),
}
_DURATION = "cachekit_load_duration_seconds"
_DURATION_HELP = "Duration of successful loader runs."

# server_stats() key -> family; these count the whole server, not one namespace
_SERVER_FAMILIES: dict[str, tuple[str, str]] = {
    "evictions": (
        "cachekit_server_evictions",
        "Keys the server evicted for memory (whole server, all namespaces and clients).",
    ),
    "expired": (
        "cachekit_server_expired",
        "Keys the server expired (whole server, all namespaces and clients).",
    ),
    "hits": (
        "cachekit_server_hits",
        "Server-side lookup hits (whole server, all namespaces and clients).",
    ),
    "misses": (
        "cachekit_server_misses",
        "Server-side lookup misses (whole server, all namespaces and clients).",
    ),
}
_SERVER_ERRORS = (
    "cachekit_server_stats_errors",
    "Scrapes whose server_stats() call failed or timed out (those families were skipped).",
)
_SERVER_LABELS = ("backend", "server")


def backend_label(backend: Backend) -> str:
    """Return the short ``backend`` label: ``MemoryBackend`` -> ``memory``, ``RedisClusterBackend`` -> ``redis-cluster``."""  # noqa: E501
    name = type(backend).__name__
    if name.endswith("Backend") and len(name) > len("Backend"):
        name = name[: -len("Backend")]
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _server_label(backend: Backend) -> str | None:
    """The server address a backend reports, credentials removed; None if it reports none."""
    for attr in ("server_address", "url", "address"):
        value = getattr(backend, attr, None)
        if isinstance(value, str) and value:
            parts = urlsplit(value)
            if parts.scheme and "@" in parts.netloc:
                value = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
            return value
    return None


# ---------------------------------------------------------------- reading one cache


def _samples(cache: Cache) -> Iterator[tuple[str, tuple[str, ...], float]]:
    """Yield ``(family, extra label values, value)`` for one cache, read now."""
    st = cache.stats()
    yield "cachekit_hits", (), st.hits
    yield "cachekit_misses", (), st.misses
    yield "cachekit_loads", (), st.loads
    yield "cachekit_load_failures", (), st.load_failures
    # A remote backend cannot tell capacity from expiry per namespace: no made-up zeros.
    if isinstance(cache.backend, SupportsEvictionCounts):
        yield "cachekit_evictions", ("capacity",), st.evictions_capacity
        yield "cachekit_evictions", ("expired",), st.evictions_expired
    yield "cachekit_evictions", ("invalidated",), st.evictions_invalidated
    for operation, count in sorted(st.errors_by_operation.items()):
        yield "cachekit_errors", (operation,), count
    yield "cachekit_stale_served", (), st.stale_served
    yield "cachekit_coalesced", (), st.coalesced
    yield "cachekit_stale_revalidated", (), st.stale_revalidated
    yield "cachekit_refreshes", ("started",), st.refreshes_started
    yield "cachekit_refreshes", ("completed",), st.refreshes_completed
    yield "cachekit_refreshes", ("failed",), st.refreshes_failed
    yield "cachekit_refreshes", ("skipped",), st.refreshes_skipped
    yield "cachekit_circuit_open", (), 1.0 if st.circuit_open else 0.0


class _ServerStats:
    """``server_stats()`` of one backend, read with a timeout and cached for ``ttl`` seconds."""

    def __init__(
        self, backend: SupportsServerStats, ttl: float, timeout: float, timer: Callable[[], float]
    ) -> None:
        self._backend = backend
        self._ttl = ttl
        self._timeout = timeout
        self._timer = timer
        self._lock = threading.Lock()
        self._value: dict[str, float] | None = None
        self._fresh_until = float("-inf")
        # a call that outlived its timeout: later scrapes wait for it instead of piling up threads
        self._running: tuple[threading.Thread, list[Any]] | None = None
        self.calls = 0
        self.failures = 0

    def read(self) -> dict[str, float] | None:
        """Return the cached figures, fetching them if older than ``ttl``; None after a failure."""
        with self._lock:
            if self._timer() < self._fresh_until:
                return self._value
            self._value = self._fetch()
            # failures are cached too, so a dead server is not probed on every scrape
            self._fresh_until = self._timer() + self._ttl
            return self._value

    def _fetch(self) -> dict[str, float] | None:
        if self._running is None:
            box: list[Any] = []
            thread = threading.Thread(
                target=self._call, args=(box,), name="cachekit-server-stats", daemon=True
            )
            self.calls += 1
            thread.start()
            self._running = (thread, box)
        thread, box = self._running
        thread.join(self._timeout)
        if thread.is_alive():
            self.failures += 1
            log.warning("cachekit: server_stats() took over %.2fs; skipped", self._timeout)
            return None
        self._running = None
        ok, result = box[0]
        if not ok:
            self.failures += 1
            log.warning("cachekit: server_stats() failed; skipped: %s", result)
            return None
        try:
            return {k: float(v) for k, v in result.items() if k in _SERVER_FAMILIES}
        except (AttributeError, TypeError, ValueError) as exc:
            self.failures += 1
            log.warning("cachekit: server_stats() returned %r; skipped: %s", result, exc)
            return None

    def _call(self, box: list[Any]) -> None:
        try:
            box.append((True, self._backend.server_stats()))
        except Exception as exc:
            box.append((False, exc))


class _Entry:
    """A registered cache with its labels and, if its backend has one, its server reader."""

    __slots__ = ("backend", "cache", "server", "server_stats")

    def __init__(self, cache: Cache, server: str, server_stats: _ServerStats | None) -> None:
        self.cache = cache
        self.backend = backend_label(cache.backend)
        self.server = server
        self.server_stats = server_stats


class _CachekitCollector:
    """The one collector per registry that reads every registered cache at scrape time."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def add(self, cache: Cache, ttl: float, timeout: float, timer: Callable[[], float]) -> None:
        with self._lock:
            for entry in self._entries.values():
                if entry.cache is cache:
                    raise ConfigurationError(
                        f"cache namespace {cache.namespace!r} is already registered "
                        "with this Prometheus registry"
                    )
            if cache.namespace in self._entries:
                raise ConfigurationError(
                    f"another cache with namespace {cache.namespace!r} is already registered "
                    "with this Prometheus registry; namespaces label the series, so they must "
                    "be unique per registry (unregister_prometheus the old one first)"
                )
            self._entries[cache.namespace] = self._entry(cache, ttl, timeout, timer)

    def _entry(
        self, cache: Cache, ttl: float, timeout: float, timer: Callable[[], float]
    ) -> _Entry:
        backend = cache.backend
        kind = backend_label(backend)
        server = _server_label(backend) or kind
        if not isinstance(backend, SupportsServerStats) or inspect.iscoroutinefunction(
            backend.server_stats
        ):
            # an async driver's server_stats() cannot be awaited at scrape time
            return _Entry(cache, server, None)
        taken: set[str] = set()
        for entry in self._entries.values():
            if entry.cache.backend is backend:  # one reader per backend object
                return _Entry(cache, entry.server, entry.server_stats)
            if entry.server_stats is not None and entry.backend == kind:
                taken.add(entry.server)
        if server in taken:  # two backend objects that do not report an address
            n = 2
            while f"{server}-{n}" in taken:
                n += 1
            server = f"{server}-{n}"
        return _Entry(cache, server, _ServerStats(backend, ttl, timeout, timer))

    def remove(self, cache: Cache) -> bool:
        with self._lock:
            entry = self._entries.get(cache.namespace)
            if entry is None or entry.cache is not cache:
                return False
            del self._entries[cache.namespace]
            return True

    def __len__(self) -> int:
        return len(self._entries)

    def describe(self) -> Iterable[Metric]:
        """Name every family, so the registry catches a clash with another collector."""
        yield from _empty_families()

    def collect(self) -> Iterable[Metric]:
        """Read every registered cache now and yield the families that have samples."""
        with self._lock:
            entries = sorted(self._entries.items())
        families = _empty_families()
        by_name: dict[str, Any] = {f.name: f for f in families}
        servers: dict[tuple[str, str], _Entry] = {}
        for namespace, entry in entries:
            labels = [namespace, entry.backend]
            for name, extra, value in _samples(entry.cache):
                by_name[name].add_metric([*labels, *extra], value)
            counts, total = entry.cache.load_duration.snapshot()
            by_name[_DURATION].add_metric(
                labels, _cumulative(entry.cache.load_duration.buckets, counts), total
            )
            if entry.server_stats is not None:
                servers.setdefault((entry.backend, entry.server), entry)
        for key, entry in sorted(servers.items()):
            assert entry.server_stats is not None
            figures = entry.server_stats.read()
            for stat, value in sorted((figures or {}).items()):
                by_name[_SERVER_FAMILIES[stat][0]].add_metric(list(key), value)
            by_name[_SERVER_ERRORS[0]].add_metric(list(key), entry.server_stats.failures)
        return [f for f in families if f.samples]


def _empty_families() -> list[Metric]:
    families: list[Metric] = []
    for name, (typ, doc, extra) in _FAMILIES.items():
        cls = CounterMetricFamily if typ == "counter" else GaugeMetricFamily
        families.append(cls(name, doc, labels=[*_LABELS, *extra]))
    families.append(HistogramMetricFamily(_DURATION, _DURATION_HELP, labels=list(_LABELS)))
    for name, doc in [*_SERVER_FAMILIES.values(), _SERVER_ERRORS]:
        families.append(CounterMetricFamily(name, doc, labels=list(_SERVER_LABELS)))
    return families


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Turn per-bucket counts (+Inf last) into Prometheus' cumulative ``le`` buckets."""
    out: list[tuple[str, float]] = []
    acc = 0
    for bound, count in zip([*bounds, float("inf")], counts, strict=True):
        acc += count
        out.append((_go_string(bound), acc))
    return out


# ---------------------------------------------------------------- public registration

_COLLECTORS: dict[int, tuple[CollectorRegistry, _CachekitCollector]] = {}
_COLLECTORS_LOCK = threading.Lock()


def register_prometheus(
    cache: Exported,
    registry: CollectorRegistry | None = None,
    *,
    server_stats_ttl: float = 5.0,
    server_stats_timeout: float = 0.5,
    timer: Callable[[], float] = time.monotonic,
) -> None:
    """Export the counters of a cache or repository to ``registry`` (default: ``REGISTRY``).

    A ``CachedRepository`` exports its own row counters (``repo.stats()``) under
    the label ``cache="<cache namespace>/<table>"``; two repositories of one
    model over one cache share those counters, so only one of them is registered.

    Raises ``ConfigurationError`` if this cache, or another cache with the same
    namespace, is already registered there, or if the registry already holds
    other metrics with cachekit's family names. ``server_stats_ttl`` (seconds on
    ``timer``) and ``server_stats_timeout`` apply to backends with
    ``server_stats()``; the first cache registered over a backend sets them.
    The registry keeps the cache alive until ``unregister_prometheus``.
    """
    cache = _counted(cache)
    if server_stats_ttl < 0 or server_stats_timeout <= 0:
        raise ConfigurationError("server_stats_ttl must be >= 0 and server_stats_timeout > 0")
    reg = REGISTRY if registry is None else registry
    with _COLLECTORS_LOCK:
        found = _COLLECTORS.get(id(reg))
        if found is None:
            collector = _CachekitCollector()
            collector.add(cache, server_stats_ttl, server_stats_timeout, timer)
            try:
                reg.register(collector)
            except ValueError as exc:  # DuplicateTimeseries is a ValueError
                raise ConfigurationError(
                    "this Prometheus registry already has metrics named like cachekit's "
                    f"families ({exc}); register caches only through register_prometheus"
                ) from exc
            _COLLECTORS[id(reg)] = (reg, collector)
        else:
            found[1].add(cache, server_stats_ttl, server_stats_timeout, timer)


def unregister_prometheus(cache: Exported, registry: CollectorRegistry | None = None) -> bool:
    """Stop exporting a cache or repository to ``registry``; return whether it was registered."""
    reg = REGISTRY if registry is None else registry
    cache = _counted(cache)
    with _COLLECTORS_LOCK:
        found = _COLLECTORS.get(id(reg))
        if found is None or not found[1].remove(cache):
            return False
        if not len(found[1]):
            reg.unregister(found[1])
            del _COLLECTORS[id(reg)]
        return True


def serve_metrics(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> tuple[Any, threading.Thread]:
    """Serve ``registry`` on ``http://addr:port/metrics`` from a daemon thread; return ``(server, thread)``."""  # noqa: E501
    reg = REGISTRY if registry is None else registry
    try:
        server, thread = start_http_server(port, addr=addr, registry=reg)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve metrics on {addr}:{port}: {exc}") from exc
    return server, thread


# ---------------------------------------------------------------- multi-process mode

# The export itself is in metrics_multiprocess; the value class it writes with is
# chosen here, next to the guarded prometheus-client import it comes from.
_VALUE_CLASS: Any = None


def _value_class() -> Any:
    """The mmap-backed value class to write with; shared with prometheus-client's own metrics."""
    global _VALUE_CLASS
    if _VALUE_CLASS is None:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            raise ConfigurationError(
                "multiprocess export needs PROMETHEUS_MULTIPROC_DIR set to a writable directory "
                "(the same one the /metrics process reads with MultiProcessCollector)"
            )
        # Two value classes must never open the same per-pid file: reuse the
        # library's own when it was imported in multiprocess mode.
        cls = _prom_values.ValueClass
        _VALUE_CLASS = cls if getattr(cls, "_multiprocess", False) else (_multi_process_value())
    return _VALUE_CLASS


_MULTIPROCESS = frozenset(
    ("MultiprocessExporter", "export_multiprocess", "start_multiprocess_export")
)


def __getattr__(name: str) -> Any:
    # The multiprocess export lives in metrics_multiprocess, which reads this module's
    # families: its names stay importable from here, the module loaded on first use.
    if name in _MULTIPROCESS:
        from . import metrics_multiprocess

        return getattr(metrics_multiprocess, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
