"""Primary-key normalisation: an identity converted to the Python types of its columns.

``repo.get("5")`` and ``repo.get(5)`` name one row of an integer-keyed table,
so they must name one cache entry. Every identity that enters a repository or
a ``track()`` hook goes through ``IdentityConverter``, which converts each
value to its column's Python type and raises ``InvalidKeyError`` for a value
that cannot be converted (never a bare ``ValueError`` or a database error).

====================  ==============================================  ===============
column Python type    accepted                                        converted to
====================  ==============================================  ===============
``int``               ``int``, integral ``float``/``Decimal``, digits  ``int``
``str``               ``str``, ``int``, ``uuid.UUID``                 ``str``
``str`` (``Uuid``)    ``uuid.UUID`` or UUID text in any accepted form  canonical text
``uuid.UUID``         ``uuid.UUID`` or UUID text                      ``uuid.UUID``
``Decimal``           ``Decimal``, ``int``, numeric text              ``Decimal``
an ``Enum`` class     a member, or a member's name                    the member
date/datetime/time    an instance, or ISO 8601 text                   that type
anything else         an instance of that type                        unchanged
====================  ==============================================  ===============

``bool`` is never an integer id (``True`` is not row 1), and a column whose
type does not say its Python type (some ``TypeDecorator``) is passed through.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from ..errors import InvalidKeyError

__all__ = ["IdentityConverter"]

Convert = Callable[[Any], Any]


class _Refused(Exception):
    """A value its column's converter cannot take (turned into ``InvalidKeyError``)."""


def _to_int(value: Any) -> int:
    if type(value) is int:  # the common case first
        return value
    if isinstance(value, bool):
        raise _Refused("a bool is not an integer id")
    if isinstance(value, int):  # int subclasses (IntEnum, ...) become plain ints
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip(), 10)
        except ValueError:
            raise _Refused("not an integer") from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, decimal.Decimal) and value.is_finite() and value == int(value):
        return int(value)
    if isinstance(value, (float, decimal.Decimal)):
        raise _Refused("not a whole number")
    raise _Refused(f"a {type(value).__qualname__} is not an integer id")


def _to_str(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, uuid.UUID):
        return str(value)
    raise _Refused(f"a {type(value).__qualname__} is not a string id")


def _to_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            raise _Refused("not a UUID") from None
    raise _Refused(f"a {type(value).__qualname__} is not a UUID")


def _to_uuid_text(value: Any) -> str:
    return str(_to_uuid(value))


def _to_decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, bool):
        raise _Refused("a bool is not a number")
    if isinstance(value, decimal.Decimal):
        return value
    if isinstance(value, (int, str)):
        try:
            return decimal.Decimal(value.strip() if isinstance(value, str) else value)
        except decimal.InvalidOperation:
            raise _Refused("not a number") from None
    raise _Refused(f"a {type(value).__qualname__} is not a number")


def _enum_member(members: type[enum.Enum]) -> Convert:
    def convert(value: Any) -> Any:
        if isinstance(value, members):
            return value
        if isinstance(value, str) and value in members.__members__:
            return members[value]  # SQLAlchemy takes the member's name too
        raise _Refused(f"not a member of {members.__qualname__}")

    return convert


def _iso(kind: type[Any]) -> Convert:
    """date, datetime or time: an instance of exactly that kind, or ISO 8601 text."""

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            try:
                return kind.fromisoformat(value.strip())
            except ValueError:
                raise _Refused(f"not an ISO 8601 {kind.__name__}") from None
        # a datetime is a date subclass, but not a value of a Date column
        if isinstance(value, kind) and not (
            kind is datetime.date and isinstance(value, datetime.datetime)
        ):
            return value
        raise _Refused(f"expected a {kind.__name__} or ISO 8601 text")

    return convert


def _instance_of(kind: type[Any]) -> Convert:
    def convert(value: Any) -> Any:
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        raise _Refused(f"expected a {kind.__qualname__}")

    return convert


def _same(value: Any) -> Any:
    return value


def converter_for(column: sa.ColumnElement[Any]) -> Convert:
    """Return the function that converts one value to ``column``'s Python type."""
    type_ = column.type
    try:
        python_type: type[Any] = type_.python_type
    except NotImplementedError:
        return _same
    if python_type is bool:
        return _instance_of(bool)
    if issubclass(python_type, int):
        return _to_int
    if isinstance(type_, sa.Uuid):
        return _to_uuid if type_.as_uuid else _to_uuid_text
    if python_type is str:
        return _to_str
    if python_type is uuid.UUID:
        return _to_uuid
    if python_type is decimal.Decimal:
        return _to_decimal
    if isinstance(type_, sa.Enum) and type_.enum_class is not None:
        return _enum_member(type_.enum_class)
    if python_type in (datetime.date, datetime.datetime, datetime.time):
        return _iso(python_type)
    return _instance_of(python_type)


class IdentityConverter:
    """Turns a primary key as callers pass it (scalar, or tuple if composite) into an identity."""

    def __init__(self, model_name: str, columns: Sequence[sa.ColumnElement[Any]]) -> None:
        self.model_name = model_name
        self.names = tuple(c.key or str(c) for c in columns)
        self.converters = tuple(converter_for(c) for c in columns)
        self.single = len(self.converters) == 1

    def __call__(self, pk: Any) -> tuple[Any, ...]:
        """Return ``pk`` as a tuple of values of the columns' types; raise ``InvalidKeyError``."""
        if self.single:
            if isinstance(pk, tuple):
                if len(pk) != 1:
                    raise InvalidKeyError(
                        f"{self.model_name} has a single-column primary key, got {pk!r}"
                    )
                pk = pk[0]
            return (self._one(0, pk),)
        if not isinstance(pk, (tuple, list)) or len(pk) != len(self.converters):
            raise InvalidKeyError(
                f"{self.model_name} has a composite primary key of {len(self.converters)} "
                f"columns {self.names}; pass a tuple, got {pk!r}"
            )
        return tuple(self._one(i, v) for i, v in enumerate(pk))

    def _one(self, index: int, value: Any) -> Any:
        if value is None:
            raise InvalidKeyError(f"{self.model_name}.{self.names[index]}: None is not an id")
        try:
            return self.converters[index](value)
        except _Refused as exc:
            raise InvalidKeyError(
                f"{self.model_name}.{self.names[index]}: {value!r} is not a valid id ({exc})"
            ) from None
