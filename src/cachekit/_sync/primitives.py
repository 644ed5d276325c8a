"""What the sync cache waits with: threading locks, events, sleeps and background threads.

The async twin (``_async/primitives.py``) has the same names over ``asyncio``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["IS_ASYNC", "Background", "Event", "Lock", "cancel", "current_owner", "sleep", "spawn"]

#: Which twin this is (the decorators refuse functions of the other kind).
IS_ASYNC = False


#: threading's own lock: ``with``, ``acquire(timeout=...)``, ``release()``, ``locked()``.
Lock = threading.Lock

#: threading's own event: ``set()``, ``wait(timeout) -> bool``.
Event = threading.Event


def sleep(seconds: float) -> None:
    """Pause this thread."""
    time.sleep(seconds)


def current_owner() -> Any:
    """Who is running: the current thread (a loader asking for its own key is the same one)."""
    return threading.get_ident()


def spawn(target: Callable[[], None], name: str) -> threading.Thread:
    """Run ``target`` in the background (a daemon thread)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def is_running(task: Any) -> bool:
    """Whether a background job started by ``spawn`` is still running."""
    return task is not None and task.is_alive()


class Background:
    """Background reloads on a small thread pool: at most ``limit`` queued or running."""

    def __init__(self, limit: int = 64, workers: int = 2) -> None:
        self.limit = limit
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._count = 0
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None], name: str) -> bool:
        """Queue ``job``; False (and nothing queued) when ``limit`` jobs are already waiting."""
        with self._lock:
            if self._count >= self.limit:
                return False
            self._count += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="cachekit")
            pool = self._pool
        pool.submit(self._run, job)
        return True

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        finally:
            with self._lock:
                self._count -= 1

    def close(self) -> None:
        """Stop taking jobs; queued ones are dropped, running ones finish."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def cancel(task: Any) -> None:
    """Stop a background job started by ``spawn`` (a thread ends once its cache closes)."""
