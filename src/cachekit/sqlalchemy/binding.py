"""One model's place in a cache: its keys, its row and query namespaces, and post-commit writes.

Every ``CachedRepository`` and every ``track()`` hook over the same ``Cache``
and model share one ``ModelBinding``, so their writes and loads see each other.

Rows live in their own namespace (``<namespace>/<table>``) and cached queries
in another (``<namespace>/<table>/q``): a write the repository cannot pin to
keys (a bulk ``update()`` with an arbitrary ``WHERE``) clears the model's row
namespace, and any write clears its query namespace, both in O(1) (a
namespace version bump; other processes see it within the cache's
``namespace_check_interval``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import class_mapper

from ..backends.base import MISSING, SupportsCompareAndSet
from ..cache import LEASE_MARK, Cache
from ..keys import stable_repr
from ..policies import TTL, Policy, TTLLike, as_ttl
from .codec import RowCodec, State
from .identity import IdentityConverter

__all__ = ["DELETED", "ModelBinding", "Op", "binding_for", "resolve_policy"]

log = logging.getLogger("cachekit.sqlalchemy")
M = TypeVar("M")

#: An op's state when the row was deleted.
DELETED: Any = None
#: A post-commit change: ``key -> state`` (a new row state, ``DELETED``, or ``INVALIDATE``).
Op = Mapping[str, Any]
#: An op's state when the new state is unknown: the entry is dropped, whatever the policy.
INVALIDATE: Any = object()

#: Attempts of the version-guarded compare-and-set loop before falling back to a delete.
_CAS_ATTEMPTS = 8


class ModelBinding(Generic[M]):
    """Keys, namespaces and post-commit cache writes of one model in one cache."""

    def __init__(self, cache: Cache, model: type[M]) -> None:
        self.model = model
        self.codec: RowCodec[M] = RowCodec(model)
        mapper = class_mapper(model)
        self.mapper = mapper
        self.pk_columns = tuple(mapper.primary_key)
        self.single_pk = len(self.pk_columns) == 1
        self._identity = IdentityConverter(model.__name__, self.pk_columns)
        table = mapper.local_table
        name = getattr(table, "fullname", None) or getattr(table, "name", model.__name__)
        self.parent = cache
        self.rows = cache.child(f"{cache.namespace}/{name}")
        self.queries = cache.child(f"{cache.namespace}/{name}/q")
        self.versioned = self.codec.version_key is not None
        # In-process write-through writes per key between commit and cache write; two at
        # once (no version column to order them) make both invalidate instead of set.
        self._writing: dict[str, int] = {}
        self._conflicted: set[str] = set()
        self._writing_lock = threading.Lock()
        # the memory backend is in this process: a lock makes check-then-set atomic
        self._local_lock = threading.Lock()

    # ------------------------------------------------------------ keys

    def ident(self, pk: Any) -> tuple[Any, ...]:
        """Return ``pk`` (a scalar, or a tuple for composite keys) as a normalised identity tuple.

        Each value is converted to its column's Python type (``"5"`` -> ``5`` for an
        integer key), so every spelling of one row is one cache entry; a value that
        cannot be converted raises ``InvalidKeyError``.
        """
        return self._identity(pk)

    def key(self, ident: tuple[Any, ...]) -> str:
        """Return the cache key of a row (``stable_repr`` of its primary key: unambiguous)."""
        return stable_repr(ident[0]) if self.single_pk else stable_repr(ident)

    def identity_of(self, obj: Any) -> tuple[Any, ...]:
        """Return the primary-key identity tuple of a mapped instance."""
        return self._identity(tuple(self.mapper.primary_key_from_instance(obj)))

    # ------------------------------------------------------------ in-process write overlap

    def begin_writes(self, keys: Iterable[str]) -> None:
        """Note that writes to ``keys`` are about to commit (unversioned models only)."""
        if self.versioned:
            return
        with self._writing_lock:
            for k in keys:
                n = self._writing.get(k, 0) + 1
                self._writing[k] = n
                if n > 1:
                    self._conflicted.add(k)

    def overlapped(self, keys: Iterable[str]) -> set[str]:
        """Return those of ``keys`` whose writes overlapped another write so far."""
        if self.versioned:
            return set()
        with self._writing_lock:
            return {k for k in keys if k in self._conflicted}

    def end_writes(self, keys: Iterable[str]) -> set[str]:
        """Forget writes to ``keys``; return those that overlapped another write."""
        if self.versioned:
            return set()
        overlapped: set[str] = set()
        with self._writing_lock:
            for k in keys:
                if k in self._conflicted:
                    overlapped.add(k)
                n = self._writing.get(k, 1) - 1
                if n <= 0:
                    self._writing.pop(k, None)
                    self._conflicted.discard(k)
                else:
                    self._writing[k] = n
        return overlapped

    # ------------------------------------------------------------ post-commit application

    def apply(self, ops: Op, *, store: bool, ttl: TTLLike = None, clear: bool = False) -> None:
        """Apply committed changes: store (write-through) or invalidate (cache-aside).

        The write stays open until its cache update is done: a write to the same key
        that starts meanwhile makes both invalidate, since their order at the database
        is unknown and either stored value could be the older one.
        """
        overlapped = self.overlapped(ops)
        try:
            self._apply(ops, store=store, ttl=ttl, clear=clear, overlapped=overlapped)
        finally:
            late = self.end_writes(ops) - overlapped  # overlaps that began during our store
            if late and store:
                self.rows.delete_many(sorted(late))

    def _apply(
        self, ops: Op, *, store: bool, ttl: TTLLike, clear: bool, overlapped: set[str]
    ) -> None:
        if clear:
            self.rows.clear()
        elif ops:
            drop = [k for k, s in ops.items() if not store or s is INVALIDATE or k in overlapped]
            if drop:
                self.rows.delete_many(drop)
            for key, state in ops.items():
                if key in drop:
                    continue
                if state is not DELETED and self.versioned:
                    self._store_versioned(key, state, ttl)
                else:
                    # a deleted row is stored as "absent", so a lagging replica cannot revive it
                    self.rows.set(key, state, ttl=ttl)
        if clear or ops:
            self.queries.clear()

    def _store_versioned(self, key: str, state: State, ttl: TTLLike) -> None:
        """Store ``state`` unless the cache already holds the same or a newer version."""
        version = self.codec.version(state)
        if not isinstance(version, int):
            self.rows.set(key, state, ttl=ttl)
            return
        cache = self.rows
        backend = cache.backend
        if backend.local:
            with self._local_lock:
                if not self._newer_cached(cache.get(key), version):
                    cache.set(key, state, ttl=ttl)
            return
        if not isinstance(backend, SupportsCompareAndSet) or cache.serializer is None:
            cache.set(key, state, ttl=ttl)
            return
        try:
            full = cache.full_key(key)
            data = cache._encode(state, full)  # key-bound serializers sign/encrypt with ``full``
            seconds = as_ttl(ttl, cache.policy.ttl).sample()
            for _ in range(_CAS_ATTEMPTS):
                raw = backend.get(full)
                if raw is MISSING:
                    if backend.add(full, data, seconds):
                        return
                    continue
                current = None
                if not bytes(raw).startswith(LEASE_MARK):  # a reader's lease: ours voids it
                    try:
                        current = cache._loads(full, raw)  # type: ignore[misc]
                    except Exception:  # undecodable: overwrite it
                        current = None
                if self._newer_cached(current, version):
                    return
                if backend.compare_and_set(full, raw, data, seconds):
                    return
        except Exception as exc:  # backend failure: the facade below counts and replays
            log.debug("cachekit: versioned store of %r failed: %s", key, exc)
        cache.delete(key)  # contention or failure: dropping the entry is always safe

    def _newer_cached(self, current: Any, version: int) -> bool:
        cached = self.codec.version(current) if self.codec.is_state(current) else None
        return isinstance(cached, int) and cached >= version


_BINDINGS: weakref.WeakKeyDictionary[Cache, dict[type[Any], ModelBinding[Any]]] = (
    weakref.WeakKeyDictionary()
)
_BINDINGS_LOCK = threading.Lock()


def binding_for(cache: Cache, model: type[M]) -> ModelBinding[M]:
    """Return the one binding of ``model`` in ``cache`` (created on first use)."""
    with _BINDINGS_LOCK:
        per_cache = _BINDINGS.setdefault(cache, {})
        found = per_cache.get(model)
        if found is None:
            found = per_cache[model] = ModelBinding(cache, model)
        return found


def resolve_policy(cache: Cache, policy: Policy | None, ttl: TTLLike) -> tuple[Policy, TTL]:
    """Return the policy and TTL of a repository or ``track()`` hook over ``cache``.

    The rule of ``Cache(ttl=..., policy=...)``: a policy without an explicit TTL
    takes the cache's, and a policy TTL that differs from an explicit cache TTL
    (or from ``ttl``) raises ``ConfigurationError``. ``ttl`` overrides the
    cache's TTL for this model; no ``policy`` means the cache's policy.
    """
    if policy is None:
        chosen = cache.policy
    elif ttl is not None:
        chosen = policy.with_ttl(ttl)
    elif policy.ttl_given and not cache.policy.ttl_given:
        chosen = policy
    else:
        chosen = policy.with_ttl(cache.policy.ttl)
    return chosen, as_ttl(ttl, chosen.ttl)
