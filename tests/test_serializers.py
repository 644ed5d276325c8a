"""Serializers: tagged JSON round trips, foreign bytes refused, signed pickle (serializers.py)."""

from __future__ import annotations

import datetime
import decimal
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest

import cachekit as ck
from cachekit.serializers import JsonSerializer, PickleSerializer

UTC = datetime.timezone.utc
PLUS2 = datetime.timezone(datetime.timedelta(hours=2))

VALUES: list[Any] = [
    {"a": 1, "b": [1, 2]},
    [1, "x", None],
    "text",
    "",
    "é ✓ \x00",
    0,
    -(2**70),
    1.5,
    -0.25,
    True,
    False,
    None,
    datetime.datetime(2024, 5, 6, 7, 8, 9, 123456),
    datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
    datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=PLUS2),
    datetime.date(2024, 2, 29),
    datetime.time(23, 59, 1, 5),
    datetime.timedelta(days=-1, seconds=5, microseconds=7),
    decimal.Decimal("3.14159265358979323846264338327950288"),
    decimal.Decimal("-0.00"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    b"\x00\xffbytes",
    b"",
    (1, "a", (2, 3)),
    (),
    {1, 2, 3},
    frozenset({"a", "b"}),
    set(),
    {1: "int key", 2: "two"},
    {(1, 2): "tuple key"},
    {frozenset({1}): "fs key"},
    {"__ck__": "user data", "v": [1]},
    {"__ck__": None},
    {"outer": {"__ck__": "t", "v": [1, 2]}},
    {
        "when": datetime.date(2020, 1, 1),
        "ids": (uuid.UUID(int=1), uuid.UUID(int=2)),
        "nested": [{"amount": decimal.Decimal("9.99"), "raw": b"x"}, {1, 2}],
        "plain": {"k": [1, 2, {"z": None}]},
    },
    [(1, 2), [3, (4, {5})]],
]


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type, recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, datetime.datetime):
        return a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset()
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    return bool(a == b)


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_json_round_trip_keeps_the_type(value: Any) -> None:
    s = JsonSerializer()
    data = s.dumps(value)
    assert isinstance(data, bytes)
    back = s.loads(data)
    assert _same(back, value), (value, back)


def test_same_check_is_strict() -> None:
    # the helper used above really tells types apart
    assert not _same((1, 2), [1, 2])
    assert not _same({1}, frozenset({1}))
    assert not _same(1, True)
    assert not _same(datetime.datetime(2020, 1, 1, tzinfo=UTC), datetime.datetime(2020, 1, 1))


def test_plain_json_values_use_the_untagged_format() -> None:
    s = JsonSerializer()
    assert s.dumps({"a": [1, 2.5, None, True]})[:1] == b"j"
    assert s.dumps((1,))[:1] == b"J"
    assert s.dumps({"__ck__": 1})[:1] == b"J"


def test_ensure_ascii_option() -> None:
    data = JsonSerializer(ensure_ascii=True).dumps("é")
    assert data.isascii()
    assert JsonSerializer().loads(data) == "é"


class Unserializable:
    pass


@pytest.mark.parametrize(
    "value",
    [Unserializable(), {"a": object()}, [1, {2: lambda: 1}], (1, Unserializable()), {1.5j}],
    ids=["object", "nested-dict", "lambda", "tuple", "complex"],
)
def test_unserializable_values_raise(value: Any) -> None:
    with pytest.raises(ck.SerializationError):
        JsonSerializer().dumps(value)


def test_circular_structure_raises_serialization_error() -> None:
    a: list[Any] = [1]
    a.append(a)
    with pytest.raises(ck.SerializationError):
        JsonSerializer().dumps(a)
    d: dict[str, Any] = {}
    d["self"] = d
    with pytest.raises(ck.SerializationError):
        JsonSerializer().dumps(d)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        pickle.dumps({"a": 1}),
        b"\x80\x04garbage",
        b"not json at all",
        b"j{not json",
        b"J{not json",
        b"J" + b'{"__ck__":"nope","v":1}',
        b"J" + b'{"__ck__":"dec","v":"not a number"}',
        b"J" + b'{"__ck__":"td","v":[999999999999,0,0]}',
        b"J" + b'{"__ck__":"uuid","v":"zz"}',
        b"J" + b'{"__ck__":"dt","v":"yesterday"}',
        b"J" + b'{"__ck__":"b","v":"***"}',
        b"J" + b'{"__ck__":"m","v":[[{"a":1},1]]}',
        b"J" + b'{"__ck__":"t"}',
        b"j\xff\xfe",
        b"j" + b"[" * 100_000,
        b"p" + b"0" * 40,
    ],
)
def test_foreign_or_corrupt_bytes_raise_serialization_error(data: bytes) -> None:
    with pytest.raises(ck.SerializationError):
        JsonSerializer().loads(data)


# ---------------------------------------------------------------- pickle

KEY = b"k" * 32


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    __hash__ = None  # type: ignore[assignment]


class Evil:
    """Unpickling this creates the file named by ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_pickle_round_trip() -> None:
    s = PickleSerializer(KEY)
    for value in [Point(1, 2), {"p": [Point(3, 4)]}, None, (1, 2), b"x"]:
        assert s.loads(s.dumps(value)) == value


def test_pickle_unpicklable_value_raises() -> None:
    with pytest.raises(ck.SerializationError):
        PickleSerializer(KEY).dumps(lambda: 1)


def test_pickle_never_executes_a_tampered_payload(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    s = PickleSerializer(KEY)
    good = s.dumps({"a": 1})
    evil_body = pickle.dumps(Evil(str(target)))
    # the raw pickle sanity check: unpickling it would create the file
    assert not target.exists()

    tampered = [
        good[:33] + evil_body,  # valid MAC of another body
        b"p" + b"\x00" * 32 + evil_body,  # zero MAC
        evil_body,  # raw pickle, no header
        b"p" + evil_body,  # header, no MAC
        good[:-1] + bytes([good[-1] ^ 1]),  # one bit flipped
    ]
    for data in tampered:
        with pytest.raises(ck.SerializationError):
            s.loads(data)
    # signed with another key
    other = PickleSerializer(b"x" * 32)
    with pytest.raises(ck.SerializationError):
        s.loads(other.dumps({"a": 1}))
    # even a payload signed with a wrong key that holds the evil object
    with pytest.raises(ck.SerializationError):
        s.loads(other.dumps(Evil(str(target))))
    # the JSON serializer refuses it too
    with pytest.raises(ck.SerializationError):
        JsonSerializer().loads(other.dumps(Evil(str(target))))
    assert not target.exists()
    assert not os.listdir(tmp_path)


def test_evil_object_really_creates_its_file(tmp_path: Path) -> None:
    # proves the tampering test above would notice an execution
    target = tmp_path / "made"
    s = PickleSerializer(KEY)
    fh = s.loads(s.dumps(Evil(str(target))))  # correctly signed: trusted writer
    fh.close()
    assert target.exists()


@pytest.mark.parametrize("key", [b"", b"short", b"x" * 15, "a-str-key-of-32-characters-long!"])
def test_pickle_refuses_short_or_non_bytes_keys(key: Any) -> None:
    with pytest.raises(ck.ConfigurationError):
        PickleSerializer(key)


def test_json_payload_is_refused_by_pickle() -> None:
    with pytest.raises(ck.SerializationError):
        PickleSerializer(KEY).loads(JsonSerializer().dumps({"a": 1}))
