"""OpenTelemetry: a cache's counters as observable instruments, and spans around loads.

The instruments are *observable*: the SDK calls them back at collection time,
and they read ``cache.stats()`` then, exactly as the Prometheus collector does
(``cachekit.metrics``). Nothing is added to the hot path. One set of
instruments per meter provider serves every registered cache; each series is
labelled ``cache`` (the namespace) and ``backend``, as in Prometheus.

OpenTelemetry has no asynchronous histogram, so the load-duration histogram is
exported as its parts (``cachekit.load.duration.count``, ``.sum`` and the
cumulative ``.bucket`` counts labelled ``le``), the values of Prometheus'
``cachekit_load_duration_seconds_count``, ``_sum`` and ``_bucket``.

Needs ``opentelemetry-api`` (and an SDK to export): ``pip install 'cachekit-py[otel]'``.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from ..aio import AsyncCache
from ..backends.base import Backend, SupportsEvictionCounts
from ..cache import Cache
from ..errors import ConfigurationError

try:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ConfigurationError(
        "cachekit.contrib.otel needs opentelemetry-api; install it with: "
        "pip install 'cachekit-py[otel]'"
    ) from exc

if TYPE_CHECKING:
    from ..sqlalchemy.aio import AsyncCachedRepository
    from ..sqlalchemy.repository import CachedRepository

__all__ = ["register_otel", "traced", "unregister_otel"]

F = TypeVar("F", bound=Callable[..., Any])

#: What can be exported: a cache, or a repository (its own row counters).
Exported: TypeAlias = "Cache | AsyncCache | CachedRepository[Any] | AsyncCachedRepository[Any]"

_SCOPE = "cachekit"

# instrument name -> (kind, unit, description); every one is read from Stats at collection
_INSTRUMENTS: dict[str, tuple[str, str, str]] = {
    "cachekit.hits": ("counter", "{lookup}", "Lookups that found a live entry."),
    "cachekit.misses": ("counter", "{lookup}", "Lookups that found nothing (incl. backend down)."),
    "cachekit.loads": ("counter", "{load}", "Loader runs that returned a value."),
    "cachekit.load_failures": ("counter", "{load}", "Loader runs that raised."),
    "cachekit.evictions": (
        "counter",
        "{entry}",
        "Entries removed, by reason: capacity and expired where the backend can tell, "
        "invalidated by delete/evicts.",
    ),
    "cachekit.errors": ("counter", "{error}", "Backend and codec failures, by operation."),
    "cachekit.stale_served": (
        "counter",
        "{lookup}",
        "Stale values served because the backend failed.",
    ),
    "cachekit.coalesced": ("counter", "{call}", "Callers that waited for another caller's load."),
    "cachekit.stale_revalidated": (
        "counter",
        "{lookup}",
        "Hits past expiry answered with the old value while it reloads (stale-while-revalidate).",
    ),
    "cachekit.refreshes": (
        "counter",
        "{load}",
        "Background reloads (early refresh, stale-while-revalidate) by outcome; "
        "skipped = the background queue was full.",
    ),
    "cachekit.circuit_open": ("gauge", "1", "1 while the circuit breaker skips the backend."),
    "cachekit.load.duration.count": ("counter", "{load}", "Successful loader runs timed."),
    "cachekit.load.duration.sum": ("counter", "s", "Total duration of successful loader runs."),
    "cachekit.load.duration.bucket": (
        "counter",
        "{load}",
        "Successful loader runs that took at most `le` seconds (cumulative).",
    ),
}


def _backend_label(backend: Backend) -> str:
    """``MemoryBackend`` -> ``memory``, ``RedisClusterBackend`` -> ``redis-cluster`` (as Prometheus)."""  # noqa: E501
    name = type(backend).__name__
    if name.endswith("Backend") and len(name) > len("Backend"):
        name = name[: -len("Backend")]
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _counted(target: Exported) -> Cache:
    """The cache whose counters ``target`` exports: itself, or a repository's rows."""
    if isinstance(target, (Cache, AsyncCache)):
        return target  # type: ignore[return-value]  # the same counters and attributes
    # a repository (sync or async) exists only if its module was imported: no SQLAlchemy here
    repository = sys.modules.get("cachekit.sqlalchemy.repository")
    if repository is not None and isinstance(target, repository.RepositoryBase):
        rows: Cache = target.binding.rows
        return rows
    raise ConfigurationError(
        f"the OpenTelemetry export needs a cachekit Cache, AsyncCache or CachedRepository, "
        f"not {target!r}"
    )


def _format_bound(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``0.5``, ``10.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _Exporter:
    """The instruments of one meter provider and the caches they read."""

    def __init__(self, provider: MeterProvider) -> None:
        from .. import __version__

        self.provider = provider
        self._caches: dict[str, Cache] = {}
        self._lock = threading.Lock()
        meter = provider.get_meter(_SCOPE, __version__)
        self.instruments = []
        for name, (kind, unit, doc) in _INSTRUMENTS.items():
            create = (
                meter.create_observable_counter
                if kind == "counter"
                else meter.create_observable_gauge
            )
            self.instruments.append(
                create(name, callbacks=[self._callback(name)], unit=unit, description=doc)
            )

    def add(self, cache: Cache) -> None:
        with self._lock:
            if cache.namespace in self._caches:
                other = self._caches[cache.namespace] is not cache
                raise ConfigurationError(
                    f"{'another cache with ' if other else 'cache '}namespace "
                    f"{cache.namespace!r} is already registered with this meter provider; "
                    "namespaces label the series, so they must be unique per provider"
                )
            self._caches[cache.namespace] = cache

    def remove(self, cache: Cache) -> bool:
        with self._lock:
            if self._caches.get(cache.namespace) is not cache:
                return False
            del self._caches[cache.namespace]
            return True

    def _callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                caches = sorted(self._caches.items())
            return [
                Observation(value, attributes)
                for _, cache in caches
                for value, attributes in _read(name, cache)
            ]

        return observe


def _read(name: str, cache: Cache) -> Iterator[tuple[float, dict[str, str]]]:
    """The values of instrument ``name`` for one cache, read now."""
    labels = {"cache": cache.namespace, "backend": _backend_label(cache.backend)}
    if name.startswith("cachekit.load.duration."):
        counts, total = cache.load_duration.snapshot()
        if name.endswith(".count"):
            yield sum(counts), labels
        elif name.endswith(".sum"):
            yield total, labels
        else:
            acc = 0
            for bound, count in zip(
                [*cache.load_duration.buckets, float("inf")], counts, strict=True
            ):
                acc += count
                yield acc, {**labels, "le": _format_bound(bound)}
        return
    st = cache.stats()
    if name == "cachekit.evictions":
        # a remote backend cannot tell capacity from expiry per namespace: no made-up zeros
        if isinstance(cache.backend, SupportsEvictionCounts):
            yield st.evictions_capacity, {**labels, "reason": "capacity"}
            yield st.evictions_expired, {**labels, "reason": "expired"}
        yield st.evictions_invalidated, {**labels, "reason": "invalidated"}
    elif name == "cachekit.errors":
        for operation, count in sorted(st.errors_by_operation.items()):
            yield count, {**labels, "operation": operation}
    elif name == "cachekit.refreshes":
        for outcome in ("started", "completed", "failed", "skipped"):
            yield getattr(st, f"refreshes_{outcome}"), {**labels, "outcome": outcome}
    elif name == "cachekit.circuit_open":
        yield (1 if st.circuit_open else 0), labels
    else:
        yield getattr(st, name.removeprefix("cachekit.")), labels


_EXPORTERS: dict[int, _Exporter] = {}
_EXPORTERS_LOCK = threading.Lock()


def register_otel(
    cache: Exported,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Export a cache's (or repository's) counters through ``meter_provider`` (default: global).

    Raises ``ConfigurationError`` if this cache, or another with the same
    namespace, is already registered with that provider. The provider keeps
    the cache alive until ``unregister_otel``.
    """
    counted = _counted(cache)
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _EXPORTERS_LOCK:
        exporter = _EXPORTERS.get(id(provider))
        if exporter is None or exporter.provider is not provider:
            exporter = _EXPORTERS[id(provider)] = _Exporter(provider)
        exporter.add(counted)


def unregister_otel(
    cache: Exported,
    meter_provider: MeterProvider | None = None,
) -> bool:
    """Stop exporting a cache or repository; return whether it was registered.

    Its series stop being reported at the next collection; the instruments
    stay (OpenTelemetry cannot remove them) and report the other caches.
    """
    counted = _counted(cache)
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _EXPORTERS_LOCK:
        exporter = _EXPORTERS.get(id(provider))
        return exporter is not None and exporter.provider is provider and exporter.remove(counted)


# ---------------------------------------------------------------- spans


def traced(
    func: F | None = None,
    *,
    name: str | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Any:
    """Wrap a loader (plain or ``async``) so that every run is a span.

    ``@traced`` under ``@cache.cached`` traces the loads only (a hit never
    calls the function); ``cache.get_or_load(key, traced(loader))`` likewise.
    The span is named ``name`` (default ``cachekit.load <qualified name>``);
    a loader that raises records the exception and an error status.
    """

    def decorate(fn: F) -> F:
        tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        label = name or f"cachekit.load {getattr(fn, '__qualname__', repr(fn))}"
        attributes = {"code.function": getattr(fn, "__qualname__", repr(fn))}
        if inspect.iscoroutinefunction(inspect.unwrap(fn)):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with tracer.start_as_current_span(label, attributes=attributes):
                    return await fn(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            span = tracer.start_span(label, attributes=attributes)
            try:
                with trace.use_span(span, end_on_exit=False):
                    result = fn(*args, **kwargs)
            except BaseException:
                span.end()
                raise
            if inspect.isawaitable(result):  # e.g. ``lambda: fetch(key)``: time the await too
                return _finish(span, result)
            span.end()
            return result

        return run  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


async def _finish(span: trace.Span, awaitable: Awaitable[Any]) -> Any:
    with trace.use_span(span, end_on_exit=True):
        return await awaitable
