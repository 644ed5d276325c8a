"""Tests for cachekit.metrics: exact values read back from the Prometheus exposition text."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

import cachekit as ck
from cachekit.backends.base import Backend
from cachekit.metrics import (
    backend_label,
    register_prometheus,
    serve_metrics,
    unregister_prometheus,
)
from tests.conftest import FakeClock
from tests.faultkit import free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """Parse the exposition text into ``{(sample name, labels): value}``."""
    text = generate_latest(registry).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample ``name`` with exactly ``labels``; fails if absent."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} not exported; have {sorted(k[0] for k in samples)}"
    return samples[key]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


class DownBackend(Backend):
    """A remote backend whose every call fails as if the server were down."""

    def _down(self, *args: object) -> Any:
        raise ck.BackendUnavailableError("connection refused (test)")

    get = set = add = delete = _down


class StatsBackend(ck.MemoryBackend):
    """A memory backend that also reports scripted server-wide stats (or fails to)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.calls = 0
        self.answered = threading.Event()
        self.fail = False
        self.delay = 0.0
        self.figures: dict[str, float] = {"evictions": 7, "expired": 5, "hits": 40, "misses": 2}

    def server_stats(self) -> dict[str, float]:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        self.answered.set()
        if self.fail:
            raise ck.BackendUnavailableError("INFO failed (test)")
        return dict(self.figures)


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    yield reg
    # drop the module's reference so registries do not pile up across tests
    from cachekit import metrics

    for _, (r, collector) in list(metrics._COLLECTORS.items()):
        if r is reg:
            for entry in list(collector._entries.values()):
                unregister_prometheus(entry.cache, reg)


# ---------------------------------------------------------------- memory backend, scripted


def test_scripted_run_on_memory_backend_exports_exact_counts(
    registry: CollectorRegistry, clock: FakeClock, namespace: str
) -> None:
    cache = ck.Cache(ck.MemoryBackend(maxsize=4, timer=clock), namespace=namespace, ttl=10)
    register_prometheus(cache, registry)
    cache.set("x", "x", ttl=100)  # the oldest entry: the one pushed out below

    assert cache.get("a") is None  # miss 1
    assert cache.get_or_load("a", lambda: "A") == "A"  # miss 2, load 1
    assert cache.get("a") == "A"  # hit 1
    assert cache.get_or_load("a", lambda: "never") == "A"  # hit 2

    def boom() -> str:
        raise RuntimeError("source down")

    with pytest.raises(RuntimeError):
        cache.get_or_load("b", boom)  # miss 3, load failure 1
    # the store holds "x" and "a" (and no namespace record): two more fill it, a third
    # evicts "x"
    for k in ("c", "d", "e"):
        cache.set(k, k, ttl=100)
    clock.advance(11)  # "a" (ttl 10) expires
    assert cache.get("a") is None  # miss 4
    assert cache.delete("c") is True  # invalidated 1
    assert cache.delete("nope") is False

    s = scrape(registry)
    lab = {"cache": namespace, "backend": "memory"}
    assert value(s, "cachekit_hits_total", **lab) == 2
    assert value(s, "cachekit_misses_total", **lab) == 4
    assert value(s, "cachekit_loads_total", **lab) == 1
    assert value(s, "cachekit_load_failures_total", **lab) == 1
    assert value(s, "cachekit_evictions_total", reason="capacity", **lab) == 1
    assert value(s, "cachekit_evictions_total", reason="expired", **lab) == 1
    assert value(s, "cachekit_evictions_total", reason="invalidated", **lab) == 1
    assert value(s, "cachekit_coalesced_total", **lab) == 0
    assert value(s, "cachekit_stale_served_total", **lab) == 0
    assert value(s, "cachekit_circuit_open", **lab) == 0
    assert value(s, "cachekit_load_duration_seconds_count", **lab) == 1
    assert value(s, "cachekit_load_duration_seconds_bucket", le="+Inf", **lab) == 1
    assert "cachekit_errors_total" not in names(s)  # no error happened
    # no server-wide families for a backend without server_stats()
    assert not {n for n in names(s) if n.startswith("cachekit_server_")}

    # stats() reports the same numbers
    st = cache.stats()
    assert (st.hits, st.misses, st.loads, st.load_failures) == (2, 4, 1, 1)
    assert (st.evictions_capacity, st.evictions_expired, st.evictions_invalidated) == (1, 1, 1)
    assert st.hit_ratio == pytest.approx(2 / 6)


def test_load_duration_histogram_is_cumulative(registry: CollectorRegistry, namespace: str) -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace=namespace)
    register_prometheus(cache, registry)
    for seconds in (0.0003, 0.003, 0.003, 0.2, 30.0):
        cache.load_duration.observe(seconds)
    s = scrape(registry)
    lab = {"cache": namespace, "backend": "memory"}
    bucket = "cachekit_load_duration_seconds_bucket"
    assert value(s, bucket, le="0.0005", **lab) == 1
    assert value(s, bucket, le="0.0025", **lab) == 1
    assert value(s, bucket, le="0.005", **lab) == 3
    assert value(s, bucket, le="0.1", **lab) == 3
    assert value(s, bucket, le="0.25", **lab) == 4
    assert value(s, bucket, le="10.0", **lab) == 4
    assert value(s, bucket, le="+Inf", **lab) == 5
    assert value(s, "cachekit_load_duration_seconds_count", **lab) == 5
    assert value(s, "cachekit_load_duration_seconds_sum", **lab) == pytest.approx(30.2063)


def test_coalesced_waiter_is_counted_not_loaded(
    registry: CollectorRegistry, namespace: str
) -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace=namespace)
    register_prometheus(cache, registry)
    release = threading.Event()
    results: list[Any] = []

    def slow() -> str:
        assert release.wait(10)
        return "v"

    leader = threading.Thread(target=lambda: results.append(cache.get_or_load("k", slow)))
    leader.start()
    deadline = time.monotonic() + 10
    while cache.stats().loads + cache.stats().misses < 1:  # leader is inside its loader
        assert time.monotonic() < deadline
        time.sleep(0.001)
    waiter = threading.Thread(target=lambda: results.append(cache.get_or_load("k", slow)))
    waiter.start()
    while cache.stats().coalesced < 1:  # the waiter has joined the leader's flight
        assert time.monotonic() < deadline
        time.sleep(0.001)
    release.set()
    leader.join(10)
    waiter.join(10)
    assert results == ["v", "v"]
    s = scrape(registry)
    lab = {"cache": namespace, "backend": "memory"}
    assert value(s, "cachekit_misses_total", **lab) == 2
    assert value(s, "cachekit_loads_total", **lab) == 1
    assert value(s, "cachekit_coalesced_total", **lab) == 1


def test_errors_by_operation_and_open_breaker(
    registry: CollectorRegistry, clock: FakeClock, namespace: str
) -> None:
    breaker = ck.CircuitBreaker(failure_threshold=3, reset_timeout=30, timer=clock)
    cache = ck.Cache(DownBackend(), namespace=namespace, breaker=breaker, timer=clock)
    register_prometheus(cache, registry)
    s = scrape(registry)
    lab = {"cache": namespace, "backend": "down"}
    assert value(s, "cachekit_errors_total", operation="namespace", **lab) == 1
    assert value(s, "cachekit_circuit_open", **lab) == 0

    assert cache.get("x") is None  # failure 2
    cache.set("y", 1)  # failure 3: the breaker opens
    assert cache.get("x") is None  # skipped: a miss, not an error

    s = scrape(registry)
    assert value(s, "cachekit_errors_total", operation="namespace", **lab) == 1
    assert value(s, "cachekit_errors_total", operation="get", **lab) == 1
    assert value(s, "cachekit_errors_total", operation="set", **lab) == 1
    assert value(s, "cachekit_misses_total", **lab) == 2
    assert value(s, "cachekit_hits_total", **lab) == 0
    assert value(s, "cachekit_circuit_open", **lab) == 1
    # a remote backend cannot tell capacity from expiry per namespace: no made-up zeros
    assert ("cachekit_evictions_total", frozenset({**lab, "reason": "capacity"}.items())) not in s
    assert value(s, "cachekit_evictions_total", reason="invalidated", **lab) == 0


def test_counts_are_exact_under_8_threads(registry: CollectorRegistry, namespace: str) -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace=namespace)
    register_prometheus(cache, registry)

    @cache.cached()
    def square(x: int) -> int:
        return x * x

    square(3)  # 1 miss, 1 load
    threads_n, calls = 8, 5_000
    start = threading.Barrier(threads_n)

    def work() -> None:
        start.wait()
        for _ in range(calls):
            square(3)
            cache.get("absent")

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for t in threads:
        t.start()
    scraped: list[Samples] = []
    while any(t.is_alive() for t in threads):  # scraping concurrently must not disturb counts
        scraped.append(scrape(registry))
    for t in threads:
        t.join()
    s = scrape(registry)
    lab = {"cache": namespace, "backend": "memory"}
    assert value(s, "cachekit_hits_total", **lab) == threads_n * calls
    assert value(s, "cachekit_misses_total", **lab) == threads_n * calls + 1
    assert value(s, "cachekit_loads_total", **lab) == 1
    hits_seen = [value(x, "cachekit_hits_total", **lab) for x in scraped]
    assert hits_seen == sorted(hits_seen)  # monotonic while counting


# ---------------------------------------------------------------- registration


def test_registering_the_same_cache_twice_is_a_clear_error(
    registry: CollectorRegistry, namespace: str
) -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace=namespace)
    register_prometheus(cache, registry)
    with pytest.raises(ck.ConfigurationError, match="already registered"):
        register_prometheus(cache, registry)
    scrape(registry)  # still scrapes


def test_two_caches_with_one_namespace_is_a_clear_error(
    registry: CollectorRegistry, namespace: str
) -> None:
    first = ck.Cache(ck.MemoryBackend(), namespace=namespace)
    second = ck.Cache(ck.MemoryBackend(), namespace=namespace)
    register_prometheus(first, registry)
    with pytest.raises(ck.ConfigurationError, match="namespace"):
        register_prometheus(second, registry)
    first.get("k")
    s = scrape(registry)
    assert value(s, "cachekit_misses_total", cache=namespace, backend="memory") == 1


def test_two_namespaces_share_one_registry_and_another_registry_is_separate(
    registry: CollectorRegistry,
) -> None:
    a = ck.Cache(ck.MemoryBackend(), namespace="ns-a")
    b = ck.Cache(ck.MemoryBackend(), namespace="ns-b")
    register_prometheus(a, registry)
    register_prometheus(b, registry)
    other = CollectorRegistry()
    register_prometheus(a, other)  # a cache may be exported to several registries
    a.get("x")
    b.get("x")
    b.get("y")
    s = scrape(registry)
    assert value(s, "cachekit_misses_total", cache="ns-a", backend="memory") == 1
    assert value(s, "cachekit_misses_total", cache="ns-b", backend="memory") == 2
    assert value(scrape(other), "cachekit_misses_total", cache="ns-a", backend="memory") == 1
    assert unregister_prometheus(a, other) is True


def test_unregister_then_register_again(registry: CollectorRegistry, namespace: str) -> None:
    first = ck.Cache(ck.MemoryBackend(), namespace=namespace)
    register_prometheus(first, registry)
    assert unregister_prometheus(first, registry) is True
    assert unregister_prometheus(first, registry) is False
    assert scrape(registry) == {}  # the collector left the registry with its last cache
    second = ck.Cache(ck.MemoryBackend(), namespace=namespace)
    register_prometheus(second, registry)
    second.get("k")
    assert value(scrape(registry), "cachekit_misses_total", cache=namespace, backend="memory") == 1


def test_clash_with_a_foreign_metric_is_a_configuration_error(
    registry: CollectorRegistry, namespace: str
) -> None:
    Counter("cachekit_hits", "someone else's", registry=registry)
    cache = ck.Cache(ck.MemoryBackend(), namespace=namespace)
    with pytest.raises(ck.ConfigurationError, match="already has metrics"):
        register_prometheus(cache, registry)
    generate_latest(registry)


def test_register_rejects_a_non_cache(registry: CollectorRegistry) -> None:
    with pytest.raises(ck.ConfigurationError, match="needs a cachekit Cache"):
        register_prometheus(ck.MemoryBackend(), registry)  # type: ignore[arg-type]


def test_backend_labels() -> None:
    assert backend_label(ck.MemoryBackend()) == "memory"
    assert backend_label(DownBackend()) == "down"

    class RedisClusterBackend(DownBackend):
        pass

    assert backend_label(RedisClusterBackend()) == "redis-cluster"


# ---------------------------------------------------------------- server-wide stats


def test_server_stats_are_cached_for_ttl_on_the_injected_clock(
    registry: CollectorRegistry, clock: FakeClock, namespace: str
) -> None:
    backend = StatsBackend()
    cache = ck.Cache(backend, namespace=namespace)
    other = ck.Cache(backend, namespace=namespace + "-2")  # same server: exported once
    register_prometheus(cache, registry, server_stats_ttl=5, timer=clock)
    register_prometheus(other, registry, server_stats_ttl=5, timer=clock)

    s = scrape(registry)
    lab = {"backend": "stats", "server": "stats"}
    assert value(s, "cachekit_server_evictions_total", **lab) == 7
    assert value(s, "cachekit_server_expired_total", **lab) == 5
    assert value(s, "cachekit_server_hits_total", **lab) == 40
    assert value(s, "cachekit_server_misses_total", **lab) == 2
    assert value(s, "cachekit_server_stats_errors_total", **lab) == 0
    assert backend.calls == 1

    backend.figures["hits"] = 41
    clock.advance(4.9)
    for _ in range(5):
        assert value(scrape(registry), "cachekit_server_hits_total", **lab) == 40
    assert backend.calls == 1  # scrapes within the ttl do not touch the server
    clock.advance(0.2)
    assert value(scrape(registry), "cachekit_server_hits_total", **lab) == 41
    assert backend.calls == 2
    text = generate_latest(registry).decode()
    assert "whole server" in text  # the help text says what these count


def test_failing_server_stats_skips_families_and_is_counted(
    registry: CollectorRegistry, clock: FakeClock, namespace: str
) -> None:
    backend = StatsBackend()
    backend.fail = True
    cache = ck.Cache(backend, namespace=namespace)
    register_prometheus(cache, registry, server_stats_ttl=5, timer=clock)
    cache.get("k")

    s = scrape(registry)
    lab = {"backend": "stats", "server": "stats"}
    assert "cachekit_server_hits_total" not in names(s)
    assert value(s, "cachekit_server_stats_errors_total", **lab) == 1
    assert value(s, "cachekit_misses_total", cache=namespace, backend="stats") == 1
    scrape(registry)
    assert backend.calls == 1  # a failure is cached too: a dead server is not probed per scrape

    backend.fail = False
    clock.advance(5)
    s = scrape(registry)
    assert value(s, "cachekit_server_hits_total", **lab) == 40
    assert value(s, "cachekit_server_stats_errors_total", **lab) == 1


def test_slow_server_stats_time_out_without_piling_up_calls(
    registry: CollectorRegistry, clock: FakeClock, namespace: str
) -> None:
    backend = StatsBackend()
    backend.delay = 0.5
    cache = ck.Cache(backend, namespace=namespace)
    register_prometheus(cache, registry, server_stats_timeout=0.05, timer=clock)

    started = time.perf_counter()
    s = scrape(registry)
    assert time.perf_counter() - started < 0.4  # the scrape did not wait for the server
    lab = {"backend": "stats", "server": "stats"}
    assert "cachekit_server_hits_total" not in names(s)
    assert value(s, "cachekit_server_stats_errors_total", **lab) == 1
    clock.advance(10)
    scrape(registry)  # the first call is still running: wait for it, do not start another
    assert backend.calls == 1
    assert backend.answered.wait(10)
    clock.advance(10)
    s = scrape(registry)
    assert value(s, "cachekit_server_hits_total", **lab) == 40
    assert backend.calls == 1  # the late answer of the first call was used


# ---------------------------------------------------------------- real servers


def _scripted_remote_run(cache: ck.Cache) -> None:
    cache.clear()
    assert cache.get("a") is None  # miss 1
    assert cache.get_or_load("a", lambda: {"v": 1}) == {"v": 1}  # miss 2, load 1
    assert cache.get("a") == {"v": 1}  # hit 1
    assert cache.get_many(["a", "b"]) == {"a": {"v": 1}}  # hit 2, miss 3
    assert cache.delete("a") is True  # invalidated 1


@pytest.mark.parametrize(
    ("fixture", "label"), [("redis_url", "redis"), ("memcached_url", "memcached")]
)
def test_scripted_run_on_remote_backends(
    request: pytest.FixtureRequest,
    registry: CollectorRegistry,
    namespace: str,
    fixture: str,
    label: str,
) -> None:
    url = request.getfixturevalue(fixture)
    cache = ck.Cache.from_url(url, namespace=namespace, ttl=60)
    try:
        register_prometheus(cache, registry)
        _scripted_remote_run(cache)
        s = scrape(registry)
    finally:
        cache.close()
    lab = {"cache": namespace, "backend": label}
    assert value(s, "cachekit_hits_total", **lab) == 2
    assert value(s, "cachekit_misses_total", **lab) == 3
    assert value(s, "cachekit_loads_total", **lab) == 1
    assert value(s, "cachekit_evictions_total", reason="invalidated", **lab) == 1
    assert value(s, "cachekit_circuit_open", **lab) == 0
    assert "cachekit_errors_total" not in names(s)
    server = [k for k in s if k[0] == "cachekit_server_hits_total"]
    assert len(server) == 1, "the backend should report server_stats()"
    labels = dict(server[0][1])
    assert labels["backend"] == label
    for family in ("evictions", "hits", "misses"):
        got = value(s, f"cachekit_server_{family}_total", **labels)
        assert isinstance(got, float) and got >= 0
    assert value(s, "cachekit_server_hits_total", **labels) >= 2
    assert value(s, "cachekit_server_stats_errors_total", **labels) == 0


@pytest.mark.parametrize(
    ("fixture", "label"), [("redis_url", "redis"), ("memcached_url", "memcached")]
)
def test_counts_are_exact_under_8_threads_on_remote_backends(
    request: pytest.FixtureRequest,
    registry: CollectorRegistry,
    namespace: str,
    fixture: str,
    label: str,
) -> None:
    cache = ck.Cache.from_url(request.getfixturevalue(fixture), namespace=namespace, ttl=60)
    try:
        register_prometheus(cache, registry)
        cache.set("warm", 1)
        threads_n, calls = 8, 150
        start = threading.Barrier(threads_n)

        def work() -> None:
            start.wait()
            for _ in range(calls):
                assert cache.get("warm") == 1
                assert cache.get("absent") is None

        threads = [threading.Thread(target=work) for _ in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        s = scrape(registry)
    finally:
        cache.close()
    lab = {"cache": namespace, "backend": label}
    assert value(s, "cachekit_hits_total", **lab) == threads_n * calls
    assert value(s, "cachekit_misses_total", **lab) == threads_n * calls
    assert "cachekit_errors_total" not in names(s)


# ---------------------------------------------------------------- exposition and packaging


def test_serve_metrics_serves_the_registry(registry: CollectorRegistry, namespace: str) -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace=namespace)
    register_prometheus(cache, registry)
    cache.get("k")
    port = free_port()
    server, thread = serve_metrics(port, registry=registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert f'cachekit_misses_total{{backend="memory",cache="{namespace}"}} 1.0' in body


def test_serve_metrics_on_a_busy_port_is_a_configuration_error() -> None:
    port = free_port()
    server, thread = serve_metrics(port, registry=CollectorRegistry())
    try:
        with pytest.raises(ck.ConfigurationError, match=str(port)):
            serve_metrics(port, registry=CollectorRegistry())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_cachekit_imports_without_prometheus_client_and_metrics_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"  # makes `import prometheus_client` fail
        "import cachekit\n"
        "cachekit.Cache(cachekit.MemoryBackend()).get('k')\n"
        "try:\n"
        "    import cachekit.metrics\n"
        "except cachekit.ConfigurationError as exc:\n"
        "    print('ERR', exc)\n"
    )
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert "ERR" in proc.stdout and "pip install 'cachekit-py[prometheus]'" in proc.stdout


def test_importing_cachekit_does_not_import_prometheus_client() -> None:
    proc = _run_python("import sys, cachekit; print('prometheus_client' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_metrics_does_not_import_sqlalchemy() -> None:
    # repositories are recognised without importing the optional SQLAlchemy extra
    code = (
        "import sys, cachekit, cachekit.metrics as m\n"
        "from prometheus_client import CollectorRegistry\n"
        "c = cachekit.Cache(cachekit.MemoryBackend(), namespace='x')\n"
        "m.register_prometheus(c, CollectorRegistry())\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


# ---------------------------------------------------------------- multi-process (gunicorn)


def _worker(namespace: str, hits: int, misses: int, loads: int) -> None:
    """A worker process: a known number of events, exported to the multiprocess directory."""
    from cachekit.metrics import start_multiprocess_export

    cache = ck.Cache(ck.MemoryBackend(), namespace=namespace)
    exporter = start_multiprocess_export(cache, interval=0.01)
    for i in range(loads):
        cache.get_or_load(f"k{i}", lambda: "v")  # one miss and one load each
    for _ in range(hits):
        cache.get("k0")
    for _ in range(misses - loads):
        cache.get("absent")
    exporter.stop()  # final write; a real worker gets this from atexit


def test_multiprocess_counts_are_summed_across_worker_processes(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    ctx = multiprocessing.get_context("spawn")
    plan = [(100, 10, 3), (250, 20, 5), (7, 30, 1)]  # (hits, misses, loads) per worker
    procs = [ctx.Process(target=_worker, args=(namespace, *p)) for p in plan]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    s = scrape(registry)
    lab = {"cache": namespace, "backend": "memory"}
    assert value(s, "cachekit_hits_total", **lab) == sum(p[0] for p in plan)
    assert value(s, "cachekit_misses_total", **lab) == sum(p[1] for p in plan)
    assert value(s, "cachekit_loads_total", **lab) == sum(p[2] for p in plan)
    assert value(s, "cachekit_load_duration_seconds_count", **lab) == sum(p[2] for p in plan)
    assert value(s, "cachekit_load_duration_seconds_bucket", le="+Inf", **lab) == 9
    assert value(s, "cachekit_evictions_total", reason="invalidated", **lab) == 0
    assert value(s, "cachekit_circuit_open", **lab) == 0


def test_multiprocess_export_needs_the_directory(
    monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    from cachekit import metrics

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(metrics, "_VALUE_CLASS", None)
    cache = ck.Cache(ck.MemoryBackend(), namespace=namespace)
    with pytest.raises(ck.ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR"):
        metrics.start_multiprocess_export(cache)
