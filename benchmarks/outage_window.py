"""How long another process can read a value this process invalidated during an outage.

A writer cache reaches the server through a proxy that loses traffic; a reader
cache (another "process": its own connections) reaches it directly. Each trial:
the writer caches a value, the proxy is cut, the writer deletes the key (lost),
the proxy is restored, and the writer makes no call at all. The window is the
time from the restore until the reader no longer sees the old value; it is
closed by the writer's background replay (every ``REPLAY_INTERVAL`` s).

    .venv/bin/python benchmarks/outage_window.py --trials 20

Needs redis-server and memcached on PATH (private servers on free ports).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faultkit import CutProxy, ServerProcess

import cachekit as ck
from cachekit.cache import REPLAY_INTERVAL


def trial(kind: str, server: ServerProcess, proxy: CutProxy) -> float:
    """Return the seconds the reader saw the invalidated value after recovery."""
    ns = "w-" + uuid.uuid4().hex[:8]
    writer = ck.Cache.from_url(f"{kind}://127.0.0.1:{proxy.port}", namespace=ns, ttl=300)
    reader = ck.Cache.from_url(server.url, namespace=ns, ttl=300)
    try:
        writer.set("k", "old")
        assert reader.get("k") == "old"
        proxy.cut()
        writer.delete("k")
        proxy.restore()
        started = time.monotonic()
        while reader.get("k") is not None:
            if time.monotonic() - started > 10:
                raise RuntimeError("the invalidation was never delivered")
            time.sleep(0.005)
        return time.monotonic() - started
    finally:
        writer.close()
        reader.close()


def main() -> int:
    """Print the window per backend: median, p90 and max over the trials."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    print(f"replay interval {REPLAY_INTERVAL * 1000:.0f} ms; {args.trials} trials per backend")
    print(f"{'backend':<10} {'median ms':>10} {'p90 ms':>8} {'max ms':>8}")
    for kind in ("redis", "memcached"):
        with ServerProcess(kind) as server, CutProxy(server.port) as proxy:
            windows = sorted(trial(kind, server, proxy) for _ in range(args.trials))
        p90 = windows[min(len(windows) - 1, int(0.9 * len(windows)))]
        print(
            f"{kind:<10} {statistics.median(windows) * 1000:>10.0f} {p90 * 1000:>8.0f} "
            f"{windows[-1] * 1000:>8.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
