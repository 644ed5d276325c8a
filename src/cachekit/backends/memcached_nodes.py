"""Memcached node names, and the pool's cooldown that skips a node for a while after it failed."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..errors import BackendUnavailableError

log = logging.getLogger("cachekit.memcached")


def _node_name(server: Any) -> str:
    if isinstance(server, tuple) and len(server) == 2:
        return f"{server[0]}:{server[1]}"
    return str(server)


class NodeCooldown(dict[str, float]):
    """Node name -> monotonic time until which it is skipped; empty (false) while all are up.

    A dict, so the hot path tests it with one ``if``. ``seconds`` of 0 turns it
    off: one node needs none, the Cache's circuit breaker does this job; a pool
    needs it per node, or one dead node would cost a timeout on a third of all calls.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self._lock = threading.Lock()

    def check(self, node: str) -> None:
        """Raise ``BackendUnavailableError`` if ``node`` failed less than ``seconds`` ago."""
        until = self.get(node)
        if until is not None and time.monotonic() < until:
            raise BackendUnavailableError(
                f"memcached {node} failed recently; skipped for up to {self.seconds} s"
            )

    def mark(self, node: str) -> None:
        """Skip ``node`` for ``seconds`` (logged once per incident)."""
        if not self.seconds:
            return
        with self._lock:
            if node not in self:
                log.warning(
                    "cachekit: memcached node %s failed; its keys fail fast for %s s",
                    node,
                    self.seconds,
                )
            self[node] = time.monotonic() + self.seconds

    def answered(self, node: str) -> None:
        """``node`` answered: stop skipping it."""
        with self._lock:
            self.pop(node, None)
