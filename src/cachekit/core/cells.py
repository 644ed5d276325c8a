"""Per-namespace shared state: the current key prefix, loads and writes in progress.

Every cache over one store and namespace shares one ``Namespace``: its version
(``clear()`` changes it), and, per kind of cache (sync or async, which wait
differently), the tables of loads and writes in progress that single-flight
and the write-conflict rules work from.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..keys import namespace_prefix

__all__ = ["Flight", "KeyWrites", "Namespace", "Tables", "Write", "namespace_for"]


class Flight:
    """One in-progress load that other callers of the same key wait for."""

    __slots__ = ("error", "event", "invalidated", "owner", "value")

    def __init__(self, owner: Any) -> None:
        # created by the first waiter (under the flights lock): most loads have none
        self.event: Any = None
        self.value: Any = None
        self.error: BaseException | None = None
        self.invalidated = False
        # the leader (thread or task): a loader that asks for its own key is caught at once
        self.owner = owner


class Write:
    """One write in progress; ``conflict`` is set when another write to its key overlaps."""

    __slots__ = ("conflict",)

    def __init__(self) -> None:
        self.conflict = False


class KeyWrites:
    """The writes in progress on one key, and the lock their cache updates take in turn."""

    __slots__ = ("active", "step")

    def __init__(self, step: Any) -> None:
        self.active: list[Write] = []
        # One cache update at a time per key: an overlapping writer's invalidation
        # can never land before the other writer's store and leave it behind.
        self.step = step


class Tables:
    """Loads and writes in progress in one namespace, for caches of one kind (sync or async)."""

    __slots__ = ("_make_lock", "flights", "flights_lock", "refresh_lock", "writes")

    def __init__(self, make_lock: Callable[[], Any]) -> None:
        self._make_lock = make_lock
        self.flights: dict[str, Flight] = {}
        self.flights_lock = make_lock()
        # writes in progress per key (guarded by flights_lock), to spot overlapping writers
        self.writes: dict[str, KeyWrites] = {}
        self.refresh_lock = make_lock()

    def reset(self) -> None:
        """In a forked child: the parent's loads and writes are not ours, nor its held locks."""
        self.flights.clear()
        self.writes.clear()
        self.flights_lock = self._make_lock()
        self.refresh_lock = self._make_lock()


class Namespace:
    """The current key prefix of a namespace, shared by every cache over one store."""

    __slots__ = ("_tables", "check_at", "name", "prefix", "version")

    def __init__(self, name: str) -> None:
        self.name = name
        self.version = ""
        self.prefix = ""
        self.check_at = 0.0
        self._tables: dict[bool, Tables] = {}

    def adopt(self, version: str) -> None:
        """Use ``version`` from now on (keys written under another one are orphaned)."""
        self.version = version
        self.prefix = namespace_prefix(self.name, 0)[:-2] + version + ":"

    def tables(self, is_async: bool, make_lock: Callable[[], Any]) -> Tables:
        """The in-progress tables of caches of one kind."""
        tables = self._tables.get(is_async)
        if tables is None:
            with _LOCK:
                tables = self._tables.setdefault(is_async, Tables(make_lock))
        return tables


_CELLS: weakref.WeakKeyDictionary[object, dict[str, Namespace]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    # Another thread of the parent may have held any of these locks when it forked.
    global _LOCK
    _LOCK = threading.Lock()
    for cells in list(_CELLS.values()):
        for cell in cells.values():
            for tables in cell._tables.values():
                tables.reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


def namespace_for(store: object, name: str) -> Namespace:
    """The shared ``Namespace`` of ``name`` over ``store`` (a backend, or the store it wraps)."""
    with _LOCK:
        cells = _CELLS.setdefault(store, {})
        cell = cells.get(name)
        if cell is None:
            cell = cells[name] = Namespace(name)
        return cell
