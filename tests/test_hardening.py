"""Regression tests for the Cache-level defects a hostile production user found (round two).

Each test names the defect it pins. They run on the in-process store and on
private Redis servers from ``tests.faultkit`` (stalled with SIGSTOP, never the
shared test servers).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import cachekit as ck
from cachekit.aio import AsyncCache
from cachekit.backends.redis import RedisBackend
from cachekit.cache import LEASE_MARK
from tests.conftest import FakeClock
from tests.faultkit import CutProxy, ServerProcess, StallServer


def _ns() -> str:
    return "h-" + uuid.uuid4().hex[:8]


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll ``check`` until true; return the seconds it took (fail after ``timeout``)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with ServerProcess("redis") as s:
        yield s


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[CutProxy]:
    with CutProxy(server.port) as p:
        yield p


def _via(proxy: CutProxy) -> str:
    return f"redis://127.0.0.1:{proxy.port}/0"


def _stall(server: ServerProcess) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)


def _resume(server: ServerProcess) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGCONT)


# ---------------------------------------------------------------- 1. in-process stale-set race


def test_memory_load_never_stores_over_a_write_made_while_its_ttl_is_computed() -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace=_ns(), ttl=60)

    def ttl_of(value: Any) -> float:
        cache.set("k", "new")  # a write lands between the load's "invalidated?" check and store
        return 60

    assert cache.get_or_load("k", lambda: "old", ttl=ttl_of) == "old"
    assert cache.get("k") == "new"


class _SlowSetMemory(ck.MemoryBackend):
    """Holds the store of the value ``"old"`` until a writer thread is done (or 0.2 s pass)."""

    writer_done: threading.Event
    writer: threading.Thread | None = None

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        if value == "old" and self.writer is not None:
            self.writer.start()
            self.writer_done.wait(0.2)  # with the fix the writer waits for this store instead
        super().set(key, value, ttl)


def test_memory_load_and_concurrent_write_in_threads_end_with_the_write() -> None:
    backend = _SlowSetMemory()
    backend.writer_done = threading.Event()
    cache = ck.Cache(backend, namespace=_ns(), ttl=60)

    def write() -> None:
        cache.set("k", "new")
        backend.writer_done.set()

    backend.writer = threading.Thread(target=write)
    assert cache.get_or_load("k", lambda: "old") == "old"
    backend.writer.join(5)
    assert cache.get("k") == "new"


# ---------------------------------------------------------------- 2. refresh vs a write


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_refresh_overlapping_a_write_keeps_the_write(
    kind: str, make_backend: Callable[..., ck.Backend]
) -> None:
    cache = ck.Cache(make_backend(kind), namespace=_ns(), ttl=60, policy=ck.WriteThrough())
    cache.set("user:1", {"name": "v1"})

    def reload() -> dict[str, str]:
        row = {"name": "v1"}  # read from the source before the write commits
        cache.write("user:1", lambda: {"name": "v2"})  # a write-through write overlaps
        return row

    assert cache.refresh("user:1", reload) == {"name": "v1"}
    assert cache.get("user:1") == {"name": "v2"}


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_decorated_refresh_overlapping_a_write_keeps_the_write(
    kind: str, make_backend: Callable[..., ck.Backend]
) -> None:
    cache = ck.Cache(make_backend(kind), namespace=_ns(), ttl=60, policy=ck.WriteThrough())
    db = {"v": 1}

    @cache.writes(key="cfg")
    def save(v: int) -> int:
        db["v"] = v
        return v

    @cache.cached(key="cfg")
    def load() -> int:
        seen = db["v"]
        if seen == 1 and refreshing:
            save(2)  # the write commits while the refresh holds the older row
        return seen

    refreshing = False
    assert load() == 1
    refreshing = True
    assert load.refresh() == 1
    refreshing = False
    assert load() == 2


def test_refresh_still_stores_when_nothing_overlaps(
    make_backend: Callable[..., ck.Backend],
) -> None:
    cache = ck.Cache(make_backend("redis"), namespace=_ns(), ttl=60)
    cache.set("k", 1)
    assert cache.refresh("k", lambda: 2) == 2
    assert cache.get("k") == 2
    assert cache.refresh("absent", lambda: 3) == 3
    assert cache.get("absent") == 3


# ---------------------------------------------------------------- 4. replay on recovery


def test_other_processes_stop_reading_an_invalidated_value_soon_after_recovery(
    server: ServerProcess, proxy: CutProxy
) -> None:
    ns = _ns()
    breaker = ck.CircuitBreaker(3, reset_timeout=0.2)
    writer = ck.Cache(RedisBackend.from_url(_via(proxy)), namespace=ns, ttl=300, breaker=breaker)
    reader = ck.Cache(RedisBackend.from_url(server.url), namespace=ns, ttl=300)
    try:
        writer.set("k", "old")
        assert reader.get("k") == "old"
        proxy.cut()
        assert writer.delete("k") is False  # lost: it never reaches the server
        proxy.restore()
        # The writer makes no call at all from here on: its replay must not wait for traffic.
        window = _eventually(lambda: reader.get("k") is None, timeout=3.0)
        assert window < 1.0, f"stale for {window:.2f} s after recovery"
        _eventually(lambda: not writer.stats().circuit_open, timeout=1.0)
    finally:
        writer.close()
        reader.close()


def test_probe_after_an_outage_replays_before_it_reads(
    server: ServerProcess, proxy: CutProxy
) -> None:
    clock = FakeClock()
    breaker = ck.CircuitBreaker(1, reset_timeout=1.0, timer=clock)
    cache = ck.Cache(
        RedisBackend.from_url(_via(proxy)), namespace=_ns(), ttl=300, breaker=breaker, timer=clock
    )
    other = ck.Cache(RedisBackend.from_url(server.url), namespace=cache.namespace, ttl=300)
    try:
        cache.set("a", 1)
        cache._replayer = threading.Thread(target=lambda: None)  # no background replay here
        cache._replayer.start()
        proxy.cut()
        cache.delete("a")
        proxy.restore()
        assert breaker.is_open and cache._pending
        assert other.get("a") == 1  # the server still holds the invalidated value
        clock.advance(1.0)
        cache.get("b")  # the probe: delivers the pending delete of "a" first
        assert not cache._pending
        assert other.get("a") is None
    finally:
        cache.close()
        other.close()


# ---------------------------------------------------------------- 5. breaker never stuck open


def test_a_probe_that_reports_nothing_does_not_hold_the_breaker_open() -> None:
    clock = FakeClock()
    breaker = ck.CircuitBreaker(1, reset_timeout=2.0, timer=clock)
    breaker.record_failure()
    clock.advance(2.0)
    assert breaker.allow()  # the probe goes to a path that records neither outcome
    assert not breaker.allow()  # one probe at a time
    clock.advance(2.0)
    assert breaker.allow()  # the lost probe is replaced
    breaker.record_success()
    assert not breaker.is_open


def test_breaker_closes_after_a_stall_under_threaded_get_or_load(server: ServerProcess) -> None:
    ns = _ns()
    backend = RedisBackend.from_url(server.url)
    cache = ck.Cache(
        backend, namespace=ns, ttl=60, breaker=ck.CircuitBreaker(3, 0.5), lease_wait=0.2
    )
    foreign = ck.Cache(RedisBackend.from_url(server.url), namespace=ns, ttl=60)
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                cache.get_or_load(f"k{(i + n) % 5}", lambda n=n: n)
                if n % 7 == 0:
                    foreign.delete(f"k{n % 5}")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        _stall(server)
        time.sleep(2.0)
        _resume(server)
        _eventually(lambda: not cache.breaker.is_open and cache.breaker.failures == 0, 5.0)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        cache.close()
        foreign.close()
    assert not errors


# ---------------------------------------------------------------- 7. caller errors are not outages


class _RejectingMemory(ck.MemoryBackend):
    """Refuses values over 10 bytes the way a full Redis refuses a SET (the server answers)."""

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        if isinstance(value, bytes) and len(value) > 10:
            raise ck.BackendRejectedError("OOM command not allowed")
        super().set(key, value, ttl)

    local = False  # behave as a remote store: values are encoded


def test_refused_writes_are_counted_but_never_open_the_breaker() -> None:
    cache = ck.Cache(_RejectingMemory(), namespace=_ns(), ttl=60)
    cache.set("small", 1)
    for _ in range(10):
        cache.set("big", "x" * 100)  # refused: counted, no exception (fail-open)
        assert cache.breaker.failures == 0
        assert cache.get_or_load("big2", lambda: "y" * 100) == "y" * 100
        assert cache.breaker.failures == 0
    assert not cache.breaker.is_open
    assert cache.get("small") == 1  # reads keep working
    assert cache.stats().errors_by_operation["set"] >= 10


def test_refused_write_in_strict_mode_raises_the_rejection() -> None:
    cache = ck.Cache(_RejectingMemory(), namespace=_ns(), ttl=60, fail_open=False)
    with pytest.raises(ck.BackendRejectedError):
        cache.set("big", "x" * 100)
    assert not cache.breaker.is_open


def test_refused_write_drops_the_older_value() -> None:
    cache = ck.Cache(_RejectingMemory(), namespace=_ns(), ttl=60)
    cache.set("k", 1)
    cache.set("k", "now too big for the server")
    assert cache.get("k") is None  # never the value the source no longer has


@pytest.mark.parametrize("ttl", [float("inf"), ck.TTL(float("inf")), 10**12, 1e15])
def test_infinite_and_huge_ttls_store_on_redis_without_tripping_the_breaker(
    ttl: Any, make_backend: Callable[..., ck.Backend]
) -> None:
    cache = ck.Cache(make_backend("redis"), namespace=_ns(), ttl=60)
    for i in range(5):
        cache.set(f"k{i}", i, ttl=ttl)
    assert [cache.get(f"k{i}") for i in range(5)] == list(range(5))
    assert not cache.breaker.is_open and cache.stats().errors == 0


def test_ttl_inf_means_no_expiry() -> None:
    assert ck.TTL(float("inf")).seconds is None
    clock = FakeClock()
    cache = ck.Cache(ck.MemoryBackend(timer=clock), namespace=_ns(), ttl=1)
    cache.set("k", 1, ttl=float("inf"))
    clock.advance(10**9)
    assert cache.get("k") == 1


@pytest.mark.parametrize("ttl", [-1, float("nan"), "10", True])
def test_bad_ttls_are_configuration_errors_and_store_nothing(ttl: Any) -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace=_ns(), ttl=60)
    cache.set("k", 1)
    with pytest.raises(ck.ConfigurationError):
        cache.set("k", 2, ttl=ttl)
    assert cache.get("k") == 1
    assert not cache.breaker.failures


def test_redis_oom_on_set_does_not_stop_reads() -> None:
    with ServerProcess("redis") as srv:
        raw = redis.Redis(port=srv.port)
        raw.config_set("maxmemory", "2mb")
        raw.config_set("maxmemory-policy", "noeviction")
        cache = ck.Cache(RedisBackend.from_url(srv.url), namespace=_ns(), ttl=300)
        try:
            cache.set("hot", "value")
            filler = "x" * 100_000
            for i in range(200):
                try:
                    raw.set(f"fill:{i}", filler)
                except redis.ResponseError:
                    break
            for i in range(10):
                cache.set(f"new{i}", filler)  # refused by the server: OOM
            assert cache.get("hot") == "value"
            assert not cache.breaker.is_open and cache.breaker.failures == 0
            assert cache.stats().errors_by_operation.get("set", 0) >= 10
        finally:
            cache.close()
            raw.close()


# ---------------------------------------------------------------- 8. get_many_or_load leases


def test_get_many_or_load_releases_its_leases_when_the_loader_raises(
    make_backend: Callable[..., ck.Backend], redis_url: str
) -> None:
    ns = _ns()
    cache = ck.Cache(make_backend("redis"), namespace=ns, ttl=60)

    def boom(keys: list[str]) -> dict[str, int]:
        raise RuntimeError("source down")

    with pytest.raises(RuntimeError):
        cache.get_many_or_load(["a", "b"], boom)
    raw = redis.Redis.from_url(redis_url)
    try:
        for k in ("a", "b"):
            held = raw.get(cache.full_key(k))
            assert held is None or not held.startswith(LEASE_MARK) or held.endswith(b"released")
    finally:
        raw.close()
    other = ck.Cache(make_backend("redis"), namespace=ns, ttl=60, lease_wait=5)
    started = time.monotonic()
    assert other.get_many_or_load(["a"], lambda ks: {k: 1 for k in ks}) == {"a": 1}
    assert time.monotonic() - started < 2.5  # no wait for a lease nobody holds
    assert cache.get("a") == 1  # and the value could be cached


# ---------------------------------------------------------------- 9. re-entrant loads


def _in_thread(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it does not finish."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the call hung"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_loader_asking_for_its_own_key_fails_at_once(
    kind: str, make_backend: Callable[..., ck.Backend]
) -> None:
    cache = ck.Cache(make_backend(kind), namespace=_ns(), ttl=60)

    @cache.cached(key="cfg")
    def cfg() -> int:
        return cache.get_or_load("cfg", lambda: 1)

    with pytest.raises(ck.ReentrantLoadError):
        _in_thread(cfg)
    # nothing is left behind: the next caller loads normally
    assert _in_thread(lambda: cache.get_or_load("cfg", lambda: 2)) == 2
    assert isinstance(ck.ReentrantLoadError("x"), ck.CacheError)


def test_waiting_for_a_hung_load_is_bounded_by_lease_ttl() -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace=_ns(), ttl=60, lease_ttl=0.3)
    release = threading.Event()
    started = threading.Event()

    def hung() -> str:
        started.set()
        release.wait(10)
        return "late"

    t = threading.Thread(target=lambda: cache.get_or_load("k", hung))
    t.start()
    try:
        assert started.wait(5)
        assert _in_thread(lambda: cache.get_or_load("k", lambda: "mine"), 5) == "mine"
    finally:
        release.set()
        t.join(5)
    assert cache.get("k") == "late"  # the waiter stored nothing: the leader's value stands


def test_get_many_or_load_refuses_a_reentrant_key() -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace=_ns(), ttl=60)

    def loader(keys: list[str]) -> dict[str, int]:
        return cache.get_many_or_load(keys, lambda ks: {k: 1 for k in ks})

    with pytest.raises(ck.ReentrantLoadError):
        _in_thread(lambda: cache.get_many_or_load(["a"], loader))


# ---------------------------------------------------------------- 14. any decode failure is a miss


class _CrashingSerializer:
    """Decodes nothing: raises the kind of bare error a crafted entry used to cause."""

    def dumps(self, value: Any) -> bytes:
        return b"j" + repr(value).encode()

    def loads(self, data: bytes) -> Any:
        raise AttributeError("'int' object has no attribute 'hex'")


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_an_entry_that_crashes_the_decoder_reads_as_a_counted_miss(
    kind: str, make_backend: Callable[..., ck.Backend]
) -> None:
    backend = make_backend(kind)
    cache = ck.Cache(backend, namespace=_ns(), ttl=60, serializer=_CrashingSerializer())  # type: ignore[arg-type]
    cache.set("k", 1)
    assert cache.get("k") is None
    assert cache.get_many(["k"]) == {}

    @cache.cached(key="k")
    def load() -> int:
        return 7

    assert load() == 7
    assert cache.stats().errors_by_operation["decode"] >= 3


# ---------------------------------------------------------------- 15, 17, 20. configuration


def test_serializer_none_on_redis_stores_raw_bytes(redis_url: str) -> None:
    cache = ck.Cache.from_url(redis_url + "?serializer=none", namespace=_ns(), ttl=60)
    raw = redis.Redis.from_url(redis_url)
    try:
        cache.set("k", b"\x01raw bytes")
        assert raw.get(cache.full_key("k")) == b"\x01raw bytes"
        assert cache.get("k") == b"\x01raw bytes"
        assert cache.get_or_load("k2", lambda: b"loaded") == b"loaded"
        assert raw.get(cache.full_key("k2")) == b"loaded"
        with pytest.raises(ck.SerializationError):
            cache.set("k3", LEASE_MARK + b"forged")  # would read as a load in progress
    finally:
        cache.close()
        raw.close()


@pytest.mark.parametrize("lease_ttl", [0, -1, float("nan"), float("inf")])
def test_lease_ttl_must_be_positive(lease_ttl: float) -> None:
    with pytest.raises(ck.ConfigurationError, match="lease_ttl"):
        ck.Cache(ck.MemoryBackend(), namespace=_ns(), lease_ttl=lease_ttl)


def test_cached_on_an_async_function_is_refused_when_decorating() -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace=_ns(), ttl=60)

    with pytest.raises(ck.ConfigurationError, match="AsyncCache"):

        @cache.cached()
        async def get_user(user_id: int) -> dict[str, int]:
            return {"id": user_id}

    with pytest.raises(ck.ConfigurationError, match="AsyncCache"):

        @cache.writes(key="user:{user_id}")
        async def save_user(user_id: int) -> None:
            return None

    with pytest.raises(ck.ConfigurationError, match="AsyncCache"):

        @cache.evicts(key="user:{user_id}")
        async def delete_user(user_id: int) -> None:
            return None


# ---------------------------------------------------------------- 21. replay vs a newer write


@pytest.mark.parametrize("op", ["add", "set", "set_many"])
def test_replaying_a_lost_invalidation_never_removes_a_newer_write(
    proxy: CutProxy, op: str
) -> None:
    cache = ck.Cache(RedisBackend.from_url(_via(proxy)), namespace=_ns(), ttl=300)
    try:
        cache.set("k", "v1")
        proxy.cut()
        cache.delete("k")  # lost: remembered for replay
        proxy.restore()
        if op == "add":
            # the server still holds v1 if the replay has not run yet: make room the way
            # an application would, by expiring it, then add
            cache.backend.delete(cache.full_key("k"))
            assert cache.add("k", "v2") is True
        elif op == "set":
            cache.set("k", "v2")
        else:
            cache.set_many({"k": "v2"})
        _eventually(lambda: not cache._pending, 3.0)
        time.sleep(0.3)  # a replay that was due has run by now
        assert cache.get("k") == "v2"
    finally:
        cache.close()


# ---------------------------------------------------------------- 22. in-process namespace record


def test_memory_namespace_takes_no_slot_and_clear_frees_memory() -> None:
    backend = ck.MemoryBackend(maxsize=2)
    cache = ck.Cache(backend, namespace=_ns(), ttl=60)
    cache.set("a", 1)
    cache.set("b", 2)
    assert len(backend) == 2  # both entries fit: no version record takes a slot
    assert cache.get("a") == 1 and cache.get("b") == 2
    cache.clear()
    assert len(backend) == 0  # the old entries are gone now, not when pushed out
    cache.set("c", 3)
    assert cache.get("a") is None and cache.get("c") == 3
    assert cache.stats().evictions_capacity == 0
    other = ck.Cache(backend, namespace=cache.namespace, ttl=60)
    assert other.get("c") == 3  # caches over one store share the namespace version


# ---------------------------------------------------------------- a hung server costs one timeout


@pytest.mark.parametrize("scheme", ["redis", "memcached"])
def test_first_load_against_a_hung_server_pays_one_timeout_not_two(scheme: str) -> None:
    with StallServer() as hung:
        cache = ck.Cache.from_url(f"{scheme}://127.0.0.1:{hung.port}", namespace=_ns(), ttl=60)
        try:
            started = time.monotonic()
            assert cache.get_or_load("k", lambda: 1) == 1
            took = time.monotonic() - started
        finally:
            cache.close()
    # one command deadline (0.25 s) for the read; no lease write, no store after it failed
    assert took < 0.45, f"first call took {took:.3f} s"


# ---------------------------------------------------------------- logging


def test_warnings_carry_structured_fields_without_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with StallServer() as hung:
        url = f"redis://user:s3cretmarker@127.0.0.1:{hung.port}/0"
        with caplog.at_level("DEBUG", logger="cachekit"):
            cache = ck.Cache.from_url(url, namespace="logs", ttl=60)
            try:
                for _ in range(5):
                    cache.get("k")
            finally:
                cache.close()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1  # one line per incident, not one per call
    record = warnings[0]
    assert record.cachekit_namespace == "logs"  # type: ignore[attr-defined]
    assert record.cachekit_operation == "namespace"  # type: ignore[attr-defined]
    assert record.cachekit_error == "BackendUnavailableError"  # type: ignore[attr-defined]
    assert str(hung.port) in record.cachekit_backend  # type: ignore[attr-defined]
    for r in caplog.records:
        assert "s3cretmarker" not in r.getMessage()
        assert "s3cretmarker" not in str(getattr(r, "cachekit_backend", ""))


def test_decode_errors_warn_once_per_incident(caplog: pytest.LogCaptureFixture) -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace=_ns(), serializer=_CrashingSerializer())  # type: ignore[arg-type]
    with caplog.at_level("DEBUG", logger="cachekit"):
        for i in range(5):
            cache.set(f"k{i}", i)
            assert cache.get(f"k{i}") is None
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and warned[0].cachekit_operation == "decode"  # type: ignore[attr-defined]
    assert cache.stats().errors_by_operation["decode"] == 5


def test_trace_logger_reports_hits_and_misses_per_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG", logger="cachekit.trace"):
        cache = ck.Cache(ck.MemoryBackend(), namespace=_ns(), ttl=60)
        cache.get("a")
        cache.set("a", 1)
        cache.get("a")
    lines = [r.getMessage() for r in caplog.records if r.name == "cachekit.trace"]
    assert len(lines) == 2
    assert lines[0].startswith("cachekit: miss") and lines[1].startswith("cachekit: hit")
    assert "a" in lines[1]


def test_a_master_short_of_replicas_never_keeps_serving_the_value_a_write_replaced() -> None:
    # min-replicas-to-write refuses writes (NOREPLICAS) while reads still work: a
    # write-through that fails this way must not leave the older value readable.
    with ServerProcess("redis") as srv:
        raw = redis.Redis(port=srv.port)
        cache = ck.Cache(RedisBackend.from_url(srv.url), namespace=_ns(), ttl=300)
        try:
            cache.set("k", 1)
            raw.config_set("min-replicas-to-write", 1)
            cache.set("k", 2)  # refused: NOREPLICAS
            assert cache.get("k") is None
        finally:
            cache.close()
            raw.close()


# ---------------------------------------------------------------- fork


@pytest.mark.parametrize("kind", ["memory", "redis", "memcached"])
def test_a_child_forked_while_another_thread_holds_the_caches_locks_can_use_it(
    kind: str, make_backend: Callable[..., ck.Backend]
) -> None:
    cache = ck.Cache(make_backend(kind), namespace=_ns(), ttl=60)
    cache.set("k", 1)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with cache._flights_lock, cache._pending_lock, cache.breaker._lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: every call must complete (exit 0), or the parent sees a hang
        code = 1
        try:
            signal.alarm(5)
            cache.set("c", 2)
            ok = cache.get("c") == 2 and cache.get_or_load("x", lambda: 3) == 3
            cache.delete("c")
            code = 0 if ok else 2
        finally:
            os._exit(code)
    release.set()
    t.join(5)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert cache.get("k") == 1  # and the parent still works


@pytest.mark.parametrize("make", [ck.Cache.from_url, AsyncCache.from_url])
def test_a_malformed_url_is_a_configuration_error_without_the_password(make: Any) -> None:
    with pytest.raises(ck.ConfigurationError) as info:
        make("redis://:s3cretmarker@[::1/0", namespace="x")
    assert "s3cretmarker" not in str(info.value)
