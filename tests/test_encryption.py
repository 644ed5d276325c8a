"""Encryption at rest: EncryptedSerializer alone, then in a Cache on each backend."""

from __future__ import annotations

import base64
import os
import random
import sys
import zlib
from collections.abc import Callable
from typing import Any

import pytest

import cachekit as ck
from cachekit.encryption import EncryptedSerializer, key_id
from cachekit.serializers import JsonSerializer, PickleSerializer
from tests.test_serializers import VALUES, Point, _mutations, _same

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
K3 = b"\x07" * 32
MARKER = "PLAINTEXT-MARKER-4f1c"


def enc(*keys: bytes | str, **options: Any) -> EncryptedSerializer:
    return EncryptedSerializer(JsonSerializer(), keys=list(keys or (K1,)), **options)


# ---------------------------------------------------------------- the serializer alone


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_round_trip_keeps_the_type(value: Any) -> None:
    s = enc()
    assert _same(s.loads_for("ns:1:k", s.dumps_for("ns:1:k", value)), value)
    assert _same(s.loads(s.dumps(value)), value)


def test_payload_layout_and_no_plaintext() -> None:
    s = enc()
    data = s.dumps_for("k", {"secret": MARKER})
    assert data[:1] == b"e"
    assert data[1:9] == key_id(K1)
    assert len(data) == 1 + 8 + 12 + len(JsonSerializer().dumps({"secret": MARKER})) + 16
    assert MARKER.encode() not in data
    assert K1 not in data
    # a fresh nonce per value: the same value never encrypts the same way twice
    assert s.dumps_for("k", {"secret": MARKER}) != data


def test_bound_to_the_key() -> None:
    s = enc()
    data = s.dumps_for("app:v1:user:1", {"role": "user"})
    for other in ["app:v1:user:2", "app:v2:user:1", "", "app:v1:user:1\x00"]:
        with pytest.raises(ck.SerializationError, match="another key"):
            s.loads_for(other, data)
    # the plain form and the bound form never read each other
    with pytest.raises(ck.SerializationError):
        s.loads(data)
    with pytest.raises(ck.SerializationError):
        s.loads_for("", s.dumps({"role": "user"}))


def test_every_flipped_bit_and_every_truncation_is_refused() -> None:
    s = enc()
    data = s.dumps_for("k", [1, "two"])
    for i in range(len(data)):
        for bit in (0, 7):
            bad = data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]
            with pytest.raises(ck.SerializationError):
                s.loads_for("k", bad)
    for n in range(len(data)):
        with pytest.raises(ck.SerializationError):
            s.loads_for("k", data[:n])
    with pytest.raises(ck.SerializationError):
        s.loads_for("k", data + b"\x00")


def test_fuzzed_payloads_are_refused() -> None:
    rng = random.Random(99)
    s = enc(compress_over=0)
    seeds = [s.dumps_for("k", v) for v in VALUES]
    for _ in range(10):
        for data in seeds:
            for bad in _mutations(rng, data):
                if bad != data:
                    with pytest.raises(ck.SerializationError):
                        s.loads_for("k", bad)


def test_rotation() -> None:
    old, new = enc(K1), enc(K2, K1)
    assert new.key_ids == [key_id(K2).hex(), key_id(K1).hex()]
    written_old = old.dumps_for("k", "before")
    assert new.loads_for("k", written_old) == "before"  # old entries stay readable
    written_new = new.dumps_for("k", "after")
    assert written_new[1:9] == key_id(K2)  # the first key encrypts
    with pytest.raises(ck.SerializationError, match="unknown key id " + key_id(K2).hex()):
        old.loads_for("k", written_new)
    # the old key dropped: its entries are unreadable
    with pytest.raises(ck.SerializationError, match="unknown key id"):
        enc(K2).loads_for("k", written_old)


def test_a_payload_re_labelled_with_another_key_id_is_refused() -> None:
    s = enc(K1, K2)
    data = s.dumps_for("k", "v")
    relabelled = data[:1] + key_id(K2) + data[9:]
    with pytest.raises(ck.SerializationError, match="does not authenticate"):
        s.loads_for("k", relabelled)


def test_key_formats() -> None:
    forms: list[bytes | str] = [
        K1,
        bytearray(K1),  # type: ignore[list-item]
        K1.hex(),
        K1.hex().upper(),
        base64.b64encode(K1).decode(),
        base64.urlsafe_b64encode(K1).decode().rstrip("="),
        "  " + base64.b64encode(K1).decode() + "\n",
    ]
    for form in forms:
        assert enc(form).key_ids == [key_id(K1).hex()]
    generated = EncryptedSerializer.generate_key()
    assert len(base64.b64decode(generated)) == 32
    assert enc(generated).loads_for("k", enc(generated).dumps_for("k", 1)) == 1


SECRET_31 = b"s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3c"


@pytest.mark.parametrize(
    "key",
    [
        b"",
        b"x" * 16,
        SECRET_31,
        b"x" * 33,
        SECRET_31.hex(),
        "0" * 62,
        "z" * 64,
        "not base64 at all!",
        base64.b64encode(SECRET_31).decode(),
        12345,
        None,
    ],
    ids=lambda k: f"{type(k).__name__}-{len(k) if isinstance(k, (bytes, str)) else k}",
)
def test_wrong_keys_are_refused_without_echoing_them(key: Any) -> None:
    with pytest.raises(ck.ConfigurationError) as info:
        EncryptedSerializer(JsonSerializer(), keys=[K1, key])
    text = str(info.value)
    assert "#1" in text
    if isinstance(key, (bytes, str)) and len(key) >= 8:
        shown = key.decode(errors="replace") if isinstance(key, bytes) else key
        assert shown not in text


@pytest.mark.parametrize("keys", [[], (), K1, K1.hex()])
def test_keys_must_be_a_non_empty_list(keys: Any) -> None:
    with pytest.raises(ck.ConfigurationError):
        EncryptedSerializer(JsonSerializer(), keys=keys)


@pytest.mark.parametrize(
    "options",
    [{"compress_over": -1}, {"compress_over": "10"}, {"max_ratio": 0}, {"max_value_bytes": 0}],
)
def test_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ck.ConfigurationError):
        enc(**options)


def test_inner_must_make_bytes() -> None:
    with pytest.raises(ck.ConfigurationError):
        EncryptedSerializer(ck.PassthroughSerializer(), keys=[K1])
    with pytest.raises(ck.ConfigurationError):
        EncryptedSerializer(object(), keys=[K1])  # type: ignore[arg-type]


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    b1, b2 = base64.b64encode(K1).decode(), K2.hex()
    s = EncryptedSerializer.from_env(JsonSerializer(), environ={"CACHEKIT_KEYS": f" {b2}, {b1} ,"})
    assert s.key_ids == [key_id(K2).hex(), key_id(K1).hex()]
    monkeypatch.setenv("MY_KEYS", b1)
    assert EncryptedSerializer.from_env(JsonSerializer(), "MY_KEYS").key_ids == [key_id(K1).hex()]
    for environ in [{}, {"CACHEKIT_KEYS": ""}, {"CACHEKIT_KEYS": " , "}]:
        with pytest.raises(ck.ConfigurationError, match="CACHEKIT_KEYS"):
            EncryptedSerializer.from_env(JsonSerializer(), environ=environ)
    with pytest.raises(ck.ConfigurationError, match="#0"):
        EncryptedSerializer.from_env(JsonSerializer(), environ={"CACHEKIT_KEYS": "short"})


def test_repr_and_errors_never_show_a_key() -> None:
    s = enc(K2, K1)
    shown = repr(s)
    assert key_id(K2).hex() in shown
    for key in (K1, K2):
        assert key.hex() not in shown and repr(key) not in shown
        assert base64.b64encode(key).decode() not in shown
    with pytest.raises(ck.SerializationError) as info:
        s.loads_for("other", s.dumps_for("k", 1))
    assert K1.hex() not in str(info.value) and K2.hex() not in str(info.value)


def test_missing_cryptography_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ck.ConfigurationError, match=r"pip install 'cachekit-py\[encryption\]'"):
        enc()


def test_inner_key_bound_serializer_gets_the_key() -> None:
    s = EncryptedSerializer(PickleSerializer(b"p" * 32), keys=[K1])
    data = s.dumps_for("k", Point(1, 2))
    assert s.loads_for("k", data) == Point(1, 2)


# ---------------------------------------------------------------- compression and caps


def test_compression_over_a_threshold() -> None:
    s = enc(compress_over=256)
    rows = [{"id": i, "name": f"user {i}", "email": f"user{i}@example.com"} for i in range(50)]
    small, big = s.dumps_for("k", rows[0]), s.dumps_for("k", rows)
    assert small[:1] == b"e" and big[:1] == b"z"
    assert s.loads_for("k", big) == rows and s.loads_for("k", small) == rows[0]
    assert len(big) < len(enc().dumps_for("k", rows)) / 2
    # incompressible bytes are stored as they are
    raw = EncryptedSerializer(PickleSerializer(b"p" * 32), keys=[K1], compress_over=256)
    noise = os.urandom(2000)
    assert raw.dumps_for("k", noise)[:1] == b"e"
    assert raw.loads_for("k", raw.dumps_for("k", noise)) == noise


def _forge(s: EncryptedSerializer, key: str, head: bytes, plain: bytes) -> bytes:
    """A payload that authenticates (as if written by a key holder) holding ``plain``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    kid = key_id(K1)
    return head + kid + nonce + AESGCM(K1).encrypt(nonce, plain, s._aad(head, kid, key))


def test_decompression_is_bounded() -> None:
    s = enc(compress_over=0)
    inner = b'j"' + b"0" * 5_000_000 + b'"'  # deflates about 1000:1
    bomb = _forge(s, "k", b"z", zlib.compress(inner, 9))
    with pytest.raises(ck.SerializationError, match="inflates past"):
        s.loads_for("k", bomb)
    # within the ratio but over max_value_bytes
    capped = enc(compress_over=0, max_value_bytes=1000, max_ratio=10_000)
    with pytest.raises(ck.SerializationError, match="inflates past 1000"):
        capped.loads_for("k", _forge(capped, "k", b"z", zlib.compress(inner[:2000])))
    # corrupt or trailing compressed data
    for packed in [b"not zlib", zlib.compress(b'j"x"')[:-2], zlib.compress(b'j"x"') + b"extra"]:
        with pytest.raises(ck.SerializationError):
            s.loads_for("k", _forge(s, "k", b"z", packed))
    # a writer never compresses past the ratio a reader accepts
    value = "0" * 100_000
    data = enc(compress_over=0, max_ratio=10).dumps_for("k", value)
    assert data[:1] == b"e"
    assert enc(max_ratio=10).loads_for("k", data) == value


def test_max_value_bytes() -> None:
    s = enc(max_value_bytes=100)
    assert s.loads_for("k", s.dumps_for("k", "x" * 90)) == "x" * 90
    with pytest.raises(ck.ValueTooLargeError):
        s.dumps_for("k", "x" * 100)
    with pytest.raises(ck.SerializationError, match="over the cap"):
        s.loads_for("k", enc().dumps_for("k", "x" * 200))


def test_a_crafted_inner_payload_is_a_serialization_error() -> None:
    s = enc()
    data = _forge(s, "k", b"e", b'J{"__ck__":"uuid","v":123}')
    with pytest.raises(ck.SerializationError):
        s.loads_for("k", data)


# ---------------------------------------------------------------- through a Cache, every backend

BACKENDS = ("memory", "redis", "memcached")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, make_backend: Callable[..., Any]) -> ck.Backend:
    return make_backend(request.param)  # type: ignore[no-any-return]


def _cache(backend: ck.Backend, namespace: str, serializer: Any) -> ck.Cache:
    return ck.Cache(backend, namespace=namespace, ttl=60, serializer=serializer)


def _decode_errors(cache: ck.Cache) -> int:
    return cache.stats().errors_by_operation.get("decode", 0)


def test_cache_round_trip(backend: ck.Backend, namespace: str) -> None:
    cache = _cache(backend, namespace, enc(compress_over=64))
    value = {"secret": MARKER, "rows": [{"id": i, "name": MARKER} for i in range(20)]}
    cache.set("a", value)
    cache.set_many({"b": [1, 2], "c": "three"})
    assert cache.get("a") == value
    assert cache.get_many(["a", "b", "c", "absent"]) == {"a": value, "b": [1, 2], "c": "three"}
    assert cache.get_or_load("d", lambda: 4) == 4
    assert cache.get("d") == 4

    @cache.cached()
    def load(n: int) -> dict[str, Any]:
        return {"n": n, "secret": MARKER}

    assert load(1) == load(1) == {"n": 1, "secret": MARKER}
    assert _decode_errors(cache) == 0
    for key in ("a", "b", "c", "d"):
        raw = backend.get(cache.full_key(key))
        assert isinstance(raw, bytes) and raw[:1] in (b"e", b"z")
        assert MARKER.encode() not in raw  # nothing readable at rest
    assert cache.get("a") == value


def test_cache_rotation(backend: ck.Backend, namespace: str) -> None:
    old = _cache(backend, namespace, enc(K1))
    new = _cache(backend, namespace, enc(K2, K1))
    old.set("written-old", "o")
    assert new.get("written-old") == "o"  # readable after the new key is added first
    new.set("written-new", "n")
    assert backend.get(new.full_key("written-new"))[1:9] == key_id(K2)
    # an old-key-only reader sees a miss, counted as a decode error
    assert old.get("written-new", "miss") == "miss"
    assert old.get_many(["written-new", "written-old"]) == {"written-old": "o"}
    assert _decode_errors(old) == 2
    assert _decode_errors(new) == 0


def test_cache_forged_entries_are_misses(backend: ck.Backend, namespace: str) -> None:
    cache = _cache(backend, namespace, enc(K1))
    cache.set("admin", {"role": "admin"})
    cache.set("user", {"role": "user"})
    good = backend.get(cache.full_key("user"))
    stranger = enc(K3).dumps_for(cache.full_key("victim"), {"role": "admin"})
    forged = {
        "moved": backend.get(cache.full_key("admin")),  # copied under another key
        "flipped": good[:-5] + bytes([good[-5] ^ 1]) + good[-4:],
        "truncated": good[:-1],
        "unknown-key": enc(K3).dumps_for(cache.full_key("unknown-key"), {"role": "admin"}),
        "victim": stranger,
        "plain-json": JsonSerializer().dumps({"role": "admin"}),
    }
    for key, raw in forged.items():
        backend.set(cache.full_key(key), raw, 60)
    before = _decode_errors(cache)
    for key in forged:
        assert cache.get(key, "miss") == "miss", key
    assert _decode_errors(cache) - before == len(forged)
    assert cache.get_many(list(forged)) == {}
    assert _decode_errors(cache) - before == 2 * len(forged)

    loads: list[str] = []

    @cache.cached(key="{name}")
    def lookup(name: str) -> dict[str, str]:
        loads.append(name)
        return {"role": "fresh"}

    assert lookup("moved") == {"role": "fresh"}  # the loader replaces the forged entry
    assert loads == ["moved"]
    assert cache.get("moved") == {"role": "fresh"}
    assert cache.get("user") == {"role": "user"}  # the genuine entries are untouched
    assert cache.get("admin") == {"role": "admin"}


def test_cache_entry_from_an_older_namespace_version_is_a_miss(
    backend: ck.Backend, namespace: str
) -> None:
    cache = _cache(backend, namespace, enc(K1))
    cache.set("k", "before clear")
    stale = backend.get(cache.full_key("k"))
    old_full = cache.full_key("k")
    cache.clear()
    assert cache.full_key("k") != old_full  # the version is part of the bound key
    backend.set(cache.full_key("k"), stale, 60)
    assert cache.get("k", "miss") == "miss"
    assert _decode_errors(cache) == 1


def test_cache_signed_pickle_is_bound_to_its_key(backend: ck.Backend, namespace: str) -> None:
    cache = _cache(backend, namespace, PickleSerializer(b"signing-key-of-32-bytes-long-xx"))
    cache.set("admin", Point(1, 1))
    cache.set("user", Point(2, 2))
    assert cache.get("admin") == Point(1, 1)
    assert backend.get(cache.full_key("admin"))[:1] == b"P"
    backend.set(cache.full_key("user"), backend.get(cache.full_key("admin")), 60)
    assert cache.get("user", "miss") == "miss"
    assert _decode_errors(cache) == 1


def test_cache_crafted_json_entry_is_a_miss(backend: ck.Backend, namespace: str) -> None:
    cache = _cache(backend, namespace, JsonSerializer())
    backend.set(cache.full_key("k"), b'J{"__ck__":"uuid","v":123}', 60)
    backend.set(cache.full_key("deep"), b"j" + b"[" * 5000 + b"]" * 5000, 60)
    assert cache.get("k", "miss") == "miss"
    assert cache.get_many(["k", "deep"]) == {}
    assert cache.get_or_load("deep", lambda: "loaded") == "loaded"
    assert _decode_errors(cache) == 4

    @cache.cached(key="crafted:{n}")
    def load(n: int) -> str:
        return f"fresh {n}"

    backend.set(cache.full_key("crafted:1"), b'J{"__ck__":"b","v":12}', 60)
    assert load(1) == "fresh 1"
    assert _decode_errors(cache) == 5
    assert load(1) == "fresh 1"  # the loaded value replaced the crafted entry
    assert _decode_errors(cache) == 5


def test_cache_from_url_with_an_encrypted_serializer(redis_url: str, namespace: str) -> None:
    cache = ck.Cache.from_url(redis_url, namespace=namespace, serializer=enc(K1))
    try:
        cache.set("k", {"secret": MARKER})
        assert cache.get("k") == {"secret": MARKER}
        assert MARKER.encode() not in cache.backend.get(cache.full_key("k"))
    finally:
        cache.clear()
        cache.close()


def test_an_inner_decode_error_never_quotes_the_decrypted_value() -> None:
    s = enc()
    # authenticates, but the inner JSON fails, quoting its input in its own message
    data = _forge(s, "k", b"e", b'J{"__ck__":"dt","v":"SECRET-4242"}')
    with pytest.raises(ck.SerializationError) as info:
        s.loads_for("k", data)
    assert "SECRET-4242" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "ValueError" in str(info.value) or "SerializationError" in str(info.value)
    with pytest.raises(ck.SerializationError) as plain:
        JsonSerializer().loads(b'J{"__ck__":"dt","v":"SECRET-4242"}')
    assert "SECRET-4242" in str(plain.value)  # the control: the inner message does quote it
