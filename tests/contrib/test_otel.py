"""OpenTelemetry export: observable instruments equal cache.stats() and the Prometheus export."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import cachekit as ck
from cachekit.contrib.otel import register_otel, traced, unregister_otel
from cachekit.metrics import backend_label, register_prometheus
from cachekit.sqlalchemy import AsyncCachedRepository, CachedRepository
from tests.conftest import FakeClock


class Base(DeclarativeBase):
    pass


class Pet(Base):
    __tablename__ = "otel_pets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(20))


Points = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def collect(reader: InMemoryMetricReader) -> Points:
    """Every data point read now, as ``{(name, sorted attributes): value}``."""
    data = reader.get_metrics_data()
    out: Points = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "cachekit"
            for metric in sm.metrics:
                for point in metric.data.data_points:  # type: ignore[union-attr]
                    attrs = tuple(sorted((k, str(v)) for k, v in point.attributes.items()))
                    out[(metric.name, attrs)] = point.value  # type: ignore[union-attr]
    return out


def of(points: Points, namespace: str) -> Points:
    """The points of one cache, without its ``cache`` and ``backend`` attributes."""
    out: Points = {}
    for (name, attrs), value in points.items():
        d = dict(attrs)
        if d.pop("cache") == namespace:
            d.pop("backend")
            out[(name, tuple(sorted(d.items())))] = value
    return out


def prometheus_view(registry: CollectorRegistry, namespace: str) -> Points:
    """The Prometheus export of one cache, renamed to the OpenTelemetry instruments."""
    out: Points = {}
    for family in registry.collect():
        for s in family.samples:
            labels = dict(s.labels)
            if labels.pop("cache", None) != namespace:
                continue
            labels.pop("backend")
            name = s.name.removesuffix("_total")
            if name.startswith("cachekit_load_duration_seconds"):
                name = "cachekit.load.duration." + name.rsplit("_", 1)[1]
            elif name.startswith("cachekit_"):
                name = "cachekit." + name.removeprefix("cachekit_")
            if s.name.endswith("_created"):
                continue
            out[(name, tuple(sorted(labels.items())))] = s.value
    return out


def assert_same_as_prometheus(points: Points, prom: Points) -> None:
    """Each Prometheus sample is an OpenTelemetry point of equal value, and nothing else differs."""
    assert len(prom) > 20
    assert {k: points.get(k) for k in prom} == prom
    # the only points Prometheus may lack are families newer than its collector
    newer = {"cachekit.refreshes", "cachekit.stale_revalidated"}
    assert {name for name, _ in set(points) - set(prom)} <= newer


def exercise(cache: ck.Cache, clock: FakeClock) -> None:
    """Hits, misses, loads, a load failure, evictions of every reason, a decode error."""
    cache.set("a", 1)
    cache.get("a")
    cache.get("nope")
    cache.get_or_load("l", lambda: 2)
    cache.get_or_load("l", lambda: 3)

    def boom() -> int:
        raise RuntimeError("source down")

    with pytest.raises(RuntimeError):
        cache.get_or_load("f", boom)
    cache.delete("a")
    for i in range(5):  # maxsize=3: capacity evictions
        cache.set(f"c{i}", i)
    cache.set("short", 1, ttl=1)
    clock.advance(2)
    cache.get("short")  # expired
    cache.backend.set(cache.full_key("bad"), b"\xff not json", None)
    cache.get("bad")  # a decode error


def test_values_equal_stats_and_prometheus(clock: FakeClock, namespace: str) -> None:
    cache = ck.Cache.from_url(
        "memory://?maxsize=3&serializer=json", namespace=namespace, timer=clock
    )
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry()
    register_otel(cache, provider)
    register_prometheus(cache, registry)
    exercise(cache, clock)

    st = cache.stats()
    points = of(collect(reader), namespace)
    assert points[("cachekit.hits", ())] == st.hits == 2
    assert points[("cachekit.misses", ())] == st.misses
    assert points[("cachekit.loads", ())] == st.loads == 1
    assert points[("cachekit.load_failures", ())] == st.load_failures == 1
    assert points[("cachekit.coalesced", ())] == st.coalesced == 0
    assert points[("cachekit.stale_served", ())] == 0
    assert points[("cachekit.circuit_open", ())] == 0
    assert points[("cachekit.evictions", (("reason", "capacity"),))] == st.evictions_capacity
    assert st.evictions_capacity >= 1
    assert points[("cachekit.evictions", (("reason", "expired"),))] == st.evictions_expired == 1
    assert points[("cachekit.evictions", (("reason", "invalidated"),))] == 1
    assert points[("cachekit.errors", (("operation", "decode"),))] == 1
    assert st.errors_by_operation == {"decode": 1}
    assert points[("cachekit.load.duration.count", ())] == 1
    assert points[("cachekit.load.duration.bucket", (("le", "+Inf"),))] == 1
    assert points[("cachekit.stale_revalidated", ())] == st.stale_revalidated
    for outcome in ("started", "completed", "failed", "skipped"):
        key = ("cachekit.refreshes", (("outcome", outcome),))
        assert points[key] == getattr(st, f"refreshes_{outcome}")
    # every Prometheus sample has its OpenTelemetry point, with the same value
    assert_same_as_prometheus(points, prometheus_view(registry, namespace))
    provider.shutdown()


def test_async_cache_and_coalesced_loads(namespace: str, redis_url: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry()

    backend: Any = None

    async def main() -> ck.Stats:
        nonlocal backend
        acache = ck.AsyncCache.from_url(redis_url, namespace=namespace)
        backend = acache.backend
        register_otel(acache, provider)
        register_prometheus(acache, registry)
        gate = asyncio.Event()

        async def load() -> int:
            await gate.wait()
            return 7

        waiting = [asyncio.ensure_future(acache.get_or_load("k", load)) for _ in range(4)]
        for _ in range(500):  # until the other three wait for the first one's load
            if acache.stats().coalesced == 3:
                break
            await asyncio.sleep(0.01)
        gate.set()
        assert await asyncio.gather(*waiting) == [7, 7, 7, 7]
        await acache.get("k")
        stats = acache.stats()
        await acache.aclose()
        return stats

    st = asyncio.run(main())
    points = of(collect(reader), namespace)
    assert points[("cachekit.loads", ())] == st.loads == 1
    assert points[("cachekit.coalesced", ())] == st.coalesced == 3
    assert points[("cachekit.hits", ())] == st.hits == 1
    # a remote backend cannot tell capacity from expiry: only "invalidated" is reported
    assert [a for n, a in points if n == "cachekit.evictions"] == [(("reason", "invalidated"),)]
    assert {p for p in collect(reader) if p[0] == "cachekit.hits"} == {
        ("cachekit.hits", (("backend", backend_label(backend)), ("cache", namespace)))
    }
    assert_same_as_prometheus(points, prometheus_view(registry, namespace))
    provider.shutdown()


def test_register_twice_and_unregister(namespace: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    one = ck.Cache.from_url("memory://", namespace=namespace)
    two = ck.Cache.from_url("memory://", namespace=namespace + "2")
    register_otel(one, provider)
    register_otel(two, provider)
    with pytest.raises(ck.ConfigurationError, match="already registered"):
        register_otel(one, provider)
    with pytest.raises(ck.ConfigurationError, match="another cache"):
        register_otel(ck.Cache.from_url("memory://", namespace=namespace), provider)
    with pytest.raises(ck.ConfigurationError, match="Cache, AsyncCache"):
        register_otel(object(), provider)  # type: ignore[arg-type]
    one.get("x")
    assert of(collect(reader), namespace)[("cachekit.misses", ())] == 1
    assert unregister_otel(one, provider)
    assert not unregister_otel(one, provider)
    points = collect(reader)
    assert of(points, namespace) == {}
    assert of(points, namespace + "2")[("cachekit.misses", ())] == 0
    # another provider is independent
    reader2 = InMemoryMetricReader()
    provider2 = MeterProvider(metric_readers=[reader2])
    register_otel(one, provider2)
    assert of(collect(reader2), namespace)[("cachekit.misses", ())] == 1
    provider.shutdown()
    provider2.shutdown()


def test_counters_are_read_only_at_collection(namespace: str) -> None:
    """Registering wraps nothing: hits cost the same, the stats are read when collected."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    cache = ck.Cache.from_url("memory://", namespace=namespace)
    before = (cache.get, cache.backend.get, type(cache).get)
    calls: list[int] = []
    original = cache.stats

    def counting() -> ck.Stats:
        calls.append(1)
        return original()

    cache.stats = counting  # type: ignore[method-assign]
    register_otel(cache, provider)
    cache.set("k", 1)
    for _ in range(100):
        cache.get("k")
    assert calls == []
    assert (cache.get, cache.backend.get, type(cache).get) == before
    assert of(collect(reader), namespace)[("cachekit.hits", ())] == 100
    assert calls  # read at collection time
    provider.shutdown()


def test_traced_loads_are_spans(namespace: str) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    cache = ck.Cache.from_url("memory://", namespace=namespace)

    @cache.cached(ttl=60)
    @traced(tracer_provider=tracer_provider)
    def load_user(user_id: int) -> dict[str, Any]:
        return {"id": user_id}

    load_user(1)
    load_user(1)  # a hit: no span
    load_user(2)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "cachekit.load test_traced_loads_are_spans.<locals>.load_user"
    ] * 2

    def boom() -> int:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        cache.get_or_load("b", traced(boom, name="boom", tracer_provider=tracer_provider))
    failed = exporter.get_finished_spans()[-1]
    assert failed.name == "boom"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.events[0].name == "exception"

    async def fetch(key: str) -> str:
        await asyncio.sleep(0)
        return key

    async def main() -> None:
        acache = ck.AsyncCache.from_url("memory://", namespace=namespace)
        wrapped = traced(fetch, tracer_provider=tracer_provider)
        assert await acache.get_or_load("x", lambda: wrapped("x")) == "x"
        # a lambda that returns a coroutine: the span covers the await
        assert (
            await acache.get_or_load(
                "y", traced(lambda: fetch("y"), name="lam", tracer_provider=tracer_provider)
            )
            == "y"
        )
        await acache.aclose()

    asyncio.run(main())
    names = [s.name for s in exporter.get_finished_spans()[-2:]]
    assert names == ["cachekit.load test_traced_loads_are_spans.<locals>.fetch", "lam"]
    lam = exporter.get_finished_spans()[-1]
    assert lam.end_time is not None and lam.start_time is not None
    tracer_provider.shutdown()


@pytest.mark.parametrize(
    ("module", "needs", "extra"),
    [
        ("cachekit.contrib.otel", "opentelemetry", "otel"),
        ("cachekit.contrib.fastapi", "starlette", "fastapi"),
        ("cachekit.contrib.flask", "flask", "flask"),
    ],
)
def test_missing_framework_names_the_extra(module: str, needs: str, extra: str) -> None:
    code = (
        "import sys\n"
        f"import cachekit, cachekit.contrib\n"
        f"assert {needs!r} not in sys.modules, 'imported by cachekit itself'\n"
        f"sys.modules[{needs!r}] = None  # as if not installed\n"
        "try:\n"
        f"    import {module}\n"
        "except cachekit.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True
    )
    assert f"cachekit-py[{extra}]" in out.stdout


def test_repositories_export_their_row_counters(tmp_path: Path, namespace: str) -> None:
    url = f"sqlite:///{tmp_path / 'pets.sqlite'}"
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    with sessionmaker(engine).begin() as session:
        session.add(Pet(id=1, name="rex"))
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])

    cache = ck.Cache.from_url("memory://", namespace=namespace)
    pets = CachedRepository(Pet, sessionmaker(engine), cache)
    register_otel(pets, provider)
    pets.get(1)
    pets.get(1)

    async def main() -> None:
        aengine = create_async_engine(url.replace("sqlite:", "sqlite+aiosqlite:"))
        acache = ck.AsyncCache.from_url("memory://", namespace=namespace + "a")
        apets = AsyncCachedRepository(Pet, async_sessionmaker(aengine), acache)
        register_otel(apets, provider)
        await apets.get(1)
        await apets.get(2)
        await aengine.dispose()

    asyncio.run(main())
    engine.dispose()
    points = collect(reader)
    rows = of(points, f"{namespace}/otel_pets")
    assert (rows[("cachekit.hits", ())], rows[("cachekit.misses", ())]) == (1, 1)
    assert rows[("cachekit.loads", ())] == pets.stats().loads == 1
    arows = of(points, f"{namespace}a/otel_pets")
    assert (arows[("cachekit.hits", ())], arows[("cachekit.misses", ())]) == (0, 2)
    assert of(points, namespace) == {}  # the parent cache itself was not registered
    provider.shutdown()
