"""Workload traces for ``cachekit bench --workload FILE``: CSV lines ``op,key[,ts]``."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .workload import BYPASS, READ, WRITE, Op

__all__ = ["TRACE_OPS", "Trace", "TraceError", "parse_trace", "read_trace"]

#: The operations a trace line may name.
TRACE_OPS = (READ, WRITE, BYPASS)


class TraceError(ValueError):
    """A workload trace file that cannot be replayed; the message names the line."""


@dataclass(frozen=True)
class Trace:
    """A parsed trace: operations over integer ids, the original key names, optional times."""

    ops: list[Op]
    names: list[str]  # names[id - 1] is the key written in the file
    times: list[float] | None  # seconds, non-decreasing, one per op; None without a ts column
    source: str = "<trace>"


def parse_trace(lines: Sequence[str], source: str = "<trace>") -> Trace:
    """Parse ``op,key[,ts]`` lines; skip blank lines, ``#`` comments and an ``op,key`` header.

    Keys are any non-empty strings, numbered 1.. in order of first appearance.
    Raises ``TraceError`` naming ``source`` and the line for the first bad line.
    """
    ids: dict[str, int] = {}
    ops: list[Op] = []
    times: list[float] = []
    has_ts: bool | None = None
    for lineno, fields in enumerate(csv.reader(lines), start=1):
        cells = [c.strip() for c in fields]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        where = f"{source}:{lineno}"
        if not ops and [c.lower() for c in cells[:2]] == ["op", "key"]:
            continue  # header
        if len(cells) not in (2, 3):
            raise TraceError(f"{where}: expected op,key[,ts], got {len(cells)} fields")
        op, key = cells[0].lower(), cells[1]
        if op not in TRACE_OPS:
            raise TraceError(f"{where}: unknown op {cells[0]!r} (use {', '.join(TRACE_OPS)})")
        if not key:
            raise TraceError(f"{where}: empty key")
        line_has_ts = len(cells) == 3
        if has_ts is None:
            has_ts = line_has_ts
        elif line_has_ts != has_ts:
            raise TraceError(f"{where}: either every line has a ts column or none does")
        if line_has_ts:
            try:
                ts = float(cells[2])
            except ValueError:
                raise TraceError(f"{where}: ts must be seconds, not {cells[2]!r}") from None
            if not math.isfinite(ts) or ts < 0:
                raise TraceError(f"{where}: ts must be a finite number >= 0, not {cells[2]!r}")
            if times and ts < times[-1]:
                raise TraceError(f"{where}: ts {ts:g} goes back in time (previous {times[-1]:g})")
            times.append(ts)
        key_id = ids.setdefault(key, len(ids) + 1)
        ops.append(Op(op, key_id, (lineno * 7919) % 1_000_000 if op != READ else 0))
    if not ops:
        raise TraceError(f"{source}: no operations")
    return Trace(ops, list(ids), times if has_ts else None, source)


def read_trace(path: str) -> Trace:
    """Read and parse a trace file (see ``parse_trace``)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return parse_trace(f.read().splitlines(), path)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the workload file: {exc.strerror}") from exc
