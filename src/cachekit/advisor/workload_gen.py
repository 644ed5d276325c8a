"""Seeded operation streams: Zipf-drawn keys turned into reads, writes and bypass writes."""

from __future__ import annotations

import bisect
import itertools
import math
import random
from typing import NamedTuple

__all__ = ["BYPASS", "READ", "WRITE", "Op", "OpGenerator", "ZipfSampler", "generate_ops"]

READ, WRITE, BYPASS = "read", "write", "bypass"


class Op(NamedTuple):
    """One operation: ``kind`` is read, write (through the cache) or bypass (around it)."""

    kind: str
    key: int
    value: int = 0


class ZipfSampler:
    """Draws keys ``1..n`` with P(rank k) proportional to ``1 / k**skew``.

    ``skew=0`` is uniform; around 1 is typical of web caches. Which key holds
    which rank is shuffled with ``rng`` so that hot keys are not just 1, 2, 3.
    """

    def __init__(self, n: int, skew: float, rng: random.Random, *, shuffle: bool = True) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if skew < 0 or not math.isfinite(skew):
            raise ValueError(f"skew must be a finite number >= 0, got {skew}")
        self.n, self.skew, self._rng = n, skew, rng
        self._cum = list(itertools.accumulate(1.0 / k**skew for k in range(1, n + 1)))
        self._keys = list(range(1, n + 1))
        if shuffle:
            rng.shuffle(self._keys)

    def with_rng(self, rng: random.Random) -> ZipfSampler:
        """Return a sampler with the same keys and ranks drawing from ``rng`` (one per thread)."""
        twin = ZipfSampler.__new__(ZipfSampler)
        twin.n, twin.skew, twin._rng = self.n, self.skew, rng
        twin._cum, twin._keys = self._cum, self._keys
        return twin

    def sample(self) -> int:
        """Return one key."""
        i = bisect.bisect_left(self._cum, self._rng.random() * self._cum[-1])
        return self._keys[min(i, self.n - 1)]

    def sample_many(self, count: int) -> list[int]:
        """Return ``count`` keys."""
        return self._rng.choices(self._keys, cum_weights=self._cum, k=count)

    def hottest(self, k: int) -> list[int]:
        """Return the ``k`` most probable keys, hottest first."""
        return self._keys[:k]

    def expected_top_share(self, k: int) -> float:
        """Return the theoretical share of draws that fall on the ``k`` hottest keys."""
        return float(self._cum[min(k, self.n) - 1] / self._cum[-1])


class OpGenerator:
    """Turns Zipf-drawn keys into reads, writes and bypass writes, batch by batch.

    A write is a ``bypass`` write (made around the cache, like another service
    writing to the same database) with probability ``bypass_writes``.
    """

    def __init__(
        self,
        sampler: ZipfSampler,
        rng: random.Random,
        *,
        write_ratio: float = 0.05,
        bypass_writes: float = 0.5,
    ) -> None:
        if not 0.0 <= write_ratio <= 1.0 or not 0.0 <= bypass_writes <= 1.0:
            raise ValueError("write_ratio and bypass_writes must be in [0, 1]")
        self.sampler, self._rng = sampler, rng
        self.write_ratio, self.bypass_writes = write_ratio, bypass_writes

    def take(self, count: int) -> list[Op]:
        """Return the next ``count`` operations."""
        rng, write_ratio, bypass = self._rng, self.write_ratio, self.bypass_writes
        out: list[Op] = []
        for key in self.sampler.sample_many(count):
            if rng.random() < write_ratio:
                kind = BYPASS if rng.random() < bypass else WRITE
                out.append(Op(kind, key, rng.randrange(1_000_000)))
            else:
                out.append(Op(READ, key))
        return out


def generate_ops(
    *,
    rows: int,
    ops: int,
    write_ratio: float = 0.05,
    bypass_writes: float = 0.5,
    zipf: float = 1.0,
    seed: int = 42,
) -> list[Op]:
    """Return a seeded, Zipf-distributed list of reads and writes over keys ``1..rows``.

    A write is a ``bypass`` write (made around the cache, like another service
    writing to the same database) with probability ``bypass_writes``.
    """
    if not 0.0 <= write_ratio <= 1.0 or not 0.0 <= bypass_writes <= 1.0:
        raise ValueError("write_ratio and bypass_writes must be in [0, 1]")
    rng = random.Random(seed)
    sampler = ZipfSampler(rows, zipf, rng)
    return OpGenerator(sampler, rng, write_ratio=write_ratio, bypass_writes=bypass_writes).take(ops)
