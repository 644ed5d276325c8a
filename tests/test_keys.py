"""Keys: namespacing, hashing, and the keys of decorated calls (keys.py)."""

from __future__ import annotations

import datetime
import decimal
import enum
import inspect
import itertools
import random
import uuid
from typing import Any

import pytest

import cachekit as ck
from cachekit.keys import (
    HASH_MARK,
    MAX_KEY_LENGTH,
    ArgsKey,
    encode_key,
    namespace_prefix,
    stable_repr,
    validate_key,
)

# ---------------------------------------------------------------- namespacing


def test_namespace_join_is_unambiguous() -> None:
    assert namespace_prefix("a", 0) + "bc" != namespace_prefix("ab", 0) + "c"
    assert namespace_prefix("a:1", 0) + "x" != namespace_prefix("a", 1) + "x"
    # many splits of one string never collide
    text = "abc:1:def"
    seen = {namespace_prefix(text[:i], 0) + text[i:] for i in range(1, len(text))}
    assert len(seen) == len(text) - 1


def test_namespace_version_changes_the_prefix() -> None:
    assert namespace_prefix("app", 1) != namespace_prefix("app", 2)


def test_cache_keys_of_split_namespaces_do_not_collide() -> None:
    backend = ck.MemoryBackend()
    c1 = ck.Cache(backend, namespace="a")
    c2 = ck.Cache(backend, namespace="ab")
    c1.set("bc", 1)
    c2.set("c", 2)
    assert c1.full_key("bc") != c2.full_key("c")
    assert (c1.get("bc"), c2.get("c")) == (1, 2)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", [b"k", 1, None, ("a",), ""])
def test_validate_key_refuses_non_strings_and_empty(bad: object) -> None:
    with pytest.raises(ck.InvalidKeyError):
        validate_key(bad)


def test_validate_key_accepts_str_and_str_subclasses() -> None:
    class S(str):
        pass

    assert validate_key("k") == "k"
    out = validate_key(S("k"))
    assert out == "k"
    assert type(out) is str


# ---------------------------------------------------------------- hashing


def test_short_keys_are_unchanged() -> None:
    assert encode_key("user:42") == "user:42"
    assert encode_key("x" * MAX_KEY_LENGTH) == "x" * MAX_KEY_LENGTH


def test_long_keys_are_hashed_with_a_readable_prefix() -> None:
    key = "users:by-email:" + "x" * 500
    out = encode_key(key)
    assert out.startswith(HASH_MARK + "users:by-email:")
    assert len(out) < 120
    assert encode_key(key) == out  # deterministic
    # keys that share the readable prefix still differ
    assert encode_key(key + "y") != out
    assert encode_key(key[:-1] + "z") != out


def test_raw_key_starting_with_hash_mark_can_never_equal_a_hashed_key() -> None:
    long_key = "a" * (MAX_KEY_LENGTH + 1)
    hashed = encode_key(long_key)
    assert hashed.startswith(HASH_MARK)
    # a user who writes the hashed form as a raw key does not hit the hashed entry
    assert encode_key(hashed) != hashed
    assert encode_key(hashed).startswith(HASH_MARK)
    assert encode_key("~short") != "~short"
    assert encode_key("~short") != encode_key("~short2")


@pytest.mark.parametrize(
    "key",
    [
        "has space",
        "tab\there",
        "new\nline",
        "\r\nset x 0 0 1\r\n",
        "nul\x00",
        "del\x7f",
        "é",
        "キー",
    ],
)
def test_ascii_only_hashes_unsafe_characters(key: str) -> None:
    out = encode_key(key, ascii_only=True)
    assert out.startswith(HASH_MARK)
    assert all(0x21 <= ord(ch) <= 0x7E for ch in out), out
    assert encode_key(key) == key  # without ascii_only the key passes unchanged


def test_ascii_only_keeps_safe_keys_and_distinguishes_similar_unsafe_ones() -> None:
    assert encode_key("user:42", ascii_only=True) == "user:42"
    a, b = encode_key("a b", ascii_only=True), encode_key("a\tb", ascii_only=True)
    assert a != b  # both readable prefixes are "a_b"; the digest differs
    assert a.startswith(HASH_MARK + "a_b")
    assert encode_key("a_b", ascii_only=True) == "a_b"


# ---------------------------------------------------------------- call keys


def _key(func: Any, *args: Any, **kwargs: Any) -> str:
    return ArgsKey(func).builder()(args, kwargs)


def test_defaults_are_applied() -> None:
    def f(a: int, b: int = 2) -> None: ...

    assert _key(f, 1, 2) == _key(f, 1, b=2) == _key(f, a=1) == _key(f, 1) == _key(f, b=2, a=1)
    assert _key(f, 1, 3) != _key(f, 1)


def test_kwargs_order_does_not_matter() -> None:
    def f(a: int, b: int, c: int) -> None: ...

    keys = {_key(f, **dict(p)) for p in itertools.permutations([("a", 1), ("b", 2), ("c", 3)])}
    assert len(keys) == 1
    assert keys == {_key(f, 1, 2, 3)}


def test_var_args_and_kwargs() -> None:
    def f(a: int, *args: int, **kwargs: int) -> None: ...

    assert _key(f, 1, 2, 3) != _key(f, 1, 2)
    assert _key(f, 1, x=1, y=2) == _key(f, 1, y=2, x=1)
    assert _key(f, 1, x=1) != _key(f, 1, x=2)
    assert _key(f, 1, 2) != _key(f, 1, x=2)


def test_keyword_only_parameters() -> None:
    def f(a: int, *, b: int = 5) -> None: ...

    assert _key(f, 1) == _key(f, 1, b=5) == _key(f, a=1, b=5)
    assert _key(f, 1, b=6) != _key(f, 1)


def test_function_name_is_part_of_the_key() -> None:
    def f(a: int) -> None: ...

    def g(a: int) -> None: ...

    assert _key(f, 1) != _key(g, 1)
    assert "test_function_name_is_part_of_the_key.<locals>.f" in _key(f, 1)


def test_self_and_cls_are_left_out() -> None:
    class A:
        def m(self, x: int) -> None: ...

        @classmethod
        def c(cls, x: int) -> None: ...

    assert _key(A.m, A(), 1) == _key(A.m, A(), 1)
    assert _key(A.m, A(), 1) != _key(A.m, A(), 2)
    assert _key(A.m, A(), x=1) == _key(A.m, A(), 1)
    assert _key(A.c.__func__, A, 1) == _key(A.c.__func__, object, 1)


def test_type_distinctions() -> None:
    def f(a: object) -> None: ...

    def g(a: object, b: object) -> None: ...

    values = [1, "1", 1.0, True, b"1", None, "None", (1,), [1], frozenset({1}), {1}]
    assert len({_key(f, v) for v in values}) == len(values)
    assert len({_key(g, v, 0) for v in values}) == len(values)
    assert _key(f, 0) != _key(f, False)
    assert _key(f, "") != _key(f, None)


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Shade(enum.Enum):
    RED = 1


def test_enum_uuid_date_decimal_arguments() -> None:
    def f(a: object) -> None: ...

    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert _key(f, Color.RED) == _key(f, Color.RED)
    assert _key(f, Color.RED) != _key(f, Color.BLUE)
    assert _key(f, Color.RED) != _key(f, Shade.RED)
    assert _key(f, Color.RED) != _key(f, 1)
    assert _key(f, u) == _key(f, uuid.UUID(str(u)))
    assert _key(f, u) != _key(f, str(u))
    d = datetime.date(2024, 1, 2)
    assert _key(f, d) == _key(f, datetime.date(2024, 1, 2))
    assert _key(f, d) != _key(f, datetime.datetime(2024, 1, 2))
    assert _key(f, d) != _key(f, "2024-01-02")
    assert _key(f, decimal.Decimal("1.5")) != _key(f, 1.5)
    assert _key(f, decimal.Decimal("1.5")) == _key(f, decimal.Decimal("1.5"))


def test_containers_are_keyed_by_content() -> None:
    def f(a: object) -> None: ...

    assert _key(f, {"b": 1, "a": 2}) == _key(f, {"a": 2, "b": 1})
    assert _key(f, {1, 2, 3}) == _key(f, {3, 2, 1})
    assert _key(f, frozenset({1, 2})) != _key(f, {1, 2})
    assert _key(f, (1, (2, 3))) != _key(f, (1, [2, 3]))


def test_cache_key_protocol() -> None:
    class User:
        def __init__(self, uid: int) -> None:
            self.uid = uid

        def __cache_key__(self) -> int:
            return self.uid

    def f(a: object) -> None: ...

    assert _key(f, User(1)) == _key(f, User(1))
    assert _key(f, User(1)) != _key(f, User(2))
    assert _key(f, User(1)) != _key(f, 1)


@pytest.mark.parametrize("bad", [object(), lambda: 1, [object()], {"k": object()}])
def test_unkeyable_arguments_raise(bad: object) -> None:
    def f(a: object) -> None: ...

    def g(a: object, b: int = 1) -> None: ...

    with pytest.raises(ck.InvalidKeyError, match="cannot build a cache key"):
        _key(f, bad)
    with pytest.raises(ck.InvalidKeyError):
        _key(g, bad, 2)
    with pytest.raises(ck.InvalidKeyError):
        _key(g, a=bad)


def test_unkeyable_argument_through_the_decorator() -> None:
    cache = ck.Cache(ck.MemoryBackend())
    calls = []

    @cache.cached()
    def f(a: object) -> int:
        calls.append(a)
        return 1

    with pytest.raises(ck.InvalidKeyError):
        f(object())
    assert calls == []  # refused before the function ran


# ---------------------------------------------------------------- templates


def test_template_keys() -> None:
    def load_user(user_id: int, verbose: bool = False) -> None: ...

    build = ArgsKey(load_user, template="user:{user_id}").builder()
    assert build((42,), {}) == "user:42"
    assert build((), {"user_id": 42, "verbose": True}) == "user:42"


def test_template_attribute_and_index_access() -> None:
    class Obj:
        id = 7

    def f(obj: Obj, items: list[int]) -> None: ...

    build = ArgsKey(f, template="o:{obj.id}:{items[1]}").builder()
    assert build((Obj(), [1, 2]), {}) == "o:7:2"
    with pytest.raises(ck.InvalidKeyError):
        build((Obj(), [1]), {})  # index out of range at call time


def test_template_with_default_applied() -> None:
    def f(a: int, b: int = 2) -> None: ...

    build = ArgsKey(f, template="k:{a}:{b}").builder()
    assert build((1,), {}) == build((1, 2), {}) == build((), {"a": 1}) == "k:1:2"


def test_template_with_unknown_field_fails_at_decoration_time() -> None:
    cache = ck.Cache(ck.MemoryBackend())
    with pytest.raises(ck.InvalidKeyError, match="userid"):

        @cache.cached(key="user:{userid}")
        def load_user(user_id: int) -> None: ...

    with pytest.raises(ck.InvalidKeyError):

        @cache.writes(key="user:{nope.attr}")
        def save_user(user_id: int) -> None: ...


def test_stable_repr_refuses_plain_objects() -> None:
    with pytest.raises(ck.InvalidKeyError):
        stable_repr(object())


# ---------------------------------------------------------------- fast path == slow path


class _HasKey:
    def __init__(self, v: object) -> None:
        self.v = v

    def __cache_key__(self) -> object:
        return self.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _HasKey) and other.v == self.v

    __hash__ = None  # type: ignore[assignment]


class _MyStr(str):
    pass


_POOL: list[Any] = [
    0,
    1,
    -7,
    2**70,
    True,
    False,
    None,
    0.0,
    -0.0,
    1.5,
    float("inf"),
    "",
    "a",
    "1",
    "x y\n",
    "é",
    b"",
    b"\x00b",
    (),
    (1,),
    (1, "a"),
    ((1, 2), 3),
    [1, 2],
    [],
    {"a": 1},
    {1: "x", 2: (3,)},
    {1, 2},
    frozenset({"a"}),
    Color.RED,
    uuid.UUID(int=5),
    datetime.date(2020, 1, 1),
    datetime.datetime(2020, 1, 1, 12, 0),
    datetime.time(1, 2),
    datetime.timedelta(seconds=3),
    decimal.Decimal("1.10"),
    _HasKey(3),
    _HasKey((1, "x")),
    _MyStr("s"),
]


def _functions() -> list[Any]:
    def f0() -> None: ...

    def f1(a: Any) -> None: ...

    def f1d(a: Any = 5) -> None: ...

    def f2(a: Any, b: Any) -> None: ...

    def f2d(a: Any, b: Any = "d") -> None: ...

    def f3(a: Any, b: Any, c: Any = None) -> None: ...

    def f4(a: Any, b: Any, c: Any, d: Any) -> None: ...

    class K:
        def m1(self, a: Any) -> None: ...

        def m2(self, a: Any, b: Any = 1) -> None: ...

        def m0(self) -> None: ...

    return [f0, f1, f1d, f2, f2d, f3, f4, K.m1, K.m2, K.m0]


def _slow(func: Any, args: tuple[Any, ...]) -> str:
    """The key built by binding (what any non-fast call goes through)."""
    ak = ArgsKey(func)
    params = list(inspect.signature(func).parameters)
    # pass everything by keyword: never the fast path
    kwargs = dict(zip(params, args, strict=True))
    return ak.builder()((), kwargs)


def test_fast_path_and_slow_path_agree_for_many_calls() -> None:
    rng = random.Random(1234)
    checked = 0
    for func in _functions():
        n = len(inspect.signature(func).parameters)
        build = ArgsKey(func).builder()
        for _ in range(300 if n else 1):
            args = tuple(rng.choice(_POOL) for _ in range(n))
            fast = build(args, {})
            assert fast == _slow(func, args), (func.__qualname__, args)
            assert fast == ArgsKey(func)(args, {})
            # positional prefix + keywords for the rest: another slow-path shape
            if n >= 2:
                names = list(inspect.signature(func).parameters)
                mixed = build(args[:1], dict(zip(names[1:], args[1:], strict=True)))
                assert mixed == fast, (func.__qualname__, args)
            checked += 1
    assert checked > 2000


def test_fast_path_and_slow_path_agree_with_defaults_omitted() -> None:
    def f(a: Any, b: Any = "d") -> None: ...

    build = ArgsKey(f).builder()
    for v in _POOL:
        assert build((v,), {}) == build((v, "d"), {}) == build((), {"a": v})


def test_decorated_function_shares_one_entry_for_equivalent_calls() -> None:
    cache = ck.Cache(ck.MemoryBackend())
    calls: list[tuple[int, int]] = []

    @cache.cached()
    def f(a: int, b: int = 2) -> int:
        calls.append((a, b))
        return a + b

    assert f(1, 2) == f(1, b=2) == f(a=1) == f(1) == 3
    assert calls == [(1, 2)]
    assert f.key(1, 2) == f.key(a=1)  # type: ignore[attr-defined]


def test_compiled_templates_give_exactly_what_str_format_gives() -> None:
    import datetime
    import decimal
    import random

    from cachekit.keys import ArgsKey

    def f(a: object, b: object = 2, c: object = "x") -> None: ...

    templates = [
        "{a}", "user:{a}", "{a}:{b}", "k{a}-{b}-{c}!", "{c}{a}", "plain", "{a}{a}", "x{{y}}{a}",
    ]  # fmt: skip
    values = [
        0, -7, 3.5, True, None, "s p a c e", "ü", b"by", (1, 2), decimal.Decimal("1.10"),
        datetime.date(2026, 11, 26),
    ]  # fmt: skip
    rng = random.Random(7)
    for template in templates:
        build = ArgsKey(f, template=template).builder()
        for _ in range(60):
            n = rng.randrange(1, 4)
            args = tuple(rng.choice(values) for _ in range(n))
            kwargs = {}
            if n < 3 and rng.random() < 0.5:
                kwargs["c"] = rng.choice(values)
            full = (*args, *(2, "x")[len(args) - 1 :])  # defaults b=2, c="x" fill the rest
            bound = dict(zip(("a", "b", "c"), full, strict=True))
            bound.update(kwargs)
            assert build(args, kwargs) == template.format(**bound), (template, args, kwargs)
