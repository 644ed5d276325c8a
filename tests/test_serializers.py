"""Serializers: tagged JSON round trips, foreign bytes refused, signed pickle (serializers.py)."""

from __future__ import annotations

import contextlib
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


# ---------------------------------------------------------------- key-bound pickle


def test_key_bound_pickle_round_trip() -> None:
    s = PickleSerializer(KEY)
    data = s.dumps_for("app:v1:user:1", {"p": Point(1, 2)})
    assert data[:1] == b"P"
    assert s.loads_for("app:v1:user:1", data) == {"p": Point(1, 2)}
    assert isinstance(s, ck.KeyBoundSerializer)


def test_key_bound_pickle_copied_to_another_key_is_refused() -> None:
    s = PickleSerializer(KEY)
    data = s.dumps_for("app:v1:user:1", {"role": "user"})
    for other in ["app:v1:user:2", "app:v2:user:1", "other:v1:user:1", "", "app:v1:user:1 "]:
        with pytest.raises(ck.SerializationError, match="signature mismatch"):
            s.loads_for(other, data)


def test_key_bound_pickle_length_prefix_stops_boundary_shifts() -> None:
    # without the length prefix, key "k1" + body B and key "k" + body "1"+B would sign the same
    s = PickleSerializer(KEY)
    data = s.dumps_for("k1", [1, 2])
    shifted = data[:33] + b"1" + data[33:]
    with pytest.raises(ck.SerializationError, match="signature mismatch"):
        s.loads_for("k", shifted)


def test_plain_and_key_bound_pickle_never_read_each_other() -> None:
    s = PickleSerializer(KEY)
    with pytest.raises(ck.SerializationError):
        s.loads_for("k", s.dumps({"a": 1}))
    with pytest.raises(ck.SerializationError):
        s.loads(s.dumps_for("k", {"a": 1}))
    # a plain payload re-headed as key-bound does not verify either
    plain = s.dumps({"a": 1})
    with pytest.raises(ck.SerializationError, match="signature mismatch"):
        s.loads_for("k", b"P" + plain[1:])


def test_pickle_repr_hides_the_key() -> None:
    assert KEY.decode() not in repr(PickleSerializer(KEY))


# ---------------------------------------------------------------- crafted entries

CRAFTED = [
    b'J{"__ck__":"uuid","v":123}',  # AttributeError before: int has no .replace
    b'J{"__ck__":"uuid","v":[1]}',
    b'J{"__ck__":"dt","v":[1,2]}',
    b'J{"__ck__":"d","v":{"a":1}}',
    b'J{"__ck__":"tm","v":null}',
    b'J{"__ck__":"td","v":"abc"}',
    b'J{"__ck__":"td","v":["a",1,2]}',
    b'J{"__ck__":"td","v":[1]}',
    b'J{"__ck__":"dec","v":[1]}',
    b'J{"__ck__":"b","v":"!!!!"}',
    b'J{"__ck__":"b","v":12}',
    b'J{"__ck__":"b","v":"QUJ"}',
    b'J{"__ck__":"t","v":5}',
    b'J{"__ck__":"s","v":[[1]]}',
    b'J{"__ck__":"fs","v":[{"a":1}]}',
    b'J{"__ck__":"m","v":5}',
    b'J{"__ck__":"m","v":[[1,2,3]]}',
    b'J{"__ck__":"m","v":[[{"__ck__":"s","v":[1]},1]]}',
    b'J{"__ck__":[1],"v":1}',
    b'J{"__ck__":{"a":1},"v":1}',
    b'J[{"__ck__":"uuid","v":1.5}]',
    b"j" + b"9" * 5000,  # over Python's int digit limit
    b"J" + b"9" * 5000,
    b"j" + b"[" * 50 + b"]" * 50 + b"]",
    b"j" + b"[" * 200 + b"]" * 200,  # over max_depth
    b"J" + b'{"a":' * 200 + b"1" + b"}" * 200,
    b"j" + b"[" * 100_000,
    b"j1 ",
    b"j\xed\xa0\x80",  # a lone surrogate: decodes, then fails
    b"J\x00",
]


@pytest.mark.parametrize("data", CRAFTED)
def test_crafted_json_entries_raise_serialization_error_only(data: bytes) -> None:
    with pytest.raises(ck.SerializationError) as info:
        JsonSerializer().loads(data)
    assert type(info.value) is ck.SerializationError


def test_a_known_tag_with_a_wrong_field_type_chains_its_cause() -> None:
    with pytest.raises(ck.SerializationError) as info:
        JsonSerializer().loads(b'J{"__ck__":"uuid","v":123}')
    assert isinstance(info.value.__cause__, AttributeError)


@pytest.mark.parametrize("data", [None, "j[1]", 12, ["j"], bytearray(b"j[1]"), memoryview(b"j1")])
def test_non_bytes_payloads(data: Any) -> None:
    s = JsonSerializer()
    if isinstance(data, (bytearray, memoryview)):
        assert s.loads(data) in ([1], 1)
        return
    with pytest.raises(ck.SerializationError):
        s.loads(data)
    with pytest.raises(ck.SerializationError):
        PickleSerializer(KEY).loads(data)
    with pytest.raises(ck.SerializationError):
        PickleSerializer(KEY).loads_for("k", data)


# ---------------------------------------------------------------- bounded decoding


def test_json_max_value_bytes_both_ways() -> None:
    s = JsonSerializer(max_value_bytes=100)
    assert s.loads(s.dumps("x" * 90)) == "x" * 90
    with pytest.raises(ck.ValueTooLargeError):
        s.dumps("x" * 100)
    big = JsonSerializer().dumps("x" * 100)
    with pytest.raises(ck.SerializationError, match="over the cap"):
        s.loads(big)


def test_default_cap_is_64_mib() -> None:
    from cachekit.serializers import DEFAULT_MAX_VALUE_BYTES

    assert DEFAULT_MAX_VALUE_BYTES == 64 * 1024 * 1024
    assert JsonSerializer().max_value_bytes == DEFAULT_MAX_VALUE_BYTES
    assert JsonSerializer(max_value_bytes=None).loads(b'j"' + b"x" * 100 + b'"') == "x" * 100


def test_pickle_max_value_bytes_both_ways() -> None:
    s = PickleSerializer(KEY, max_value_bytes=200)
    assert s.loads_for("k", s.dumps_for("k", "x" * 100)) == "x" * 100
    with pytest.raises(ck.ValueTooLargeError):
        s.dumps_for("k", "x" * 200)
    big = PickleSerializer(KEY).dumps_for("k", "x" * 200)
    with pytest.raises(ck.SerializationError, match="over the cap"):
        s.loads_for("k", big)


def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize("depth", [1, 8, 9, 50, 99, 100])
def test_json_nesting_up_to_max_depth_round_trips(depth: int) -> None:
    s = JsonSerializer()
    for leaf in [1, "[[[[{{{{", 'quote " and [ \\ ']:
        value = _nested(depth, leaf)
        assert s.loads(s.dumps(value)) == value
    # depth counts the JSON written: a tagged tuple adds its tag object and list
    tagged = _nested(depth - 2, (1, 2)) if depth > 2 else (1, 2)
    assert s.loads(s.dumps(tagged)) == tagged


def test_json_nesting_over_max_depth_is_refused_both_ways() -> None:
    s = JsonSerializer(max_depth=10)
    assert s.loads(s.dumps(_nested(10))) == _nested(10)
    with pytest.raises(ck.SerializationError, match="deeper"):
        s.dumps(_nested(11))
    with pytest.raises(ck.SerializationError, match="deeper"):
        s.loads(JsonSerializer().dumps(_nested(11)))
    # brackets inside strings are not nesting
    wide = ["[" * 50, "{" * 50, "]" * 50, [[1]] * 30]
    assert s.loads(s.dumps(wide)) == wide


def test_json_depth_check_agrees_with_a_walk() -> None:
    import json
    import random

    from cachekit.serializers import _too_deep

    rng = random.Random(7)

    def make(d: int) -> Any:
        if d == 0 or rng.random() < 0.2:
            return rng.choice([1, "a[", "]]", 'x"{\\', "é{", None, '\\"[', "\ud800]"])
        if rng.random() < 0.5:
            return [make(d - 1) for _ in range(rng.randint(0, 3))]
        return {f"{i}[": make(d - 1) for i in range(rng.randint(0, 3))}

    def depth(v: Any) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    for _ in range(1500):
        value = make(rng.randint(0, 14))
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5)
        for limit in (1, 2, 3, 5, 8, 9, 12):
            data = text.encode("utf-8", "surrogatepass")
            assert _too_deep(data, limit) == (depth(value) > limit), (text, limit)


@pytest.mark.parametrize("bad", [0, -1, "10", 1.5])
def test_bad_limits_are_configuration_errors(bad: Any) -> None:
    with pytest.raises(ck.ConfigurationError):
        JsonSerializer(max_value_bytes=bad)
    with pytest.raises(ck.ConfigurationError):
        PickleSerializer(KEY, max_value_bytes=bad)
    if not isinstance(bad, str):
        with pytest.raises(ck.ConfigurationError):
            JsonSerializer(max_depth=int(bad) if bad != 1.5 else bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- fuzzing

_TAGS = [b"t", b"m", b"dt", b"d", b"tm", b"td", b"dec", b"uuid", b"b", b"s", b"fs", b"zz"]


def _mutations(rng: Any, data: bytes) -> list[bytes]:
    """Bit flips, truncations, insertions, splices and tag swaps of one payload."""
    out = []
    for _ in range(3):
        i = rng.randrange(len(data))
        out.append(data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :])
    out.append(data[: rng.randrange(len(data))])
    i = rng.randrange(len(data) + 1)
    out.append(data[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 4))) + data[i:])
    i = rng.randrange(len(data) + 1)
    out.append(data[:i] + rng.choice([b"[", b"{", b'"', b"]", b"}", b",", b"9" * 30]) + data[i:])
    if b'"__ck__":"' in data:
        head, _, rest = data.partition(b'"__ck__":"')
        _, _, tail = rest.partition(b'"')
        out.append(head + b'"__ck__":"' + rng.choice(_TAGS) + b'"' + tail)
        # a tag's value swapped for another JSON type
        if b'"v":' in tail:
            pre, _, post = tail.partition(b'"v":')
            swap = rng.choice([b"1", b"[1,2]", b'{"a":1}', b"null", b'"x"', b"1e999", b"-0"])
            out.append(
                head
                + b'"__ck__":"'
                + rest.partition(b'"')[0]
                + b'"'
                + pre
                + b'"v":'
                + swap
                + post[1:]
            )
    return out


def test_fuzzed_payloads_decode_to_a_value_or_serialization_error() -> None:
    import random

    rng = random.Random(20240506)
    json_ser, pickle_ser = JsonSerializer(), PickleSerializer(KEY)
    seeds = [json_ser.dumps(v) for v in VALUES]
    signed = [pickle_ser.dumps_for("ns:k", v) for v in VALUES[:12]]
    cases = 0
    for _ in range(25):
        for data in seeds:
            for mutated in _mutations(rng, data):
                cases += 1
                with contextlib.suppress(ck.SerializationError):
                    json_ser.loads(mutated)
        for data in signed:
            for mutated in _mutations(rng, data):
                cases += 1
                if mutated == data:
                    continue
                with pytest.raises(ck.SerializationError):
                    pickle_ser.loads_for("ns:k", mutated)
    assert cases > 5000
