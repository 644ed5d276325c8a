"""Leases: what a loading caller puts on a missing key so a concurrent write can void its load.

The lease steps of a load (take one, take over a refreshed key, wait for
another process's load, give one back), over any backend with compare-and-set.

The async source of truth: ``_sync/leases.py`` is generated from this file.
"""

from __future__ import annotations

import time
from typing import Any

from ..backends.base import MISSING
from ..core.fresh import Fresh, from_stored
from ..core.leases import RELEASED, is_lease, new_lease
from .primitives import sleep
from .writes import AsyncWrites

__all__ = ["AsyncLeases"]


class AsyncLeases(AsyncWrites):
    """The lease steps of a cache's loads."""

    async def _take_lease(self, full: str) -> tuple[bytes | None, bool, Any]:
        """Put a lease on a missing key so a concurrent write can void a stale load.

        Returns ``(token, busy, found)``: the lease token, or ``None`` when this
        load must not be stored (someone else holds a lease or already stored a
        value, or the backend failed); ``busy`` is True when another caller's load
        holds the key; ``found`` is the value another caller stored since this
        caller's lookup missed (then nothing needs loading), else ``MISSING``.
        """
        if self.breaker.open_until and not self.breaker.allow():
            return None, False, MISSING  # the backend is being skipped: no timeout to pay
        token = new_lease()
        backend: Any = self.backend
        try:
            if await backend.add(full, token, self.lease_ttl):
                await self._answered()
                return token, False, MISSING
            current = await backend.get(full)
            await self._answered()
            if current == RELEASED:
                # a load that gave up: take over its key (a compare-and-set, so a
                # write that got there first is kept)
                if await backend.compare_and_set(full, RELEASED, token, self.lease_ttl):
                    return token, False, MISSING
                return None, False, MISSING
            if is_lease(current):
                return None, True, MISSING
            if current is MISSING:
                return None, False, MISSING  # gone again since the add: load, store nothing
            try:  # not _decode: the lookup that missed has already counted a bad entry
                found = current if self._loads is None else from_stored(self._loads(full, current))
            except Exception:
                found = MISSING
            if found is not MISSING:
                return None, False, found.value if type(found) is Fresh else found
            # A corrupt entry (not a lease, not decodable): take its place, or the key
            # would never be cached again until it expired.
            if isinstance(current, bytes) and await backend.compare_and_set(
                full, current, token, self.lease_ttl
            ):
                return token, False, MISSING
        except Exception as exc:
            self._backend_error("lease", exc, raise_strict=False)
        return None, False, MISSING

    async def _take_over(self, full: str) -> bytes | None:
        """For ``refresh``: what the key holds now (or a new lease), to compare-and-set over.

        ``None`` when the backend failed or another caller got in first: then the
        refreshed value is not stored.
        """
        if self.breaker.open_until and not self.breaker.allow():
            return None
        try:
            current = await self.backend.get(full)
            if current is MISSING:
                token = new_lease()
                current = token if await self.backend.add(full, token, self.lease_ttl) else None
            await self._answered()
        except Exception as exc:
            self._backend_error("lease", exc, raise_strict=False)
            return None
        return current if isinstance(current, bytes) else None

    async def _await_lease(self, full: str) -> Any:
        """Wait up to ``lease_wait`` s for another process's load of ``full``; MISSING if none."""
        deadline = time.monotonic() + self.lease_wait
        pause = 0.001
        while True:
            await sleep(min(pause, max(0.0, deadline - time.monotonic())))
            try:
                raw = await self.backend.get(full)
            except Exception as exc:
                self._backend_error("get", exc, raise_strict=False)
                return MISSING
            if raw is MISSING or raw == RELEASED:
                return MISSING  # that load failed or gave up: load ourselves
            if not is_lease(raw):
                return self._decode(full, raw)
            if time.monotonic() >= deadline:
                return MISSING
            pause = min(pause * 2, 0.05)

    async def _release_lease(self, full: str, lease: bytes) -> None:
        try:
            # Swap our lease for a short-lived released marker (read as a miss): unlike a
            # delete, a compare-and-set can never remove a newer write.
            await self.backend.compare_and_set(full, lease, RELEASED, 1.0)  # type: ignore[attr-defined]
        except Exception as exc:
            self._backend_error("lease", exc, raise_strict=False)
