"""Decorators: ``cached`` (lazy loading), ``writes`` (write-through or invalidate), ``evicts``.

Everything that can be worked out once is worked out at decoration time (the
signature, the key builder, bound methods of the cache), so a hit costs one
key build and one backend lookup.

The async source of truth: ``_sync/decorators.py`` is generated from this file.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

from ..backends.base import MISSING
from ..core.calls import KeySpec, check_kind, is_method, key_builder
from ..core.fresh import Fresh
from ..errors import ConfigurationError
from ..keys import MAX_KEY_LENGTH
from ..policies import DEFAULT_TTL, TTLLike, as_ttl
from .primitives import IS_ASYNC

if TYPE_CHECKING:
    from .cache import AsyncCache

__all__ = [
    "AsyncCachedCallable",
    "AsyncCachedFunction",
    "AsyncCachedMethod",
    "cached",
    "evicts",
    "writes",
]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class AsyncCachedCallable(Protocol[P, R_co]):
    """What ``@cache.cached`` returns: the function, plus its cache helpers (typed)."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R_co]: ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[bool]:
        """Drop the entry for these arguments; return whether one was cached."""
        ...

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R_co]:
        """Call the function now, store its result, and return it."""
        ...

    def uncached(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R_co]:
        """Call the function without reading or writing the cache."""
        ...

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Return the cache key of a call with these arguments."""
        ...

    # Methods: reading the attribute from an instance binds it, dropping ``self``.
    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> AsyncCachedCallable[P, R_co]: ...
    @overload
    def __get__(
        self: AsyncCachedCallable[Concatenate[Any, P2], R_co],
        obj: object,
        objtype: type | None = None,
    ) -> AsyncCachedCallable[P2, R_co]: ...


class AsyncCachedFunction(Generic[P, R]):
    """The helpers attached to a ``@cache.cached`` function (the wrapper stays a function)."""

    def __init__(
        self,
        cache: AsyncCache,
        func: Callable[P, Awaitable[R]],
        ttl: TTLLike,
        key: KeySpec,
        cache_if: Callable[[Any], bool] | None = None,
    ) -> None:
        self.cache = cache
        self.func = func
        self.ttl = ttl
        self.key_of = key_builder(func, key)
        self.cache_if = cache_if

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Return the cache key of a call with these arguments."""
        return self.key_of(args, kwargs)

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the entry for these arguments; return whether one was cached."""
        return await self.cache.delete(self.key_of(args, kwargs))

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function now, store its result, and return it."""
        return await self.cache.refresh(
            self.key_of(args, kwargs),
            lambda: self.func(*args, **kwargs),
            self.ttl,
            cache_if=self.cache_if,
        )

    async def uncached(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function without reading or writing the cache."""
        return await self.func(*args, **kwargs)


def _make_wrapper(helpers: AsyncCachedFunction[P, R]) -> Callable[P, Awaitable[R]]:
    func, ttl, key_of, cache_if = helpers.func, helpers.ttl, helpers.key_of, helpers.cache_if
    cache = helpers.cache
    lookup, load, full_key, serve = cache._lookup, cache._load, cache._full, cache._serve_fresh
    ns, backend_get, hit, miss = cache._ns, cache._backend_get, cache._hit, cache._miss
    # In process with no serializer, a hit is a dict lookup: do _lookup's fast path here,
    # one call less per hit (about a tenth of it). Anything else takes _lookup.
    inline = not cache._decodes
    missing, fresh, longest = MISSING, Fresh, MAX_KEY_LENGTH  # closure cells beat globals

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        key = key_of(args, kwargs)
        if inline and not cache._slow:
            full = ns.prefix + key
            if len(full) <= longest:
                value = await backend_get(full)
                if value is missing:
                    miss()
                    return await load(full, lambda: func(*args, **kwargs), ttl, cache_if=cache_if)
                if type(value) is not fresh:
                    hit()
                    return value  # type: ignore[no-any-return]
        value = await lookup(key)
        if value is not MISSING:
            if type(value) is Fresh:  # freshness data: maybe reload it behind the caller
                full = await full_key(key)
                return await serve(full, value, lambda: func(*args, **kwargs), ttl, cache_if)  # type: ignore[no-any-return]
            return value  # type: ignore[no-any-return]
        full = await full_key(key)
        return await load(full, lambda: func(*args, **kwargs), ttl, cache_if=cache_if)

    return wrapper


class AsyncCachedMethod(Generic[P, R]):
    """A cached function defined in a class; binding passes the instance through.

    ``obj.method.invalidate(42)`` and ``obj.method.refresh(42)`` take the
    arguments after ``self``; the instance itself is not part of the key.
    """

    def __init__(self, helpers: AsyncCachedFunction[P, R]) -> None:
        self._helpers = helpers
        self._call = _make_wrapper(helpers)
        functools.update_wrapper(self, helpers.func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return _Bound(self, obj)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._helpers, name)


class _Bound:
    """A cached method bound to an instance."""

    __slots__ = ("_method", "_obj")

    def __init__(self, method: AsyncCachedMethod[Any, Any], obj: object) -> None:
        self._method = method
        self._obj = obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._method._call(self._obj, *args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        # like a bound method: the function's signature without its first parameter
        sig = inspect.signature(self._method._helpers.func)
        return sig.replace(parameters=list(sig.parameters.values())[1:])

    def __getattr__(self, name: str) -> Any:
        # __name__, __qualname__, __wrapped__, ... of the decorated function
        return getattr(self._method, name)

    def key(self, *args: Any, **kwargs: Any) -> str:
        """Return the cache key of a call with these arguments."""
        return self._method._helpers.key(self._obj, *args, **kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        """Drop the entry for these arguments."""
        return self._method._helpers.invalidate(self._obj, *args, **kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        """Reload and store the entry for these arguments."""
        return self._method._helpers.refresh(self._obj, *args, **kwargs)

    def uncached(self, *args: Any, **kwargs: Any) -> Any:
        """Call the method without the cache."""
        return self._method._helpers.func(self._obj, *args, **kwargs)


def cached(
    cache: AsyncCache,
    ttl: TTLLike = None,
    key: KeySpec = None,
    cache_if: Callable[[Any], bool] | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], AsyncCachedCallable[P, R]]:
    """Lazy loading: return the cached result, or call the function and cache it.

    The key is the function's qualified name plus its bound arguments (defaults
    applied), or ``key`` - a template such as ``"user:{user_id}"`` or a
    callable taking the function's arguments. With ``cache_if``, a result is
    stored only when ``cache_if(result)`` (it is returned either way). The
    wrapper gains ``.invalidate(*args)``, ``.refresh(*args)``, ``.uncached(*args)``
    and ``.key(*args)``.
    """
    if callable(ttl) and not isinstance(ttl, (int, float)):
        raise ConfigurationError("use @cache.cached() or @cache.cached(ttl=...), with parentheses")
    as_ttl(ttl, DEFAULT_TTL)  # a bad ttl fails here, not silently at the first store

    def decorate(func: Callable[P, Awaitable[R]]) -> AsyncCachedCallable[P, R]:
        check_kind(func, IS_ASYNC, "cached")
        helpers = AsyncCachedFunction(cache, func, ttl, key, cache_if)
        if is_method(func):
            return cast(AsyncCachedCallable[P, R], AsyncCachedMethod(helpers))
        wrapper: Any = _make_wrapper(helpers)
        wrapper.invalidate = helpers.invalidate
        wrapper.refresh = helpers.refresh
        wrapper.uncached = helpers.uncached
        wrapper.key = helpers.key
        wrapper.cache = cache
        return cast(AsyncCachedCallable[P, R], wrapper)

    return decorate


def writes(
    cache: AsyncCache,
    *,
    key: KeySpec,
    ttl: TTLLike = None,
    cache_if: Callable[[Any], bool] | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """After the function succeeds, store its return value (write-through) or invalidate.

    Which one is the cache policy's choice. If the function raises, the cache
    is not touched.
    """
    if key is None:
        raise ConfigurationError("@cache.writes needs key=: the key readers of this value use")
    as_ttl(ttl, DEFAULT_TTL)

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        check_kind(func, IS_ASYNC, "writes")
        key_of = key_builder(func, key)

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            k = key_of(args, kwargs)  # an unkeyable call fails before the write happens
            return await cache.write(k, lambda: func(*args, **kwargs), ttl, cache_if=cache_if)

        return wrapper

    return decorate


def evicts(
    cache: AsyncCache, *, key: KeySpec
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """After the function succeeds, invalidate the entry named by ``key``."""
    if key is None:
        raise ConfigurationError("@cache.evicts needs key=: the key of the entry to drop")

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        check_kind(func, IS_ASYNC, "evicts")
        key_of = key_builder(func, key)

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            k = key_of(args, kwargs)
            result = await func(*args, **kwargs)
            await cache.delete(k)
            return result

        return wrapper

    return decorate
