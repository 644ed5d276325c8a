"""What both kinds of decorator work out when decorating: the key builder, the function's kind."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError
from ..keys import ArgsKey, validate_key

__all__ = ["KeySpec", "check_kind", "is_method", "key_builder"]

KeySpec = str | Callable[..., str] | None


def key_builder(
    func: Callable[..., Any], key: KeySpec
) -> Callable[[tuple[Any, ...], dict[str, Any]], str]:
    """A function of a call's ``(args, kwargs)`` that returns its cache key."""
    if key is None:
        return ArgsKey(func).builder()
    if isinstance(key, str):
        return ArgsKey(func, template=key).builder()
    if callable(key):
        user_fn = key

        def build(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            return validate_key(user_fn(*args, **kwargs))

        return build
    raise ConfigurationError(f"key must be a template string or a callable, not {key!r}")


def check_kind(func: Callable[..., Any], is_async: bool, decorator: str) -> None:
    """Refuse a function of the other kind: an ``async def`` on a ``Cache``, a plain one on an
    ``AsyncCache`` (one would cache the coroutine, the other block the event loop)."""
    target = inspect.unwrap(func)
    coroutine = inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)
    name = getattr(func, "__qualname__", repr(func))
    if coroutine and not is_async:
        raise ConfigurationError(
            f"@cache.{decorator} on async function {name}: a Cache would store the coroutine, "
            "not its result; use an AsyncCache (ck.AsyncCache.from_url(...)) for async def"
        )
    if is_async and not coroutine:
        raise ConfigurationError(
            f"@acache.{decorator} on plain function {name}: an AsyncCache decorates async def "
            "functions only; use a Cache (ck.Cache.from_url(...)) for plain functions"
        )


def is_method(func: Callable[..., Any]) -> bool:
    """Whether ``func`` is defined in a class (its first parameter is ``self`` or ``cls``)."""
    code = getattr(func, "__code__", None)
    return bool(code and code.co_argcount and code.co_varnames[0] in ("self", "cls"))
