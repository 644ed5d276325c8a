"""Command-line pieces shared by ``cachekit demo`` and ``cachekit bench``: options, progress bar."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

__all__ = ["Progress", "add_workload_arguments"]

DEFAULT_TTLS = ("10", "60")


class Progress:
    """A one-line progress bar on a stream, drawn only for a TTY and only after ``delay`` s."""

    def __init__(
        self, total: int, *, stream: TextIO = sys.stderr, enabled: bool = True, delay: float = 1.0
    ) -> None:
        self.total, self.done, self.label = max(total, 1), 0, ""
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self._start = time.monotonic()
        self._delay = delay
        self._next_draw = self._start + delay
        self._drawn = False

    def update(self, n: int) -> None:
        """Count ``n`` more steps done; redraw at most ten times a second."""
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now >= self._next_draw:
            self._next_draw = now + 0.1
            self._draw(now)

    def _draw(self, now: float) -> None:
        width = 30
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * width)
        elapsed = now - self._start
        self.stream.write(f"\r[{bar:<{width}}] {frac:4.0%} {elapsed:5.1f}s  {self.label:<34.34}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar, if one was drawn."""
        if self._drawn:
            self.stream.write("\r" + " " * 84 + "\r")
            self.stream.flush()
            self._drawn = False


def _ttl(text: str) -> float | None:
    if text.lower() in ("none", "inf", "never"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"TTL must be seconds or 'none', not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("TTL must be > 0 seconds (or 'none' for no expiry)")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _split(values: Sequence[str]) -> list[str]:
    """Accept ``a b``, ``a,b`` and mixes of both."""
    return [v for item in values for v in item.split(",") if v]


def add_workload_arguments(
    parser: argparse.ArgumentParser,
    *,
    ops_default: int | None = 50_000,
    ttl_default: Sequence[str] | None = DEFAULT_TTLS,
    ttl_help: str = "one or more TTLs in (simulated) seconds, or 'none' (default: 10 60)",
    strategies: Sequence[str] | None = None,
    bypass_default: float = 0.2,
    rate_default: float = 500.0,
) -> None:
    """Add the workload knobs shared by ``demo`` and ``bench`` to ``parser``."""
    from .workload import STRATEGIES

    choices = tuple(strategies or STRATEGIES)

    parser.add_argument(
        "--rows",
        "--keys",
        dest="rows",
        type=_positive_int,
        default=10_000,
        help="keys (users) to seed",
    )
    parser.add_argument(
        "--ops",
        type=_positive_int,
        default=ops_default,
        help="operations per run" + ("" if ops_default is None else f" (default {ops_default})"),
    )
    parser.add_argument("--write-ratio", type=_fraction, default=0.05, help="share of writes")
    parser.add_argument(
        "--bypass-writes",
        type=_fraction,
        default=bypass_default,
        help="share of writes made around the cache, like another service writing the "
        f"database directly; they are what makes TTL staleness visible (default {bypass_default})",
    )
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf skew (0 = uniform)")
    parser.add_argument(
        "--ttl",
        nargs="+",
        default=None if ttl_default is None else list(ttl_default),
        metavar="SECONDS",
        help=ttl_help,
    )
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=list(choices),
        metavar="NAME",
        help=f"any of {', '.join(choices)} (default: all)",
    )
    parser.add_argument(
        "--ops-per-second",
        type=float,
        default=rate_default,
        help="simulated request rate: the cache clock moves 1/N s per operation "
        f"(default {rate_default:g})",
    )
    parser.add_argument(
        "--db",
        default=None,
        help="SQLite file or SQLAlchemy URL (default: a SQLite file in a temporary directory)",
    )
    parser.add_argument("--cache-url", default="memory://", help="cache backend URL")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the workload")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _db_url(db: str | None, tmpdir: str) -> str:
    if db is None:
        return "sqlite:///" + os.path.join(tmpdir, "cachekit-demo.db")
    return db if "://" in db else "sqlite:///" + os.path.abspath(db)
