"""``cachekit inspect``, ``stats`` and ``flush`` against the real Redis and memcached servers.

Down servers are free ports (refused at once) or a listener that never answers;
a password in a URL never shows in anything printed.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import cachekit as ck
from cachekit.advisor import cli
from cachekit.advisor.ops import mask_url, parse_metrics, scrub

from .faultkit import StallServer, free_port

SECRET = "s3cretmarker"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def redis_cache(redis_url: str, namespace: str) -> Iterator[ck.Cache]:
    cache = ck.Cache.from_url(redis_url, namespace=namespace, ttl=300)
    yield cache
    cache.clear()
    cache.close()


@pytest.fixture
def memcached_cache(memcached_url: str, namespace: str) -> Iterator[ck.Cache]:
    cache = ck.Cache.from_url(memcached_url, namespace=namespace, ttl=300)
    yield cache
    cache.clear()
    cache.close()


# ---------------------------------------------------------------- inspect


def test_inspect_a_redis_namespace_counts_and_samples_its_keys(
    capsys: pytest.CaptureFixture[str], redis_url: str, redis_cache: ck.Cache, namespace: str
) -> None:
    for i in range(30):
        redis_cache.set(f"user:{i}", {"id": i})
    long_key = "report:" + "x" * 300  # stored hashed: still counted
    redis_cache.set(long_key, 1)
    other = ck.Cache.from_url(redis_url, namespace=namespace + "b")  # a prefix-sharing name
    other.set("user:1", "not mine")
    try:
        code, out, err = _run(
            capsys, "inspect", redis_url, "--namespace", namespace, "--limit", "5"
        )
    finally:
        other.clear()
        other.close()
    assert code == 0, err
    version = redis_cache.full_key("k").split(":")[3]
    assert f"namespace:  {namespace!r}, version {version}" in out
    assert "keys:       31 under this version" in out
    sample = [line.strip() for line in out.splitlines() if line.startswith(" " * 12)]
    assert len(sample) == 6 and sample[-1].startswith("... (5 shown")
    assert all(s.startswith(("user:", "~ck:")) for s in sample[:-1])


def test_inspect_a_cluster_namespace_scans_every_node(
    capsys: pytest.CaptureFixture[str], redis_cluster_url: str, namespace: str
) -> None:
    cache = ck.Cache.from_url(redis_cluster_url, namespace=namespace, ttl=60)
    try:
        for i in range(40):  # spread over the three nodes' slots
            cache.set(f"user:{i}", i)
        code, out, err = _run(capsys, "inspect", redis_cluster_url, "--namespace", namespace)
        assert code == 0, err
        assert "keys:       40 under this version" in out
        code, out, err = _run(capsys, "inspect", redis_cluster_url, "--namespace", namespace,
                              "user:5")  # fmt: skip
        assert code == 0 and "value (json): 5" in out, err
    finally:
        cache.clear()
        cache.close()


def test_inspect_a_redis_key_shows_ttl_size_and_value(
    capsys: pytest.CaptureFixture[str], redis_url: str, redis_cache: ck.Cache, namespace: str
) -> None:
    redis_cache.set("user:42", {"id": 42, "name": "Ada"}, ttl=120)
    raw = redis_cache.backend.get(redis_cache.full_key("user:42"))
    code, out, err = _run(capsys, "inspect", redis_url, "--namespace", namespace, "user:42")
    assert code == 0, err
    assert f"(stored as {redis_cache.full_key('user:42')})" in out
    ttl = float(out.split("ttl left:")[1].split("s")[0])
    assert 100 < ttl <= 120
    assert f"size:       {len(raw)} bytes" in out
    assert 'value (json): {"id": 42, "name": "Ada"}' in out
    # a long key is found under its hashed form; a key with no TTL says so
    long_key = "report:" + "y" * 300
    redis_cache.set(long_key, [1, 2], ttl=ck.NO_EXPIRY)
    code, out, _ = _run(capsys, "inspect", redis_url, "--namespace", namespace, long_key)
    assert code == 0 and "ttl left:   no expiry" in out and "value (json): [1, 2]" in out
    assert f"(stored as {redis_cache.full_key(long_key)})" in out
    code, out, _ = _run(capsys, "inspect", redis_url, long_key, "--namespace", namespace,
                        "--serializer", "none")  # fmt: skip
    assert code == 0 and "value (raw): b'" in out
    # a key whose load is in progress holds a lease, not a value
    from cachekit.cache import LEASE_MARK

    redis_cache.backend.set(redis_cache.full_key("loading"), LEASE_MARK + b"token", 10)
    code, out, _ = _run(capsys, "inspect", redis_url, "--namespace", namespace, "loading")
    assert code == 0 and "a load in progress holds this key (a lease)" in out


def test_inspect_a_missing_key_or_an_unused_namespace(
    capsys: pytest.CaptureFixture[str], redis_url: str, redis_cache: ck.Cache, namespace: str
) -> None:
    redis_cache.set("present", 1)
    code, out, _ = _run(capsys, "inspect", redis_url, "--namespace", namespace, "absent")
    assert code == 1 and "not in the cache" in out
    code, out, _ = _run(capsys, "inspect", redis_url, "--namespace", namespace + "-never")
    assert code == 0 and "has no version on this server" in out


def test_inspect_memcached_says_it_cannot_list_but_reads_a_key(
    capsys: pytest.CaptureFixture[str],
    memcached_url: str,
    memcached_cache: ck.Cache,
    namespace: str,
) -> None:
    memcached_cache.set("user:7", {"id": 7}, ttl=200)
    code, out, err = _run(capsys, "inspect", memcached_url, "--namespace", namespace)
    assert code == 0, err
    assert "cannot list its keys (memcached has no SCAN)" in out
    code, out, err = _run(capsys, "inspect", memcached_url, "--namespace", namespace, "user:7")
    assert code == 0, err
    seconds = int(out.split("ttl left:")[1].split()[0])
    assert 150 < seconds <= 200
    assert 'value (json): {"id": 7}' in out


# ---------------------------------------------------------------- stats


def test_stats_prints_the_servers_counters(
    capsys: pytest.CaptureFixture[str], redis_url: str, memcached_url: str
) -> None:
    for url in (redis_url, memcached_url):
        code, out, err = _run(capsys, "stats", url)
        assert code == 0, err
        for name in ("evictions:", "expired:", "hits:", "misses:", "hit ratio:"):
            assert name in out, (url, out)


def test_stats_reads_an_apps_cachekit_metrics(
    capsys: pytest.CaptureFixture[str], redis_url: str, redis_cache: ck.Cache, namespace: str
) -> None:
    from prometheus_client import CollectorRegistry

    from cachekit.metrics import register_prometheus, serve_metrics

    registry = CollectorRegistry()
    register_prometheus(redis_cache, registry=registry)
    redis_cache.set("a", 1)
    for key in ("a", "a", "a", "b"):
        redis_cache.get(key)
    port = free_port()
    server, _ = serve_metrics(port, registry=registry)
    try:
        code, out, err = _run(
            capsys, "stats", redis_url, "--metrics", f"http://127.0.0.1:{port}/metrics"
        )
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0, err
    assert f"cache {namespace!r}, hit ratio 75.0%" in out
    assert "    hits:" in out and "    misses:" in out


def test_parse_metrics_sums_per_cache_and_skips_buckets() -> None:
    text = "\n".join(
        [
            "# HELP cachekit_hits_total Hits.",
            'cachekit_hits_total{cache="a",backend="redis"} 3.0',
            'cachekit_hits_total{cache="a",backend="near"} 2.0',
            'cachekit_misses_total{cache="a"} 5.0',
            'cachekit_load_duration_seconds_bucket{cache="a",le="0.1"} 4.0',
            'cachekit_load_duration_seconds_count{cache="a"} 4.0',
            'other_total{cache="a"} 9.0',
        ]
    )
    assert parse_metrics(text) == {
        "a": {"hits": 5.0, "misses": 5.0, "load_duration_seconds_count": 4.0}
    }


# ---------------------------------------------------------------- flush


def test_flush_bumps_the_version_of_that_namespace_only(
    capsys: pytest.CaptureFixture[str], redis_url: str, redis_cache: ck.Cache, namespace: str
) -> None:
    redis_cache.set("k", "v")
    keep = redis_cache.child(namespace + "-keep")
    keep.set("k", "kept")
    try:
        code, out, err = _run(capsys, "flush", redis_url, "--namespace", namespace, "--yes")
        assert code == 0, err
        assert f"flushed namespace {namespace!r} on {redis_url}: version " in out
        fresh = ck.Cache.from_url(redis_url, namespace=namespace)
        assert fresh.get("k") is None
        fresh.close()
        assert keep.get("k") == "kept"
    finally:
        keep.clear()


def test_flush_asks_first(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    memcached_url: str,
    memcached_cache: ck.Cache,
    namespace: str,
) -> None:
    memcached_cache.set("k", "v")
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # not a terminal: no one to ask
    code, _, err = _run(capsys, "flush", memcached_url, "--namespace", namespace)
    assert code == 2 and "without confirmation: pass --yes" in err
    monkeypatch.setattr("sys.stdin", _Tty("n\n"))
    code, _, err = _run(capsys, "flush", memcached_url, "--namespace", namespace)
    assert code == 1 and "[y/N]" in err and "not flushed" in err
    fresh = ck.Cache.from_url(memcached_url, namespace=namespace)
    assert fresh.get("k") == "v"

    class Interrupted(_Tty):
        def readline(self, size: int | None = -1) -> str:
            raise KeyboardInterrupt

    monkeypatch.setattr("sys.stdin", Interrupted())
    code, _, err = _run(capsys, "flush", memcached_url, "--namespace", namespace)
    assert code == 130 and err.endswith("cachekit flush: interrupted\n") and "Traceback" not in err
    monkeypatch.setattr("sys.stdin", _Tty("y\n"))
    code, out, err = _run(capsys, "flush", memcached_url, "--namespace", namespace)
    assert code == 0 and "flushed" in out, err
    fresh.close()
    fresh = ck.Cache.from_url(memcached_url, namespace=namespace)
    assert fresh.get("k") is None
    fresh.close()


# ---------------------------------------------------------------- failures


def test_a_flush_that_fails_midway_is_still_one_line(redis_url: str, namespace: str) -> None:
    # the server answers the first look, then refuses the version bump: the Cache's own
    # warning log must not add lines to the one-line error
    code = (
        "import sys, cachekit as ck, cachekit.cache as c, cachekit.advisor.cli\n"
        "def gone(self):\n"
        "    raise ck.BackendUnavailableError('Redis SET failed: ConnectionError: gone')\n"
        "c.Cache._bump_namespace = gone\n"
        "main = ck.advisor.cli.main\n"
        f"sys.exit(main(['flush', {redis_url!r}, '--namespace', {namespace!r}, '--yes']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot reach" in proc.stderr, proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "{url}", "--namespace", "x"],
        ["inspect", "{url}", "--namespace", "x", "key"],
        ["stats", "{url}"],
        ["flush", "{url}", "--namespace", "x", "--yes"],
    ],
)
@pytest.mark.parametrize("scheme", ["redis", "memcached"])
def test_a_down_server_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], scheme: str
) -> None:
    url = f"{scheme}://127.0.0.1:{free_port()}" + ("/0" if scheme == "redis" else "")
    code, out, err = _run(capsys, *[a.format(url=url) for a in argv])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"cachekit {argv[0]}: error: cannot reach ")
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("scheme", ["redis", "memcached"])
def test_a_hung_server_fails_within_about_a_second(
    capsys: pytest.CaptureFixture[str], scheme: str
) -> None:
    with StallServer() as stall:
        url = f"{scheme}://127.0.0.1:{stall.port}"
        started = time.monotonic()
        code, _, err = _run(capsys, "inspect", url, "--namespace", "x", "key")
        elapsed = time.monotonic() - started
    assert code == 2 and "cannot reach" in err
    assert elapsed < 3.0  # one command deadline (0.5 s), not a hang or a retry storm


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:6379", "is not a cache URL"),
        ("nosuch://127.0.0.1", "no cachekit backend for URL scheme 'nosuch'"),
        ("memory://", "memory:// lives inside the application's process"),
        (f"redis://:{SECRET}@127.0.0.1:notaport/0", "cannot use redis://:***@127.0.0.1:notaport"),
    ],
)
def test_a_bad_url_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], url: str, message: str
) -> None:
    code, out, err = _run(capsys, "inspect", url, "--namespace", "x")
    assert code == 2 and message in err and err.count("\n") == 1
    assert SECRET not in out + err


def test_a_password_never_appears(
    capsys: pytest.CaptureFixture[str], redis_url: str, namespace: str
) -> None:
    # the test server has no password; redis-py's AUTH is then refused or ignored,
    # and either way the output shows the URL masked
    with_password = redis_url.replace("redis://", f"redis://:{SECRET}@")
    down = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    runs = [
        ("inspect", with_password, "--namespace", namespace),
        ("inspect", with_password, "--namespace", namespace, "k"),
        ("stats", with_password),
        ("flush", with_password, "--namespace", namespace, "--yes"),
        ("inspect", down, "--namespace", namespace),
        ("stats", down, "--metrics", f"http://u:{SECRET}@127.0.0.1:{free_port()}/metrics"),
        ("flush", down, "--namespace", namespace, "--yes"),
        ("stats", with_password, "--metrics", f"http://u:{SECRET}@127.0.0.1:{free_port()}/m"),
    ]
    for argv in runs:
        code, out, err = _run(capsys, *argv)
        assert SECRET not in out + err, (argv, out, err)
        assert "redis://:***@127.0.0.1:" in out + err, (argv, out, err)
        assert code in (0, 1, 2)
    ck.Cache.from_url(redis_url, namespace=namespace).clear()


def test_mask_url_and_scrub() -> None:
    url = f"rediss://app:{SECRET}@cache.example:6380/0?ssl_cert_reqs=none&password={SECRET}x"
    masked = mask_url(url)
    assert SECRET not in masked
    assert masked.startswith("rediss://app:***@cache.example:6380/0?ssl_cert_reqs=none")
    assert mask_url("memcached://127.0.0.1:11211") == "memcached://127.0.0.1:11211"
    assert mask_url(f"redis://{SECRET}@h/0") == "redis://***@h/0"
    text = f"Error connecting to {url} with password {SECRET}"
    assert SECRET not in scrub(text, url)
    assert scrub("error 111", "redis://:pw@h") == "error 111"
