"""Write the small synthetic traces in this folder (deterministic: same files on every run).

    .venv/bin/python tests/traces/make_traces.py

Each file is gzip text, one key per line, 20,000 accesses, made by
``cachekit.advisor.policy_sim.synthetic`` (see its docstring for what each holds).
"""

from __future__ import annotations

import gzip
from pathlib import Path

from cachekit.advisor.policy_sim import synthetic

HERE = Path(__file__).parent
NAMES = ("zipf", "loop", "scan", "recency")
LENGTH = 20_000


def main() -> None:
    """Write ``<name>.trace.gz`` for every synthetic trace."""
    for name in NAMES:
        data = "".join(f"{key}\n" for key in synthetic(name, LENGTH)).encode()
        # mtime=0: the same bytes on every run, so regenerating never shows a diff
        (HERE / f"{name}.trace.gz").write_bytes(gzip.compress(data, mtime=0))


if __name__ == "__main__":
    main()
