"""Freshness: entries that know when they expire, so a hit can reload them before (or just after).

An entry written with ``TTL(early_refresh=beta)`` or
``TTL(stale_while_revalidate=S)`` is stored as a ``Fresh`` envelope: the value,
its logical expiry (wall clock, so every process agrees), the duration of the
load that produced it and the XFetch ``beta``. The backend keeps it ``S``
seconds longer than its TTL. On a hit, ``due`` decides (Vattani et al.,
"Optimal Probabilistic Cache Stampede Prevention", VLDB 2015) whether to
reload it in the background: always once it has expired (stale while
revalidate), else when ``now - delta * beta * ln(rand()) >= expiry``.
"""

from __future__ import annotations

import math
import random
from typing import Any

__all__ = ["FRESH_TAG", "Fresh", "due", "from_stored", "to_stored"]

#: First item of a stored envelope (a NUL-led string no user value starts a list with).
FRESH_TAG = "\x00ck:fresh"

_random = random.Random()


class Fresh:
    """A cached value with its logical expiry, last load duration, XFetch beta and stale window."""

    __slots__ = ("beta", "delta", "expires", "stale", "value")

    def __init__(
        self, value: Any, expires: float, delta: float, beta: float, stale: float = 0.0
    ) -> None:
        self.value = value
        self.expires = expires
        self.delta = delta
        self.beta = beta
        #: Seconds past ``expires`` the value may still be served (stale-while-revalidate).
        self.stale = stale

    def served_until(self) -> float:
        """Past this time the value is never returned (it may linger in the backend a bit)."""
        return self.expires + self.stale

    def __repr__(self) -> str:
        return f"Fresh({self.value!r}, expires={self.expires}, delta={self.delta})"


def to_stored(entry: Fresh) -> list[Any]:
    """The envelope as a serializer-friendly list."""
    return [FRESH_TAG, entry.value, entry.expires, entry.delta, entry.beta, entry.stale]


def from_stored(value: Any) -> Any:
    """``value`` as a ``Fresh`` if it is a stored envelope, else unchanged."""
    if type(value) is list and len(value) == 6 and value[0] == FRESH_TAG:
        _, inner, expires, delta, beta, stale = value
        return Fresh(inner, float(expires), float(delta), float(beta), float(stale))
    return value


def grace(entry: Fresh) -> float:
    """Seconds the backend keeps an early-refreshed entry past its serving window.

    A background reload compares-and-sets over the entry it started from: if
    the backend dropped that entry while the reload ran, the reload's value
    would be lost. The entry is kept this long (never served) so it is there.
    """
    return max(1.0, 4 * entry.delta) if entry.beta else 0.0


def due(entry: Fresh, now: float) -> bool:
    """Whether a hit at ``now`` should start a background reload of ``entry``."""
    if now >= entry.expires:
        return True  # within the stale-while-revalidate window
    if not entry.beta:
        return False
    gap = -entry.delta * entry.beta * math.log(1.0 - _random.random())  # > 0
    return now + gap >= entry.expires
