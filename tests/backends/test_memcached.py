"""MemcachedBackend on real memcached servers: keys, item size, TTL, many-ops, CAS, hashing."""

from __future__ import annotations

import math
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymemcache.client.base import PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import MemcacheServerError

import cachekit as ck
from cachekit.backends.base import MISSING, SupportsCompareAndSet, SupportsServerStats
from cachekit.backends.memcached import (
    DEFAULT_MAX_VALUE_SIZE,
    MAX_ABSOLUTE_EXPTIME,
    MAX_RELATIVE_TTL,
    MemcachedBackend,
    memcached_expire,
    memcached_key,
    parse_servers,
)
from tests.faultkit import ServerProcess

pytestmark = pytest.mark.memcached

Factory = Callable[..., Any]

ODD_KEYS = [
    "with space",
    "new\nline",
    "crlf\r\nset x 0 0 1",
    "ctrl\x00\x01\x07\x1b\x7f",
    "tab\tkey",
    "ünïcødé-ключ-鍵",
    "emoji-\U0001f600",
    "k" * 400,
    "k" * 399 + "j",
    "~looks-hashed",
    " leading",
    "trailing ",
]


def _raw(port: int) -> PooledClient:
    return PooledClient(("127.0.0.1", port), connect_timeout=1, timeout=1, default_noreply=False)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("?")[0])


@pytest.fixture
def raw_single(memcached_url: str) -> Iterator[PooledClient]:
    client = _raw(_port(memcached_url))
    yield client
    client.close()


@pytest.fixture(params=["memcached", "memcached-pool"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _uid() -> str:
    return uuid.uuid4().hex[:12]


# ------------------------------------------------------------------ keys


def test_encoded_keys_are_protocol_safe_and_distinct() -> None:
    encoded = [memcached_key(k) for k in ODD_KEYS]
    assert len(set(encoded)) == len(ODD_KEYS)
    for raw, enc in zip(ODD_KEYS, encoded, strict=True):
        data = enc.encode("ascii")  # raises if anything non-ASCII got through
        assert len(data) <= 250
        assert all(0x21 <= b <= 0x7E for b in data), (raw, enc)
        assert enc != raw  # every odd key above had to be hashed
    assert memcached_key("plain:key-1") == "plain:key-1"  # safe keys stay readable
    assert memcached_key("k" * 250) == "k" * 250
    assert memcached_key("k" * 251) != "k" * 251


def test_odd_keys_round_trip_without_collision(make_backend: Factory, kind: str) -> None:
    backend = make_backend(kind)
    prefix = _uid()
    keys = [prefix + k for k in ODD_KEYS]
    for i, key in enumerate(keys):
        backend.set(key, f"v{i}".encode(), 60)
    for i, key in enumerate(keys):
        assert backend.get(key) == f"v{i}".encode(), repr(key)
    assert backend.get_many(keys) == {k: f"v{i}".encode() for i, k in enumerate(keys)}
    assert backend.delete_many(keys) == len(keys)
    assert backend.get_many(keys) == {}


def test_what_reaches_the_server_is_the_encoded_key(make_backend: Factory, raw_single: Any) -> None:
    backend = make_backend("memcached")
    victim = "victim-" + _uid()
    key = f"inj{_uid()}\r\nset {victim} 0 0 1\r\nX\r\nget"
    backend.set(key, b"payload", 60)
    assert raw_single.get(memcached_key(key)) == b"payload"
    # the command embedded in the key was never executed
    assert raw_single.get(victim) is None


# ------------------------------------------------------------------ item size


def test_premise_memcached_drops_the_old_item_on_an_oversized_set(raw_single: Any) -> None:
    """Why the size check must happen before sending: memcached deletes the old value."""
    key = "premise-" + _uid()
    raw_single.set(key, b"old", 60)
    with pytest.raises(MemcacheServerError):
        raw_single.set(key, b"x" * (2 * 1024 * 1024), 60)
    assert raw_single.get(key) is None


@pytest.mark.parametrize("how", ["set", "set_many", "add", "compare_and_set"])
def test_oversized_value_raises_before_sending_and_old_value_survives(
    make_backend: Factory, kind: str, how: str
) -> None:
    backend = make_backend(kind)
    key = "big-" + _uid()
    backend.set(key, b"old", 60)
    big = b"x" * (DEFAULT_MAX_VALUE_SIZE + 1)
    with pytest.raises(ck.ValueTooLargeError) as info:
        if how == "set":
            backend.set(key, big, 60)
        elif how == "set_many":
            backend.set_many({key + "-other": b"small", key: big}, 60)
        elif how == "add":
            backend.add(key, big, 60)
        else:
            backend.compare_and_set(key, b"old", big, 60)
    assert info.value.limit == DEFAULT_MAX_VALUE_SIZE
    assert backend.get(key) == b"old"
    assert backend.get(key + "-other") is MISSING  # nothing of the batch was sent


def test_value_at_the_default_limit_fits_a_default_memcached(make_backend: Factory) -> None:
    backend = make_backend("memcached")
    key = "edge-" + _uid() + "k" * 200  # a long key makes the item bigger too
    value = b"y" * DEFAULT_MAX_VALUE_SIZE
    backend.set(key, value, 60)
    assert backend.get(key) == value
    backend.delete(key)


def test_server_refusal_as_too_large_is_value_too_large(memcached_url: str) -> None:
    backend = MemcachedBackend.from_url(memcached_url, max_value_size=4 * 1024 * 1024)
    try:
        with pytest.raises(ck.ValueTooLargeError) as info:
            backend.set("huge-" + _uid(), b"h" * (2 * 1024 * 1024), 60)
        assert isinstance(info.value.__cause__, MemcacheServerError)
        backend.set("after-" + _uid(), b"ok", 60)  # the connection is still usable
    finally:
        backend.close()


def test_cache_set_of_oversized_value_keeps_old_entry(memcached_url: str) -> None:
    cache = ck.Cache.from_url(memcached_url + "?max_value_size=1000", namespace="t-" + _uid())
    try:
        cache.set("k", "old")
        with pytest.raises(ck.ValueTooLargeError):
            cache.set("k", "z" * 2000)
        assert cache.get("k") == "old"
        assert cache.stats().errors == 0
    finally:
        cache.close()


def test_non_bytes_value_is_refused(make_backend: Factory) -> None:
    backend = make_backend("memcached")
    with pytest.raises(ck.SerializationError):
        backend.set("k-" + _uid(), "text, not bytes", 60)


# ------------------------------------------------------------------ TTL


def test_ttl_conversion() -> None:
    now = 1_700_000_000.25
    clock = lambda: now  # noqa: E731
    assert memcached_expire(None, clock) == 0
    assert memcached_expire(math.inf, clock) == 0
    assert memcached_expire(0, clock) is None
    assert memcached_expire(-5, clock) is None
    assert memcached_expire(0.001, clock) == 1  # never rounded down to 0 = "no expiry"
    assert memcached_expire(1.2, clock) == 2
    assert memcached_expire(300, clock) == 300
    assert memcached_expire(MAX_RELATIVE_TTL, clock) == MAX_RELATIVE_TTL
    assert memcached_expire(MAX_RELATIVE_TTL + 1, clock) == math.ceil(now + MAX_RELATIVE_TTL + 1)
    assert memcached_expire(365 * 86400, clock) == math.ceil(now + 365 * 86400)
    with pytest.raises(ck.ConfigurationError):
        memcached_expire(math.nan, clock)
    assert memcached_expire(-math.inf, clock) is None


@pytest.mark.parametrize("ttl", [10**10, 10**12, 1e300, 2**31, 2**63, float(2**31 - 1)])
def test_huge_ttl_is_capped_at_the_last_absolute_time_memcached_reads(ttl: float) -> None:
    expire = memcached_expire(ttl, lambda: 1_700_000_000.0)
    assert expire == MAX_ABSOLUTE_EXPTIME == 2**31 - 1


@pytest.mark.parametrize("ttl", [10**9, 10**12, 1e300, 2**63])
def test_huge_ttl_is_stored_not_expired_or_refused(
    make_backend: Factory, kind: str, ttl: float
) -> None:
    """Past 2**31 - 1 memcached wraps the time into the past (or refuses it): it is capped."""
    backend = make_backend(kind)
    key = "huge-ttl-" + _uid()
    backend.set(key, b"v", ttl)
    assert backend.get(key) == b"v"
    backend.set_many({key: b"w", key + "-2": b"x"}, ttl)
    assert backend.get_many([key, key + "-2"]) == {key: b"w", key + "-2": b"x"}
    assert backend.add(key + "-3", b"a", ttl) is True
    assert backend.get(key + "-3") == b"a"
    assert backend.compare_and_set(key, b"w", b"y", ttl) is True
    assert backend.get(key) == b"y"
    assert backend.delete_many([key, key + "-2", key + "-3"]) == 3


def test_ttl_over_30_days_is_readable_at_once(make_backend: Factory, kind: str) -> None:
    backend = make_backend(kind)
    key = "long-" + _uid()
    backend.set(key, b"v", 31 * 86400)
    assert backend.get(key) == b"v"
    backend.set_many({key: b"w"}, 400 * 86400)
    assert backend.get(key) == b"w"
    backend.delete(key)


def test_subsecond_ttl_is_stored_then_expires(make_backend: Factory) -> None:
    backend = make_backend("memcached")
    key = "short-" + _uid()
    backend.set(key, b"v", 0.2)
    assert backend.get(key) == b"v"  # 0.2 s became 1 s, not 0 (= forever)
    time.sleep(2.1)  # memcached's clock ticks in whole seconds
    assert backend.get(key) is MISSING


def test_non_positive_ttl_deletes(make_backend: Factory, kind: str) -> None:
    backend = make_backend(kind)
    key = "neg-" + _uid()
    backend.set(key, b"v", 60)
    backend.set(key, b"w", 0)
    assert backend.get(key) is MISSING
    backend.set(key, b"v", 60)
    backend.set_many({key: b"w"}, -1)
    assert backend.get(key) is MISSING


# ------------------------------------------------------------------ many-ops


class _Counting:
    """Wraps a node client and counts the calls per method."""

    def __init__(self, inner: Any, calls: dict[str, int]) -> None:
        self._inner, self._calls = inner, calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):  # e.g. client_pool, borrowed for one pipelined call
            self._calls[name] = self._calls.get(name, 0) + 1
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls[name] = self._calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted


def test_many_ops_of_100_keys_across_the_pool(
    make_backend: Factory, memcached_pool_url: str
) -> None:
    backend: MemcachedBackend = make_backend("memcached-pool")
    assert len(backend.nodes) == 3
    calls: dict[str, int] = {}
    backend._nodes = {n: _Counting(c, calls) for n, c in backend._nodes.items()}
    prefix = _uid()
    mapping = {f"{prefix}:{i}": f"value {i}".encode() for i in range(100)}

    backend.set_many(mapping, 60)
    assert calls == {"set_many": 3}  # one pipelined round trip per node
    assert backend.get_many([*mapping, prefix + ":absent"]) == mapping
    assert calls["get_many"] == 3 and "get" not in calls

    # the keys really are spread over the three servers, each on its own node
    per_node = {n: 0 for n in backend.nodes}
    for node in backend.nodes:
        raw = _raw(int(node.rsplit(":", 1)[1]))
        try:
            found = raw.get_many([memcached_key(k) for k in mapping])
        finally:
            raw.close()
        per_node[node] = len(found)
        for mkey in found:
            assert backend._node_of(mkey) == node
    assert sum(per_node.values()) == 100 and all(v > 10 for v in per_node.values()), per_node

    assert backend.delete_many(mapping) == 100
    assert calls["client_pool"] == 3  # delete_many borrows one connection per node
    assert backend.get_many(mapping) == {}


def test_many_ops_single_node(make_backend: Factory) -> None:
    backend = make_backend("memcached")
    prefix = _uid()
    mapping = {f"{prefix} {i}": bytes([i]) * i for i in range(100)}  # odd keys, empty value too
    backend.set_many(mapping, 60)
    assert backend.get_many(mapping) == mapping
    assert backend.get_many([]) == {}
    assert backend.delete_many([*mapping, prefix + "-absent"]) == 100


def test_add_and_delete_answers(make_backend: Factory, kind: str) -> None:
    backend = make_backend(kind)
    key = "add-" + _uid()
    assert backend.add(key, b"1", 60) is True
    assert backend.add(key, b"2", 60) is False
    assert backend.get(key) == b"1"
    assert backend.delete(key) is True
    assert backend.delete(key) is False


# ------------------------------------------------------------------ capabilities


def test_compare_and_set(make_backend: Factory, kind: str) -> None:
    backend = make_backend(kind)
    assert isinstance(backend, SupportsCompareAndSet)
    key = "cas-" + _uid()
    assert backend.compare_and_set(key, b"a", b"b", 60) is False  # absent
    assert backend.get(key) is MISSING
    backend.set(key, b"a", 60)
    assert backend.compare_and_set(key, b"x", b"b", 60) is False  # different value
    assert backend.get(key) == b"a"
    assert backend.compare_and_set(key, b"a", b"b", 60) is True
    assert backend.get(key) == b"b"
    assert backend.compare_and_set(key, b"a", b"c", 60) is False  # already replaced
    assert backend.compare_and_set(key, b"b", b"c", 0) is True  # stored already expired
    assert backend.get(key) is MISSING


def test_compare_and_set_loses_to_a_concurrent_write(make_backend: Factory) -> None:
    backend: MemcachedBackend = make_backend("memcached")
    key = "race-" + _uid()
    backend.set(key, b"lease", 60)
    node = backend._nodes[backend.node_for(key)]
    real_gets = node.gets

    def gets_then_someone_writes(mkey: str) -> Any:
        found = real_gets(mkey)
        backend.set(key, b"lease", 60)  # same bytes, new version: cas must still fail
        return found

    backend._nodes = {
        n: _Patched(c, gets=gets_then_someone_writes) for n, c in backend._nodes.items()
    }
    assert backend.compare_and_set(key, b"lease", b"stale", 60) is False
    assert backend.get(key) == b"lease"


class _Patched:
    def __init__(self, inner: Any, **overrides: Any) -> None:
        self._inner, self._overrides = inner, overrides

    def __getattr__(self, name: str) -> Any:
        return self._overrides.get(name) or getattr(self._inner, name)


def test_server_stats(make_backend: Factory, kind: str) -> None:
    backend = make_backend(kind)
    assert isinstance(backend, SupportsServerStats)
    before = backend.server_stats()
    assert set(before) >= {"evictions", "expired", "hits", "misses"}
    assert all(isinstance(v, float) for v in before.values())
    key = "stats-" + _uid()
    backend.set(key, b"v", 60)
    backend.get(key)
    backend.get(key + "-absent")
    after = backend.server_stats()
    assert after["hits"] >= before["hits"] + 1
    assert after["misses"] >= before["misses"] + 1


# ------------------------------------------------------------------ configuration


def test_url_options_and_timeouts_always_set(memcached_url: str, memcached_pool_url: str) -> None:
    single = MemcachedBackend.from_url(memcached_url)
    pool = MemcachedBackend.from_url(
        memcached_pool_url + "?timeout=0.1&connect_timeout=0.2&max_value_size=5000&pool_size=8"
    )
    try:
        assert isinstance(single.client, PooledClient)
        assert (single.client.timeout, single.client.connect_timeout) == (0.25, 0.25)
        assert single.max_value_size == DEFAULT_MAX_VALUE_SIZE
        assert isinstance(pool.client, HashClient)
        assert pool.client.use_pooling and not pool.client.ignore_exc
        for client in pool.client.clients.values():
            assert isinstance(client, PooledClient)
            assert (client.timeout, client.connect_timeout) == (0.1, 0.2)
            assert client.client_pool.max_size == 8
            assert client.default_noreply is False
        assert pool.max_value_size == 5000
    finally:
        single.close()
        pool.close()


BAD_URLS = [
    # (URL, a part the message must name)
    ("memcached://127.0.0.1:0", "port 0"),
    ("memcached://127.0.0.1:abc", "'abc'"),
    ("memcached://127.0.0.1:-5", "'-5'"),
    ("memcached://127.0.0.1:70000", "70000"),
    ("memcached://127.0.0.1:", "''"),
    ("memcached://", "no server"),
    ("memcached://,", "#1"),
    ("memcached://a:1,,b:2", "#2"),
    ("memcached://h h:1", "'h h'"),
    ("memcached://[::1", "malformed"),
    ("memcached://[::1]x", "IPv6"),
    ("memcached://h:1/0", "path"),
    ("memcached://h:1?bogus=1", "bogus"),
    ("memcached://h:1?timeout=abc", "timeout"),
    ("memcached://h:1?timeout=", "timeout"),
    ("memcached://h:1?timeout=0", "timeout"),
    ("memcached://h:1?timeout=-1", "timeout"),
    ("memcached://h:1?timeout=nan", "timeout"),
    ("memcached://h:1?timeout=inf", "timeout"),
    ("memcached://h:1?timeout=61", "timeout"),
    ("memcached://h:1?timeout=0.1&timeout=0.2", "timeout"),
    ("memcached://h:1?connect_timeout=-0.5", "connect_timeout"),
    ("memcached://h:1?pool_idle_timeout=-1", "pool_idle_timeout"),
    ("memcached://h:1?node_cooldown=nan", "node_cooldown"),
    ("memcached://h:1?node_cooldown=-1", "node_cooldown"),
    ("memcached://h:1?pool_size=0", "pool_size"),
    ("memcached://h:1?pool_size=1.5", "pool_size"),
    ("memcached://h:1?max_value_size=big", "max_value_size"),
    ("memcached://h:1?tls=maybe", "tls"),
    ("memcached://h:1?no_delay=", "no_delay"),
    ("memcached://user:s3cret@h:1", "credentials"),
    ("memcached://user:s3cret@h:0", "credentials"),
    ("memcached://:s3cret@h:1?timeout=-1", "credentials"),
    ("redis://user:s3cret@h:1", "not a memcached"),
]


@pytest.mark.parametrize(("url", "named"), BAD_URLS)
def test_bad_url_is_a_configuration_error_naming_the_bad_part(url: str, named: str) -> None:
    with pytest.raises(ck.ConfigurationError) as info:
        MemcachedBackend.from_url(url)
    message = str(info.value)
    assert named in message, message
    assert "s3cret" not in message and "s3cret" not in repr(info.value.__cause__)


def test_bad_keyword_options_are_configuration_errors() -> None:
    for options in (
        {"timeout": -1},
        {"timeout": float("nan")},
        {"connect_timeout": 0},
        {"pool_size": 0},
        {"max_value_size": 0},
        {"node_cooldown": float("inf")},
    ):
        with pytest.raises(ck.ConfigurationError, match=next(iter(options))):
            MemcachedBackend([("127.0.0.1", 1)], **options)  # type: ignore[arg-type]
    with pytest.raises(ck.ConfigurationError):
        parse_servers("host:notaport")


def test_good_urls_still_parse() -> None:
    backend = MemcachedBackend.from_url(
        "memcached://127.0.0.1:1,[::1]:2,localhost/?timeout=0.1&tls=off&serializer=json"
    )
    try:
        assert backend.nodes == ("127.0.0.1:1", "::1:2", "localhost:11211")
        assert backend.timeout == 0.1
    finally:
        backend.close()


def test_parse_servers() -> None:
    assert parse_servers("a:1,b:2, c") == [("a", 1), ("b", 2), ("c", 11211)]
    assert parse_servers("[::1]:5,[::1]") == [("::1", 5), ("::1", 11211)]


def test_tls_option_builds_a_verifying_context() -> None:
    import ssl

    backend = MemcachedBackend.from_url("memcached://127.0.0.1:1?tls=1")
    try:
        ctx = backend.tls_context
        assert isinstance(ctx, ssl.SSLContext)
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        # pymemcache wraps with that context into sockets that keep to the deadline
        wrapper = backend.client.tls_context
        assert wrapper.context is ctx
        with socket.socket() as plain:
            wrapped = wrapper.wrap_socket(plain, server_hostname="localhost")
            try:
                assert isinstance(wrapped, ssl.SSLSocket)
                assert type(wrapped).recv is not ssl.SSLSocket.recv
            finally:
                wrapped.close()
    finally:
        backend.close()


def test_ready_client_is_used_and_left_open(memcached_url: str) -> None:
    client = _raw(_port(memcached_url))
    try:
        backend = MemcachedBackend(client)
        key = "ready-" + _uid()
        backend.set(key, b"v", 60)
        backend.close()  # not ours to close
        assert client.get(memcached_key(key)) == b"v"
    finally:
        client.close()


def test_key_prefix_of_a_ready_client_is_counted_in_the_key_limit(memcached_url: str) -> None:
    client = PooledClient(
        ("127.0.0.1", _port(memcached_url)), timeout=1, connect_timeout=1, key_prefix=b"p" * 40
    )
    try:
        backend = MemcachedBackend(client)
        for key in ("k" * 230 + _uid(), "short " + _uid()):
            backend.set(key, b"v", 60)
            assert backend.get(key) == b"v"
            assert backend.delete_many([key]) == 1
    finally:
        client.close()


# ------------------------------------------------------------------ consistent hashing


def test_adding_a_fourth_node_remaps_about_a_quarter_of_the_keys() -> None:
    three = [("127.0.0.1", 21212), ("127.0.0.1", 21213), ("127.0.0.1", 21214)]
    four = [*three, ("127.0.0.1", 21215)]
    b3, b4 = MemcachedBackend(three), MemcachedBackend(four)  # no connection is made here
    try:
        keys = [f"ck:3:app:v1:user:{i}" for i in range(10_000)]
        moved = [k for k in keys if b3.node_for(k) != b4.node_for(k)]
        assert 0.15 <= len(moved) / len(keys) <= 0.35, len(moved)
        # keys only ever move to the new node, never between the old ones
        assert {b4.node_for(k) for k in moved} == {"127.0.0.1:21215"}
        # and the node choice is pymemcache's own: a raw HashClient agrees
        hc = HashClient(four)
        try:
            for k in keys[:500]:
                mkey = memcached_key(k)
                assert "%s:%s" % hc._get_client(mkey).server == b4.node_for(k)  # noqa: UP031
        finally:
            hc.close()
        # the same figure straight from pymemcache's hasher
        h3, h4 = RendezvousHash(), RendezvousHash()
        for name in ("a", "b", "c"):
            h3.add_node(name)
            h4.add_node(name)
        h4.add_node("d")
        share = sum(h3.get_node(k) != h4.get_node(k) for k in keys) / len(keys)
        assert 0.15 <= share <= 0.35
    finally:
        b3.close()
        b4.close()


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def test_pool_with_one_node_down_keeps_the_others_working() -> None:
    """A dead node's keys fail fast (never remapped); keys on the other nodes keep working."""
    with ServerProcess("memcached") as s1, ServerProcess("memcached") as s2:
        dead = ServerProcess("memcached").start()
        try:
            servers = [("127.0.0.1", s.port) for s in (s1, s2, dead)]
            backend = MemcachedBackend(servers, node_cooldown=0.3)
            try:
                dead_name = f"127.0.0.1:{dead.port}"
                keys = [f"k{i}" for i in range(60)]
                backend.set_many({k: k.encode() for k in keys}, 60)
                on_dead = [k for k in keys if backend.node_for(k) == dead_name]
                alive = [k for k in keys if k not in on_dead]
                assert on_dead and alive

                dead.kill()
                assert _refused(dead.port)
                with pytest.raises(ck.BackendUnavailableError):
                    backend.get(on_dead[0])
                # cooling down: the dead node's keys fail at once, without a connect
                started = time.perf_counter()
                for k in on_dead:
                    with pytest.raises(ck.BackendUnavailableError):
                        backend.get(k)
                assert time.perf_counter() - started < 0.1
                # the other nodes answer as before; get_many returns what they hold
                assert all(backend.get(k) == k.encode() for k in alive)
                assert backend.get_many(keys) == {k: k.encode() for k in alive}
                backend.set(alive[0], b"new", 60)
                assert backend.get(alive[0]) == b"new"
                # a write batch touching the dead node reports it, after writing the rest
                with pytest.raises(ck.BackendUnavailableError):
                    backend.delete_many([alive[1], on_dead[0]])
                assert backend.get(alive[1]) is MISSING
                # the ring did not change: nothing moved to the living nodes
                assert all(backend.node_for(k) == dead_name for k in on_dead)

                dead.start()  # back on the same port, empty
                time.sleep(0.35)  # past the cool-down
                backend.set(on_dead[0], b"back", 60)
                assert backend.get(on_dead[0]) == b"back"
            finally:
                backend.close()
        finally:
            dead.__exit__(None, None, None)


def _key_on(backend: MemcachedBackend, node: str) -> str:
    for i in range(1000):
        if backend.node_for(f"k{i}") == node:
            return f"k{i}"
    raise AssertionError(f"no key maps to {node}")


def test_a_failed_pool_node_is_skipped_for_its_cooldown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.faultkit import free_port

    dead = free_port()
    backend = MemcachedBackend(
        servers=[("127.0.0.1", 21212), ("127.0.0.1", dead)], node_cooldown=30
    )
    key = _key_on(backend, f"127.0.0.1:{dead}")
    try:
        with caplog.at_level("WARNING"):
            with pytest.raises(ck.BackendUnavailableError, match="failed during"):
                backend.get(key)
            with pytest.raises(ck.BackendUnavailableError, match="failed recently; skipped"):
                backend.get(key)  # no connect attempt: the node cools down
        assert sum("failed" in r.getMessage() for r in caplog.records) == 1  # logged once
        live = _key_on(backend, "127.0.0.1:21212")
        backend.set(live, b"v", 30)
        assert backend.get(live) == b"v"  # the other node keeps working
    finally:
        backend.close()
    no_cooldown = MemcachedBackend(
        servers=[("127.0.0.1", 21212), ("127.0.0.1", dead)], node_cooldown=0
    )
    try:
        for _ in range(2):
            with pytest.raises(ck.BackendUnavailableError, match="failed during"):
                no_cooldown.get(key)
    finally:
        no_cooldown.close()
