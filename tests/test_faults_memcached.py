"""Cache over MemcachedBackend when memcached dies, refuses or stalls: bounded time, no raise.

Each test runs with the sync driver under a ``Cache`` and with the async driver under an
``AsyncCache`` (``tests/twins.py``), on the same private servers; the few that are
about one driver's internals or fork() say so.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from pymemcache.client.base import PooledClient
from pymemcache.exceptions import MemcacheClientError, MemcacheServerError

import cachekit as ck
from cachekit.backends.aio._protocol import Refused
from cachekit.backends.aio.memcached import AsyncMemcachedBackend
from cachekit.backends.memcached import (
    MemcachedBackend,
    ServerValueTooLargeError,
    memcached_key,
)
from tests.faultkit import (
    FullBacklogServer,
    MemcachedProcess,
    ReplyServer,
    ServerProcess,
    StallServer,
    TrickleProxy,
    closed_port,
)
from tests.twins import TWIN_KINDS, Twin, open_twin

pytestmark = pytest.mark.memcached


@pytest.fixture(params=TWIN_KINDS)
def drv(request: pytest.FixtureRequest) -> Iterator[Twin]:
    """Each test with the sync driver and ``Cache``, then the async ones."""
    yield from open_twin(request.param)


def _backend(drv: Twin, servers: list[tuple[str, int]], **options: Any) -> Any:
    """The driver's memcached backend for ``servers`` (the async one's methods block)."""
    if drv.is_async:
        return drv.backend(AsyncMemcachedBackend(servers, **options))
    return MemcachedBackend(servers, **options)


def _cache(drv: Twin, port: int, namespace: str | None = None, **options: object) -> Any:
    backend = _backend(drv, [("127.0.0.1", port)])
    namespace = namespace or "f-" + uuid.uuid4().hex[:8]
    return drv.cache(backend, namespace=namespace, ttl=60, **options)


def _refusal(drv: Twin) -> type[Exception]:
    """The driver's own error for a command the server refused (the cause it chains)."""
    return Refused if drv.is_async else MemcacheServerError


def _idle_connections(drv: Twin, backend: Any) -> int:
    """How many connections the (one-node) backend keeps idle for reuse."""
    if not drv.is_async:
        return len(backend.client._idle)

    async def count() -> int:
        return sum(len(idle) for idle in drv.raw(backend)._idle().values())

    return int(drv.run(count()))


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with ServerProcess("memcached") as proc:
        yield proc


def _fast_breaker() -> ck.CircuitBreaker:
    return ck.CircuitBreaker(3, reset_timeout=0.2)


def test_killed_server_falls_open_and_recovers_on_restart(drv: Twin, server: ServerProcess) -> None:
    cache = _cache(drv, server.port, breaker=_fast_breaker())
    try:
        cache.set("k", {"v": 1})
        assert cache.get("k") == {"v": 1}

        server.kill()
        for _ in range(20):
            assert cache.get("k", "default") == "default"  # no exception reaches the caller
        cache.set("k2", "x")
        assert cache.delete("k") is False
        assert cache.get_or_load("k3", drv.loader(lambda: "loaded")) == "loaded"
        assert cache.get_many(["k", "k2"]) == {}
        stats = cache.stats()
        assert stats.errors >= 1

        server.start()  # same port
        deadline = time.monotonic() + 5
        while True:
            cache.set("k", {"v": 2})
            if cache.get("k") == {"v": 2}:
                break
            assert time.monotonic() < deadline, "hits did not resume within 5 s"
            drv.sleep(0.05)
        hits = cache.stats().hits
        assert cache.get("k") == {"v": 2}
        assert cache.stats().hits == hits + 1
        assert not cache.stats().circuit_open
    finally:
        cache.close()


def test_closed_port_costs_little_after_the_first_call(drv: Twin) -> None:
    with closed_port() as port:
        cache = _cache(drv, port)
        try:
            assert cache.get("k", "d") == "d"  # the first call pays the refusal
            started = time.perf_counter()
            for i in range(100):
                assert cache.get(f"k{i}", "d") == "d"
                cache.set(f"k{i}", i)
            elapsed = time.perf_counter() - started
            assert elapsed < 200 * 0.005, f"{elapsed:.3f} s for 200 calls"
            assert cache.stats().errors >= 1
        finally:
            cache.close()


def test_stalled_server_is_bounded_and_opens_the_breaker(drv: Twin) -> None:
    with StallServer() as stall:
        cache = _cache(drv, stall.port)  # default timeouts (0.25 s) and breaker
        try:
            started = time.perf_counter()
            assert cache.get("k", "d") == "d"
            assert time.perf_counter() - started < 1.0

            started = time.perf_counter()
            for _ in range(50):
                assert cache.get("k", "d") == "d"
            elapsed = time.perf_counter() - started
            assert elapsed < 2.0, f"50 calls took {elapsed:.2f} s"
            assert cache.stats().circuit_open
            assert cache.breaker.is_open
            assert cache.get_or_load("k", drv.loader(lambda: "from source")) == "from source"
        finally:
            cache.close()


def test_stalled_server_in_strict_mode_raises(drv: Twin) -> None:
    with StallServer() as stall:
        cache = _cache(drv, stall.port, fail_open=False)
        try:
            started = time.perf_counter()
            with pytest.raises(ck.BackendUnavailableError):
                cache.get("k")
            assert time.perf_counter() - started < 1.0
            for _ in range(5):  # timeouts, then the open breaker: all raise
                with pytest.raises(ck.BackendUnavailableError):
                    cache.get("k")
            assert cache.breaker.is_open
        finally:
            cache.close()


@pytest.mark.parametrize("first", ["get", "set"])
def test_after_a_restart_one_failure_drops_every_stale_connection(
    drv: Twin, server: ServerProcess, first: str
) -> None:
    """Reads and writes keep separate idle connections; one failure retires both."""
    backend = _backend(drv, [("127.0.0.1", server.port)])
    try:
        backend.set("k", b"v", 60)
        assert backend.get("k") == b"v"  # an idle read and an idle write connection
        server.restart()
        with pytest.raises(ck.BackendUnavailableError):
            if first == "get":
                backend.get("k")
            else:
                backend.set("k", b"x", 60)
        backend.set("k", b"w", 60)  # no second failure on the other stale connection
        assert backend.get("k") == b"w"
    finally:
        backend.close()


def test_invalidation_during_an_outage_is_not_lost(drv: Twin, server: ServerProcess) -> None:
    """A delete that could not be sent is replayed: the old value is not served after recovery.

    A killed memcached comes back empty, which would hide a lost delete; so the
    server's state from before the outage is put back, as if the outage had
    been a network partition that left the data in place.
    """
    cache = _cache(drv, server.port, breaker=_fast_breaker())
    raw = PooledClient(
        ("127.0.0.1", server.port), connect_timeout=1, timeout=1, default_noreply=False
    )
    try:
        cache.set("user:1", "old name")
        assert cache.get("user:1") == "old name"
        keys = [memcached_key(cache.full_key("user:1")), memcached_key(cache._version_key)]
        before = raw.get_many(keys)
        assert len(before) == 2

        server.kill()
        raw.close()
        assert cache.delete("user:1") is False  # could not reach the server

        server.start()
        assert raw.set_many(before, 0) == []  # the server "kept" the entry and namespace version
        other = _cache(drv, server.port, namespace=cache.namespace)
        try:
            # control: a process that saw no outage would read the old entry
            assert other.get("user:1") == "old name"
            drv.sleep(0.25)  # past the breaker's reset timeout
            assert cache.get("user:1") is None
            assert cache.get("user:1") is None
            assert raw.get(keys[0]) is None  # the delete really reached the server
            assert other.get("user:1") is None
        finally:
            other.close()
    finally:
        raw.close()
        cache.close()


# ------------------------------------------------------------------ one deadline per command


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("?")[0])


def _seed(port: int, mapping: dict[str, bytes]) -> None:
    raw = PooledClient(("127.0.0.1", port), connect_timeout=1, timeout=1, default_noreply=False)
    try:
        raw.set_many({memcached_key(k): v for k, v in mapping.items()}, 60)
    finally:
        raw.close()


#: Every command the backend sends, as a call on (backend, keys).
COMMANDS: dict[str, Callable[[Any, list[str]], Any]] = {
    "get": lambda b, keys: b.get(keys[0]),
    "get_many": lambda b, keys: b.get_many(keys),
    "set": lambda b, keys: b.set(keys[0], b"new", 60),
    "set_many": lambda b, keys: b.set_many(dict.fromkeys(keys, b"new"), 60),
    "add": lambda b, keys: b.add(keys[0] + "-absent", b"new", 60),
    "delete": lambda b, keys: b.delete(keys[0]),
    "delete_many": lambda b, keys: b.delete_many(keys),
    "compare_and_set": lambda b, keys: b.compare_and_set(keys[0], b"value" * 4, b"new", 60),
    "server_stats": lambda b, keys: b.server_stats(),
}
#: The deadline is 0.25 s; well within twice that, with room for a loaded machine.
BOUND = 0.6


def _assert_bounded(backend: Any, command: str, keys: list[str]) -> None:
    started = time.perf_counter()
    with pytest.raises(ck.BackendUnavailableError):
        COMMANDS[command](backend, keys)
    elapsed = time.perf_counter() - started
    assert elapsed < BOUND, f"{command} took {elapsed:.2f} s"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_trickling_server_cannot_hold_a_command_past_its_deadline(
    drv: Twin, memcached_url: str, command: str
) -> None:
    """One byte every 0.1 s arrives well within every per-read timeout; the command still ends."""
    port = _port_of(memcached_url)
    keys = [f"trickle-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    _seed(port, dict.fromkeys(keys, b"value" * 4))
    with TrickleProxy(port, interval=0.1) as proxy:
        backend = _backend(drv, [("127.0.0.1", proxy.port)])  # default deadline 0.25 s
        try:
            _assert_bounded(backend, command, keys)
        finally:
            backend.close()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_trickling_pool_cannot_hold_a_command_past_its_deadline(
    drv: Twin, memcached_pool_url: str, command: str
) -> None:
    """Over the ring, a command that asks every node still has one deadline for all of them."""
    nodes = [_port_of("x:" + n) for n in memcached_pool_url.split("//", 1)[1].split(",")]
    with ExitStack() as stack:
        proxies = [stack.enter_context(TrickleProxy(port, interval=0.1)) for port in nodes]
        backend = _backend(drv, [("127.0.0.1", p.port) for p in proxies], node_cooldown=0)
        stack.callback(backend.close)
        keys = [f"trickle-{uuid.uuid4().hex[:8]}-{i}" for i in range(30)]
        assert len({backend.node_for(k) for k in keys}) == 3  # the batch spans every node
        for node in nodes:
            _seed(node, dict.fromkeys(keys, b"value" * 4))
        _assert_bounded(backend, command, keys)


@pytest.mark.parametrize("command", ["get", "set", "get_many"])
def test_a_hanging_connect_counts_against_the_deadline(drv: Twin, command: str) -> None:
    """The deadline covers the connect: a generous connect_timeout cannot stretch the command."""
    with FullBacklogServer() as server:
        backend = _backend(drv, [("127.0.0.1", server.port)], connect_timeout=5)
        try:
            _assert_bounded(backend, command, ["k1", "k2"])
        finally:
            backend.close()


def test_a_trickling_server_opens_the_breaker(drv: Twin, memcached_url: str) -> None:
    """With per-read timeouts every get took seconds and succeeded; now they fail and trip it."""
    with TrickleProxy(_port_of(memcached_url), interval=0.1) as proxy:
        cache = _cache(drv, proxy.port)
        try:
            started = time.perf_counter()
            for _ in range(10):
                assert cache.get("k", "d") == "d"
            assert cache.stats().circuit_open
            assert time.perf_counter() - started < 10 * BOUND
        finally:
            cache.close()


# ------------------------------------------------------------------ refused, not down


@pytest.fixture
def small_server() -> Iterator[MemcachedProcess]:
    """2 MiB of memory, 512 KiB items, and -M: refuses stores when full instead of evicting."""
    with MemcachedProcess("-m", "2", "-I", "512k", "-M") as proc:
        yield proc


def _fill_until_refused(backend: Any) -> ck.BackendRejectedError:
    for i in range(200):
        try:
            backend.set(f"fill-{i}", b"x" * 100_000, None)
        except ck.BackendRejectedError as exc:
            return exc
    raise AssertionError("a 2 MiB memcached stored 20 MB")


def test_out_of_memory_is_rejected_not_unavailable(
    drv: Twin, small_server: MemcachedProcess
) -> None:
    backend = _backend(drv, [("127.0.0.1", small_server.port)])
    try:
        error = _fill_until_refused(backend)
        assert not isinstance(error, ck.BackendUnavailableError)
        assert isinstance(error.__cause__, _refusal(drv))
        assert "out of memory" in str(error)
        backend.set("small", b"fits", 60)  # the server and the connection are fine
        assert backend.get("small") == b"fits"
    finally:
        backend.close()


def test_item_over_the_servers_limit_is_rejected_and_too_large(
    drv: Twin, small_server: MemcachedProcess
) -> None:
    backend = _backend(drv, [("127.0.0.1", small_server.port)])  # max_value_size 1 MiB > -I
    try:
        with pytest.raises(ck.BackendRejectedError) as info:
            backend.set("big", b"y" * 600_000, 60)
        assert isinstance(info.value, ck.ValueTooLargeError)
        assert isinstance(info.value, ServerValueTooLargeError)
        assert isinstance(info.value.__cause__, _refusal(drv))
        backend.set("after", b"ok", 60)
        assert backend.get("after") == b"ok"
    finally:
        backend.close()


def test_a_refusing_node_is_not_marked_down(
    drv: Twin, small_server: MemcachedProcess, memcached_pool_url: str
) -> None:
    """In a pool, a refused command leaves the node in service (no cool-down)."""
    other = _port_of("x:" + memcached_pool_url.split("//", 1)[1].split(",")[0])
    backend = _backend(
        drv, [("127.0.0.1", small_server.port), ("127.0.0.1", other)], node_cooldown=30
    )
    try:
        small = f"127.0.0.1:{small_server.port}"
        prefix = uuid.uuid4().hex[:6]
        on_small = [
            k for k in (f"{prefix}-{i}" for i in range(400)) if backend.node_for(k) == small
        ]
        with pytest.raises(ServerValueTooLargeError):
            backend.set(on_small[0], b"y" * 600_000, 60)
        backend.set(on_small[1], b"fine", 60)  # not skipped for node_cooldown seconds
        assert backend.get(on_small[1]) == b"fine"
        with pytest.raises(ck.BackendRejectedError, match="out of memory"):  # fill it up
            for key in on_small[2:]:
                backend.set(key, b"x" * 100_000, None)
        assert backend.get(on_small[1]) == b"fine"
        assert backend.get_many(on_small[:2]) == {on_small[1]: b"fine"}
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("reply", "close", "error"),
    [
        (b"SERVER_ERROR busy\r\n", False, ck.BackendRejectedError),
        (b"CLIENT_ERROR bad command line format\r\n", False, ck.BackendRejectedError),
        (b"ERROR\r\n", False, ck.BackendUnavailableError),
        (b"HELLO\r\n", False, ck.BackendUnavailableError),
        (b"VALUE k 0 x\r\n", False, ck.BackendUnavailableError),
        (b"VALUE k 0 5\r\nab", True, ck.BackendUnavailableError),  # cut short
        (b"VALUE k 0 2\r\nab\r\nEND\r\nEND\r\n", False, ck.BackendUnavailableError),
    ],
)
def test_odd_replies_to_a_get_are_typed_and_drop_the_connection(
    drv: Twin, reply: bytes, close: bool, error: type[Exception]
) -> None:
    with ReplyServer(reply, close=close) as server:
        backend = _backend(drv, [("127.0.0.1", server.port)])
        try:
            with pytest.raises(error) as info:
                backend.get("k")
            assert isinstance(info.value.__cause__, Exception)
            assert _idle_connections(drv, backend) == 0  # never reused for the next command
        finally:
            backend.close()


def test_a_good_reply_is_read_whole(drv: Twin) -> None:
    with ReplyServer(b"VALUE k 0 5\r\na\r\nb!\r\nEND\r\n") as server:
        backend = _backend(drv, [("127.0.0.1", server.port)])
        try:
            assert backend.get("k") == b"a\r\nb!"  # a value may hold the line ending
            assert backend.get("k") == b"a\r\nb!"  # and the connection is reused
            assert _idle_connections(drv, backend) == 1
        finally:
            backend.close()


def test_a_full_server_never_opens_the_breaker(drv: Twin, small_server: MemcachedProcess) -> None:
    cache = _cache(drv, small_server.port, breaker=ck.CircuitBreaker(3, reset_timeout=30))
    try:
        cache.set("kept", "small")
        for i in range(60):  # far past full: each refusal is counted, none is an outage
            cache.set(f"big-{i}", "x" * 100_000)
        stats = cache.stats()
        assert stats.errors >= 3
        assert not stats.circuit_open and not cache.breaker.is_open
        assert cache.get("kept") == "small"  # still read from the server
        assert cache.stats().hits == stats.hits + 1
    finally:
        cache.close()


# Sync only: pymemcache's own exception, translated by the sync driver (the async driver
# parses answers itself: its refusals are the odd-reply cases above).
def test_client_error_answers_are_rejected() -> None:
    backend = MemcachedBackend([("127.0.0.1", 1)])
    error = backend._failure("127.0.0.1:1", "set", MemcacheClientError(b"bad command line format"))
    assert isinstance(error, ck.BackendRejectedError)
    assert "bad command line format" in str(error)


# ------------------------------------------------------------------ fork


def _local_ports(drv: Twin, backend: Any) -> set[int]:
    """The local ports of the connections idle in the backend's pools."""
    ports: set[int] = set()
    if drv.is_async:

        async def idle_ports() -> set[int]:  # the pools of the running loop
            for idle in drv.raw(backend)._idle().values():
                for conn in idle:
                    if not conn.transport.is_closing():
                        ports.add(conn.transport.get_extra_info("sockname")[1])
            return ports

        return set(drv.run(idle_ports()))
    for client in backend._nodes.values():
        for conn in [*getattr(client, "_idle", ()), *client.client_pool.free]:
            if conn.sock is not None:
                ports.add(conn.sock.getsockname()[1])
    return ports


def _child(drv: Twin, cache: Any, number: int, parent_ports: set[int]) -> str:
    """What a forked child reports: its own keys written and read back, on its own sockets."""
    drv = drv.in_child()
    cache = drv.view(cache)
    wrong = 0
    for j in range(150):
        key, value = f"child{number}:{j}", f"{number}:{j}"
        cache.set(key, value)
        if cache.get(key) != value:
            wrong += 1
    shared = _local_ports(drv, cache.backend) & parent_ports
    stats = cache.stats()
    return f"wrong={wrong} errors={stats.errors} open={stats.circuit_open} shared={sorted(shared)}"


@pytest.mark.parametrize("which", ["single", "pool"])
def test_forked_children_use_their_own_connections(
    drv: Twin, memcached_url: str, memcached_pool_url: str, which: str
) -> None:
    url = memcached_url if which == "single" else memcached_pool_url
    cache = drv.from_url(url, namespace="fork-" + uuid.uuid4().hex[:8], ttl=60)
    try:
        cache.set_many({f"parent:{i}": i for i in range(30)})  # every node of a pool
        assert cache.get_many([f"parent:{i}" for i in range(30)]) == {
            f"parent:{i}": i for i in range(30)
        }
        parent_ports = _local_ports(drv, cache.backend)
        assert parent_ports  # connections are idle in the pool, ready to be inherited

        children: list[tuple[int, int]] = []
        for number in range(3):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                report = "crashed"
                try:
                    os.close(read)
                    report = _child(drv, cache, number, parent_ports)
                except BaseException as exc:
                    report = f"{type(exc).__name__}: {exc}"
                finally:
                    os.write(write, report.encode())
                    os._exit(0)
            os.close(write)
            children.append((pid, read))

        for i in range(150):  # the parent keeps using its connections meanwhile
            assert cache.get(f"parent:{i % 30}") == i % 30
        reports = []
        for pid, read in children:
            with os.fdopen(read, "rb") as pipe:
                reports.append(pipe.read().decode())
            os.waitpid(pid, 0)
        assert reports == ["wrong=0 errors=0 open=False shared=[]"] * 3

        for number in range(3):  # what the children wrote is there
            assert cache.get(f"child{number}:149") == f"{number}:149"
        cache.set("parent:after", "still works")
        assert cache.get("parent:after") == "still works"
        assert cache.stats().errors == 0
    finally:
        cache.close()
