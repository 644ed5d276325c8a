"""Cache keys: namespacing, hashing of long or unsafe keys, and keys for decorated calls.

A full backend key is ``ck:<len(ns)>:<ns>:<version>:<key>``. The namespace is
length-prefixed, so namespace ``a`` + key ``bc`` can never equal namespace ``ab``
+ key ``c``. Bumping the namespace version makes every older entry unreachable,
which is how ``Cache.clear()`` is O(1) on every backend.

Keys that are too long, or (for backends that need it) hold characters the
backend cannot carry, are replaced by ``~`` + a readable prefix + a blake2b
digest. A raw key that itself starts with ``~`` is always hashed, so a hashed
key can never equal a raw one.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import hashlib
import inspect
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .errors import InvalidKeyError

__all__ = [
    "HASH_MARK",
    "MAX_KEY_LENGTH",
    "ArgsKey",
    "encode_key",
    "namespace_prefix",
    "stable_repr",
    "validate_key",
]

#: Keys longer than this (in characters) are hashed before they reach a backend.
MAX_KEY_LENGTH = 200
#: First character of every hashed key; raw keys starting with it are hashed too.
HASH_MARK = "~"
_READABLE = 48
_UNSAFE = re.compile(r"[^\x21-\x7e]")  # memcached: printable ASCII, no space


def validate_key(key: object) -> str:
    """Return ``key`` if it is a non-empty string, else raise ``InvalidKeyError``."""
    if type(key) is str and key:
        return key
    if isinstance(key, str):
        if not key:
            raise InvalidKeyError("cache keys must not be empty")
        return str(key)
    raise InvalidKeyError(f"cache keys must be str, not {type(key).__name__}: {key!r}")


def _digest(key: str) -> str:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def encode_key(key: str, max_length: int = MAX_KEY_LENGTH, ascii_only: bool = False) -> str:
    """Return ``key`` unchanged if a backend can hold it, else its hashed form.

    With ``ascii_only`` (memcached), any whitespace, control or non-ASCII
    character forces hashing, so a key can never inject a protocol command.
    """
    short = len(key) <= max_length and not key.startswith(HASH_MARK)
    if short and (not ascii_only or not _UNSAFE.search(key)):
        return key
    readable = _UNSAFE.sub("_", key[:_READABLE]) if ascii_only else key[:_READABLE]
    return f"{HASH_MARK}{readable}#{_digest(key)}"


def namespace_prefix(namespace: str, version: int) -> str:
    """Return the unambiguous prefix for ``namespace`` at ``version``."""
    return f"ck:{len(namespace)}:{namespace}:{version}:"


# ---------------------------------------------------------------- call keys

_SCALARS: frozenset[type] = frozenset({int, str, float, bool, type(None)})


def stable_repr(value: object) -> str:
    """Return a canonical text form of a decorator argument, or raise ``InvalidKeyError``.

    Scalars, bytes, tuples, lists, frozensets, sets, dicts of those, dates,
    Decimals, UUIDs and Enums are accepted; an object may define
    ``__cache_key__()`` returning any of those. Anything else has no stable
    identity across processes and is refused.
    """
    t = type(value)
    if t in _SCALARS or t is bytes:
        return repr(value)
    if t is tuple:  # the same text as repr() for tuples of scalars
        parts = [stable_repr(v) for v in value]  # type: ignore[attr-defined]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    if t is list:
        return "[" + ", ".join(stable_repr(v) for v in value) + "]"  # type: ignore[attr-defined]
    if t is frozenset or t is set:
        inner = ", ".join(sorted(stable_repr(v) for v in value))  # type: ignore[attr-defined]
        return f"{t.__name__}({{{inner}}})"
    if isinstance(value, Mapping):
        items = sorted(f"{stable_repr(k)}: {stable_repr(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, enum.Enum):
        return f"{t.__qualname__}.{value.name}"
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta, decimal.Decimal)):
        return repr(value)
    if isinstance(value, uuid.UUID):
        return f"UUID({value.hex})"
    key_fn = getattr(value, "__cache_key__", None)
    if key_fn is not None and callable(key_fn):
        return f"{t.__qualname__}<{stable_repr(key_fn())}>"
    if isinstance(value, (int, str, float, bytes)):  # subclasses of scalars
        return f"{t.__qualname__}({value!r})"
    raise InvalidKeyError(
        f"cannot build a cache key from an argument of type {t.__qualname__}: "
        "pass scalars, tuples, dates, UUIDs or Enums, give the class a __cache_key__() "
        "method, or use an explicit key template"
    )


class ArgsKey:
    """Builds the cache key of a call to ``func`` from its bound arguments.

    The signature is inspected once, at decoration time. Positional calls that
    supply every parameter take a fast path; other calls are bound with
    defaults applied, so ``f(1, 2)``, ``f(1, b=2)`` and ``f(a=1)`` (default
    ``b=2``) give one key. A first parameter named ``self`` or ``cls`` is left
    out of the key.
    """

    __slots__ = (
        "_built",
        "_defaults",
        "_fast_n",
        "_kw_ok",
        "_name",
        "_names",
        "_sig",
        "_skip",
        "_template",
    )

    def __init__(self, func: Callable[..., Any], template: str | None = None) -> None:
        self._sig = inspect.signature(func)
        params = list(self._sig.parameters.values())
        self._names = tuple(p.name for p in params)
        self._skip = 1 if params and params[0].name in ("self", "cls") else 0
        simple = all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
        self._fast_n = len(params) if simple else -1
        # Without positional-only parameters a call can be bound by hand (much cheaper
        # than Signature.bind); anything unusual still goes through Signature.bind.
        self._kw_ok = simple and all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
        self._defaults = tuple(p.default for p in params)
        self._name = f"{func.__module__}.{func.__qualname__}"
        self._template = template
        self._built: Callable[[tuple[Any, ...], dict[str, Any]], str] | None = None
        if template is not None:
            self._check_template(template)

    def _check_template(self, template: str) -> None:
        import string

        for _, field, _, _ in string.Formatter().parse(template):
            if field is None:
                continue
            root = re.split(r"[.\[]", field, maxsplit=1)[0]
            if root not in self._names:
                raise InvalidKeyError(
                    f"key template {template!r} names {root!r}, which is not a parameter "
                    f"of {self._name} (parameters: {', '.join(self._names)})"
                )

    @property
    def name(self) -> str:
        """The qualified name of the function."""
        return self._name

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Return the call's arguments by name, defaults applied."""
        try:
            bound = self._sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidKeyError(f"{self._name}: {exc}") from exc
        bound.apply_defaults()
        return bound.arguments

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Return the key for a call with ``args`` and ``kwargs``."""
        return self.builder()(args, kwargs)

    def values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Return the call's argument values in parameter order, defaults applied."""
        n = self._fast_n
        if not kwargs and len(args) == n:
            return args
        if self._kw_ok and len(args) <= n:
            out = list(args)
            used = 0
            empty = inspect.Parameter.empty
            for i in range(len(args), n):
                pname = self._names[i]
                if pname in kwargs:
                    out.append(kwargs[pname])
                    used += 1
                elif self._defaults[i] is not empty:
                    out.append(self._defaults[i])
                else:
                    break  # a required argument is missing: let bind() say so
            else:
                if used == len(kwargs):  # no unknown or duplicated keyword
                    return tuple(out)
        return tuple(self.bind(args, kwargs).values())

    def _simple_template(self) -> Callable[[tuple[Any, ...], dict[str, Any]], str] | None:
        """A template of plain ``{name}`` fields, compiled to string joins (no ``str.format``)."""
        import string

        template, names, fast_n = self._template, self._names, self._fast_n
        if template is None or fast_n < 0:
            return None
        # literals[k] precedes fields[k]; the last literal follows the last field
        literals: list[str] = []
        fields: list[int] = []
        pending = ""  # parse() splits literal text at escaped braces: join it back up
        for literal, field, spec, conversion in string.Formatter().parse(template):
            pending += literal
            if field is None:
                continue
            if spec or conversion or field not in names:
                return None  # attribute/index access, format spec or !r: use str.format
            literals.append(pending)
            fields.append(names.index(field))
            pending = ""
        literals.append(pending)
        values = self.values
        if len(fields) == 1:
            (i,), pre, post = fields, literals[0], literals[1]

            def one(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
                if not kwargs and len(args) == fast_n:
                    return f"{pre}{args[i]}{post}"
                return f"{pre}{values(args, kwargs)[i]}{post}"

            return one

        def many(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            vals = args if not kwargs and len(args) == fast_n else values(args, kwargs)
            out = [literals[0]]
            for i, lit in zip(fields, literals[1:], strict=True):
                out.append(f"{vals[i]}")
                out.append(lit)
            return "".join(out)

        return many

    def builder(self) -> Callable[[tuple[Any, ...], dict[str, Any]], str]:
        """Return a fast function ``(args, kwargs) -> key`` for this signature (built once)."""
        if self._built is None:
            self._built = self._build()
        return self._built

    def _build(self) -> Callable[[tuple[Any, ...], dict[str, Any]], str]:
        name, skip, fast_n, scalars = self._name, self._skip, self._fast_n, _SCALARS
        template, values, names = self._template, self.values, self._names
        if template is not None:
            simple = self._simple_template()
            if simple is not None:
                return simple
            fmt = template.format
            bind = self.bind

            def templated(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
                try:
                    if fast_n >= 0:
                        return fmt(**dict(zip(names, values(args, kwargs), strict=True)))
                    return fmt(**bind(args, kwargs))
                except (AttributeError, LookupError) as exc:
                    raise InvalidKeyError(f"key template {template!r}: {exc}") from exc

            return templated

        if fast_n == 1 and not skip:

            head = name + "("

            def build1(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
                if not kwargs and len(args) == 1:
                    (a,) = args
                    t = type(a)
                    if t is int or t is str or t in scalars:  # the common ids first
                        return f"{head}{a!r},)"
                    return name + stable_repr(args)
                return name + stable_repr(values(args, kwargs))

            return build1

        def build(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            if not kwargs and len(args) == fast_n:
                if skip:
                    args = args[skip:]
                for a in args:
                    if type(a) not in scalars:
                        return name + stable_repr(args)
                return name + repr(args)
            return name + stable_repr(values(args, kwargs)[skip:])

        return build
