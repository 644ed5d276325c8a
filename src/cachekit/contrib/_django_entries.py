"""A Django entry as ``CachekitCache`` stores it: expiry envelope, codec, rewrite steps (no I/O)."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
    ImproperlyConfigured,
)

from ..backends.base import MISSING
from ..errors import BackendRejectedError, BackendUnavailableError, SerializationError
from ..serializers import KeyBoundSerializer, Serializer

#: Compare-and-set rounds ``incr``/``touch`` try before giving up under contention.
CAS_ATTEMPTS = 100
#: Longest pause, in seconds, between two compare-and-set rounds (random, growing).
CAS_MAX_BACKOFF = 0.02

#: Errors of an unreachable or refusing backend: fallen open unless ``fail_open`` is False.
_FAILURES = (BackendUnavailableError, BackendRejectedError)

#: The wall clock (``time.time``), passed in by the caller.
Clock = Callable[[], float]


class UnserializableValueError(SerializationError, pickle.PicklingError):
    """A value the serializer cannot encode: also a ``pickle.PicklingError``, as Django expects."""

    __module__ = "cachekit.contrib.django"  # its public home, shown in tracebacks


Entry = tuple[float | None, Any]


def _wrap(value: Any, ttl: float | None, clock: Clock) -> Entry:
    """The stored form of ``value``: its absolute expiry (``None``: never) and the value."""
    return (None if ttl is None else clock() + ttl, value)


def _unwrap(entry: Any, clock: Clock) -> Any:
    """The live value inside a stored entry, or ``MISSING`` (absent, expired or foreign)."""
    if type(entry) in (tuple, list) and len(entry) == 2:
        expires_at, value = entry
        if expires_at is None or clock() < expires_at:
            return value
    return MISSING


def _remaining(entry: Entry, clock: Clock) -> float | None:
    """Seconds ``entry`` has left (``None``: no expiry), never below a millisecond."""
    return None if entry[0] is None else max(entry[0] - clock(), 0.001)


def _backoff(attempt: int) -> float:
    """A random pause after a lost compare-and-set, so no caller keeps losing to the others."""
    return random.random() * min(CAS_MAX_BACKOFF, 0.0005 * 2.0**attempt)


def _store_ttl(ttl: float | None) -> float:
    """The cachekit TTL for a Django one: ``inf`` keeps the entry forever."""
    return math.inf if ttl is None else ttl


# ---------------------------------------------------------------- read-modify-write steps


class _Step:
    """What a read-modify-write decided: the entry to write (``None``: none) and the answer."""

    __slots__ = ("entry", "result", "ttl")

    def __init__(self, result: Any, entry: Entry | None = None, ttl: float | None = None) -> None:
        self.result = result
        self.entry = entry
        self.ttl = ttl


def _incr_step(entry: Any, key: Any, delta: int, clock: Clock) -> _Step:
    value = _unwrap(entry, clock)
    if value is MISSING:
        raise ValueError(f"Key '{key}' not found")
    new = value + delta  # a TypeError for a non-number, as in Django's own backends
    return _Step(new, (entry[0], new), _remaining(entry, clock))


def _touch_step(entry: Any, ttl: float | None, clock: Clock) -> _Step:
    value = _unwrap(entry, clock)
    if value is MISSING:
        return _Step(False)
    return _Step(True, _wrap(value, ttl, clock), ttl)


def _found(made: dict[str, Any], found: Mapping[str, Any], clock: Clock) -> dict[Any, Any]:
    """Django's ``get_many`` answer: the caller's keys, live values only."""
    out = {}
    for m, entry in found.items():
        value = _unwrap(entry, clock)
        if value is not MISSING:
            out[made[m]] = value
    return out


class _Codec:
    """The cache's serializer applied to raw backend entries (key-bound when it is)."""

    def __init__(self, serializer: Serializer | None) -> None:
        if serializer is None:
            raise ImproperlyConfigured("CachekitCache needs a serializer")
        self._serializer = serializer

    def decode(self, full: str, raw: Any) -> Any:
        """The stored entry, or ``MISSING`` when absent or undecodable."""
        if raw is MISSING:
            return MISSING
        try:
            if isinstance(self._serializer, KeyBoundSerializer):
                return self._serializer.loads_for(full, raw)
            return self._serializer.loads(raw)
        except Exception:  # a lease placeholder, a foreign or corrupt entry: not a value
            return MISSING

    def encode(self, full: str, entry: Entry) -> Any:
        """The bytes to store for ``entry`` under ``full``."""
        try:
            if isinstance(self._serializer, KeyBoundSerializer):
                return self._serializer.dumps_for(full, entry)
            return self._serializer.dumps(entry)
        except SerializationError as exc:
            raise UnserializableValueError(str(exc)) from exc
