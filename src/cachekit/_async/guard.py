"""Failure handling and the namespace version: fail-open, the breaker, lost invalidations.

Errors are counted and logged once per incident; a circuit breaker stops
paying timeouts; invalidations that could not be delivered are remembered
and replayed when the backend answers again (in the background, and before
the first read the breaker lets through). A command the server *refused*
is counted but never opens the breaker.

The async source of truth: ``_sync/guard.py`` is generated from this file.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable

from ..backends.base import MISSING
from ..core.logs import log
from ..errors import BackendRejectedError, BackendUnavailableError
from ..keys import MAX_KEY_LENGTH, encode_key
from .primitives import IS_ASYNC, is_running, sleep, spawn
from .state import AsyncState

__all__ = [
    "MAX_PENDING_INVALIDATIONS",
    "REPLAY_BACKOFF",
    "REPLAY_INTERVAL",
    "REPLAY_LOCK_WAIT",
    "AsyncGuard",
]

#: Seconds to wait before replaying pending invalidations again after a failed replay.
REPLAY_BACKOFF = 0.5

#: Invalidations remembered during an outage; past this the namespace is cleared instead.
MAX_PENDING_INVALIDATIONS = 10_000

#: Longest a write to a key with a pending invalidation waits for a replay in flight.
REPLAY_LOCK_WAIT = 0.25

#: Seconds between background attempts to deliver pending invalidations: other
#: processes may read a value this one invalidated during an outage for about
#: this long (plus one command deadline) after the server answers again.
REPLAY_INTERVAL = 0.25


class AsyncGuard(AsyncState):
    """The failure-handling and namespace-version steps of a cache."""

    # ------------------------------------------------------------ namespace version

    async def _refresh_namespace(self) -> None:
        """Re-read the namespace version from the backend (another process may have cleared)."""
        cell = self._ns
        cell.check_at = self._timer() + self._check_interval
        if cell.prefix and self.breaker.open_until and not self.breaker.allow():
            return  # keep the known version; don't pay a timeout while the breaker is open
        try:
            raw = await self.backend.get(self._version_key)
            if raw is MISSING:
                # Never fall back to a fixed version: entries written under an
                # older one could resurface. A fresh version orphans them.
                candidate = self._new_version()
                if not await self.backend.add(self._version_key, candidate.encode(), None):
                    raw = await self.backend.get(self._version_key)
                else:
                    raw = candidate.encode()
        except Exception as exc:
            first_contact = not cell.prefix
            if first_contact:
                cell.adopt("local-" + self._new_version())
            self._backend_error("namespace", exc, raise_strict=False)
            if IS_ASYNC and first_contact and not isinstance(exc, BackendRejectedError):
                # An async cache reads the version on its first call (a sync one when
                # it is built): if not even that answers, the rest of this call and
                # the next ones would only pay more timeouts until a probe.
                self.breaker.trip()
            return
        if self.breaker.failures or self.breaker.open_until:
            # we may have been the half-open probe (not _backend_ok: a replay from
            # here could bump the namespace under the lock we hold)
            self.breaker.record_success()
        if self._pending_overflow:
            # A clear() (or too many invalidations) could not reach the server: the
            # version there is the old one. Deliver the clear now instead of adopting it.
            version = self._new_version()
            try:
                await self.backend.set(self._version_key, version.encode(), None)
            except Exception as exc:
                self._backend_error("namespace", exc, raise_strict=False)
                return
            cell.adopt(version)
            with self._pending_lock:
                self._pending_overflow = False
                self._pending.clear()
            return
        version = raw.decode() if isinstance(raw, (bytes, bytearray)) else str(raw)
        if version != cell.version:
            cell.adopt(version)

    async def _full(self, key: str) -> str:
        """The backend key of a valid ``key`` (re-reading the namespace version when due)."""
        cell = self._ns
        if self._remote and (self._timer() >= cell.check_at or not cell.prefix):
            # Until a version is known every caller waits for the first read of it:
            # a key built with no prefix would be another namespace's.
            async with self._refresh_lock:
                if self._timer() >= cell.check_at or not cell.prefix:
                    await self._refresh_namespace()
        full = cell.prefix + key
        return encode_key(full) if len(full) > MAX_KEY_LENGTH else full

    async def _bump_namespace(self) -> None:
        """Start a new namespace version (``clear()``), in the backend when it is shared."""
        version = self._new_version()
        if self._remote:
            await self.backend.set(self._version_key, version.encode(), None)
        old = self._ns.prefix
        self._ns.adopt(version)
        self._ns.check_at = self._timer() + self._check_interval
        drop = getattr(self.backend, "drop_prefix", None)
        if not self._remote and drop is not None:
            drop(old)  # free the old entries now, not when pushed out

    # ------------------------------------------------------------ failures

    def _backend_error(self, operation: str, exc: BaseException, raise_strict: bool = True) -> None:
        """Count and log a backend failure; raise it in strict mode."""
        self._error_counter(operation).incr()
        if isinstance(exc, BackendRejectedError):
            # The server answered: this command (or its data) is at fault, not the
            # server. Never a reason to stop reading from it.
            self._logs.warn(
                "rejected:" + operation,
                operation,
                exc,
                "cachekit: backend %s refused %s for namespace %r (%s); "
                "counted, the backend stays in use",
                type(self.backend).__name__,
                operation,
                self.namespace,
                exc,
            )
            if raise_strict and not self.fail_open:
                raise exc
            return
        self._slow = True
        opened = self.breaker.record_failure()
        fields = self._logs.fields(operation, exc)
        if not self._incident:
            self._incident = True
            log.warning(
                "cachekit: backend %s failed during %s for namespace %r (%s: %s); "
                "falling through to the source until it answers again",
                type(self.backend).__name__,
                operation,
                self.namespace,
                type(exc).__name__,
                exc,
                extra=fields,
            )
        elif opened:
            log.info(
                "cachekit: circuit breaker opened for namespace %r", self.namespace, extra=fields
            )
        else:
            log.debug("cachekit: %s failed again: %s", operation, exc, extra=fields)
        if raise_strict and not self.fail_open:
            if isinstance(exc, BackendUnavailableError):
                raise exc
            raise BackendUnavailableError(f"{operation} failed: {exc}") from exc

    async def _backend_ok(self) -> None:
        """Note a successful backend call after failures; replay lost invalidations."""
        if self.breaker.record_success() or self._incident:
            self._incident = False
            log.warning(
                "cachekit: backend %s answers again for namespace %r",
                type(self.backend).__name__,
                self.namespace,
                extra=self._logs.fields("recovery"),
            )
        if (self._pending or self._pending_overflow) and self._timer() >= self._replay_after:
            await self._replay_pending(wait=False)
        self._slow = self._careful or bool(self._pending) or bool(self.breaker.failures)

    async def _answered(self) -> None:
        """Note that the backend answered (it may have been the half-open probe)."""
        if self.breaker.failures or self.breaker.open_until or self._pending:
            await self._backend_ok()

    def _skip(self, operation: str) -> bool:
        """True when the breaker is open and this call must not reach the backend."""
        if self.breaker.allow():
            return False
        if not self.fail_open:
            raise BackendUnavailableError(
                f"{operation} skipped: circuit breaker is open for namespace {self.namespace!r}"
            )
        return True

    # ------------------------------------------------------------ lost invalidations

    def _remember_invalidation(self, keys: Iterable[str]) -> None:
        with self._pending_lock:
            for k in keys:
                if len(self._pending) >= MAX_PENDING_INVALIDATIONS:
                    self._pending_overflow = True
                    self._pending.clear()
                    break
                self._pending[k] = None
            self._slow = True
            self._start_replayer()

    def _start_replayer(self) -> None:
        """Start the background replay unless it runs."""
        if self._remote and not is_running(self._replayer):
            self._replayer = spawn(self._replay_loop, f"cachekit-replay-{self.namespace}")

    async def _replay_loop(self) -> None:
        """Deliver pending invalidations as soon as the backend answers, with or without traffic.

        Other processes read whatever the server holds: the sooner a lost
        invalidation is replayed, the shorter they can read a value this process
        invalidated. Each attempt is also the breaker's probe.
        """
        while not self._closed and (self._pending or self._pending_overflow):
            await sleep(REPLAY_INTERVAL)
            if self._closed or not (self._pending or self._pending_overflow):
                return
            await self._replay_pending()

    @contextlib.asynccontextmanager
    async def _ordered(self, fulls: Iterable[str]) -> AsyncIterator[bool]:
        """Around a write: yields whether it may go ahead; call ``_delivered`` once it landed.

        A write to a key whose invalidation is still pending holds the replay lock,
        so a replay can neither delete the newer value nor run between the write and
        the end of the key's pending state (readers treat a pending key as a miss
        until the write has landed). If a replay holds the lock for longer than
        a command may take, the write is skipped: the key stays pending and a later
        load caches it once the invalidation is delivered.
        """
        pending = self._pending
        if not pending or not any(f in pending for f in fulls):
            yield True
            return
        if not await self._replay_lock.acquire(timeout=REPLAY_LOCK_WAIT):
            yield False
            return
        try:
            yield True
        finally:
            self._replay_lock.release()

    def _delivered(self, fulls: Iterable[str]) -> None:
        """After a successful write of ``fulls``: their pending invalidations are void."""
        if self._pending:
            with self._pending_lock:
                for full in fulls:
                    self._pending.pop(full, None)

    async def _replay_pending(self, wait: bool = True) -> None:
        """Deliver the remembered invalidations (skipped if another delivery is under way)."""
        if not await self._replay_lock.acquire(timeout=REPLAY_LOCK_WAIT if wait else 0.0):
            return  # a replay, or a write to a pending key, is under way
        try:
            with self._pending_lock:
                keys, overflow = list(self._pending), self._pending_overflow
            if not keys and not overflow:
                return
            try:
                if overflow:
                    await self._bump_namespace()
                else:
                    await self.backend.delete_many(keys)
            except Exception as exc:
                # e.g. one pool node still down: retry later, not after every successful call
                self._replay_after = self._timer() + REPLAY_BACKOFF
                self._backend_error("replay", exc, raise_strict=False)
                return
            with self._pending_lock:
                for k in keys:
                    self._pending.pop(k, None)
                if overflow:
                    self._pending_overflow = False
        finally:
            self._replay_lock.release()
        if self.breaker.failures or self.breaker.open_until:
            self.breaker.record_success()  # the replay may have been the half-open probe
        self._slow = self._careful or bool(self._pending) or bool(self.breaker.failures)
        log.info(
            "cachekit: replayed %s lost invalidation(s) for namespace %r",
            "a namespace clear for" if overflow else len(keys),
            self.namespace,
            extra=self._logs.fields("replay"),
        )
