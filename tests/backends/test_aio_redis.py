"""Redis-specific behaviour of AsyncRedisBackend and AsyncRedisClusterBackend, on real servers.

The conformance suite covers what every driver shares; this module covers
the URL forms and checks shared with the sync backends, ACL, TLS, unix
sockets, per-loop pools, round trips, PX expiry, the whole-command deadline,
cancellation and error mapping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

import cachekit as ck
from cachekit.backends.aio import async_backend_from_url
from cachekit.backends.aio.redis import AsyncRedisBackend, AsyncRedisClusterBackend
from cachekit.backends.base import MISSING
from cachekit.backends.redis import MAX_TTL, RedisBackend
from tests.backends.test_redis import _redis_server
from tests.faultkit import (
    ServerProcess,
    TcpProxy,
    TrickleProxy,
    closed_port,
    free_port,
    wait_for_port,
)


def _key() -> str:
    return "ck-aio:" + uuid.uuid4().hex


def run(url: str, body: Callable[[Any], Awaitable[Any]], **options: Any) -> Any:
    """``asyncio.run`` of ``body(backend)`` over a fresh async backend for ``url``, closed after."""

    async def main() -> Any:
        backend = async_backend_from_url(url, **options)
        try:
            return await body(backend)
        finally:
            await backend.aclose()

    return asyncio.run(main())


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# ---------------------------------------------------------------- URLs and configuration


def test_registry_maps_schemes_to_the_async_redis_backends(
    redis_url: str, redis_cluster_url: str
) -> None:
    assert type(async_backend_from_url(redis_url)) is AsyncRedisBackend
    assert type(async_backend_from_url("rediss://127.0.0.1:6390/0")) is AsyncRedisBackend
    assert type(async_backend_from_url("unix:///tmp/redis.sock?db=1")) is AsyncRedisBackend
    assert type(async_backend_from_url(redis_cluster_url)) is AsyncRedisClusterBackend
    tls = async_backend_from_url("rediss+cluster://127.0.0.1:17001")
    assert type(tls) is AsyncRedisClusterBackend


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
        ("redis://127.0.0.1:99999/0", {}),
        ("redis://127.0.0.1:16379/x", {}),
        ("redis://u:p/w@127.0.0.1:16379/0", {}),
        ("redis://127.0.0.1:16379/0", {"ssl_ca_certs": "/ca.pem"}),  # TLS option, no TLS
        ("unix://host/tmp/redis.sock", {}),
        ("redis+cluster://127.0.0.1:17001/2", {}),
        ("redis+cluster://127.0.0.1", {}),
        ("redis+cluster://127.0.0.1:17001?db=1", {}),
    ],
)
def test_bad_configuration_is_refused_as_by_the_sync_backends(
    url: str, options: dict[str, Any]
) -> None:
    with pytest.raises(ck.ConfigurationError):
        ck.backend_from_url(url, **options).close()
    with pytest.raises(ck.ConfigurationError):
        async_backend_from_url(url, **options)


def test_options_the_asyncio_driver_lacks_are_refused_by_name() -> None:
    with pytest.raises(ck.ConfigurationError, match="ssl_validate_ocsp"):
        async_backend_from_url("rediss://127.0.0.1:6390/0", ssl_validate_ocsp=True)
    with pytest.raises(ck.ConfigurationError, match="retry"):
        async_backend_from_url("redis://127.0.0.1:6390/0", retries=2)


def test_query_options_keywords_and_the_address_without_credentials() -> None:
    url = "redis://alice:s%40cret@127.0.0.1:16379/3?socket_timeout=0.1&max_value_size=1024"
    b = async_backend_from_url(url, connect_timeout=0.05)
    assert isinstance(b, AsyncRedisBackend)
    assert b._kwargs["username"] == "alice"
    assert b._kwargs["password"] == "s@cret"
    assert b._timeout == 0.1
    assert b._kwargs["socket_connect_timeout"] == 0.05
    assert b._kwargs["db"] == 3
    assert b.max_value_size == 1024
    assert b.server_address == "redis://127.0.0.1:16379/3"
    assert "s@cret" not in repr(b) and "alice" not in repr(b)
    c = async_backend_from_url("redis+cluster://bob:pw1@127.0.0.1:17001,[::1]:17002")
    assert c.server_address == "redis+cluster://127.0.0.1:17001,[::1]:17002"
    assert "pw1" not in repr(c)


def test_no_message_carries_the_password() -> None:
    secret = "pw-" + uuid.uuid4().hex
    with closed_port() as port:
        for url in (
            f"redis://user:{secret}@127.0.0.1:{port}/0",
            f"redis+cluster://user:{secret}@127.0.0.1:{port}",
        ):
            with pytest.raises(ck.BackendUnavailableError) as info:
                run(url, lambda b: b.get("k"))
            assert secret not in str(info.value)
    for bad in (f"redis://u:{secret}@[::1/0", f"redis://u:{secret}/x@127.0.0.1/0"):
        with pytest.raises(ck.ConfigurationError) as refused:
            async_backend_from_url(bad)
        assert secret not in str(refused.value)


def test_acl_username_and_password_from_the_url(raw: redis.Redis, redis_url: str) -> None:
    user, password = "ck-aio-" + uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex
    prefix = "ck-aio-acl:" + uuid.uuid4().hex[:8] + ":"
    raw.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=[f"{prefix}*"], commands=["+@all"]
    )
    host = redis_url.split("://", 1)[1]
    try:

        async def good(b: Any) -> None:
            await b.set(prefix + "k", b"v", 10)
            assert await b.get(prefix + "k") == b"v"
            with pytest.raises(ck.BackendRejectedError) as denied:
                await b.set("not-mine:" + uuid.uuid4().hex, b"v", 10)
            assert isinstance(denied.value.__cause__, redis.exceptions.NoPermissionError)

        run(f"redis://{user}:{password}@{host}", good)
        assert raw.get(prefix + "k") == b"v"
        with pytest.raises(ck.BackendUnavailableError) as auth:
            run(f"redis://{user}:wrong@{host}", lambda b: b.get(prefix + "k"))
        assert isinstance(auth.value.__cause__, redis.exceptions.AuthenticationError)
    finally:
        raw.delete(prefix + "k")
        raw.acl_deluser(user)


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
            url = f"rediss://127.0.0.1:{port}/0"

            async def trusted(b: Any) -> Any:
                await b.set("k", b"tls", 10)
                return await b.get("k")

            assert run(url, trusted, ssl_ca_certs=cert) == b"tls"
            sync = RedisBackend.from_url(url, ssl_ca_certs=cert)
            try:
                assert sync.get("k") == b"tls"
            finally:
                sync.close()
            # the self-signed certificate is not in the system store: refused
            with pytest.raises(ck.BackendUnavailableError):
                run(url, lambda b: b.get("k"))
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

            async def body(b: Any) -> None:
                await b.set("k", b"unix", None)
                assert await b.get("k") == b"unix"

            run(f"unix://{sock}?db=2", body)
            direct = redis.Redis(unix_socket_path=sock, db=2)
            try:
                assert direct.get("k") == b"unix"
            finally:
                direct.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- commands and expiry


def test_expiry_is_px_and_none_or_inf_never_expire(redis_url: str, raw: redis.Redis) -> None:
    k1, k2, k3, k4, k5 = (_key() for _ in range(5))

    async def body(b: Any) -> None:
        await b.set(k1, b"v", 1.5)
        await b.set(k2, b"v", None)
        await b.set(k3, b"v", float("inf"))
        await b.set(k4, b"v", MAX_TTL * 10)
        await b.set(k5, b"v", 10)
        await b.set(k5, b"v", -1)  # <= 0: deleted, never stored
        assert await b.add(k5, b"v", 0) is True  # the key is free; nothing is stored
        await b.set_many({k5: b"v"}, 60)

    run(redis_url, body)
    assert 1000 < raw.pttl(k1) <= 1500
    assert raw.pttl(k2) == -1 and raw.pttl(k3) == -1
    assert raw.pttl(k4) > 10**12
    assert 59_000 < raw.pttl(k5) <= 60_000
    raw.delete(k1, k2, k3, k4, k5)


def test_many_forms_are_one_round_trip_each(monkeypatch: pytest.MonkeyPatch) -> None:
    sends: list[int] = []
    original = aredis.connection.AbstractConnection.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sends.append(1)
        await original(self, command, check_health)

    with ServerProcess("redis") as server:

        async def body(b: Any) -> tuple[dict[str, Any], int]:
            await b.get("warm-up")  # the connection handshake is not counted
            monkeypatch.setattr(
                aredis.connection.AbstractConnection, "send_packed_command", counting
            )
            keys = [f"k{i}" for i in range(100)]
            await b.set_many({k: k.encode() for k in keys}, 30)
            assert len(sends) == 1
            found = await b.get_many([*keys, "absent"])
            assert len(sends) == 2
            removed = await b.delete_many([*keys, "absent"])
            assert len(sends) == 3
            return found, removed

        found, removed = run(f"redis://127.0.0.1:{server.port}/0", body)
        stats = redis.Redis(port=server.port).info("commandstats")
    assert found == {f"k{i}": f"k{i}".encode() for i in range(100)}
    assert removed == 100
    assert stats["cmdstat_mget"]["calls"] == 1
    assert stats["cmdstat_del"]["calls"] == 1


def test_compare_and_set_reloads_a_flushed_script(redis_url: str, raw: redis.Redis) -> None:
    key = _key()

    async def body(b: Any) -> None:
        assert await b.compare_and_set(key, b"a", b"b", 10) is False  # absent
        await b.set(key, b"a", None)
        assert await b.compare_and_set(key, b"x", b"b", 10) is False
        assert await b.compare_and_set(key, b"a", b"b", 4) is True
        assert 3000 < raw.pttl(key) <= 4000
        raw.script_flush()  # EVALSHA fails once; the script is sent again
        assert await b.compare_and_set(key, b"b", b"c", None) is True
        assert raw.pttl(key) == -1

    run(redis_url, body)
    assert raw.get(key) == b"c"
    raw.delete(key)


def test_server_stats_on_a_server_and_a_cluster(redis_url: str, redis_cluster_url: str) -> None:
    for url in (redis_url, redis_cluster_url):
        stats = run(url, lambda b: b.server_stats())
        assert set(stats) == {"evictions", "expired", "hits", "misses"}
        assert all(isinstance(v, float) for v in stats.values())


# ---------------------------------------------------------------- errors


def test_refusals_are_rejections_and_oversized_values_are_never_sent(
    redis_url: str, raw: redis.Redis
) -> None:
    key = _key()
    raw.rpush(key, "x")  # a list: string commands get WRONGTYPE

    async def body(b: Any) -> None:
        for call in (lambda: b.get(key), lambda: b.compare_and_set(key, b"x", b"y", 10)):
            with pytest.raises(ck.BackendRejectedError) as info:
                await call()
            assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)
        with pytest.raises(ck.ValueTooLargeError):
            await b.set(key, b"x" * 11, 10)
        with pytest.raises(ck.ValueTooLargeError):
            await b.set_many({"a": b"x", key: b"x" * 11}, 10)
        with pytest.raises(ck.SerializationError):
            await b.set(key, {"not": "bytes"}, 10)

    try:
        run(redis_url, body, max_value_size=10)
        assert raw.lrange(key, 0, -1) == [b"x"]
    finally:
        raw.delete(key)
    # nothing is sent, so no outage is seen either
    with closed_port() as port, pytest.raises(ck.ValueTooLargeError):
        run(f"redis://127.0.0.1:{port}/0", lambda b: b.set("k", b"x" * 11, 1), max_value_size=10)


def test_a_trickling_server_cannot_hold_a_command_past_its_deadline(redis_url: str) -> None:
    # one byte per 40 ms: each answer comes within socket_timeout, all of them do not
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with TrickleProxy(port, interval=0.04) as proxy:

        async def body(b: Any) -> float:
            start = time.monotonic()
            with pytest.raises(ck.BackendUnavailableError):
                await b.get("k")
            return time.monotonic() - start

        took = run(f"redis://127.0.0.1:{proxy.port}/0", body)
    assert took < 0.5


def test_an_answer_left_by_a_timed_out_command_is_never_read_by_the_next(
    redis_url: str, raw: redis.Redis
) -> None:
    a, b_key = _key(), _key()
    raw.set(a, b"value-a")
    raw.set(b_key, b"value-b")
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with TcpProxy(port) as proxy:

        async def body(b: Any) -> None:
            assert await b.get(a) == b"value-a"  # a pooled connection through the proxy
            proxy.stall()
            with pytest.raises(ck.BackendUnavailableError):
                await b.get(a)
            proxy.resume()  # GET a now reaches the server and its answer comes back
            assert await b.get(b_key) == b"value-b"
            assert await b.get(a) == b"value-a"

        run(f"redis://127.0.0.1:{proxy.port}/0", body)
    raw.delete(a, b_key)


# ---------------------------------------------------------------- event loops


def test_one_backend_serves_one_loop_after_another_and_loops_in_threads(redis_url: str) -> None:
    key = _key()
    backend = async_backend_from_url(redis_url)

    async def use(value: bytes) -> Any:
        await backend.set(key, value, 10)
        return await backend.get(key)

    # each asyncio.run is a new loop: a pool from the last one would fail here
    assert asyncio.run(use(b"1")) == b"1"
    assert asyncio.run(use(b"2")) == b"2"
    results: list[Any] = []

    def worker(n: int) -> None:
        async def many() -> None:
            for _ in range(20):
                await backend.get(key)
            results.append(await backend.get(key))

        asyncio.run(many())

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [b"2"] * 4

    async def close() -> None:
        await backend.delete(key)
        await backend.aclose()
        with pytest.raises(ck.BackendUnavailableError):
            await backend.get(key)

    asyncio.run(close())
    assert backend.get  # the object stays usable for inspection
    assert MISSING is not None


def test_a_cluster_backend_is_built_while_the_cluster_is_down() -> None:
    with closed_port() as port:
        b = async_backend_from_url(f"redis+cluster://127.0.0.1:{port}")
        with pytest.raises(ck.BackendUnavailableError) as info:
            run(f"redis+cluster://127.0.0.1:{port}", lambda b: b.get("k"))
        assert info.value.__cause__ is not None
        assert isinstance(b, AsyncRedisClusterBackend)
