"""FAILOVER tests: a Cache over Redis Sentinel and over Redis Cluster while a master is SIGKILLed.

Every test starts its own servers on free loopback ports (a master, replicas
and three Sentinels; or a six-node cluster), never the shared test servers.
The whole module takes about 30 s; ``pytest tests/test_failover.py -k killed -s``
runs the two failover tests alone and prints their timings.

What the failover tests show, with 8 threads calling ``get_or_load`` against a
versioned "database" while one thread writes through the cache:

- while the master is gone every call falls open (nothing is raised to a
  caller) and each call returns within a bounded time;
- the circuit breaker closes again on the promoted replica within seconds;
- no call ever returns a value older than the last write that had completed
  before the call started.

Two more pin the limit of asynchronous replication (a write the old master
acknowledged but never replicated comes back as the older value, until its
TTL) and what ``wait_replicas`` does about it. The rest test the
``redis+sentinel://`` backend itself: URLs, passwords, deadlines, errors.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import key_slot
from redis.sentinel import Sentinel

import cachekit as ck
from cachekit.backends.sentinel import RedisSentinelBackend
from cachekit.errors import BackendRejectedError, BackendUnavailableError, ConfigurationError
from tests.faultkit import (
    StallServer,
    TcpProxy,
    TrickleProxy,
    closed_port,
    free_port,
    wait_for_port,
)
from tests.test_faults_redis import _in_child

SERVICE = "ckmaster"


def _eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until it is true; return the seconds it took (fail after ``timeout``)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def _answers(check: Callable[[], Any]) -> bool:
    """True if ``check()`` is truthy and raises no redis-py error."""
    try:
        return bool(check())
    except (redis.RedisError, OSError):
        return False


# ---------------------------------------------------------------- private server processes


class RedisProcess:
    """One private redis-server (or Sentinel) with extra arguments, SIGKILLed on exit."""

    def __init__(
        self, workdir: Path, name: str, args: list[str], password: str | None = None
    ) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed; run `make test`, which installs it")
        self.port = free_port()
        self.password = password
        self.dir = workdir / name
        self.dir.mkdir()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, config: str | None = None) -> RedisProcess:
        """Start it (``config``: the text of a config file to start from) and wait for its port."""
        cmd = ["redis-server"]
        if config is not None:
            conf = self.dir / "redis.conf"
            conf.write_text(config)
            cmd.append(str(conf))
        cmd += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        cmd += ["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0", *self.args]
        with open(self.dir / "log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port, password=self.password, socket_timeout=2, socket_connect_timeout=2
        )

    def kill(self) -> None:
        """SIGKILL (no clean shutdown) and wait until the process is gone."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None


@contextlib.contextmanager
def _workdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class SentinelGroup:
    """A master, its replicas and three Sentinels watching them as ``SERVICE``."""

    master: RedisProcess
    replicas: list[RedisProcess]
    sentinels: list[RedisProcess]
    #: Per replica, the proxy its replication stream goes through (``stall()`` holds it).
    links: list[TcpProxy] = field(default_factory=list)

    @property
    def replica(self) -> RedisProcess:
        return self.replicas[0]

    @property
    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    @property
    def url(self) -> str:
        return f"redis+sentinel://{self.hosts}/{SERVICE}/0"

    def master_port(self) -> int:
        """The master's port as the first Sentinel reports it."""
        with self.sentinels[0].client() as s:
            return int(s.sentinel_get_master_addr_by_name(SERVICE)[1])


@contextlib.contextmanager
def sentinel_group(
    password: str | None = None,
    sentinel_password: str | None = None,
    replicas: int = 1,
    proxied: bool = False,
) -> Iterator[SentinelGroup]:
    """Start a master, its replicas and three Sentinels; wait until they all see each other.

    ``password`` protects the master and replicas, ``sentinel_password`` the
    Sentinels; with ``proxied`` each replica replicates through ``group.links[i]``.
    """
    auth = ["--requirepass", password, "--masterauth", password] if password else []
    with _workdir("ck-sentinel-") as work, contextlib.ExitStack() as stack:
        master = RedisProcess(work, "master", auth, password).start()
        stack.callback(master.kill)
        group = SentinelGroup(master, [], [])
        for i in range(replicas):
            upstream = master.port
            if proxied:
                group.links.append(stack.enter_context(TcpProxy(master.port)))
                upstream = group.links[-1].port
            replica = RedisProcess(
                work, f"replica{i}", [*auth, "--replicaof", "127.0.0.1", str(upstream)], password
            )
            group.replicas.append(replica.start())
            stack.callback(replica.kill)
        for i in range(3):
            s = RedisProcess(work, f"sentinel{i}", ["--sentinel"], sentinel_password)
            lines = [
                f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 2",
                f"sentinel down-after-milliseconds {SERVICE} 1000",
                f"sentinel failover-timeout {SERVICE} 5000",
                f"sentinel parallel-syncs {SERVICE} 1",
            ]
            if password:
                lines.append(f"sentinel auth-pass {SERVICE} {password}")
            if sentinel_password:  # Sentinels use it for each other too
                lines.append(f"requirepass {sentinel_password}")
            group.sentinels.append(s.start(config="\n".join(lines) + "\n"))
            stack.callback(s.kill)

        def ready() -> bool:
            for s in group.sentinels:
                with s.client() as c:
                    if len(c.sentinel_sentinels(SERVICE)) < 2:
                        return False
                    seen = [r for r in c.sentinel_slaves(SERVICE) if not r["is_sdown"]]
                    if len(seen) < replicas:
                        return False
            for replica in group.replicas:
                with replica.client() as r:
                    if r.info("replication")["master_link_status"] != "up":
                        return False
            return True

        _eventually(lambda: _answers(ready), 20, "Sentinels did not see each other")
        yield group


@dataclass
class ClusterGroup:
    """Six cluster nodes: three masters, each with one replica."""

    nodes: list[RedisProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def by_port(self, port: int) -> RedisProcess:
        return next(n for n in self.nodes if n.port == port)


@contextlib.contextmanager
def cluster_group() -> Iterator[ClusterGroup]:
    """Start six nodes and join them as a 3-master, 3-replica cluster (``redis-cli --cluster``)."""
    with _workdir("ck-cluster-") as work:
        group = ClusterGroup()
        try:
            for i in range(6):
                node = RedisProcess(
                    work,
                    f"node{i}",
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        # the bus port defaults to port + 10000, which may not exist
                        "--cluster-port",
                        str(free_port()),
                    ],
                )
                group.nodes.append(node.start())
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in group.nodes),
                    "--cluster-replicas",
                    "1",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )

            def ready() -> bool:
                for n in group.nodes:
                    with n.client() as c:
                        info = c.execute_command("CLUSTER INFO")
                        if info["cluster_state"] != "ok" or info["cluster_known_nodes"] != "6":
                            return False
                        flags = [v["flags"] for v in c.execute_command("CLUSTER NODES").values()]
                        if sum("slave" in f for f in flags) != 3 or any("fail" in f for f in flags):
                            return False
                        # a replica that never synced cannot be promoted
                        role = c.info("replication")
                        if role["role"] == "slave" and role["master_link_status"] != "up":
                            return False
                return True

            _eventually(lambda: _answers(ready), 20, "cluster did not form")
            yield group
        finally:
            for n in group.nodes:
                n.kill()


# ---------------------------------------------------------------- the workload


class Database:
    """The source of truth: a version per key.

    ``done`` is, per key, the last version whose cache write has finished.
    """

    def __init__(self, keys: list[str]) -> None:
        self.lock = threading.Lock()
        self.rows = dict.fromkeys(keys, 0)
        self.done = dict.fromkeys(keys, 0)

    def read(self, key: str) -> int:
        with self.lock:
            return self.rows[key]

    def commit(self, key: str) -> int:
        with self.lock:
            self.rows[key] += 1
            return self.rows[key]


@dataclass
class Timeline:
    """What the workload saw, in seconds on ``time.monotonic()``."""

    calls: int = 0
    slowest: float = 0.0
    raised: list[BaseException] = field(default_factory=list)
    stale: list[tuple[str, int, int]] = field(default_factory=list)
    writes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Workload:
    """8 readers calling ``get_or_load`` and one writer calling ``Cache.write``, until stopped."""

    def __init__(self, cache: ck.Cache, keys: list[str], readers: int = 8) -> None:
        self.cache = cache
        self.keys = keys
        self.db = Database(keys)
        self.seen = Timeline()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, args=(i,)) for i in range(readers)]
        self._threads.append(threading.Thread(target=self._write))

    def _read(self, seed: int) -> None:
        i = seed
        while not self._stop.is_set():
            i += 1
            key = self.keys[i % len(self.keys)]
            floor = self.db.done[key]
            started = time.monotonic()
            try:
                value = self.cache.get_or_load(key, functools.partial(self.db.read, key))
            except BaseException as exc:
                with self.seen.lock:
                    self.seen.raised.append(exc)
                continue
            took = time.monotonic() - started
            with self.seen.lock:
                self.seen.calls += 1
                self.seen.slowest = max(self.seen.slowest, took)
                if value < floor:
                    self.seen.stale.append((key, value, floor))
            time.sleep(0.002)  # 2 cores are shared: leave some for the servers

    def _write(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            key = self.keys[i % len(self.keys)]
            try:
                version = self.cache.write(key, functools.partial(self.db.commit, key))
            except BaseException as exc:
                with self.seen.lock:
                    self.seen.raised.append(exc)
                continue
            with self.db.lock:
                self.db.done[key] = max(self.db.done[key], version)
            self.seen.writes += 1
            time.sleep(0.02)

    def __enter__(self) -> Workload:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def _watch_failover(
    cache: ck.Cache, promoted: Callable[[], bool], timeout: float = 20.0
) -> dict[str, float]:
    """After a kill: seconds until the outage was seen, the replica promoted, the breaker closed.

    "Closed" means: the breaker is closed with no failures counted and the
    cache answers hits again (so calls really reach the promoted master).
    """
    start = time.monotonic()
    marks: dict[str, float] = {}
    hits = cache.stats().hits
    while time.monotonic() - start < timeout:
        now = time.monotonic() - start
        stats = cache.stats()
        if "first_error" not in marks and stats.errors:
            marks["first_error"] = now
        if "breaker_opened" not in marks and cache.breaker.is_open:
            marks["breaker_opened"] = now
        if "promoted" not in marks and _answers(promoted):
            marks["promoted"] = now
        healthy = not cache.breaker.is_open and not cache.breaker.failures
        if "promoted" in marks and healthy and stats.hits > hits:
            marks["closed"] = now
            return marks
        hits = stats.hits
        time.sleep(0.05)
    pytest.fail(f"no recovery within {timeout} s after the kill: {marks}")


def _check(load: Workload, marks: dict[str, float], bound: float = 2.0) -> None:
    """Nothing raised, each call bounded, nothing older than a finished write; outage seen."""
    seen = load.seen
    assert seen.raised == [], seen.raised[:3]
    assert seen.stale == [], f"{len(seen.stale)} stale answers, e.g. {seen.stale[:3]}"
    assert seen.calls > 100 and seen.writes > 20
    # a correctness bound (several 250 ms deadlines), not a speed figure
    assert seen.slowest < bound, f"one call took {seen.slowest:.2f} s"
    assert marks["first_error"] < marks["promoted"] <= marks["closed"]
    # the breaker's next probe after the promotion closes it
    assert marks["closed"] - marks["promoted"] < load.cache.breaker.reset_timeout + 1.0


# ---------------------------------------------------------------- Sentinel


def test_sentinel_master_killed_calls_fall_open_and_the_breaker_closes_on_the_new_master(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with sentinel_group() as group:
        old = group.master.port
        cache = ck.Cache.from_url(
            group.url, namespace="fo-" + uuid.uuid4().hex[:8], ttl=60, policy=ck.WriteThrough()
        )
        keys = [f"item:{i}" for i in range(8)]
        try:
            with Workload(cache, keys) as load:
                _eventually(lambda: load.seen.calls > 200, 10, "warm-up")
                assert not cache.stats().errors
                group.master.kill()
                marks = _watch_failover(cache, lambda: group.master_port() != old)
                time.sleep(1.0)  # keep going on the new master
            assert group.master_port() == group.replica.port
            _check(load, marks)
            # the entries written after the failover are on the promoted master
            with group.replica.client() as raw:
                assert raw.exists(cache.full_key(keys[0]))
            with capsys.disabled():
                print(
                    f"\nsentinel failover (s after SIGKILL): {marks}; slowest call "
                    f"{load.seen.slowest:.3f} s; {load.seen.calls} calls"
                )
        finally:
            cache.close()


# ---------------------------------------------------------------- Redis Cluster


def _slot_owner(node: RedisProcess, slot: int) -> int:
    """The port of the master serving ``slot``, as ``node`` sees it."""
    with node.client() as c:
        for start, end, master, *_ in c.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(master[1])
    raise LookupError(slot)


def test_cluster_shard_master_killed_calls_fall_open_and_the_breaker_closes_on_its_replica(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with cluster_group() as group:
        cache = ck.Cache.from_url(
            group.url, namespace="fo-" + uuid.uuid4().hex[:8], ttl=60, policy=ck.WriteThrough()
        )
        keys = [f"item:{i}" for i in range(8)]
        try:
            slot = key_slot(cache.full_key(keys[0]).encode())
            old = _slot_owner(group.nodes[0], slot)
            victim = group.by_port(old)
            witness = next(n for n in group.nodes if n is not victim)
            with Workload(cache, keys) as load:
                _eventually(lambda: load.seen.calls > 200, 10, "warm-up")
                assert not cache.stats().errors
                victim.kill()
                marks = _watch_failover(cache, lambda: _slot_owner(witness, slot) != old)
                time.sleep(1.0)  # keep going on the promoted replica
            _check(load, marks)
            new = group.by_port(_slot_owner(witness, slot))
            with new.client() as raw:
                assert raw.exists(cache.full_key(keys[0]))
            with capsys.disabled():
                print(
                    f"\ncluster failover (s after SIGKILL): {marks}; slowest call "
                    f"{load.seen.slowest:.3f} s; {load.seen.calls} calls"
                )
        finally:
            cache.close()


# ---------------------------------------------------------------- the Sentinel backend itself

MASTER_PW = "m-Secret-0451"
SENTINEL_PW = "s-Secret-7788"


@pytest.fixture(scope="module")
def protected() -> Iterator[SentinelGroup]:
    """A Sentinel group whose master and Sentinels each have their own password."""
    with sentinel_group(password=MASTER_PW, sentinel_password=SENTINEL_PW) as group:
        yield group


def _protected_url(
    group: SentinelGroup, master_pw: str = MASTER_PW, sentinel_pw: str = SENTINEL_PW
) -> str:
    return (
        f"redis+sentinel://:{master_pw}@{group.hosts}/{SERVICE}/2?sentinel_password={sentinel_pw}"
    )


def test_url_forms_and_defaults() -> None:
    backend = RedisSentinelBackend.from_url(
        "redis+sentinel://app:pw%40x@s1,s2:26380,[::1]/orders/3"
        "?sentinel_password=spw&sentinel_username=watch&socket_timeout=0.2"
    )
    try:
        assert backend.service_name == "orders"
        assert backend.server_address == "redis+sentinel://s1:26379,s2:26380,[::1]:26379/orders/3"
        sentinel, master = backend._shared.get()  # type: ignore[union-attr]
        kw = master.connection_pool.connection_kwargs
        assert (kw["db"], kw["username"], kw["password"]) == (3, "app", "pw@x")
        assert kw["socket_timeout"] == 0.2 and kw["retry"].get_retries() == 0
        for node in sentinel.sentinels:
            skw = node.connection_pool.connection_kwargs
            assert (skw["username"], skw["password"]) == ("watch", "spw")
            # each Sentinel gets a share of the deadline: a hung one leaves time for the next
            assert skw["socket_timeout"] == pytest.approx(0.05) and skw["retry"].get_retries() == 0
        for text in (repr(backend), backend.server_address):
            assert "pw" not in text and "watch" not in text
    finally:
        backend.close()
    # keywords win over the query; db in the query works too
    other = RedisSentinelBackend.from_url(
        "redis+sentinel://s1/orders?db=4", db=4, service_name="orders"
    )
    assert other.server_address == "redis+sentinel://s1:26379/orders/4"
    other.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379",  # no service
        "redis+sentinel://s1:26379/orders/1?db=2",  # two databases
        "redis+sentinel://s1:26379/orders/x",
        "redis+sentinel://s1:26379/orders/1/more",
        "redis+sentinel://s1:port/orders",
        "redis+sentinel://s1/orders?nonsense=1",
        "redis+sentinel://s1/orders?wait_replicas=-1",
        "redis+sentinel://s1/orders?wait_replicas=x",
        "redis+sentinel://s1/orders?sentinel_timeout=0",
        "redis+sentinel://::1/orders",  # IPv6 needs brackets
        "redis+sentinel://s1/orders?ssl_ca_certs=/ca.pem",  # TLS options need rediss+sentinel
        "redis+cluster://s1/orders",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        RedisSentinelBackend.from_url(url)


def test_a_ready_client_is_used_as_it_is(protected: SentinelGroup) -> None:
    sentinel = Sentinel(
        [("127.0.0.1", s.port) for s in protected.sentinels],
        sentinel_kwargs={"password": SENTINEL_PW, "socket_timeout": 1},
    )
    master = sentinel.master_for(SERVICE, password=MASTER_PW, socket_timeout=1)
    backend = RedisSentinelBackend(client=master)
    try:
        backend.set("ck-ready-client", b"v", 10)
        assert backend.get("ck-ready-client") == b"v"
        assert backend.delete("ck-ready-client") is True
    finally:
        backend.close()
        master.close()  # close() never closes a client it was given
        sentinel.close()


def test_commands_go_to_the_master(protected: SentinelGroup) -> None:
    backend = RedisSentinelBackend.from_url(_protected_url(protected))
    key = "ck-sentinel-" + uuid.uuid4().hex
    try:
        backend.set(key, b"v1", 60)
        assert backend.get(key) == b"v1"
        assert backend.add(key, b"v2", 60) is False
        assert backend.compare_and_set(key, b"v1", b"v2", 60) is True
        assert backend.compare_and_set(key, b"v1", b"v3", 60) is False
        backend.set_many({key + "a": b"a", key + "b": b"b"}, 60)
        assert backend.get_many([key, key + "a", key + "b", key + "c"]) == {
            key: b"v2",
            key + "a": b"a",
            key + "b": b"b",
        }
        assert set(backend.server_stats()) >= {"hits", "misses", "evictions", "expired"}
        with protected.master.client() as raw:
            raw.select(2)
            assert raw.get(key) == b"v2"
        assert backend.delete_many([key + "a", key + "b", key + "c"]) == 2
        assert backend.delete(key) is True
        assert backend.get(key) is ck.MISSING
    finally:
        backend.close()


def test_a_forked_child_opens_its_own_connections(protected: SentinelGroup) -> None:
    backend = RedisSentinelBackend.from_url(_protected_url(protected))
    key = "ck-sentinel-fork-" + uuid.uuid4().hex
    try:
        backend.set(key, b"parent", 30)
        parent_id = backend.client.client_id()

        def child() -> object:
            backend.set(key + "c", b"child", 30)
            return (backend.get(key), backend.client.client_id())

        value, child_id = _in_child(child)  # type: ignore[misc]
        assert value == b"parent" and child_id != parent_id
        assert backend.get(key + "c") == b"child"  # the parent's connection still works
        assert backend.client.client_id() == parent_id
    finally:
        backend.close()


def test_a_cache_from_url_round_trips(protected: SentinelGroup) -> None:
    cache = ck.Cache.from_url(_protected_url(protected), namespace="s-" + uuid.uuid4().hex[:8])
    try:
        assert cache.get_or_load("k", lambda: {"v": 1}) == {"v": 1}
        assert cache.get("k") == {"v": 1}
        assert cache.stats().errors == 0
    finally:
        cache.close()


def test_backends_from_one_url_share_one_client(protected: SentinelGroup) -> None:
    a = RedisSentinelBackend.from_url(_protected_url(protected))
    b = RedisSentinelBackend.from_url(_protected_url(protected))
    try:
        assert a.client is b.client
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("wrong", ["master", "sentinel"])
def test_wrong_passwords_are_unavailable_and_never_shown(
    protected: SentinelGroup, wrong: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad_master, bad_sentinel = "bad-Master-1234", "bad-Sentinel-5678"
    url = (
        _protected_url(protected, master_pw=bad_master)
        if wrong == "master"
        else _protected_url(protected, sentinel_pw=bad_sentinel)
    )
    backend = RedisSentinelBackend.from_url(url)
    try:
        with pytest.raises(BackendUnavailableError) as info:
            backend.get("k")
        cache = ck.Cache(backend, namespace="s-" + uuid.uuid4().hex[:8])
        assert cache.get("k", "dflt") == "dflt"
        shown = [str(info.value), repr(info.value), repr(backend), caplog.text]
        for secret in (MASTER_PW, SENTINEL_PW, bad_master, bad_sentinel):
            for text in shown:
                assert secret not in text
    finally:
        backend.close()


def test_no_sentinel_answering_is_unavailable_and_the_cache_falls_open() -> None:
    with closed_port() as p1, closed_port() as p2:
        url = f"redis+sentinel://127.0.0.1:{p1},127.0.0.1:{p2}/{SERVICE}"
        backend = RedisSentinelBackend.from_url(url)
        try:
            with pytest.raises(BackendUnavailableError, match="MasterNotFoundError"):
                backend.get("k")
        finally:
            backend.close()
        cache = ck.Cache.from_url(url, namespace="s-" + uuid.uuid4().hex[:8])
        try:
            assert cache.get("k", "dflt") == "dflt"
            assert cache.get_or_load("k", lambda: 7) == 7
            cache.set("k", 1)
            assert cache.stats().errors > 0
        finally:
            cache.close()


def test_an_unknown_service_is_unavailable(protected: SentinelGroup) -> None:
    url = f"redis+sentinel://{protected.hosts}/no-such-service?sentinel_password={SENTINEL_PW}"
    backend = RedisSentinelBackend.from_url(url)
    try:
        with pytest.raises(BackendUnavailableError, match="no-such-service"):
            backend.set("k", b"v", 10)
    finally:
        backend.close()


def test_a_refused_command_is_rejected_not_unavailable(protected: SentinelGroup) -> None:
    backend = RedisSentinelBackend.from_url(_protected_url(protected))
    with protected.master.client() as raw:
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", 1)
        try:
            with pytest.raises(BackendRejectedError, match="maxmemory"):
                backend.set("ck-oom-" + uuid.uuid4().hex, b"v" * 1000, 10)
        finally:
            raw.config_set("maxmemory", 0)
            backend.close()


# ---------------------------------------------------------------- the limit: async replication


def test_an_acknowledged_write_lost_in_failover_leaves_the_older_value_until_ttl() -> None:
    """Pins the documented limit: Redis replicates asynchronously, so a failover can lose
    a write the old master acknowledged; the cache then serves the previous value
    (not nothing) until that entry's TTL runs out.
    """
    with sentinel_group(proxied=True) as group:
        cache = ck.Cache.from_url(
            group.url, namespace="fo-" + uuid.uuid4().hex[:8], policy=ck.WriteThrough()
        )
        try:
            cache.set("k", 1, ttl=6)
            full = cache.full_key("k")
            with group.replica.client() as raw:
                _eventually(lambda: raw.get(full) is not None, 5, "replication")
            group.links[0].stall()  # the replica's link stays up but carries nothing
            cache.set("k", 2, ttl=60)  # acknowledged by the master ...
            assert cache.get("k") == 2
            old = group.master.port
            group.master.kill()  # ... which dies before the replica has it
            _eventually(lambda: _answers(lambda: group.master_port() != old), 15, "promotion")
            _eventually(lambda: cache.get("k") is not None, 10, "breaker closed")
            assert cache.get("k") == 1  # the older value, not a miss
            assert not cache.stats().errors_by_operation.get("set")
            _eventually(lambda: cache.get("k") is None, 10, "expiry of the stale entry")
        finally:
            cache.close()


# ---------------------------------------------------------------- deadlines


def test_a_hung_sentinel_costs_only_its_share_of_the_deadline(protected: SentinelGroup) -> None:
    with StallServer() as hung:
        url = (
            f"redis+sentinel://:{MASTER_PW}@127.0.0.1:{hung.port},{protected.hosts}/{SERVICE}/2"
            f"?sentinel_password={SENTINEL_PW}"
        )
        backend = RedisSentinelBackend.from_url(url)
        try:
            backend.set("ck-hung-sentinel", b"v", 10)  # asks the hung Sentinel first
            assert backend.get("ck-hung-sentinel") == b"v"
        finally:
            backend.close()


def test_trickling_sentinels_cannot_hold_a_command_past_its_deadline(
    protected: SentinelGroup,
) -> None:
    with contextlib.ExitStack() as stack:
        slow = [stack.enter_context(TrickleProxy(s.port)) for s in protected.sentinels]
        hosts = ",".join(f"127.0.0.1:{p.port}" for p in slow)
        url = f"redis+sentinel://{hosts}/{SERVICE}?sentinel_password={SENTINEL_PW}"
        backend = stack.enter_context(RedisSentinelBackend.from_url(url))
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError):
            backend.get("k")
        # a correctness bound (one 250 ms deadline, generously), not a speed figure
        assert time.monotonic() - started < 0.6


def test_a_trickling_master_cannot_hold_a_command_past_its_deadline() -> None:
    with _workdir("ck-trickle-") as work, contextlib.ExitStack() as stack:
        master = RedisProcess(work, "master", []).start()
        stack.callback(master.kill)
        slow = stack.enter_context(TrickleProxy(master.port))
        watcher = RedisProcess(work, "sentinel", ["--sentinel"])
        config = (
            f"sentinel monitor {SERVICE} 127.0.0.1 {slow.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 60000\n"
        )
        watcher.start(config=config)
        stack.callback(watcher.kill)
        backend = stack.enter_context(
            RedisSentinelBackend.from_url(f"redis+sentinel://127.0.0.1:{watcher.port}/{SERVICE}")
        )
        calls: dict[str, Callable[[], object]] = {
            "get": lambda: backend.get("k"),
            "set": lambda: backend.set("k", b"v" * 100, 10),
            "get_many": lambda: backend.get_many(["a", "b"]),
            "set_many": lambda: backend.set_many({"a": b"1", "b": b"2"}, 10),
            "delete": lambda: backend.delete("k"),
            "compare_and_set": lambda: backend.compare_and_set("k", b"v", b"w", 10),
            "server_stats": backend.server_stats,
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                call()
            took = time.monotonic() - started
            assert took < 0.6, f"{name} took {took:.2f} s"


def test_wait_replicas_keeps_a_write_the_replicas_lack_from_coming_back() -> None:
    """With ``wait_replicas=1`` a write no replica acknowledged fails (and is owed as an
    invalidation) instead of succeeding: after the failover the cache never serves the
    value that write replaced.
    """
    with sentinel_group(replicas=2, proxied=True) as group:
        cache = ck.Cache.from_url(
            group.url + "?wait_replicas=1",
            namespace="fo-" + uuid.uuid4().hex[:8],
            policy=ck.WriteThrough(),
        )
        try:
            cache.set("k", 1, ttl=60)
            assert cache.get("k") == 1
            for link in group.links:
                link.stall()  # both replicas' links stay up but carry nothing
            cache.set("k", 2, ttl=60)  # on the master, but no replica acknowledges it
            assert cache.stats().errors_by_operation.get("set") == 1
            old = group.master.port
            group.master.kill()
            seen = []
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                seen.append(cache.get("k"))
                if _answers(lambda: group.master_port() != old) and not cache.breaker.failures:
                    break
                time.sleep(0.02)
            else:
                pytest.fail("no recovery within 15 s")
            assert 1 not in seen
            assert cache.get_or_load("k", lambda: 2) == 2
        finally:
            cache.close()
