"""Generated from ``_async/reads.py`` by ``scripts/unasync.py``: do not edit.

Reads: decoding, the lookup (fast and careful paths), serve-stale, ``get`` and ``get_many``.

Every lookup that finds nothing is one miss; an entry that cannot be decoded
(crafted, corrupt, another serializer's) is a miss counted as a decode error,
whatever the decoder raised.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..backends.base import MISSING
from ..core.fresh import Fresh, from_stored
from ..core.leases import LEASE_MARK
from ..core.logs import trace_log
from ..errors import BackendUnavailableError
from ..keys import MAX_KEY_LENGTH, encode_key, validate_key
from .guard import Guard

__all__ = ["Reads", "checked"]


def checked(key: object) -> str:
    """``key`` if it is a usable cache key, else ``InvalidKeyError``."""
    if type(key) is str and key:
        return key
    return validate_key(key)


class Reads(Guard):
    """The read steps of a cache."""

    # ------------------------------------------------------------ decoding

    def _decode(self, full: str, raw: Any) -> Any:
        if self._loads is None:
            if isinstance(raw, bytes) and raw.startswith(LEASE_MARK):
                return MISSING  # another caller is loading this key: a plain miss
            return raw
        try:
            return from_stored(self._loads(full, raw))
        except Exception as exc:  # a crafted or corrupt entry is a miss, whatever it raises
            if isinstance(raw, bytes) and raw.startswith(LEASE_MARK):
                return MISSING  # a lease: no serializer's output starts with a NUL byte
            self._error_counter("decode").incr()
            self._logs.warn(
                "decode",
                "decode",
                exc,
                "cachekit: undecodable entry %r in namespace %r treated as a miss: %s",
                full,
                self.namespace,
                exc,
            )
            return MISSING

    # ------------------------------------------------------------ lookups

    def _lookup(self, key: str) -> Any:
        """Return the live value for an already valid ``key``, or ``MISSING``; counts hit/miss."""
        if self._slow:
            if self._trace:
                return self._traced(self._full(key))
            return self._lookup_slow(self._full(key))
        full = self._ns.prefix + key
        if len(full) > MAX_KEY_LENGTH:
            full = encode_key(full)
        try:
            raw = self._backend_get(full)
        except Exception as exc:
            self._miss()
            self._backend_error("get", exc)
            return MISSING
        if raw is MISSING:
            self._miss()
            return MISSING
        if self._decodes:
            raw = self._decode(full, raw)
            if raw is MISSING:
                self._miss()
                return MISSING
        self._hit()
        return raw

    def _traced(self, full: str) -> Any:
        """``_lookup_slow``, logging the outcome per key on ``cachekit.trace`` (DEBUG)."""
        value = self._lookup_slow(full)
        trace_log.debug(
            "cachekit: %s %r in namespace %r",
            "miss" if value is MISSING else "hit",
            full,
            self.namespace,
            extra=self._logs.fields("get"),
        )
        return value

    def _lookup_slow(self, full: str) -> Any:
        """``_lookup`` while the backend is failing or invalidations are pending.

        Its tail repeats ``_lookup``'s on purpose: the fast path is kept free of
        one more function call (it is about a tenth of an in-process hit).
        """
        if self._pending and full in self._pending:
            if self.breaker.allow():
                self._replay_pending()
            if full in self._pending:  # still undelivered: the server may hold a stale value
                if not self.fail_open:
                    raise BackendUnavailableError(
                        f"get skipped: an invalidation of this key is pending for namespace "
                        f"{self.namespace!r} until the backend answers"
                    )
                # only our own newest write can be remembered here: deletes forget theirs
                return self._stale_or_miss(full)
        if self.breaker.open_until and self._skip("get"):
            return self._stale_or_miss(full)
        if (self._pending or self._pending_overflow) and self.breaker.open_until:
            # This call is the half-open probe: deliver the lost invalidations first,
            # so a recovered server never answers with a value this process dropped.
            self._replay_pending()
            if self.breaker.open_until:
                return self._stale_or_miss(full)
        try:
            raw = self._backend_get(full)
        except Exception as exc:
            self._backend_error("get", exc)
            return self._stale_or_miss(full)
        if self.breaker.failures or self._pending:
            self._backend_ok()
        if raw is MISSING:
            self._miss()
            return MISSING
        if self._decodes:
            raw = self._decode(full, raw)
            if raw is MISSING:
                self._miss()
                return MISSING
        if type(raw) is Fresh and self._wall() >= raw.served_until():
            # kept a little longer only so a reload in flight can replace it: a miss
            # (a get_or_load then waits for that reload instead of loading again)
            self._miss()
            return MISSING
        self._hit()
        if self._stale is not None:
            self._stale.keep(full, raw.value if type(raw) is Fresh else raw)
        return raw

    # ------------------------------------------------------------ serve-stale

    def _stale_value(self, full: str) -> Any:
        """The remembered value of ``full`` if at most ``stale_ttl`` old, else MISSING."""
        if self._stale is None:
            return MISSING
        value = self._stale.get(full)
        if value is not MISSING:
            self._c_stale.incr()
        return value

    def _stale_or_miss(self, full: str) -> Any:
        value = self._stale_value(full)
        if value is MISSING:
            self._miss()
        else:
            self._hit()
        return value

    # ------------------------------------------------------------ public reads

    def get(self, key: str, default: Any = None) -> Any:
        """Return the cached value for ``key``, or ``default`` (also when the backend is down)."""
        value = self._lookup(checked(key))
        if type(value) is Fresh:
            return value.value  # until the entry's hard expiry (stale-while-revalidate too)
        return default if value is MISSING else value

    def contains(self, key: str) -> bool:
        """Whether ``key`` is cached (a lookup: counted as a hit or a miss)."""
        return self._lookup(checked(key)) is not MISSING

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the cached keys (one round trip on remote backends)."""
        keys = list(dict.fromkeys(checked(k) for k in keys))  # a repeated key counts once
        if keys:
            self._full(keys[0])  # re-reads the namespace version if it is due
        prefix = self._ns.prefix
        fulls = {(f if len(f := prefix + k) <= MAX_KEY_LENGTH else encode_key(f)): k for k in keys}
        if self._pending:
            for full in [f for f in fulls if f in self._pending]:
                del fulls[full]
        if not fulls or (self.breaker.open_until and self._skip("get_many")):
            for _ in keys:
                self._miss()
            return {}
        try:
            found = self.backend.get_many(list(fulls))
        except Exception as exc:
            for _ in keys:
                self._miss()
            self._backend_error("get_many", exc)
            return {}
        if self.breaker.failures or self._pending:
            self._backend_ok()
        out: dict[str, Any] = {}
        loads = self._loads
        for full, raw in found.items():
            try:
                if loads is None:
                    if isinstance(raw, bytes) and raw.startswith(LEASE_MARK):
                        continue  # a load in progress: a miss
                    out[fulls[full]] = raw
                else:
                    out[fulls[full]] = from_stored(loads(full, raw))
            except Exception:  # a lease, or a corrupt entry: counted and logged
                value = self._decode(full, raw)
                if value is not MISSING:
                    out[fulls[full]] = value
        if any(type(v) is Fresh for v in out.values()):
            now = self._wall()  # freshness data: drop the entries past their serving window
            out = {
                k: v.value if type(v) is Fresh else v
                for k, v in out.items()
                if type(v) is not Fresh or now < v.served_until()
            }
        for _ in range(len(out)):
            self._hit()
        for _ in range(len(keys) - len(out)):
            self._miss()
        return out
