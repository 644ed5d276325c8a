"""One model's place in a cache: its keys, its row and query namespaces, and post-commit writes.

Every ``CachedRepository`` and every ``track()`` hook over the same ``Cache``
and model share one ``ModelBinding`` (``AsyncModelBinding`` for an
``AsyncCache``), so their writes and loads see each other.

Rows live in their own namespace (``<namespace>/<table>``) and cached queries
in another (``<namespace>/<table>/q``): a write the repository cannot pin to
keys (a bulk ``update()`` with an arbitrary ``WHERE``) clears the model's row
namespace, and any write clears its query namespace, both in O(1) (a
namespace version bump; other processes see it within the cache's
``namespace_check_interval``).

The post-commit cache writes are written once, as a generator of steps that
yields each cache or backend call it needs (``apply_steps``); ``run_steps``
makes the calls blocking (``Cache``), ``arun_steps`` awaits them
(``AsyncCache``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import class_mapper

from .._async.cache import AsyncCache
from ..backends.base import MISSING
from ..cache import LEASE_MARK, Cache
from ..keys import stable_repr
from ..policies import TTL, Policy, TTLLike, as_ttl
from .codec import RowCodec, State
from .identity import IdentityConverter

__all__ = [
    "DELETED",
    "AsyncModelBinding",
    "BindingBase",
    "ModelBinding",
    "Op",
    "Steps",
    "arun_steps",
    "async_binding_for",
    "binding_for",
    "resolve_policy",
    "run_steps",
]

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


class Call:
    """One cache or backend call a step generator needs: ``fn(*args, **kwargs)``."""

    __slots__ = ("args", "fn", "kwargs")

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs


#: Steps that take / give back the binding's in-process lock (local backends).
LOCK: Any = object()
UNLOCK: Any = object()
#: What a step generator yields (``Call``, ``LOCK``, ``UNLOCK``); it is sent each call's result.
Steps = Generator[Any, Any, None]


class BindingBase(Generic[M]):
    """What both bindings share: keys, identities, the write-overlap table, post-commit steps."""

    rows: Any  # the model's row cache (a Cache or an AsyncCache)
    queries: Any  # its cached queries

    def __init__(self, cache: Any, model: type[M]) -> None:
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

    def apply_steps(
        self, ops: Op, *, store: bool, ttl: TTLLike = None, clear: bool = False
    ) -> Steps:
        """The steps that apply committed changes: store (write-through) or invalidate.

        The write stays open until its cache update is done: a write to the same key
        that starts meanwhile makes both invalidate, since their order at the database
        is unknown and either stored value could be the older one.
        """
        overlapped = self.overlapped(ops)
        failure: BaseException | None = None
        try:
            yield Call(self._apply, ops, store=store, ttl=ttl, clear=clear, overlapped=overlapped)
        except GeneratorExit:  # abandoned by its driver: no more calls, but end the writes
            self.end_writes(ops)
            raise
        except BaseException as exc:
            failure = exc
        late = self.end_writes(ops) - overlapped  # overlaps that began during our store
        if late and store:
            yield Call(self.rows.delete_many, sorted(late))
        if failure is not None:
            raise failure

    def _apply(
        self, ops: Op, *, store: bool, ttl: TTLLike, clear: bool, overlapped: set[str]
    ) -> Any:
        """Run ``_apply_steps`` (blocking or awaited, per binding)."""
        raise NotImplementedError

    def _apply_steps(
        self, ops: Op, *, store: bool, ttl: TTLLike, clear: bool, overlapped: set[str]
    ) -> Steps:
        """The cache calls of ``apply_steps`` once the overlapping writes are known."""
        if clear:
            yield Call(self.rows.clear)
        elif ops:
            drop = [k for k, s in ops.items() if not store or s is INVALIDATE or k in overlapped]
            if drop:
                yield Call(self.rows.delete_many, drop)
            for key, state in ops.items():
                if key in drop:
                    continue
                if state is not DELETED and self.versioned:
                    yield from self._store_versioned(key, state, ttl)
                else:
                    # a deleted row is stored as "absent", so a lagging replica cannot revive it
                    yield Call(self.rows.set, key, state, ttl=ttl)
        if clear or ops:
            yield Call(self.queries.clear)

    def _store_versioned(self, key: str, state: State, ttl: TTLLike) -> Steps:
        """Store ``state`` unless the cache already holds the same or a newer version."""
        version = self.codec.version(state)
        cache = self.rows
        if not isinstance(version, int):
            yield Call(cache.set, key, state, ttl=ttl)
            return
        backend = cache.backend
        if backend.local:
            # the store is in this process: the binding's lock makes check-then-set atomic
            yield LOCK
            current = yield Call(cache.get, key)
            if not self._newer_cached(current, version):
                yield Call(cache.set, key, state, ttl=ttl)
            yield UNLOCK
            return
        if not hasattr(backend, "compare_and_set") or cache.serializer is None:
            yield Call(cache.set, key, state, ttl=ttl)
            return
        try:
            full = yield Call(cache.full_key, key)
            data = cache._encode(state, full)  # key-bound serializers sign/encrypt with ``full``
            seconds = as_ttl(ttl, cache.policy.ttl).sample()
            for _ in range(_CAS_ATTEMPTS):
                raw = yield Call(backend.get, full)
                if raw is MISSING:
                    if (yield Call(backend.add, full, data, seconds)):
                        return
                    continue
                current = None
                if not bytes(raw).startswith(LEASE_MARK):  # a reader's lease: ours voids it
                    try:
                        current = cache._loads(full, raw)
                    except Exception:  # undecodable: overwrite it
                        current = None
                if self._newer_cached(current, version):
                    return
                if (yield Call(backend.compare_and_set, full, raw, data, seconds)):
                    return
        except Exception as exc:  # backend failure: the facade below counts and replays
            log.debug("cachekit: versioned store of %r failed: %s", key, exc)
        yield Call(cache.delete, key)  # contention or failure: dropping the entry is always safe

    def _newer_cached(self, current: Any, version: int) -> bool:
        cached = self.codec.version(current) if self.codec.is_state(current) else None
        return isinstance(cached, int) and cached >= version


class ModelBinding(BindingBase[M]):
    """Keys, namespaces and post-commit cache writes of one model in one ``Cache``."""

    rows: Cache
    queries: Cache

    def __init__(self, cache: Cache, model: type[M]) -> None:
        super().__init__(cache, model)
        # the memory backend is in this process: a lock makes check-then-set atomic
        self._local_lock = threading.Lock()

    def apply(self, ops: Op, *, store: bool, ttl: TTLLike = None, clear: bool = False) -> None:
        """Apply committed changes now: see ``apply_steps``."""
        run_steps(self.apply_steps(ops, store=store, ttl=ttl, clear=clear), self._local_lock)

    def _apply(
        self, ops: Op, *, store: bool, ttl: TTLLike, clear: bool, overlapped: set[str]
    ) -> None:
        steps = self._apply_steps(ops, store=store, ttl=ttl, clear=clear, overlapped=overlapped)
        run_steps(steps, self._local_lock)


class AsyncModelBinding(BindingBase[M]):
    """Keys, namespaces and post-commit cache writes of one model in one ``AsyncCache``."""

    rows: AsyncCache
    queries: AsyncCache

    def __init__(self, cache: AsyncCache, model: type[M]) -> None:
        super().__init__(cache, model)
        self._local_lock = asyncio.Lock()

    async def apply(
        self, ops: Op, *, store: bool, ttl: TTLLike = None, clear: bool = False
    ) -> None:
        """Apply committed changes now: see ``apply_steps``."""
        await arun_steps(self.apply_steps(ops, store=store, ttl=ttl, clear=clear), self._local_lock)

    async def _apply(
        self, ops: Op, *, store: bool, ttl: TTLLike, clear: bool, overlapped: set[str]
    ) -> None:
        steps = self._apply_steps(ops, store=store, ttl=ttl, clear=clear, overlapped=overlapped)
        await arun_steps(steps, self._local_lock)


def run_steps(steps: Steps, lock: threading.Lock) -> None:
    """Run a step generator with blocking calls; a call's exception is thrown into it."""
    held = False
    result: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = steps.send(result) if error is None else steps.throw(error)
            except StopIteration:
                return
            result = error = None
            if step is LOCK:
                lock.acquire()
                held = True
            elif step is UNLOCK:
                held = False
                lock.release()
            else:
                try:
                    result = step.fn(*step.args, **step.kwargs)
                except BaseException as exc:
                    error = exc
    finally:
        if held:
            lock.release()
        steps.close()


async def arun_steps(steps: Steps, lock: asyncio.Lock) -> None:
    """Run a step generator, awaiting each call; a call's exception is thrown into it."""
    held = False
    result: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = steps.send(result) if error is None else steps.throw(error)
            except StopIteration:
                return
            result = error = None
            if step is LOCK:
                await lock.acquire()
                held = True
            elif step is UNLOCK:
                held = False
                lock.release()
            else:
                try:
                    result = step.fn(*step.args, **step.kwargs)
                    if inspect.isawaitable(result):
                        result = await result
                except BaseException as exc:
                    error = exc
    finally:
        if held:
            lock.release()
        steps.close()


_BINDINGS: weakref.WeakKeyDictionary[Any, dict[type[Any], Any]] = weakref.WeakKeyDictionary()
_BINDINGS_LOCK = threading.Lock()


def _bound(cache: Any, model: type[Any], make: Callable[[], Any]) -> Any:
    with _BINDINGS_LOCK:
        per_cache = _BINDINGS.setdefault(cache, {})
        found = per_cache.get(model)
        if found is None:
            found = per_cache[model] = make()
        return found


def binding_for(cache: Cache, model: type[M]) -> ModelBinding[M]:
    """Return the one binding of ``model`` in ``cache`` (created on first use)."""
    found: ModelBinding[M] = _bound(cache, model, lambda: ModelBinding(cache, model))
    return found


def async_binding_for(cache: AsyncCache, model: type[M]) -> AsyncModelBinding[M]:
    """Return the one binding of ``model`` in the async ``cache`` (created on first use)."""
    found: AsyncModelBinding[M] = _bound(cache, model, lambda: AsyncModelBinding(cache, model))
    return found


def resolve_policy(
    cache: Cache | AsyncCache, policy: Policy | None, ttl: TTLLike
) -> tuple[Policy, TTL]:
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
