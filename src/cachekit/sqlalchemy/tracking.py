"""``track()``: apply ORM writes made outside a repository to the cache, after commit.

Session events record each flushed change of a tracked model against the
transaction (or savepoint) it was flushed in; the outermost ``commit()``
applies them (write-through stores the state, cache-aside drops the entry);
a rollback of the transaction, or of the savepoint, discards them.

ORM bulk ``update(Model)`` / ``delete(Model)`` statements are seen through
``do_orm_execute``: a ``WHERE`` on the primary key (``==`` or ``IN`` with
literal values) or a list of parameter sets carrying the primary key
invalidates those keys; any other ``WHERE`` clears the model's row
namespace. Core statements on a ``Connection`` and textual SQL are invisible:
only the TTL bounds their staleness.

Over an ``AsyncCache`` the hooks are the same (``AsyncTracker``), on the sync
``Session`` that an ``AsyncSession`` drives: the commit hook awaits the cache
update from inside SQLAlchemy's greenlet bridge, so ``await session.commit()``
returns once the cache is updated, as a blocking commit does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, SessionTransaction
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, ColumnElement
from sqlalchemy.util import await_only

from .._async.cache import AsyncCache
from ..cache import Cache
from ..errors import ConfigurationError, InvalidKeyError
from ..policies import Policy, TTLLike
from .binding import (
    DELETED,
    INVALIDATE,
    AsyncModelBinding,
    BindingBase,
    async_binding_for,
    binding_for,
    resolve_policy,
)
from .repository import REPOSITORY_SESSION

__all__ = ["AsyncTracker", "Tracker", "track"]

_PENDING = "cachekit.pending"


@dataclass
class _Pending:
    """Changes recorded in one transaction (or savepoint), not yet committed."""

    transaction: SessionTransaction
    binding: BindingBase[Any]
    ops: dict[str, Any] = field(default_factory=dict)
    clear: bool = False


class Tracker:
    """Session event hooks that keep tracked models' cache entries in step with commits."""

    def __init__(
        self,
        target: Any,
        cache: Any,
        models: Iterable[type[Any]],
        policy: Policy | None,
        ttl: TTLLike,
    ) -> None:
        self.target = target
        self.cache = cache
        self.policy, self.ttl = resolve_policy(cache, policy, ttl)
        self._bindings: dict[Mapper[Any], BindingBase[Any]] = {}
        for model in models:
            b = self._bind(cache, model)
            self._bindings[b.mapper] = b
        self._events = (
            ("after_flush", self._after_flush),
            ("after_commit", self._after_commit),
            ("after_soft_rollback", self._after_soft_rollback),
            ("after_transaction_end", self._after_transaction_end),
            ("do_orm_execute", self._do_orm_execute),
        )
        for name, fn in self._events:
            event.listen(target, name, fn)

    def remove(self) -> None:
        """Stop tracking (remove the event listeners)."""
        for name, fn in self._events:
            event.remove(self.target, name, fn)

    def _bind(self, cache: Any, model: type[Any]) -> BindingBase[Any]:
        return binding_for(cache, model)

    def _apply(self, binding: Any, ops: dict[str, Any], clear: bool) -> None:
        """Apply a committed transaction's changes of one model to the cache."""
        binding.apply(ops, store=self.policy.stores_on_write, ttl=self.ttl, clear=clear)

    # ------------------------------------------------------------ recording

    def _binding(self, mapper: Mapper[Any] | None) -> BindingBase[Any] | None:
        if mapper is None:
            return None
        for m in mapper.iterate_to_root():
            b = self._bindings.get(m)
            if b is not None:
                return b
        return None

    def _pending(self, session: Session, binding: BindingBase[Any]) -> _Pending:
        txn = session.get_nested_transaction() or session.get_transaction()
        if txn is None:
            # a bulk statement before anything else: begin now what execute() would autobegin
            txn = session.begin()
        entries: list[_Pending] = session.info.setdefault(_PENDING, {}).setdefault(id(self), [])
        for p in entries:
            if p.transaction is txn and p.binding is binding:
                return p
        p = _Pending(txn, binding)
        entries.append(p)
        return p

    def _after_flush(self, session: Session, _flush_context: Any) -> None:
        if session.info.get(REPOSITORY_SESSION):
            return  # the repository applies its own writes
        deleted = set(map(id, session.deleted))
        for obj in (*session.new, *session.dirty, *session.deleted):
            state = instance_state(obj)
            binding = self._binding(state.mapper)
            if binding is None:
                continue
            if id(obj) in deleted:
                key = binding.key(binding.ident(tuple(state.identity or ())))
                value: Any = DELETED
            elif state.key is not None and not session.is_modified(obj):
                continue
            else:
                key = binding.key(binding.identity_of(obj))
                # values computed by the server are expired after the flush: unknown here
                value = INVALIDATE if binding.codec.unloaded(obj) else binding.codec.encode(obj)
            self._record(session, binding, key, value)

    def _do_orm_execute(self, orm_state: ORMExecuteState) -> None:
        if not (orm_state.is_update or orm_state.is_delete):
            return
        binding = self._binding(orm_state.bind_mapper)
        if binding is None:
            return
        keys = _keys_of_bulk(binding, orm_state)
        if keys is None:
            self._pending(orm_state.session, binding).clear = True
            return
        for key in keys:
            self._record(orm_state.session, binding, key, INVALIDATE)

    def _record(self, session: Session, binding: BindingBase[Any], key: str, value: Any) -> None:
        """Record ``key``'s new state in the current transaction or savepoint.

        A key is begun once per session, however many savepoints flushed it, and
        ended once when the session's transaction commits or rolls back, so the
        binding's in-progress tables never keep a key after the transaction ends.
        """
        pending = self._pending(session, binding)
        entries: list[_Pending] = session.info[_PENDING][id(self)]
        if not any(key in p.ops for p in entries if p.binding is binding):
            binding.begin_writes((key,))
        pending.ops[key] = value

    # ------------------------------------------------------------ commit / rollback

    def _take(self, session: Session) -> list[_Pending]:
        return list(session.info.get(_PENDING, {}).pop(id(self), ()))

    def _after_commit(self, session: Session) -> None:
        if session.in_nested_transaction():
            # a savepoint was released: SQLAlchemy fires after_commit for it too, but
            # nothing is committed until the outermost transaction is
            self._release(session, session.get_nested_transaction())
            return
        merged: dict[int, _Pending] = {}
        for p in self._take(session):  # oldest first: later flushes win
            m = merged.setdefault(id(p.binding), _Pending(p.transaction, p.binding))
            m.ops.update(p.ops)
            m.clear |= p.clear
        failure: BaseException | None = None
        for m in merged.values():  # each apply ends its keys' writes, even when it fails
            try:
                self._apply(m.binding, m.ops, m.clear)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _release(self, session: Session, savepoint: SessionTransaction | None) -> None:
        """Hand a released savepoint's changes to its parent (they are newer than the parent's)."""
        entries: list[_Pending] = session.info.get(_PENDING, {}).get(id(self), [])
        parent = None if savepoint is None else savepoint.parent
        if parent is None:
            return
        for p in [p for p in entries if p.transaction is savepoint]:
            entries.remove(p)
            into = next(
                (q for q in entries if q.transaction is parent and q.binding is p.binding), None
            )
            if into is None:
                p.transaction = parent
                entries.append(p)
            else:
                into.ops.update(p.ops)
                into.clear |= p.clear

    def _discard(self, gone: Iterable[_Pending], kept: Iterable[_Pending] = ()) -> None:
        """End the writes of ``gone``'s keys, except keys that ``kept`` still holds."""
        still: dict[int, set[str]] = {}
        for p in kept:
            still.setdefault(id(p.binding), set()).update(p.ops)
        ended: dict[int, tuple[BindingBase[Any], set[str]]] = {}
        for p in gone:
            keys = ended.setdefault(id(p.binding), (p.binding, set()))[1]
            keys.update(k for k in p.ops if k not in still.get(id(p.binding), ()))
        for binding, keys in ended.values():
            binding.end_writes(keys)

    def _after_soft_rollback(self, session: Session, previous: SessionTransaction) -> None:
        entries: list[_Pending] = session.info.get(_PENDING, {}).get(id(self), [])
        if not entries:
            return
        keep = [p for p in entries if not _within(p.transaction, previous)]
        gone = [p for p in entries if _within(p.transaction, previous)]
        entries[:] = keep
        self._discard(gone, keep)

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:  # the outermost one ended without a commit: drop all
            self._discard(self._take(session))


def _within(txn: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while txn is not None:
        if txn is ancestor:
            return True
        txn = txn.parent
    return False


def _keys_of_bulk(binding: BindingBase[Any], orm_state: ORMExecuteState) -> list[str] | None:
    """Return the keys a bulk UPDATE/DELETE touches, or ``None`` when they cannot be known."""
    pk_names = [binding.mapper.get_property_by_column(c).key for c in binding.pk_columns]
    params = orm_state.parameters
    if isinstance(params, list) and params:
        # bulk UPDATE by primary key: session.execute(update(Model), [{"id": 1, ...}, ...])
        try:
            return [binding.key(binding.ident(tuple(p[n] for n in pk_names))) for p in params]
        except (KeyError, InvalidKeyError):
            return None
    where = getattr(orm_state.statement, "whereclause", None)
    if where is None or not binding.single_pk:
        return None
    return _pk_literals(where, binding.pk_columns[0], binding)


def _pk_literals(where: Any, column: Any, binding: BindingBase[Any]) -> list[str] | None:
    """Keys for ``pk == literal`` or ``pk IN (literals)``; ``None`` for any other clause."""
    if not isinstance(where, BinaryExpression) or not isinstance(where.right, BindParameter):
        return None
    left = where.left
    if not isinstance(left, ColumnElement) or left._deannotate() is not column:
        return None
    value = where.right.effective_value
    try:
        if where.operator is operators.eq and value is not None:
            return [binding.key(binding.ident((value,)))]
        if where.operator is operators.in_op and isinstance(value, (list, tuple)):
            return [binding.key(binding.ident((v,))) for v in value]
    except InvalidKeyError:  # not a value of the key's type: the keys are unknown
        return None
    return None


class AsyncTracker(Tracker):
    """``Tracker`` over an ``AsyncCache``: the commit hook awaits the cache update."""

    def _bind(self, cache: Any, model: type[Any]) -> AsyncModelBinding[Any]:
        return async_binding_for(cache, model)

    def _apply(self, binding: Any, ops: dict[str, Any], clear: bool) -> None:
        # commit() runs in SQLAlchemy's greenlet (AsyncSession): wait for the cache there
        await_only(binding.apply(ops, store=self.policy.stores_on_write, ttl=self.ttl, clear=clear))


def _sync_target(target: Any) -> Any:
    """The sync event target behind ``target`` (an async_sessionmaker or AsyncSession)."""
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    if isinstance(target, AsyncSession):
        return target.sync_session
    if isinstance(target, async_sessionmaker):
        cls = target.kw.get("sync_session_class") or target.class_.sync_session_class
        if cls is Session:
            # its own Session subclass, so only this factory's sessions are tracked
            cls = target.kw["sync_session_class"] = type("TrackedSession", (Session,), {})
        return cls
    if isinstance(target, type) and issubclass(target, Session):
        return target  # the sync_session_class of the user's async_sessionmaker
    raise ConfigurationError(
        "track() over an AsyncCache takes an async_sessionmaker, an AsyncSession or the "
        f"Session subclass an async_sessionmaker uses, not {target!r}"
    )


def track(
    target: Any,
    cache: Cache | AsyncCache,
    models: Iterable[type[Any]],
    *,
    policy: Policy | None = None,
    ttl: TTLLike = None,
) -> Tracker:
    """Hook ``target`` (sessionmaker, Session class or session) to cache ``models``' writes.

    With an ``AsyncCache``, ``target`` is an ``async_sessionmaker`` or an
    ``AsyncSession``. ``policy`` defaults to the cache's; call ``.remove()`` on
    the result to stop.
    """
    if isinstance(cache, AsyncCache):
        return AsyncTracker(_sync_target(target), cache, models, policy, ttl)
    return Tracker(target, cache, models, policy, ttl)
