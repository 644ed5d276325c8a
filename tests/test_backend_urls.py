"""Redis URLs: every malformed part is a ConfigurationError naming it, and no error text,
repr, log line or chained cause ever carries the password (or the user name)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import cachekit as ck
from cachekit.backends import redact_url
from cachekit.backends.redis import RedisBackend, RedisClusterBackend
from tests.faultkit import ServerProcess, closed_port

MARK = "s3cretMARK"
USER = "aliceUSERMARK"


def _texts(exc: BaseException) -> list[str]:
    """Everything a user could see of an exception: message, repr, and the chain's."""
    out: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        out += [str(seen), repr(seen), *map(str, seen.args)]
        seen = seen.__cause__ or seen.__context__
    return out


def _assert_clean(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    for text in [*_texts(exc), caplog.text]:
        assert MARK not in text, text
        assert USER not in text, text


# ---------------------------------------------------------------- malformed URLs


@pytest.mark.parametrize(
    ("url", "options", "names"),
    [
        (f"redis://:{MARK}@127.0.0.1:notaport/0", {}, "notaport"),
        (f"redis://{USER}:{MARK}@127.0.0.1:0/0", {}, "'0'"),
        (f"redis://{USER}:{MARK}@127.0.0.1:99999/0", {}, "99999"),
        (f"redis://:{MARK}@127.0.0.1:6379/1x", {}, "1x"),
        (f"redis://:{MARK}@127.0.0.1:6379/cache", {}, "cache"),
        (f"redis://:{MARK}@127.0.0.1:6379/-1", {}, "-1"),
        (f"redis://:{MARK}@127.0.0.1:6379/0?bogus=1", {}, "bogus"),
        (f"redis://:{MARK}@127.0.0.1:6379/0?socket_timeout=abc", {}, "socket_timeout"),
        (f"redis://:{MARK}@127.0.0.1:6379/0?socket_timeout=", {}, "socket_timeout"),
        (f"redis://:{MARK}@127.0.0.1:6379/0?socket_timeout=0", {}, "socket_timeout"),
        (f"redis://:{MARK}@127.0.0.1:6379/0?connect_timeout=-1", {}, "connect_timeout"),
        (f"redis://:{MARK}@127.0.0.1:6379/0?max_connections=0", {}, "max_connections"),
        (f"redis://:{MARK}@127.0.0.1:6379/0?db=x", {}, "db"),
        (f"redis://:{MARK}@127.0.0.1:6379/1?db=2", {}, "two databases"),
        (f"redis://:{MARK}@127.0.0.1:6379/0", {"max_connections": 0}, "max_connections"),
        (f"redis://:{MARK}@127.0.0.1:6379/0", {"socket_timeout": -0.1}, "socket_timeout"),
        (f"redis://:{MARK}@127.0.0.1:6379/0", {"retries": -1}, "retries"),
        (f"redis://:{MARK}@127.0.0.1:6379/0", {"health_check_interval": -5}, "health_check"),
        (f"redis://:{MARK}@127.0.0.1:6379/0", {"max_value_size": 0}, "max_value_size"),
        (f"redis://:{MARK}@127.0.0.1:6379/0", {"ssl_ca_certs": "ca.pem"}, "rediss"),
        (f"redis://:{MARK}@127.0.0.1:6379/0", {"no_such_option": 1}, "no_such_option"),
        (f"rediss://:{MARK}@127.0.0.1:6379/0?ssl_cert_reqs=bogus", {}, "ssl_cert_reqs"),
        (f"rediss://:{MARK}@127.0.0.1:6379/0?ssl_check_hostname=maybe", {}, "ssl_check"),
        (f"redis://:{MARK}@127.0.0.1:6379/0?protocol=7", {}, "protocol"),
        (f"redis://:{MARK}@:6379/0", {}, "host"),
        # unencoded '/', '?', '#' in a password make the parser see it as path or query
        (f"redis://:{MARK[:3]}/{MARK[3:]}@127.0.0.1:6379/0", {}, "percent-encode"),
        (f"redis://:{MARK[:3]}?{MARK[3:]}@127.0.0.1:6379/0", {}, "percent-encode"),
        (f"redis://:{MARK[:3]}#{MARK[3:]}@127.0.0.1:6379/0", {}, "percent-encode"),
        (f"redis://:{MARK}@[::1/0", {}, "malformed"),
        (f"unix://:{MARK}@/", {}, "path"),
        (f"unix://:{MARK}@host/tmp/redis.sock", {}, "no host"),
        (f"//:{MARK}@127.0.0.1:6379/0", {}, "no scheme"),
        (f"nosuch://:{MARK}@127.0.0.1:6379/0", {}, "nosuch"),
        (f"redis+cluster://{USER}:{MARK}@127.0.0.1:notaport", {}, "notaport"),
        (f"redis+cluster://:{MARK}@127.0.0.1:7000,127.0.0.1", {}, "host:port"),
        (f"redis+cluster://:{MARK}@127.0.0.1:7000,127.0.0.1:0", {}, "'0'"),
        (f"redis+cluster://:{MARK}@127.0.0.1:7000/3", {}, "database 0"),
        (f"redis+cluster://:{MARK}@127.0.0.1:7000?db=2", {}, "database 0"),
        (f"redis+cluster://:{MARK}@127.0.0.1:7000?bogus=1", {}, "bogus"),
        (f"redis+cluster://:{MARK}@127.0.0.1:7000", {"ssl_ca_certs": "x"}, "rediss"),
        (f"rediss+cluster://:{MARK}@127.0.0.1:7000", {"ssl_ciphers": "x"}, "ssl_ciphers"),
    ],
)
def test_a_malformed_url_names_the_bad_part_and_never_the_password(
    url: str, options: dict[str, Any], names: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(ck.ConfigurationError) as info:
        ck.backend_from_url(url, **options)
    assert names in str(info.value)
    _assert_clean(info.value, caplog)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{MARK}@127.0.0.1:6379/1x",
        f"redis://:{MARK}@127.0.0.1:notaport/0",
        f"redis+cluster://:{MARK}@127.0.0.1:7000/3",
    ],
)
def test_cache_from_url_keeps_the_password_out_too(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(ck.ConfigurationError) as info:
        ck.Cache.from_url(url, namespace="n")
    _assert_clean(info.value, caplog)


def test_redact_url() -> None:
    assert redact_url("redis://u:p@h:1/0") == "redis://***@h:1/0"
    assert redact_url("redis://:p/a?b@h:1/0") == "redis://***@h:1/0"
    assert redact_url("//:p@h/0") == "***@h/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


# ---------------------------------------------------------------- good URLs


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis://127.0.0.1", ("127.0.0.1", 6379, 0)),
        ("redis://127.0.0.1:6380", ("127.0.0.1", 6380, 0)),
        ("redis://127.0.0.1:6380/", ("127.0.0.1", 6380, 0)),
        ("redis://127.0.0.1:6380/7", ("127.0.0.1", 6380, 7)),
        ("redis://127.0.0.1:6380?db=3", ("127.0.0.1", 6380, 3)),
        ("redis://127.0.0.1:6380/3?db=3", ("127.0.0.1", 6380, 3)),
        ("redis://[::1]:6381/2", ("::1", 6381, 2)),
        ("redis://u%40x:p%2Fw@127.0.0.1:6380/1", ("127.0.0.1", 6380, 1)),
    ],
)
def test_good_urls_parse(url: str, where: tuple[str, int, int]) -> None:
    b = RedisBackend.from_url(url)
    try:
        kw = b.connection_pool.connection_kwargs
        assert (kw["host"], kw["port"], kw["db"]) == where
        assert "@" not in (b.server_address or "") and "@" not in repr(b)
    finally:
        b.close()


def test_percent_encoded_credentials_reach_redis_py_decoded() -> None:
    b = RedisBackend.from_url("redis://u%40x:p%2Fw@127.0.0.1:6380/1")
    try:
        kw = b.connection_pool.connection_kwargs
        assert (kw["username"], kw["password"]) == ("u@x", "p/w")
    finally:
        b.close()


# ---------------------------------------------------------------- errors at run time


def test_refused_connection_with_a_password_in_the_url(caplog: pytest.LogCaptureFixture) -> None:
    with closed_port() as port:
        url = f"redis://{USER}:{MARK}@127.0.0.1:{port}/0"
        b = RedisBackend.from_url(url)
        try:
            assert MARK not in repr(b) and MARK not in str(b.server_address)
            assert USER not in repr(b) and USER not in str(b.server_address)
            with pytest.raises(ck.BackendUnavailableError) as info:
                b.get("k")
            _assert_clean(info.value, caplog)
        finally:
            b.close()
        cache = ck.Cache.from_url(url, namespace="n")
        try:
            with caplog.at_level(logging.DEBUG):
                assert cache.get("k", "dflt") == "dflt"
            assert "falling through" in caplog.text
            assert MARK not in caplog.text and MARK not in repr(cache)
        finally:
            cache.close()


def test_a_refused_cluster_with_a_password_in_the_url(caplog: pytest.LogCaptureFixture) -> None:
    with closed_port() as port:
        b = RedisClusterBackend.from_url(f"redis+cluster://{USER}:{MARK}@127.0.0.1:{port}")
        try:
            assert MARK not in repr(b) and MARK not in str(b.server_address)
            with pytest.raises(ck.BackendUnavailableError) as info:
                b.set("k", b"v", 1)
            _assert_clean(info.value, caplog)
        finally:
            b.close()


def test_wrong_password_and_no_password(caplog: pytest.LogCaptureFixture) -> None:
    with ServerProcess("redis") as server:
        import redis

        admin = redis.Redis(port=server.port)
        admin.config_set("requirepass", "the-right-one")
        admin.close()
        wrong = RedisBackend.from_url(f"redis://:{MARK}@127.0.0.1:{server.port}/0")
        user = RedisBackend.from_url(f"redis://{USER}:{MARK}@127.0.0.1:{server.port}/0")
        right = RedisBackend.from_url(f"redis://:the-right-one@127.0.0.1:{server.port}/0")
        try:
            for b in (wrong, user):
                with pytest.raises(ck.BackendUnavailableError) as info:
                    b.get("k")
                assert isinstance(info.value.__cause__, redis.exceptions.AuthenticationError)
                _assert_clean(info.value, caplog)
            right.set("k", b"v", 10)
            assert right.get("k") == b"v"
            assert "the-right-one" not in repr(right) + str(right.server_address)
        finally:
            wrong.close()
            user.close()
            right.close()
