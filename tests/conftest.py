"""Shared fixtures: the real servers started by ``make test``, a fake clock, fresh namespaces.

A server that is not reachable fails the test with a message saying how to
start it; no test skips silently because a server is missing.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

REDIS_URL = os.environ.get("CACHEKIT_TEST_REDIS_URL", "redis://127.0.0.1:16379/0")
REDIS_CLUSTER_URL = os.environ.get(
    "CACHEKIT_TEST_REDIS_CLUSTER_URL", "redis+cluster://127.0.0.1:17001"
)
MEMCACHED_URL = os.environ.get("CACHEKIT_TEST_MEMCACHED_URL", "memcached://127.0.0.1:21211")
MEMCACHED_POOL_URL = os.environ.get(
    "CACHEKIT_TEST_MEMCACHED_POOL_URL",
    "memcached://127.0.0.1:21212,127.0.0.1:21213,127.0.0.1:21214",
)
POSTGRES_URL = os.environ.get(
    "CACHEKIT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

#: Backend kinds every conformance test runs against.
BACKEND_KINDS = ("memory", "redis", "redis-cluster", "memcached", "memcached-pool")


def require_server(url: str, what: str) -> None:
    """Fail (never skip) when nothing answers at the first host:port of ``url``."""
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    first = netloc.split(",")[0]
    host, _, port = first.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1.0):
            pass
    except OSError as exc:
        pytest.fail(
            f"{what} is not reachable at {first} ({exc}). The suite needs the real servers "
            "that `make test` starts (scripts/test-servers.sh start).",
            pytrace=False,
        )


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A fake monotonic clock to inject as ``timer=``."""
    return FakeClock()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses."""
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_server(REDIS_URL, "Redis")
    return REDIS_URL


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    require_server(REDIS_CLUSTER_URL, "Redis Cluster")
    return REDIS_CLUSTER_URL


@pytest.fixture(scope="session")
def memcached_url() -> str:
    require_server(MEMCACHED_URL, "memcached")
    return MEMCACHED_URL


@pytest.fixture(scope="session")
def memcached_pool_url() -> str:
    for node in urlsplit(MEMCACHED_POOL_URL).netloc.split(","):
        require_server(f"memcached://{node}", "memcached pool node")
    return MEMCACHED_POOL_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    require_server(POSTGRES_URL, "PostgreSQL")
    return POSTGRES_URL


def _url_for(kind: str, request: pytest.FixtureRequest) -> str:
    fixture = {
        "redis": "redis_url",
        "redis-cluster": "redis_cluster_url",
        "memcached": "memcached_url",
        "memcached-pool": "memcached_pool_url",
    }[kind]
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def make_backend(request: pytest.FixtureRequest) -> Iterator[Callable[..., object]]:
    """Factory ``make_backend(kind, **options)`` for a fresh backend; closed after the test."""
    import cachekit as ck

    made: list[ck.Backend] = []

    def factory(kind: str, **options: object) -> ck.Backend:
        if kind == "memory":
            backend: ck.Backend = ck.MemoryBackend(**options)  # type: ignore[arg-type]
        else:
            backend = ck.backend_from_url(_url_for(kind, request), **options)
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        backend.close()


@pytest.fixture(params=BACKEND_KINDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Each backend kind in turn (memory, redis, redis-cluster, memcached, memcached-pool)."""
    return str(request.param)
