"""How a cache logs: structured fields on every record, one warning per kind per incident."""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["LOG_EVERY", "Logs", "log", "trace_log"]

log = logging.getLogger("cachekit")
#: Per-key hits and misses at DEBUG level, for troubleshooting (off the fast path unless on).
trace_log = logging.getLogger("cachekit.trace")

#: A warning of one kind is logged once per this many seconds; repeats go to DEBUG.
LOG_EVERY = 60.0


class Logs:
    """The log fields and warning throttle of one cache."""

    __slots__ = ("_warned", "backend", "namespace")

    def __init__(self, namespace: str, backend: str) -> None:
        self.namespace = namespace
        self.backend = backend  # an address without credentials, or the class name
        self._warned: dict[str, float] = {}

    def fields(self, operation: str, exc: BaseException | None = None) -> dict[str, Any]:
        """Structured fields for a log record (``extra=``); never a credential."""
        return {
            "cachekit_namespace": self.namespace,
            "cachekit_backend": self.backend,
            "cachekit_operation": operation,
            "cachekit_error": type(exc).__name__ if exc is not None else None,
        }

    def warn(
        self, kind: str, operation: str, exc: BaseException | None, msg: str, *args: Any
    ) -> None:
        """Log a warning of ``kind`` once per ``LOG_EVERY`` s; repeats go to DEBUG."""
        now = time.monotonic()
        last = self._warned.get(kind)
        level = logging.DEBUG
        if last is None or now - last >= LOG_EVERY:
            self._warned[kind] = now
            level = logging.WARNING
        log.log(level, msg, *args, extra=self.fields(operation, exc))
