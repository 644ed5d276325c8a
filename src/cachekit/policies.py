"""Policies: how long entries live (``TTL``) and what a write does to the cache.

- ``CacheAside``: reads load lazily on a miss; a write invalidates the entry.
- ``WriteThrough``: reads load lazily on a miss; a write stores the new value.

A policy knows nothing about which backend it runs on.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Final

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_TTL",
    "NO_EXPIRY",
    "TTL",
    "CacheAside",
    "Policy",
    "TTLLike",
    "WriteThrough",
    "as_ttl",
    "ttl_seconds",
]


@dataclass(frozen=True)
class TTL:
    """A time-to-live in seconds, optionally spread by ``jitter`` (0.1 = +-10 %).

    ``TTL(None)`` (or ``float("inf")``) means no expiry. Jitter is drawn
    uniformly per write, so keys written together do not expire together.
    """

    seconds: float | None
    jitter: float = 0.0
    #: XFetch beta (Vattani et al.): a hit near expiry reloads in the background with a
    #: probability that grows as expiry nears and with the last load's duration; 0: off.
    early_refresh: float = 0.0
    #: Seconds past expiry during which a hit still returns the old value (and reloads
    #: it in the background); 0: off.
    stale_while_revalidate: float = 0.0
    # one generator for every TTL (seeding one per TTL from the OS cost ~15 us a store)
    _rng: random.Random | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.seconds == math.inf:
            object.__setattr__(self, "seconds", None)  # "never expires", as everywhere else
        if self.seconds is not None and (
            not isinstance(self.seconds, (int, float))
            or isinstance(self.seconds, bool)
            or not self.seconds >= 0  # also refuses NaN
        ):
            raise ConfigurationError(
                f"TTL seconds must be a number >= 0 or None, got {self.seconds!r}"
            )
        if not 0.0 <= self.jitter < 1.0:
            raise ConfigurationError(f"TTL jitter must be in [0, 1), got {self.jitter!r}")
        for name in ("early_refresh", "stale_while_revalidate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
                raise ConfigurationError(f"TTL {name} must be a number >= 0, got {v!r}")
        if (self.early_refresh or self.stale_while_revalidate) and self.seconds is None:
            raise ConfigurationError("early_refresh and stale_while_revalidate need a TTL")

    @property
    def refreshes(self) -> bool:
        """Whether entries written with this TTL carry freshness data (early refresh, SWR)."""
        return bool(self.early_refresh or self.stale_while_revalidate)

    def sample(self) -> float | None:
        """Return the TTL for one write, jitter applied."""
        s = self.seconds
        if s is None or not self.jitter:
            return s
        rng = self._rng or _RNG
        return s * (1.0 + self.jitter * (2.0 * rng.random() - 1.0))


_RNG = random.Random()


#: Entries written with this TTL never expire (they may still be evicted).
NO_EXPIRY: Final = TTL(None)

TTLLike = TTL | float | int | None


def as_ttl(value: TTLLike, default: TTL) -> TTL:
    """Return ``value`` as a ``TTL``; ``None`` means ``default``."""
    if value is None:
        return default
    if isinstance(value, TTL):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"ttl must be seconds, a TTL, or None; got {value!r}")
    return TTL(float(value))


def ttl_seconds(value: TTLLike, default: TTL) -> float | None:
    """Return the seconds one write should live (jitter applied); ``None``: no expiry.

    Same rules as ``as_ttl`` without building a ``TTL`` for a plain number
    (this runs on every store).
    """
    if value is None:
        return default.sample()
    # NaN and negatives fall through to the checks below
    if (type(value) is float or type(value) is int) and value >= 0:
        return None if value == math.inf else float(value)
    return as_ttl(value, default).sample()


#: TTL used when neither the cache nor the policy names one.
DEFAULT_TTL: Final = TTL(300.0)


class Policy:
    """Base policy: a default TTL and whether writes store or invalidate."""

    #: True: a write stores its new value; False: a write invalidates the entry.
    stores_on_write: bool = False

    def __init__(self, ttl: TTLLike = None) -> None:
        self.ttl_given = ttl is not None
        self.ttl = as_ttl(ttl, DEFAULT_TTL)

    def with_ttl(self, ttl: TTLLike) -> Policy:
        """Return a policy of the same kind with ``ttl`` (``None``: unchanged)."""
        if ttl is None:
            return self
        if self.ttl_given and as_ttl(ttl, self.ttl) != self.ttl:
            raise ConfigurationError(
                f"ttl={ttl!r} conflicts with the TTL of {self!r}; give the TTL in one place"
            )
        return type(self)(ttl)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ttl={self.ttl!r})"


class CacheAside(Policy):
    """Lazy loading: read the cache, load on a miss; writes invalidate."""

    stores_on_write = False


class WriteThrough(Policy):
    """Lazy loading on reads; every write stores the new value in the cache."""

    stores_on_write = True
