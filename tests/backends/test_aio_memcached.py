"""Memcached-specific behaviour of AsyncMemcachedBackend, on real servers.

The conformance suite covers what every driver shares; this module covers
the URL checks shared with ``MemcachedBackend``, the protocol edges
(oversized items, server refusals, TLS), a pool with a hung node, and
connections that must never be reused after a command that did not finish.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import cachekit as ck
from cachekit.backends.aio import async_backend_from_url
from cachekit.backends.aio.memcached import AsyncMemcachedBackend
from cachekit.backends.base import MISSING
from cachekit.backends.memcached import MemcachedBackend, ServerValueTooLargeError
from tests.faultkit import MemcachedProcess, StallServer, TcpProxy
from tests.test_tls import PKI, TLSServer, _context, memcached_tls, pki  # noqa: F401

TIMEOUT = 0.25


def run(url: str, body: Callable[[Any], Awaitable[Any]], **options: Any) -> Any:
    """``asyncio.run`` of ``body(backend)`` over a fresh async backend for ``url``, closed after."""

    async def main() -> Any:
        backend = async_backend_from_url(url, **options)
        try:
            return await body(backend)
        finally:
            await backend.aclose()

    return asyncio.run(main())


def _key() -> str:
    return "ck-aio:" + uuid.uuid4().hex


# ---------------------------------------------------------------- URLs and configuration


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("memcached://", {}),
        ("memcached://127.0.0.1:0", {}),
        ("memcached://127.0.0.1:11211/path", {}),
        ("memcached://127.0.0.1:11211?bogus=1", {}),
        ("memcached://127.0.0.1:11211?timeout=abc", {}),
        ("memcached://127.0.0.1:11211?timeout=0", {}),
        ("memcached://127.0.0.1:11211?pool_size=0", {}),
        ("memcached://127.0.0.1:11211", {"max_value_size": 0}),
        ("memcached://127.0.0.1:11211", {"node_cooldown": -1}),
        ("memcached://127.0.0.1:11211,", {}),
        ("memcached://[::1:11211", {}),
        ("memcached://user:pw@127.0.0.1:11211", {}),
    ],
)
def test_bad_configuration_is_refused_as_by_the_sync_backend(
    url: str, options: dict[str, Any]
) -> None:
    with pytest.raises(ck.ConfigurationError):
        ck.backend_from_url(url, **options).close()
    with pytest.raises(ck.ConfigurationError):
        async_backend_from_url(url, **options)


def test_url_options_nodes_and_no_password_in_messages() -> None:
    b = async_backend_from_url(
        "memcached://127.0.0.1:1,127.0.0.1:2,[::1]:3?timeout=0.1&max_value_size=1000&pool_size=4"
    )
    assert isinstance(b, AsyncMemcachedBackend)
    assert b.timeout == 0.1 and b.max_value_size == 1000 and b._pool_size == 4
    assert b.nodes == ("127.0.0.1:1", "127.0.0.1:2", "::1:3")
    assert b.server_address == "memcached://127.0.0.1:1,127.0.0.1:2,::1:3"
    secret = "pw-" + uuid.uuid4().hex
    with pytest.raises(ck.ConfigurationError) as info:
        async_backend_from_url(f"memcached://user:{secret}@127.0.0.1:11211")
    assert secret not in str(info.value)


# ---------------------------------------------------------------- commands


def test_compare_and_set_with_an_immediate_expiry_and_stats(memcached_url: str) -> None:
    key = _key()

    async def body(b: Any) -> None:
        assert await b.compare_and_set(key, b"a", b"b", 10) is False  # absent
        await b.set(key, b"a", None)
        assert await b.compare_and_set(key, b"x", b"b", 10) is False
        assert await b.compare_and_set(key, b"a", b"b", 10) is True
        assert await b.get(key) == b"b"
        assert await b.compare_and_set(key, b"b", b"c", 0) is True  # stored already expired
        assert await b.get(key) is MISSING
        stats = await b.server_stats()
        assert set(stats) == {"evictions", "expired", "hits", "misses"}
        assert stats["hits"] >= 1 and stats["misses"] >= 1

    run(memcached_url, body)


def test_values_over_the_limit_are_refused_before_sending(memcached_url: str) -> None:
    key = _key()

    async def body(b: Any) -> None:
        await b.set(key, b"small", 10)
        for call in (
            lambda: b.set(key, b"x" * 1001, 10),
            lambda: b.add(key, b"x" * 1001, 10),
            lambda: b.set_many({"other": b"x", key: b"x" * 1001}, 10),
            lambda: b.compare_and_set(key, b"small", b"x" * 1001, 10),
        ):
            with pytest.raises(ck.ValueTooLargeError):
                await call()
        assert await b.get(key) == b"small"
        assert await b.get("other") is MISSING
        with pytest.raises(ck.SerializationError):
            await b.set(key, "not bytes", 10)

    run(memcached_url, body, max_value_size=1000)


def test_an_item_over_the_servers_own_limit_is_a_rejection() -> None:
    with MemcachedProcess("-m", "2", "-I", "512k") as server:

        async def body(b: Any) -> None:
            await b.set("k", b"small", 10)
            with pytest.raises(ServerValueTooLargeError) as info:
                await b.set("k", b"x" * 600_000, 10)
            assert isinstance(info.value, ck.BackendRejectedError)
            assert isinstance(info.value, ck.ValueTooLargeError)
            # the connection is still usable and the node was not marked down
            assert await b.get("k") in (b"small", MISSING)

        run(server.url, body, max_value_size=1_000_000)


# ---------------------------------------------------------------- failures


def test_an_answer_left_by_a_timed_out_command_is_never_read_by_the_next(
    memcached_url: str,
) -> None:
    a, b_key = _key(), _key()
    sync = MemcachedBackend.from_url(memcached_url)
    sync.set(a, b"value-a", 60)
    sync.set(b_key, b"value-b", 60)
    port = int(memcached_url.rsplit(":", 1)[1])
    with TcpProxy(port) as proxy:

        async def body(b: Any) -> None:
            assert await b.get(a) == b"value-a"  # a pooled connection through the proxy
            proxy.stall()
            with pytest.raises(ck.BackendUnavailableError):
                await b.get(a)
            proxy.resume()  # "get a" now reaches the server and its answer comes back
            await asyncio.sleep(0.05)
            assert await b.get(b_key) == b"value-b"
            assert await b.get(a) == b"value-a"

        run(f"memcached://127.0.0.1:{proxy.port}", body)
    sync.delete_many([a, b_key])
    sync.close()


def test_a_cancelled_command_leaves_no_answer_behind(memcached_url: str) -> None:
    a, b_key = _key(), _key()
    sync = MemcachedBackend.from_url(memcached_url)
    sync.set(a, b"value-a", 60)
    sync.set(b_key, b"value-b", 60)
    port = int(memcached_url.rsplit(":", 1)[1])
    with TcpProxy(port) as proxy:

        async def body(b: Any) -> None:
            assert await b.get(a) == b"value-a"
            proxy.stall()
            task = asyncio.ensure_future(b.get(a))
            await asyncio.sleep(0.05)
            task.cancel()  # a caller's own timeout, not the backend's deadline
            with pytest.raises(asyncio.CancelledError):
                await task
            proxy.resume()
            await asyncio.sleep(0.05)
            assert await b.get(b_key) == b"value-b"

        run(f"memcached://127.0.0.1:{proxy.port}", body)
    sync.delete_many([a, b_key])
    sync.close()


def test_a_pool_with_a_hung_node_answers_from_the_others(memcached_pool_url: str) -> None:
    with StallServer() as stall:
        url = memcached_pool_url + f",127.0.0.1:{stall.port}"

        async def body(b: Any) -> None:
            keys = [f"{_key()}-{i}" for i in range(60)]
            hung = f"127.0.0.1:{stall.port}"
            live = [k for k in keys if b.node_for(k) != hung]
            dead = [k for k in keys if b.node_for(k) == hung]
            assert live and dead
            for k in live:
                await b.set(k, b"v", 30)
            start = time.monotonic()
            assert await b.get_many(keys) == dict.fromkeys(live, b"v")
            assert time.monotonic() - start < 2 * TIMEOUT
            # the hung node is now skipped at once, its keys raise instead of waiting
            start = time.monotonic()
            with pytest.raises(ck.BackendUnavailableError, match="failed recently"):
                await b.get(dead[0])
            assert time.monotonic() - start < 0.05
            assert await b.get(live[0]) == b"v"
            with pytest.raises(ck.BackendUnavailableError):
                await b.delete_many(keys)  # every node is tried; the failure is reported
            assert await b.get_many(live) == {}

        run(url, body)


def test_a_closed_backend_refuses_further_use(memcached_url: str) -> None:
    backend = async_backend_from_url(memcached_url)

    async def body() -> None:
        await backend.set("ck-aio:closed", b"v", 5)
        await backend.aclose()
        with pytest.raises(ck.BackendUnavailableError, match="closed"):
            await backend.get("ck-aio:closed")

    asyncio.run(body())


def test_one_backend_serves_one_loop_after_another(memcached_url: str) -> None:
    key = _key()
    backend = async_backend_from_url(memcached_url)

    async def use(value: bytes) -> Any:
        await backend.set(key, value, 10)
        return await backend.get(key)

    assert asyncio.run(use(b"1")) == b"1"
    assert asyncio.run(use(b"2")) == b"2"

    async def close() -> None:
        await backend.delete(key)
        await backend.aclose()

    asyncio.run(close())


# ---------------------------------------------------------------- TLS


def test_tls_with_ca_client_certificate_and_hostname_check(
    memcached_tls: TLSServer,  # noqa: F811
    pki: PKI,  # noqa: F811
) -> None:
    context = _context(pki, ca=pki.ca, client=pki.client)
    url = f"memcached://127.0.0.1:{memcached_tls.port}"

    async def body(b: Any) -> Any:
        await b.set("k", b"over tls", 10)
        return await b.get("k")

    assert run(url, body, tls_context=context) == b"over tls"
    sync = MemcachedBackend.from_url(url, tls_context=context)
    try:
        assert sync.get("k") == b"over tls"
    finally:
        sync.close()
    # ?tls=true alone: the default context, which does not trust the private CA
    with pytest.raises(ck.BackendUnavailableError) as info:
        run(url + "?tls=true", lambda b: b.get("k"))
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    # no client certificate: the server refuses the handshake
    with pytest.raises(ck.BackendUnavailableError):
        run(url, lambda b: b.get("k"), tls_context=_context(pki, ca=pki.ca, client=None))


# ---------------------------------------------------------------- the answer parsers


def test_answers_are_parsed_only_when_whole_whatever_the_chunking() -> None:
    from cachekit.backends.aio import _protocol as mc

    tricky = b"\r\nEND\r\nVALUE x 0 1\r\n"  # looks like protocol lines inside a value
    answer = b"VALUE a 0 %d\r\n%s\r\nVALUE b 0 0\r\n\r\nEND\r\n" % (len(tricky), tricky)
    for cut in range(len(answer)):
        assert mc.many_values(bytearray(answer[:cut])) is mc.MORE, cut
    assert mc.many_values(bytearray(answer)) == {b"a": (tricky, 0), b"b": (b"", 0)}
    assert mc.one_value(bytearray(b"END\r\n")) is None
    assert mc.one_value(bytearray(b"VALUE a 0 2\r\nhi\r\nEND\r\n")) == b"hi"
    assert mc.values_with_cas(bytearray(b"VALUE a 0 2 77\r\nhi\r\nEND\r\n")) == {b"a": (b"hi", 77)}
    assert mc.answer_lines(2)(bytearray(b"STORED\r\n")) is mc.MORE
    assert mc.answer_lines(2)(bytearray(b"STORED\r\nNOT_STORED\r\n")) == [b"STORED", b"NOT_STORED"]
    assert mc.stats_lines(bytearray(b"STAT pid 1\r\nSTAT evictions 3\r\n")) is mc.MORE
    assert mc.stats_lines(bytearray(b"STAT pid 1\r\nSTAT evictions 3\r\nEND\r\n")) == {
        b"pid": b"1",
        b"evictions": b"3",
    }
    for broken in (
        b"VALUE a 0 2\r\nhi\r\nEND\r\nEND\r\n",  # more than one answer
        b"VALUE a 0 2\r\nhiXXEND\r\n",  # the size does not match the data
        b"HELLO\r\nEND\r\n",
    ):
        with pytest.raises(mc.Garbled):
            mc.many_values(bytearray(broken))
    # error lines end the command at once, without waiting for an END that never comes
    with pytest.raises(mc.Refused, match="out of memory"):
        mc.many_values(bytearray(b"SERVER_ERROR out of memory\r\n"))
    with pytest.raises(mc.Refused):
        mc.answer_lines(3)(bytearray(b"CLIENT_ERROR bad data chunk\r\n"))
    with pytest.raises(mc.Garbled):
        mc.one_value(bytearray(b"ERROR\r\n"))
    with pytest.raises(mc.Garbled):
        mc.answer_lines(1)(bytearray(b"STORED\r\nSTORED\r\n"))
