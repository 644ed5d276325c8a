"""Redis-specific behaviour of RedisBackend and RedisClusterBackend, on real servers.

The conformance suite covers what every backend shares; this module covers
URLs, ACL, TLS, unix sockets, pools, round trips, PX expiry, the cluster's
slot handling, compare-and-set, server stats and error mapping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

import cachekit as ck
from cachekit.backends.base import MISSING, SupportsCompareAndSet, SupportsServerStats
from cachekit.backends.redis import MAX_TTL, RedisBackend, RedisClusterBackend
from tests.faultkit import ServerProcess, TrickleProxy, closed_port, free_port, wait_for_port


def _key() -> str:
    return "ck-test:" + uuid.uuid4().hex


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisBackend]:
    b = RedisBackend.from_url(redis_url)
    yield b
    b.close()


@pytest.fixture
def cluster(redis_cluster_url: str) -> Iterator[RedisClusterBackend]:
    b = RedisClusterBackend.from_url(redis_cluster_url)
    yield b
    b.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@contextlib.contextmanager
def _redis_server(*args: str, port: int = 0) -> Iterator[str]:
    """A private redis-server with extra arguments; yields its scratch directory."""
    workdir = tempfile.mkdtemp(prefix="ck-redis-")
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen(
        [*cmd, "--dir", workdir, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield workdir
    finally:
        proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- URLs and configuration


def test_registry_maps_schemes_to_the_redis_backends(redis_url: str) -> None:
    b = ck.backend_from_url(redis_url)
    c = ck.backend_from_url("redis+cluster://127.0.0.1:17001")
    try:
        assert type(b) is RedisBackend
        assert type(c) is RedisClusterBackend
        assert isinstance(b, SupportsCompareAndSet) and isinstance(b, SupportsServerStats)
        assert isinstance(c, SupportsCompareAndSet) and isinstance(c, SupportsServerStats)
    finally:
        b.close()
        c.close()


def test_defaults_are_short_timeouts_no_retries_no_health_checks(backend: RedisBackend) -> None:
    kw = backend.connection_pool.connection_kwargs
    assert kw["socket_timeout"] == 0.25
    assert kw["socket_connect_timeout"] == 0.25
    assert kw["health_check_interval"] == 0
    assert kw["retry"].get_retries() == 0
    conn = backend.connection_pool.make_connection()
    try:
        assert conn.retry.get_retries() == 0
        assert conn.socket_timeout == 0.25
    finally:
        conn.disconnect()


def test_query_options_and_keyword_overrides() -> None:
    url = "redis://127.0.0.1:16379/3?socket_timeout=0.5&connect_timeout=0.1&retries=1"
    b = RedisBackend.from_url(url, socket_timeout=0.2, max_value_size=1024)
    try:
        kw = b.connection_pool.connection_kwargs
        assert kw["db"] == 3
        assert kw["socket_timeout"] == 0.2  # the keyword wins over the query
        assert kw["socket_connect_timeout"] == 0.1
        assert kw["retry"].get_retries() == 1
        assert b.max_value_size == 1024
    finally:
        b.close()
    b = RedisBackend.from_url("redis://127.0.0.1:16379?db=5&serializer=json")
    try:
        assert b.connection_pool.connection_kwargs["db"] == 5
    finally:
        b.close()


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("redis://127.0.0.1:16379/0?bogus=1", {}),
        ("redis://127.0.0.1:16379/0?socket_timeout=abc", {}),
        ("redis://127.0.0.1:16379/0", {"socket_timeout": None}),
        ("redis://127.0.0.1:16379/0", {"socket_timeout": 0}),
        ("redis://127.0.0.1:16379/0", {"retries": -1}),
        ("redis://127.0.0.1:16379/0", {"no_such_option": 1}),
        ("redis://127.0.0.1:16379/1?db=2", {}),
        ("memcached://127.0.0.1:11211", {}),
    ],
)
def test_bad_configuration_is_refused(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ck.ConfigurationError):
        RedisBackend.from_url(url, **options)


def test_cluster_url_parsing() -> None:
    url = "redis+cluster://alice:s%40cret@127.0.0.1:17001,127.0.0.1:17002?socket_timeout=0.1"
    b = RedisClusterBackend.from_url(url)
    try:
        assert b._kwargs["username"] == "alice"
        assert b._kwargs["password"] == "s@cret"
        assert b._kwargs["socket_timeout"] == 0.1
        assert b._kwargs["socket_connect_timeout"] == 0.25
        assert repr(b) == "RedisClusterBackend(127.0.0.1:17001,127.0.0.1:17002)"
    finally:
        b.close()
    tls = RedisClusterBackend.from_url("rediss+cluster://127.0.0.1:17001")
    try:
        assert issubclass(tls._kwargs["connection_class"], redis.SSLConnection)
    finally:
        tls.close()
    for bad in ("redis+cluster://127.0.0.1:17001/2", "redis+cluster://127.0.0.1"):
        with pytest.raises(ck.ConfigurationError):
            RedisClusterBackend.from_url(bad)


def test_a_cluster_backend_can_be_built_while_the_cluster_is_down() -> None:
    with closed_port() as port:
        b = RedisClusterBackend.from_url(f"redis+cluster://127.0.0.1:{port}")
        try:
            with pytest.raises(ck.BackendUnavailableError) as info:
                b.get("k")
            assert info.value.__cause__ is not None
        finally:
            b.close()


def _connections_named(raw: redis.Redis, name: str) -> int:
    return sum(1 for c in raw.client_list() if c.get("name") == name)


def test_pools_are_shared_per_url_and_released_by_the_last_close(
    redis_url: str, raw: redis.Redis
) -> None:
    name = "ck-pool-" + uuid.uuid4().hex[:8]  # a unique option gives a pool of our own
    a = RedisBackend.from_url(redis_url, client_name=name)
    b = RedisBackend.from_url(redis_url, client_name=name)
    other = RedisBackend.from_url(redis_url, client_name=name + "x")
    try:
        assert a.connection_pool is b.connection_pool
        assert other.connection_pool is not a.connection_pool
        key = _key()
        a.set(key, b"1", 10)
        a.close()
        assert b.get(key) == b"1"  # closing one user leaves the shared pool working
        pool = b.connection_pool
        assert _connections_named(raw, name) == 1
        b.close()
        deadline = time.monotonic() + 5  # the server notices the closed socket shortly after
        while _connections_named(raw, name):
            assert time.monotonic() < deadline, "the pool's connections were not closed"
            time.sleep(0.01)
        fresh = RedisBackend.from_url(redis_url, client_name=name)
        assert fresh.connection_pool is not pool
        fresh.delete(key)
        fresh.close()
    finally:
        a.close()
        b.close()
        other.close()


def test_a_ready_client_is_used_and_not_closed(redis_url: str, raw: redis.Redis) -> None:
    b = RedisBackend(client=raw)
    key = _key()
    b.set(key, b"v", 10)
    assert raw.get(key) == b"v"
    b.close()
    assert raw.get(key) == b"v"  # still usable: we do not own it
    raw.delete(key)
    with pytest.raises(ck.ConfigurationError):
        RedisBackend(client=raw, ssl_ca_certs="ca.pem")
    with pytest.raises(ck.ConfigurationError):
        RedisBackend()


def test_acl_username_and_password_from_the_url(raw: redis.Redis, redis_url: str) -> None:
    user, password = "ck-user-" + uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex
    prefix = "ck-acl:" + uuid.uuid4().hex[:8] + ":"
    raw.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=[f"{prefix}*"], commands=["+@all"]
    )
    host = redis_url.split("://", 1)[1]
    good = RedisBackend.from_url(f"redis://{user}:{password}@{host}")
    bad = RedisBackend.from_url(f"redis://{user}:wrong@{host}")
    try:
        good.set(prefix + "k", b"v", 10)
        assert good.get(prefix + "k") == b"v"
        assert raw.get(prefix + "k") == b"v"
        # the ACL is in force: this user may not touch other keys (refused, not an outage)
        with pytest.raises(ck.BackendRejectedError) as denied:
            good.set("not-mine:" + uuid.uuid4().hex, b"v", 10)
        assert isinstance(denied.value.__cause__, redis.exceptions.NoPermissionError)
        with pytest.raises(ck.BackendUnavailableError) as auth:
            bad.get(prefix + "k")
        assert isinstance(auth.value.__cause__, redis.exceptions.AuthenticationError)
    finally:
        good.close()
        bad.close()
        raw.delete(prefix + "k")
        raw.acl_deluser(user)
    assert user not in raw.acl_users()


def test_rediss_checks_certificates_by_default() -> None:
    b = RedisBackend.from_url("rediss://127.0.0.1:6390/0", ssl_ca_certs="/etc/ssl/ca.pem")
    try:
        pool = b.connection_pool
        assert issubclass(pool.connection_class, redis.SSLConnection)
        kw = pool.connection_kwargs
        assert kw["ssl_ca_certs"] == "/etc/ssl/ca.pem"
        conn = pool.make_connection()
        try:
            assert conn.cert_reqs == __import__("ssl").CERT_REQUIRED  # type: ignore[attr-defined]
            assert conn.check_hostname is True  # type: ignore[attr-defined]
        finally:
            conn.disconnect()
    finally:
        b.close()


def test_rediss_against_a_real_tls_server() -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a test certificate")
    port = free_port()
    certdir = tempfile.mkdtemp(prefix="ck-tls-")
    cert, key = os.path.join(certdir, "c.pem"), os.path.join(certdir, "k.pem")
    try:
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-keyout", key, "-out", cert, "-subj", "/CN=localhost"),
                *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            ],
            check=True,
            capture_output=True,
        )
        tls_args = ["--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key]
        tls_args += ["--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]
        with _redis_server(*tls_args):
            wait_for_port(port)
            trusted = RedisBackend.from_url(f"rediss://127.0.0.1:{port}/0", ssl_ca_certs=cert)
            untrusted = RedisBackend.from_url(f"rediss://127.0.0.1:{port}/0")
            try:
                trusted.set("k", b"tls", 10)
                assert trusted.get("k") == b"tls"
                # the self-signed certificate is not in the system store: refused
                with pytest.raises(ck.BackendUnavailableError):
                    untrusted.get("k")
            finally:
                trusted.close()
                untrusted.close()
            # a trickling TLS server: the handshake and the reads share one deadline
            with TrickleProxy(port, interval=0.2) as proxy:
                slow = RedisBackend.from_url(
                    f"rediss://127.0.0.1:{proxy.port}/0", ssl_ca_certs=cert
                )
                try:
                    for _ in range(2):
                        started = time.perf_counter()
                        with pytest.raises(ck.BackendUnavailableError):
                            slow.get("k")
                        assert time.perf_counter() - started < 0.6
                finally:
                    slow.close()
    finally:
        shutil.rmtree(certdir, ignore_errors=True)


def test_unix_socket_url_with_db() -> None:
    workdir = tempfile.mkdtemp(prefix="ck-sock-")
    sock = os.path.join(workdir, "redis.sock")
    try:
        with _redis_server("--unixsocket", sock, "--unixsocketperm", "700"):
            deadline = time.monotonic() + 10
            while not os.path.exists(sock):
                assert time.monotonic() < deadline, "redis-server did not open its socket"
                time.sleep(0.01)
            b = RedisBackend.from_url(f"unix://{sock}?db=2")
            try:
                b.set("k", b"unix", None)
                assert b.get("k") == b"unix"
                with contextlib.closing(redis.Redis(unix_socket_path=sock, db=2)) as direct:
                    assert direct.get("k") == b"unix"
                assert b.connection_pool.connection_kwargs["db"] == 2
            finally:
                b.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- commands and expiry


def test_set_uses_px_and_none_means_no_expiry(backend: RedisBackend, raw: redis.Redis) -> None:
    k1, k2, k3, k4 = _key(), _key(), _key(), _key()
    backend.set(k1, b"a", 1.5)
    assert 1000 < raw.pttl(k1) <= 1500
    backend.set(k2, b"b", None)
    assert raw.pttl(k2) == -1
    backend.set(k3, b"c", 0.0004)  # under a millisecond: still expires, never "no expiry"
    assert raw.pttl(k3) in (-2, 0, 1)
    backend.set(k2, b"b2", 0)  # ttl <= 0 removes the entry
    assert raw.exists(k2) == 0
    assert backend.add(k4, b"first", 2.5) is True
    assert 2000 < raw.pttl(k4) <= 2500
    assert backend.add(k4, b"second", 5) is False
    assert raw.get(k4) == b"first"
    assert backend.delete(k4) is True
    assert backend.delete(k4) is False
    raw.delete(k1, k3)


def test_odd_keys_are_stored_byte_exact(backend: RedisBackend, raw: redis.Redis) -> None:
    base = _key()
    keys = [base + s for s in (" sp", "\nnl", "\x00\x01", "ünï", "\udcff", "x" * 400)]
    backend.set_many({k: k.encode("utf-8", "surrogatepass") for k in keys}, 10)
    found = backend.get_many(keys)
    assert found == {k: k.encode("utf-8", "surrogatepass") for k in keys}
    assert raw.get(keys[3].encode()) == keys[3].encode()
    assert backend.delete_many(keys) == len(keys)


def test_values_over_the_limit_are_refused_before_sending(redis_url: str, raw: redis.Redis) -> None:
    b = RedisBackend.from_url(redis_url, max_value_size=1024)
    key = _key()
    try:
        b.set(key, b"old", 10)
        with pytest.raises(ck.ValueTooLargeError):
            b.set(key, b"x" * 1025, 10)
        with pytest.raises(ck.ValueTooLargeError):
            b.set_many({key: b"y", _key(): b"x" * 1025}, 10)
        with pytest.raises(ck.ValueTooLargeError):
            b.add(_key(), b"x" * 1025, 10)
        assert raw.get(key) == b"old"  # nothing was sent, not even the small item
        b.set(key, b"x" * 1024, 10)
        assert b.get(key) == b"x" * 1024
        with pytest.raises(ck.SerializationError):
            b.set(key, object(), 10)
    finally:
        raw.delete(key)
        b.close()


def test_get_many_and_set_many_of_100_keys_are_one_round_trip_each() -> None:
    sends: list[int] = []

    class CountingConnection(redis.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            sends.append(1)
            super().send_packed_command(command, check_health)

    with ServerProcess("redis") as server:
        pool = redis.ConnectionPool(
            host="127.0.0.1", port=server.port, connection_class=CountingConnection
        )
        client = redis.Redis(connection_pool=pool)
        b = RedisBackend(client=client)
        try:
            b.get("warm-up")  # the connection handshake (HELLO/CLIENT SETINFO) is not counted
            keys = [f"k{i}" for i in range(100)]
            before = client.info("commandstats")
            sends.clear()
            b.set_many({k: k.encode() for k in keys}, 30)
            assert len(sends) == 1
            sends.clear()
            found = b.get_many([*keys, "absent"])
            assert len(sends) == 1
            sends.clear()
            assert b.delete_many([*keys, "absent"]) == 100
            assert len(sends) == 1
            after = client.info("commandstats")
        finally:
            client.close()
            pool.disconnect()
    assert found == {k: k.encode() for k in keys}
    assert after["cmdstat_mget"]["calls"] - before.get("cmdstat_mget", {"calls": 0})["calls"] == 1
    assert after["cmdstat_set"]["calls"] - before.get("cmdstat_set", {"calls": 0})["calls"] == 100
    assert after["cmdstat_del"]["calls"] - before.get("cmdstat_del", {"calls": 0})["calls"] == 1


def test_set_many_ttl_applies_to_every_key(backend: RedisBackend, raw: redis.Redis) -> None:
    keys = [_key() for _ in range(5)]
    backend.set_many(dict.fromkeys(keys, b"v"), 3)
    assert all(2000 < raw.pttl(k) <= 3000 for k in keys)
    backend.set_many(dict.fromkeys(keys, b"w"), None)
    assert all(raw.pttl(k) == -1 for k in keys)
    backend.set_many(dict.fromkeys(keys, b"w"), 0)
    assert raw.exists(*keys) == 0
    assert backend.get_many([]) == {} and backend.delete_many([]) == 0


def test_compare_and_set(backend: RedisBackend, raw: redis.Redis) -> None:
    key = _key()
    assert backend.compare_and_set(key, b"a", b"b", 10) is False  # absent
    assert raw.exists(key) == 0
    backend.set(key, b"a", None)
    assert backend.compare_and_set(key, b"x", b"b", 10) is False
    assert raw.get(key) == b"a"
    assert backend.compare_and_set(key, b"a", b"b", 4) is True
    assert raw.get(key) == b"b"
    assert 3000 < raw.pttl(key) <= 4000
    assert backend.compare_and_set(key, b"b", b"c", None) is True
    assert raw.pttl(key) == -1
    raw.script_flush()  # the script is reloaded transparently (EVALSHA falls back)
    assert backend.compare_and_set(key, b"c", b"d", 0) is True
    assert raw.exists(key) == 0


def test_server_stats_are_floats_from_info(backend: RedisBackend, raw: redis.Redis) -> None:
    key = _key()
    before = backend.server_stats()
    assert set(before) >= {"evictions", "expired", "hits", "misses"}
    assert all(isinstance(v, float) for v in before.values())
    raw.set(key, b"v")
    for _ in range(5):
        backend.get(key)
    backend.get(_key())
    after = backend.server_stats()
    assert after["hits"] - before["hits"] >= 5
    assert after["misses"] - before["misses"] >= 1
    raw.delete(key)


# ---------------------------------------------------------------- errors


def test_a_closed_port_is_unavailable_fast_with_the_cause_chained() -> None:
    with closed_port() as port:
        b = RedisBackend.from_url(f"redis://127.0.0.1:{port}/0")
        try:
            for call in (
                lambda: b.get("k"),
                lambda: b.set("k", b"v", 1),
                lambda: b.add("k", b"v", 1),
                lambda: b.delete("k"),
                lambda: b.get_many(["a", "b"]),
                lambda: b.set_many({"a": b"1"}, 1),
                lambda: b.delete_many(["a", "b"]),
                lambda: b.compare_and_set("k", b"a", b"b", 1),
                b.server_stats,
            ):
                started = time.perf_counter()
                with pytest.raises(ck.BackendUnavailableError) as info:
                    call()
                assert time.perf_counter() - started < 0.5
                assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        finally:
            b.close()


def test_out_of_memory_is_rejected_not_unavailable() -> None:
    with ServerProcess("redis") as server:
        b = RedisBackend.from_url(server.url)
        try:
            b.client.config_set("maxmemory", "1")  # below what is used: every write refused
            b.client.config_set("maxmemory-policy", "noeviction")
            with pytest.raises(ck.BackendRejectedError) as info:
                b.set("k", b"v" * 100, 10)
            assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)
            assert isinstance(info.value.__cause__, redis.exceptions.OutOfMemoryError)
            assert b.get("k") is MISSING  # reads still work
        finally:
            b.close()


# ---------------------------------------------------------------- cluster


def test_cluster_keys_spread_over_all_masters(cluster: RedisClusterBackend) -> None:
    client: RedisCluster = cluster.client
    masters = {n.name for n in client.get_primaries()}
    assert len(masters) == 3
    keys = [_key() for _ in range(100)]
    owners = {client.get_node_from_key(k.encode()).name for k in keys}
    assert owners == masters
    cluster.set_many({k: k.encode() for k in keys}, 30)
    # each master really holds some of them
    for node in client.get_primaries():
        held = [k for k in keys if client.get_node_from_key(k.encode()).name == node.name]
        direct = redis.Redis(host=node.host, port=node.port)
        try:
            assert direct.mget(held[:1]) == [held[0].encode()]
        finally:
            direct.close()
    assert cluster.get_many([*keys, "absent-" + _key()]) == {k: k.encode() for k in keys}
    assert all(25_000 < client.pttl(k) <= 30_000 for k in keys[:10])
    assert cluster.delete_many(keys) == 100
    assert cluster.get_many(keys) == {}


def test_cluster_single_key_commands_and_ttl(cluster: RedisClusterBackend) -> None:
    client = cluster.client
    key = _key()
    cluster.set(key, b"v", None)
    assert client.pttl(key) == -1
    assert cluster.get(key) == b"v"
    assert cluster.add(key, b"w", 5) is False
    assert cluster.delete(key) is True
    assert cluster.add(key, b"w", 2.5) is True
    assert 2000 < client.pttl(key) <= 2500
    assert cluster.get(key + "-absent") is MISSING
    cluster.set(key, b"x", 0)
    assert cluster.get(key) is MISSING


def test_cluster_compare_and_set_and_stats(cluster: RedisClusterBackend) -> None:
    client = cluster.client
    keys = [_key() for _ in range(30)]  # spread over every master
    before = cluster.server_stats()
    for k in keys:
        cluster.set(k, b"a", None)
        assert cluster.compare_and_set(k, b"x", b"b", 5) is False
        assert cluster.compare_and_set(k, b"a", b"b", 5) is True
        assert cluster.get(k) == b"b"
        assert 4000 < client.pttl(k) <= 5000
    after = cluster.server_stats()
    # GET inside the scripts and the plain GETs both count as hits, on each master
    assert after["hits"] - before["hits"] >= 60
    per_node = client.info("stats", target_nodes=RedisCluster.PRIMARIES)
    assert len(per_node) == 3
    assert after["hits"] <= sum(float(i["keyspace_hits"]) for i in per_node.values())
    assert cluster.delete_many(keys) == 30


def test_cluster_accepts_a_ready_client(redis_cluster_url: str) -> None:
    client = RedisCluster(host="127.0.0.1", port=17001)
    b = RedisClusterBackend(client=client)
    try:
        keys = [_key() for _ in range(20)]
        b.set_many(dict.fromkeys(keys, b"v"), 10)
        assert b.get_many(keys) == dict.fromkeys(keys, b"v")
        assert b.delete_many(keys) == 20
        b.close()
        assert client.ping()  # not ours: still open
    finally:
        client.close()


def test_a_cache_over_redis_and_the_cluster(redis_url: str, redis_cluster_url: str) -> None:
    for url in (redis_url + "?serializer=json", redis_cluster_url):
        cache = ck.Cache.from_url(url, namespace="t-" + uuid.uuid4().hex[:8], ttl=30)
        try:
            data = {f"k{i}": {"n": i} for i in range(50)}
            cache.set_many(data)
            assert cache.get_many(list(data)) == data
            assert cache.get("k7") == {"n": 7}
            cache.clear()
            assert cache.get_many(list(data)) == {}
        finally:
            cache.close()


# ---------------------------------------------------------------- TTL edges


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_infinite_and_huge_ttls_never_reach_redis_out_of_range(
    kind: str, redis_url: str, redis_cluster_url: str
) -> None:
    b = ck.backend_from_url(redis_url if kind == "redis" else redis_cluster_url)
    client: Any = b.client  # type: ignore[attr-defined]
    inf, nan = float("inf"), float("nan")
    keys = [_key() for _ in range(8)]
    try:
        # inf: stored without expiry, by every write
        b.set(keys[0], b"v", inf)
        assert b.add(keys[1], b"v", inf) is True
        b.set_many({keys[2]: b"v"}, inf)
        b.set(keys[3], b"a", 10)
        assert b.compare_and_set(keys[3], b"a", b"b", inf) is True  # type: ignore[attr-defined]
        assert [client.pttl(k) for k in keys[:4]] == [-1, -1, -1, -1]
        # larger than Redis's range: clamped to MAX_TTL, still stored
        for ttl in (1e300, 2.0**70, MAX_TTL * 10, MAX_TTL):
            b.set(keys[4], b"big", ttl)
            assert b.get(keys[4]) == b"big"
            assert client.pttl(keys[4]) > 10**18
        assert b.add(keys[5], b"v", 1e300) is True
        b.set_many({keys[6]: b"v"}, 1e300)
        assert b.compare_and_set(keys[6], b"v", b"w", 1e300) is True  # type: ignore[attr-defined]
        assert all(client.pttl(k) > 10**18 for k in (keys[5], keys[6]))
        # zero, negative and NaN: expired at once, like the memory backend
        for ttl in (0, -1, -inf, nan):
            b.set(keys[7], b"old", None)
            b.set(keys[7], b"new", ttl)
            assert b.get(keys[7]) is MISSING
            b.set(keys[7], b"old", None)
            assert b.add(keys[7], b"new", ttl) is False  # present: not added
            assert b.compare_and_set(keys[7], b"old", b"new", ttl) is True  # type: ignore[attr-defined]
            assert b.get(keys[7]) is MISSING
    finally:
        b.delete_many(keys)
        b.close()


def test_a_cache_with_an_infinite_ttl_stores_without_expiry(redis_url: str) -> None:
    cache = ck.Cache.from_url(redis_url, namespace="t-" + uuid.uuid4().hex[:8], ttl=float("inf"))
    try:
        cache.set("k", 1)
        assert cache.get("k") == 1
        assert cache.backend.client.pttl(cache.full_key("k")) == -1  # type: ignore[attr-defined]
        assert cache.stats().errors == 0
    finally:
        cache.clear()
        cache.close()


# ---------------------------------------------------------------- refused vs unavailable


def test_a_full_server_rejects_writes_and_keeps_serving_reads() -> None:
    port = free_port()
    with _redis_server("--maxmemory", "1mb", "--maxmemory-policy", "noeviction", port=port):
        wait_for_port(port)
        b = RedisBackend.from_url(f"redis://127.0.0.1:{port}/0")
        try:
            b.set("kept", b"v", None)
            b.set("kept2", b"v", None)
            chunk = b"x" * 64 * 1024
            with pytest.raises(ck.BackendRejectedError) as info:
                for i in range(10_000):  # fills 1 MB within a few dozen
                    b.set(f"fill-{i}", chunk, None)
            assert isinstance(info.value.__cause__, redis.exceptions.OutOfMemoryError)
            assert not isinstance(info.value, ck.BackendUnavailableError)
            for write in (
                lambda: b.set("new", chunk, 10),
                lambda: b.add("new", chunk, 10),
                lambda: b.set_many({"n1": chunk, "n2": chunk}, 10),
                lambda: b.compare_and_set("kept", b"v", chunk, 10),
            ):
                with pytest.raises(ck.BackendRejectedError):
                    write()
            assert b.get("kept") == b"v"  # reads keep working
            assert b.get_many(["kept", "absent"]) == {"kept": b"v"}
            assert b.delete("kept2") is True  # and so do deletes
        finally:
            b.close()


def test_error_replies_are_rejections_and_outages_are_not() -> None:
    from cachekit.backends.redis import _failure

    refused = [
        redis.exceptions.ResponseError("ERR invalid expire time in 'set' command"),
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        redis.exceptions.NoPermissionError("no permissions"),
        redis.exceptions.DataError("Invalid input of type: 'dict'"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
    ]
    outages = [
        redis.exceptions.ConnectionError("Error 111 connecting"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.AuthenticationError("invalid username-password pair"),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.exceptions.ClusterDownError("The cluster is down"),
        redis.exceptions.TryAgainError("TRYAGAIN"),
        redis.exceptions.ResponseError("BUSY Redis is busy running a script."),
        redis.exceptions.RedisClusterException("Redis Cluster cannot be connected"),
        ConnectionResetError(104, "Connection reset by peer"),
    ]
    for exc in refused:
        assert type(_failure("X", exc)) is ck.BackendRejectedError, exc
    for exc in outages:
        assert type(_failure("X", exc)) is ck.BackendUnavailableError, exc
