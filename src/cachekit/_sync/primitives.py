"""What the sync cache waits with: threading locks, events, sleeps and background threads.

The async twin (``_async/primitives.py``) has the same names over ``asyncio``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["IS_ASYNC", "Event", "Lock", "cancel", "current_owner", "sleep", "spawn"]

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


def cancel(task: Any) -> None:
    """Stop a background job started by ``spawn`` (a thread ends once its cache closes)."""
