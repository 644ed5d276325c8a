"""``Cache``: one namespace, one default policy, over any backend (``AsyncCache``, blocking).

The implementation is generated from the async source (``_async/``) into
``_sync/``; this module adds what only a blocking cache can offer (``key in
cache``) and re-exports the names other modules use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._sync.cache import Cache as _Cache
from ._sync.guard import (
    MAX_PENDING_INVALIDATIONS,
    REPLAY_BACKOFF,
    REPLAY_INTERVAL,
    REPLAY_LOCK_WAIT,
)
from ._sync.loads import LoadTTL
from .backends.base import Backend
from .core.leases import LEASE_MARK, RELEASED

__all__ = [
    "LEASE_MARK",
    "MAX_PENDING_INVALIDATIONS",
    "RELEASED",
    "REPLAY_BACKOFF",
    "REPLAY_INTERVAL",
    "REPLAY_LOCK_WAIT",
    "Cache",
    "LoadTTL",
]


class Cache(_Cache):
    """A namespaced cache with a default policy over one backend.

    ``get`` never raises because the backend is down; with ``fail_open=False``
    backend failures raise ``BackendUnavailableError`` instead.
    """

    if not TYPE_CHECKING:  # type checkers see the generated constructor's full signature

        def __init__(self, backend: Backend, **options: Any) -> None:
            super().__init__(backend, **options)
            if self._remote:
                # Read the namespace version now (one timeout here if the server is down),
                # so the first call does not pay it on top of its own.
                self._full("")

    def __contains__(self, key: str) -> bool:
        return self.contains(key)
