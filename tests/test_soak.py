"""Stall / restart soak: 8 threads over Redis and Memcached while the server stops and restarts.

For each backend a private server is stalled (SIGSTOP) and restarted (SIGKILL +
start) several times over about 20 s while 8 threads read through
``get_or_load`` and write through ``Cache.write`` against an in-memory
"database" that numbers every committed write. Checked throughout:

- no read returns a value older than the last write that had completed
  (source commit and cache update) before that read began: the cache never
  answers with data the source has replaced, outside a write's own window
  between its commit and its cache update;
- no call takes longer than two command deadlines (plus scheduling slack on
  this small machine);
- the circuit breaker is closed again within 5 s of every recovery.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import cachekit as ck
from tests.faultkit import ServerProcess

#: The command deadline the backends are built with (their default).
DEADLINE = 0.25
#: Slack for thread scheduling on a 2-core machine shared with the rest of the suite.
SLACK = 0.3
KEYS = 6


class VersionedDB:
    """A tiny source of truth: each key's value is the number of its last committed write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows = dict.fromkeys(range(KEYS), 0)

    def read(self, k: int) -> int:
        with self._lock:
            return self.rows[k]

    def write(self, k: int) -> int:
        with self._lock:
            self.rows[k] += 1
            return self.rows[k]


class Soak:
    """8 threads of reads and writes; records wrong values, slow calls and failures."""

    def __init__(self, cache: ck.Cache, db: VersionedDB) -> None:
        self.cache, self.db = cache, db
        self.stop = threading.Event()
        self.wrong: list[str] = []
        self.errors: list[BaseException] = []
        self.slowest = 0.0
        self.calls = 0
        self._lock = threading.Lock()
        # per key, the newest version whose write (commit + cache update) has returned
        self.completed = dict.fromkeys(range(KEYS), 0)

    def _timed(self, fn: Any, *args: Any) -> Any:
        started = time.monotonic()
        result = fn(*args)
        took = time.monotonic() - started
        with self._lock:
            self.calls += 1
            self.slowest = max(self.slowest, took)
        return result

    def worker(self, i: int) -> None:
        n = i
        try:
            while not self.stop.is_set():
                n += 7
                k = n % KEYS
                if n % 5 == 0:
                    v = self._timed(self.cache.write, f"row:{k}", lambda k=k: self.db.write(k))
                    with self._lock:
                        self.completed[k] = max(self.completed[k], v)
                else:
                    floor = self.completed[k]  # written through before this read began
                    got = self._timed(
                        self.cache.get_or_load, f"row:{k}", lambda k=k: self.db.read(k)
                    )
                    if got < floor:
                        self.wrong.append(f"row:{k} read {got} after write {floor} completed")
        except BaseException as exc:
            self.errors.append(exc)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        return threads


def _breaker_closed(cache: ck.Cache) -> bool:
    return not cache.breaker.is_open and cache.breaker.failures == 0


def _wait_closed(cache: ck.Cache, timeout: float) -> float:
    started = time.monotonic()
    while not _breaker_closed(cache):
        if time.monotonic() - started > timeout:
            pytest.fail(f"breaker still open {timeout} s after the server recovered")
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture(params=["redis", "memcached"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    with ServerProcess(request.param) as s:
        yield s


def test_stall_and_restart_soak(server: ServerProcess) -> None:
    db = VersionedDB()
    cache = ck.Cache.from_url(
        server.url,
        namespace="soak-" + uuid.uuid4().hex[:8],
        ttl=30,
        policy=ck.WriteThrough(),
        breaker=ck.CircuitBreaker(3, reset_timeout=0.5),
    )
    soak = Soak(cache, db)
    threads = soak.run()
    recoveries: list[float] = []
    try:
        time.sleep(1.0)
        for round_ in range(4):
            assert server.proc is not None
            if round_ % 2 == 0:
                os.kill(server.proc.pid, signal.SIGSTOP)
                time.sleep(1.5)
                os.kill(server.proc.pid, signal.SIGCONT)
            else:
                server.kill()
                time.sleep(1.0)
                server.start()
            recoveries.append(_wait_closed(cache, 5.0))
            time.sleep(2.0)  # healthy traffic between outages
    finally:
        soak.stop.set()
        for t in threads:
            t.join(10)
        cache.close()
    assert not soak.errors, soak.errors[:3]
    assert not soak.wrong, soak.wrong[:5]
    assert soak.calls > 1000, soak.calls  # the threads really ran throughout
    assert soak.slowest <= 2 * DEADLINE + SLACK, f"a call took {soak.slowest:.3f} s"
    assert max(recoveries) <= 5.0, recoveries
    print(
        f"\n{server.kind}: {soak.calls} calls, slowest {soak.slowest * 1000:.0f} ms, "
        f"breaker closed {', '.join(f'{r:.2f}' for r in recoveries)} s after each recovery"
    )
