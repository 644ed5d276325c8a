"""The circuit breaker that stops a cache from paying a timeout on every call to a dead backend.

States: *closed* (calls go through), *open* (calls are skipped until
``reset_timeout`` has passed), *half-open* (one probe call is let through; its
success closes the breaker, its failure opens it again).

A probe whose outcome is never recorded (its caller crashed, or took a path
that reports nothing) cannot hold the breaker open: after another
``reset_timeout`` the next call becomes the probe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .errors import ConfigurationError

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; probes after ``reset_timeout`` s."""

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_timeout: float = 2.0,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigurationError("failure_threshold must be >= 1")
        if not 0 < reset_timeout <= 60:
            raise ConfigurationError("reset_timeout must be in (0, 60] seconds")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._timer = timer
        self._lock = threading.Lock()
        #: Consecutive failures; 0 when healthy (read without the lock on the hot path).
        self.failures = 0
        #: When the open breaker lets a probe through; 0.0 while closed.
        self.open_until = 0.0
        self._probing = False
        self._probe_until = 0.0
        #: How many times the breaker has opened.
        self.opened = 0

    def reset_lock(self) -> None:
        """In a forked child: a lock another thread of the parent held stays held."""
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """True while calls are being skipped."""
        return bool(self.open_until)

    def allow(self) -> bool:
        """Return whether a call may go to the backend now."""
        if not self.open_until:
            return True
        now = self._timer()
        if now < self.open_until:
            return False
        with self._lock:
            if not self.open_until:
                return True
            if self._probing and now < self._probe_until:
                return False
            self._probing = True
            self._probe_until = now + self.reset_timeout
            return True

    def record_success(self) -> bool:
        """Note a successful call; return True if this ended an outage."""
        with self._lock:
            was_failing = bool(self.failures or self.open_until)
            self.failures = 0
            self.open_until = 0.0
            self._probing = False
            return was_failing

    def trip(self) -> bool:
        """Open now, whatever the count (the backend cannot be used at all); True if it opened."""
        with self._lock:
            opening = not self.open_until or self._probing
            self.failures = max(self.failures, self.failure_threshold)
            self.open_until = self._timer() + self.reset_timeout
            self._probing = False
            if opening:
                self.opened += 1
            return opening

    def record_failure(self) -> bool:
        """Note a failed call; return True if this opened the breaker."""
        with self._lock:
            self.failures += 1
            if self._probing or self.failures >= self.failure_threshold:
                opening = not self.open_until or self._probing
                self.open_until = self._timer() + self.reset_timeout
                self._probing = False
                if opening:
                    self.opened += 1
                return opening
            return False
