"""Row codec: a mapped object's column state as JSON-native values, driven by the column types.

The cache holds ``{attribute: value}`` dicts of plain ``str``/``int``/``float``/
``bool``/``None`` (and JSON documents as text), never a pickle, so any process
can read an entry and nothing executable is ever decoded. Each column's
encoder/decoder pair is chosen once, from its SQLAlchemy type:

====================  ======================================  ==================
column type           cached as                               decoded to
====================  ======================================  ==================
Boolean, Integer      the value                               the value
Float                 the value (``Decimal`` if asdecimal)    float / Decimal
Numeric (asdecimal)   ``str(Decimal)``                        ``Decimal``
String, Text          the value                               ``str``
Enum (enum class)     the member's name                       the member
DateTime, Date, Time  ISO 8601 text (offset kept when aware)  datetime / ...
Interval              ``[days, seconds, microseconds]``       ``timedelta``
Uuid                  canonical text                          ``uuid.UUID``
JSON                  ``json.dumps`` text                     a fresh document
LargeBinary           base64 text                             ``bytes``
anything else         the value, if JSON-native               the value
====================  ======================================  ==================

Relationships are never part of the state: a decoded object has them
unloaded (accessing one on the detached object raises, as after a closed
session).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import enum
import json
import uuid
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Mapper, class_mapper, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state, set_committed_value

from ..errors import SerializationError

__all__ = ["RowCodec", "State"]

M = TypeVar("M")
#: One cached row: attribute key -> JSON-native value.
State = dict[str, Any]
Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]

_NATIVE = (str, int, float, bool)


def _same(value: Any) -> Any:
    return value


def _iso(value: Any) -> Any:
    return value.isoformat()


def _b64(value: Any) -> Any:
    return base64.b64encode(bytes(value)).decode("ascii")


def _td(value: Any) -> Any:
    return [value.days, value.seconds, value.microseconds]


def _json_text(value: Any) -> Any:
    return json.dumps(value, separators=(",", ":"), sort_keys=False)


def _native_only(column: str, type_: sa.types.TypeEngine[Any]) -> Encoder:
    def encode(value: Any) -> Any:
        if isinstance(value, _NATIVE):
            return value
        raise SerializationError(
            f"cachekit's row codec cannot cache column {column!r} of type {type_!r} "
            f"holding a {type(value).__qualname__}; use a standard column type or leave "
            "the model uncached"
        )

    return encode


def _enum_pair(type_: sa.Enum) -> tuple[Encoder, Decoder]:
    cls = type_.enum_class
    if cls is None:
        return _same, _same
    members: type[enum.Enum] = cls

    def encode(value: Any) -> Any:
        # SQLAlchemy also accepts the member's name as a string on the way in
        return value.name if isinstance(value, enum.Enum) else str(value)

    def decode(value: Any) -> Any:
        return members[value]

    return encode, decode


def _pair_for(column: str, type_: sa.types.TypeEngine[Any]) -> tuple[Encoder, Decoder]:
    """Return the (encode, decode) functions for values of ``type_``."""
    if isinstance(type_, sa.Interval):  # before TypeDecorator: Interval is one
        return _td, lambda v: datetime.timedelta(days=v[0], seconds=v[1], microseconds=v[2])
    if isinstance(type_, sa.types.TypeDecorator):
        # its Python values are whatever the decorator makes them: only JSON-native ones pass
        return _native_only(column, type_), _same
    if isinstance(type_, sa.Boolean | sa.Integer):
        return _same, _same
    if isinstance(type_, sa.Float):
        return (str, decimal.Decimal) if type_.asdecimal else (_same, _same)
    if isinstance(type_, sa.Numeric):
        return (str, decimal.Decimal) if type_.asdecimal else (_same, _same)
    if isinstance(type_, sa.Enum):  # before String: Enum is a String
        return _enum_pair(type_)
    if isinstance(type_, sa.String):
        return _same, _same
    if isinstance(type_, sa.DateTime):
        return _iso, datetime.datetime.fromisoformat
    if isinstance(type_, sa.Date):
        return _iso, datetime.date.fromisoformat
    if isinstance(type_, sa.Time):
        return _iso, datetime.time.fromisoformat
    if isinstance(type_, sa.Uuid):
        return (str, uuid.UUID) if type_.as_uuid else (str, _same)
    if isinstance(type_, sa.JSON):
        # stored as text, so every decode builds a new document the caller may mutate
        return _json_text, json.loads
    if isinstance(type_, sa.LargeBinary):
        return _b64, base64.b64decode
    return _native_only(column, type_), _same


class RowCodec(Generic[M]):
    """Encodes the column state of ``model`` instances and rebuilds detached instances."""

    def __init__(self, model: type[M]) -> None:
        mapper: Mapper[M] = class_mapper(model)
        self.model = model
        self.mapper = mapper
        fields: list[tuple[str, Encoder, Decoder]] = []
        for prop in mapper.column_attrs:
            column = prop.columns[0]
            if not isinstance(column, sa.Column):
                continue  # SQL expressions (column_property) are recomputed, not cached
            enc, dec = _pair_for(prop.key, column.type)
            fields.append((prop.key, enc, dec))
        self.fields = tuple(fields)
        self.keys = frozenset(k for k, _, _ in fields)
        self.pk_keys = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
        version_col = mapper.version_id_col
        self.version_key: str | None = (
            mapper.get_property_by_column(version_col).key if version_col is not None else None
        )

    # ------------------------------------------------------------ encode

    def encode(self, obj: Any) -> State:
        """Return the cached form of ``obj``'s column values (loads unloaded ones if attached)."""
        out: State = {}
        for key, enc, _ in self.fields:
            value = getattr(obj, key)
            out[key] = None if value is None else enc(value)
        return out

    def unloaded(self, obj: Any) -> frozenset[str]:
        """Return the column attributes of ``obj`` that are not loaded (expired or deferred)."""
        return self.keys & instance_state(obj).unloaded

    def identity(self, state: State) -> tuple[Any, ...]:
        """Return the decoded primary key of a cached state, as a tuple."""
        values = self.decode_values(state)
        return tuple(values[k] for k in self.pk_keys)

    def version(self, state: Any) -> Any:
        """Return the version counter held in ``state``, or ``None``."""
        if self.version_key is None or not isinstance(state, dict):
            return None
        return state.get(self.version_key)

    # ------------------------------------------------------------ decode

    def is_state(self, value: Any) -> bool:
        """True when ``value`` is a state this codec can decode (same columns)."""
        return isinstance(value, dict) and value.keys() == self.keys

    def decode_values(self, state: State) -> dict[str, Any]:
        """Return ``{attribute: Python value}`` for a cached state."""
        try:
            return {
                key: None if (raw := state[key]) is None else dec(raw)
                for key, _, dec in self.fields
            }
        except (KeyError, ValueError, TypeError, decimal.InvalidOperation) as exc:
            raise SerializationError(
                f"cached state for {self.model.__qualname__} does not fit the model: {exc}"
            ) from exc

    def decode(self, state: State) -> M:
        """Return a new detached ``model`` instance holding the cached column values."""
        obj: M = self.mapper.class_manager.new_instance()
        # A fresh instance has no history: fill its dict as the ORM's own loader does,
        # and let make_transient_to_detached() commit it all at once (a third of a hit
        # went to one set_committed_value() per column).
        instance_state(obj).dict.update(self.decode_values(state))
        make_transient_to_detached(obj)
        return obj

    def populate(self, obj: Any, state: State) -> None:
        """Set ``obj``'s column attributes to the cached values, as committed (unmodified)."""
        for key, value in self.decode_values(state).items():
            set_committed_value(obj, key, value)
