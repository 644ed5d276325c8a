"""Generated from ``_async/cache.py`` by ``scripts/unasync.py``: do not edit.

``Cache``: one namespace, one default policy, over any backend, awaited.

It builds and namespaces keys, serializes values, runs one loader per key at
a time (single-flight), counts every event, and falls open when the backend
fails. The steps live in ``state``, ``guard``, ``reads``, ``writes`` and
``loads``; this module adds construction, decorators and stats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigurationError
from ..policies import Policy, TTLLike
from ..serializers import JsonSerializer, PassthroughSerializer, PickleSerializer, Serializer
from ..stats import Stats
from .loads import Loads
from .primitives import cancel

if TYPE_CHECKING:
    from .decorators import CachedCallable

__all__ = ["Cache"]

P = ParamSpec("P")
R = TypeVar("R")
CacheT = TypeVar("CacheT", bound="Cache")

#: Keywords of ``from_url`` that configure the cache (every other one goes to the backend).
CACHE_OPTIONS = (
    "fail_open",
    "breaker",
    "timer",
    "namespace_check_interval",
    "lease_ttl",
    "lease_wait",
    "stale_ttl",
    "stale_maxsize",
)


def serializer_from_name(name: str, secret: str | None) -> Serializer:
    """The serializer a URL's ``serializer=`` parameter names."""
    if name == "json":
        return JsonSerializer()
    if name == "pickle":
        if not secret:
            raise ConfigurationError("serializer=pickle needs a signing key (pickle_key=...)")
        return PickleSerializer(secret.encode())
    if name in ("none", "passthrough"):
        return PassthroughSerializer()  # values go to the backend as they are
    raise ConfigurationError(f"unknown serializer {name!r} (json, pickle, none)")


class Cache(Loads):
    """A namespaced cache with a default policy over one backend.

    ``get`` never raises because the backend is down; with ``fail_open=False``
    backend failures raise ``BackendUnavailableError`` instead.
    """

    @classmethod
    def from_url(
        cls: type[CacheT],
        url: str,
        *,
        namespace: str = "default",
        ttl: TTLLike = None,
        policy: Policy | None = None,
        serializer: Serializer | None = None,
        **options: Any,
    ) -> CacheT:
        """Build a cache over the backend that serves ``url`` (``memory://``, ``redis://``, ...).

        A ``serializer=json|pickle|none`` query parameter picks the serializer;
        ``fail_open``, ``breaker`` and ``timer`` keywords go to the cache,
        any other keyword to the backend.
        """
        from ..backends import backend_from_url

        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed IPv6 bracket; the URL may hold a password
            from ..backends import redact_url

            raise ConfigurationError(f"malformed cache URL {redact_url(url)!r}") from None
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if serializer is None and "serializer" in query:
            serializer = serializer_from_name(query["serializer"], options.pop("pickle_key", None))
        cache_opts: dict[str, Any] = {k: options.pop(k) for k in CACHE_OPTIONS if k in options}
        if "timer" in cache_opts and parts.scheme.lower() == "memory":
            options.setdefault("timer", cache_opts["timer"])  # expiry happens in the backend
        backend = backend_from_url(url, **options)
        return cls(
            backend,
            namespace=namespace,
            ttl=ttl,
            policy=policy,
            serializer=serializer,
            **cache_opts,
        )

    def child(self: CacheT, namespace: str) -> CacheT:
        """Return a cache in another namespace sharing this one's backend, policy and breaker."""
        return type(self)(
            self.backend,
            namespace=namespace,
            policy=self.policy,
            serializer=self.serializer,
            fail_open=self.fail_open,
            breaker=self.breaker,
            namespace_check_interval=self._check_interval,
            lease_ttl=self.lease_ttl,
            lease_wait=self.lease_wait,
            stale_ttl=self.stale_ttl,
            stale_maxsize=self._stale_maxsize,
            timer=self._timer,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({type(self.backend).__name__}, "
            f"namespace={self.namespace!r}, {self.policy!r})"
        )

    def close(self) -> None:
        """Close the backend (and stop the background replay)."""
        self._closed = True
        cancel(self._replayer)
        self._background.close()
        self.backend.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def full_key(self, key: str) -> str:
        """Return the backend key that ``key`` is stored under (for debugging)."""
        from .reads import checked

        return self._full(checked(key))

    # ------------------------------------------------------------ decorators

    def cached(
        self,
        ttl: TTLLike = None,
        *,
        key: str | Callable[..., str] | None = None,
        cache_if: Callable[[Any], bool] | None = None,
    ) -> Callable[[Callable[P, R]], CachedCallable[P, R]]:
        """Decorate a function with lazy loading: see ``decorators.cached``."""
        from .decorators import cached

        return cached(self, ttl=ttl, key=key, cache_if=cache_if)

    def writes(
        self,
        *,
        key: str | Callable[..., str],
        ttl: TTLLike = None,
        cache_if: Callable[[Any], bool] | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a writer: after it succeeds, store its result or invalidate, per policy."""
        from .decorators import writes

        return writes(self, key=key, ttl=ttl, cache_if=cache_if)

    def evicts(
        self, *, key: str | Callable[..., str]
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a function: after it succeeds, invalidate the entry named by ``key``."""
        from .decorators import evicts

        return evicts(self, key=key)

    # ------------------------------------------------------------ stats

    def stats(self) -> Stats:
        """Return a snapshot of this cache's counters."""
        capacity = expired = 0
        counts = getattr(self.backend, "eviction_counts", None)
        if counts is not None:
            capacity, expired = counts()
        errors = {op: c.value for op, c in list(self._errors.items())}
        return Stats(
            namespace=self.namespace,
            hits=self._c_hits.value,
            misses=self._c_misses.value,
            loads=self._c_loads.value,
            load_failures=self._c_load_failures.value,
            coalesced=self._c_coalesced.value,
            sets=self._c_sets.value,
            deletes=self._c_deletes.value,
            errors=sum(errors.values()),
            evictions_capacity=capacity,
            evictions_expired=expired,
            evictions_invalidated=self._c_invalidated.value,
            stale_served=self._c_stale.value,
            stale_revalidated=self._c_revalidated.value,
            refreshes_started=self._c_refresh_started.value,
            refreshes_completed=self._c_refresh_done.value,
            refreshes_failed=self._c_refresh_failed.value,
            refreshes_skipped=self._c_refresh_skipped.value,
            circuit_open=self.breaker.is_open,
            errors_by_operation=errors,
        )
