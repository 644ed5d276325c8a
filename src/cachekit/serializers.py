"""Serializers turn values into bytes and back; JSON by default, signed pickle on request.

Every payload starts with one format byte, so bytes written by another
serializer (or planted by someone else) are refused with
``SerializationError`` instead of being misread:

- ``j`` plain JSON (the value held only JSON-native types);
- ``J`` tagged JSON (datetime, date, time, Decimal, UUID, bytes, tuple, set,
  frozenset and dicts with non-string keys come back as the type that went in);
- ``p`` HMAC-SHA256 signature + pickle, from ``PickleSerializer.dumps`` (not key-bound);
- ``P`` the same, with the full cache key under the signature, from
  ``PickleSerializer.dumps_for`` (what a ``Cache`` writes);
- ``e`` / ``z`` AES-256-GCM, from ``cachekit.encryption.EncryptedSerializer``.

Decoding is bounded and total: a payload over ``max_value_bytes``, JSON nested
deeper than ``max_depth``, or any malformed input raises ``SerializationError``
(cause chained), never another exception.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import hmac
import itertools
import json
import pickle
import re
import uuid
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigurationError, SerializationError, ValueTooLargeError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_VALUE_BYTES",
    "JsonSerializer",
    "KeyBoundSerializer",
    "PassthroughSerializer",
    "PickleSerializer",
    "Serializer",
]


#: Largest payload a serializer encodes or decodes unless told otherwise (64 MiB).
DEFAULT_MAX_VALUE_BYTES = 64 * 1024 * 1024
#: Deepest nesting of JSON arrays and objects decoded unless told otherwise.
DEFAULT_MAX_DEPTH = 100


def check_size(data: bytes, limit: int | None, what: str) -> None:
    """Raise ``SerializationError`` when a payload to decode is over ``limit`` bytes."""
    if limit is not None and len(data) > limit:
        raise SerializationError(f"{what} payload of {len(data)} bytes is over the cap of {limit}")


def check_limit(limit: int | None) -> int | None:
    """Validate a ``max_value_bytes`` option (a positive int, or None for no cap)."""
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise ConfigurationError(f"max_value_bytes must be a positive int or None, not {limit!r}")
    return limit


def as_bytes(data: Any) -> bytes:
    """Return ``data`` as ``bytes``; raise ``SerializationError`` for anything else."""
    if type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise SerializationError(f"payload is a {type(data).__qualname__}, not bytes")


@runtime_checkable
class Serializer(Protocol):
    """Encodes values to bytes and decodes them back."""

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; raise ``SerializationError`` if it cannot be encoded."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode ``data``; raise ``SerializationError`` if it is not ours or is corrupt."""
        ...


@runtime_checkable
class KeyBoundSerializer(Protocol):
    """A serializer whose payload is bound to the full backend key it is stored under.

    A cache calls ``dumps_for`` / ``loads_for`` instead of ``dumps`` / ``loads``
    when its serializer has them, passing the full backend key (namespace and
    version included), so a payload copied under another key fails to decode
    (signed pickle, encryption).
    """

    def dumps_for(self, key: str, value: Any) -> bytes:
        """Encode ``value`` for storage under ``key``."""
        ...

    def loads_for(self, key: str, data: bytes) -> Any:
        """Decode ``data`` read from ``key``; raise ``SerializationError`` if not bound to it."""
        ...


class PassthroughSerializer:
    """Keeps values as the objects they are; for the in-process backend only.

    Reads return the very object that was stored: do not mutate it.
    """

    def dumps(self, value: Any) -> Any:
        """Return ``value`` unchanged."""
        return value

    def loads(self, data: Any) -> Any:
        """Return ``data`` unchanged."""
        return data


# The C scanner behind json.loads, without its per-call whitespace handling: our
# payloads have none, and checking that the value ends exactly at the end of the
# payload keeps decoding strict. Almost half the cost of json.loads per value.
_json_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


# A JSON string (escapes included), so brackets inside strings are not counted.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# Everything but brackets and quotes is dropped; both kinds of bracket become [ ].
_DROP = bytes(c for c in range(256) if c not in b'[]{}"')
_DROP_ALL = bytes(c for c in range(256) if c not in b"[]{}")
_SQUARE = bytes.maketrans(b"{}", b"[]")
_PASSES = 8


def _too_deep(data: bytes, limit: int) -> bool:
    """Whether the arrays and objects of the JSON in ``data`` nest deeper than ``limit``."""
    if len(data) <= 2 * limit:
        return False  # nesting deeper than limit takes more brackets than that
    if b"\\" in data:  # escapes out first: an escaped quote does not end a string
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = data.translate(_SQUARE, _DROP)  # brackets and quotes, at C speed
    if skeleton.count(b"[") <= limit:
        return False  # the usual case
    quotes = skeleton.count(b'"')
    # Strings with no bracket inside are "" here; if every quote pairs up that way,
    # dropping the quotes leaves the structure. Else strip the strings exactly.
    if quotes and skeleton.count(b'""') * 2 == quotes:
        skeleton = skeleton.translate(None, b'"')
    elif quotes:
        skeleton = _JSON_STRING.sub(b"", data).translate(_SQUARE, _DROP_ALL)
    # each pass drops exactly the innermost pairs: shallow values (the usual lists of
    # rows) are done in a few passes at C speed; deeper ones get one exact walk
    passes = min(limit, _PASSES)
    for _ in range(passes):
        if not skeleton:
            return False
        skeleton = skeleton.replace(b"[]", b"")
    steps = (1 if c == 91 else -1 for c in skeleton)  # 91 is "["
    return max(itertools.accumulate(steps), default=0) + passes > limit


def _scan_exact(text: str) -> Any:
    try:
        value, end = _json_scan(text, 0)
    except StopIteration as exc:  # no JSON value at all
        raise SerializationError("corrupt JSON payload: no value") from exc
    if end != len(text):
        raise SerializationError(f"corrupt JSON payload: trailing data at {end}")
    return value


_TAG = "__ck__"
_NATIVE = frozenset({str, int, float, bool, type(None)})


def _tag(value: Any) -> tuple[Any, bool]:
    """Return a JSON-native form of ``value`` and whether any tag was needed."""
    t = type(value)
    if t in _NATIVE:
        return value, False
    if t is list:
        out, tagged = [], False
        for v in value:
            e, tg = _tag(v)
            out.append(e)
            tagged |= tg
        return out, tagged
    if t is dict:
        # str subclasses (e.g. SQLAlchemy's quoted_name in row mappings) are JSON keys too
        if all(isinstance(k, str) for k in value) and _TAG not in value:
            d, tagged = {}, False
            for k, v in value.items():
                d[k], tg = _tag(v)
                tagged |= tg
            return d, tagged
        return {_TAG: "m", "v": [[_tag(k)[0], _tag(v)[0]] for k, v in value.items()]}, True
    if t is tuple:
        return {_TAG: "t", "v": [_tag(v)[0] for v in value]}, True
    if t is datetime.datetime:
        return {_TAG: "dt", "v": value.isoformat()}, True
    if t is datetime.date:
        return {_TAG: "d", "v": value.isoformat()}, True
    if t is datetime.time:
        return {_TAG: "tm", "v": value.isoformat()}, True
    if t is datetime.timedelta:
        return {_TAG: "td", "v": [value.days, value.seconds, value.microseconds]}, True
    if t is decimal.Decimal:
        return {_TAG: "dec", "v": str(value)}, True
    if t is uuid.UUID:
        return {_TAG: "uuid", "v": str(value)}, True
    if t is bytes or t is bytearray:
        return {_TAG: "b", "v": base64.b64encode(value).decode("ascii")}, True
    if t is set or t is frozenset:
        return {_TAG: "fs" if t is frozenset else "s", "v": [_tag(v)[0] for v in value]}, True
    raise SerializationError(
        f"JSON serializer cannot encode a value of type {t.__qualname__}; convert it to "
        "dict/list/str/int/float/bool/None (or a supported tagged type), or configure "
        "PickleSerializer with a signing key"
    )


def _untag(value: Any) -> Any:
    t = type(value)
    if t is list:
        return [_untag(v) for v in value]
    if t is not dict:
        return value
    tag = value.get(_TAG)
    if tag is None:
        return {k: _untag(v) for k, v in value.items()}
    v = value["v"]
    if tag == "t":
        return tuple(_untag(x) for x in v)
    if tag == "m":
        return {_hashable(_untag(k)): _untag(x) for k, x in v}
    if tag == "dt":
        return datetime.datetime.fromisoformat(v)
    if tag == "d":
        return datetime.date.fromisoformat(v)
    if tag == "tm":
        return datetime.time.fromisoformat(v)
    if tag == "td":
        return datetime.timedelta(days=v[0], seconds=v[1], microseconds=v[2])
    if tag == "dec":
        return decimal.Decimal(v)
    if tag == "uuid":
        return uuid.UUID(v)
    if tag == "b":
        return base64.b64decode(v, validate=True)
    if tag == "s":
        return {_untag(x) for x in v}
    if tag == "fs":
        return frozenset(_untag(x) for x in v)
    raise SerializationError(f"unknown JSON tag {tag!r}")


def _hashable(value: Any) -> Any:
    return tuple(value) if type(value) is list else value


class JsonSerializer:
    """JSON with type tags, so a value comes back as the type it went in.

    Plain JSON-native values (the common case) are encoded with no tagging
    overhead and decoded with a single scan. Payloads over ``max_value_bytes``
    (``None``: no cap) and nesting deeper than ``max_depth`` are refused both
    ways, so whatever this serializer writes it can read back.
    """

    def __init__(
        self,
        ensure_ascii: bool = False,
        *,
        max_value_bytes: int | None = DEFAULT_MAX_VALUE_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        if not isinstance(max_depth, int) or max_depth < 1:
            raise ConfigurationError(f"max_depth must be a positive int, not {max_depth!r}")
        self._ensure_ascii = ensure_ascii
        self.max_value_bytes = check_limit(max_value_bytes)
        self.max_depth = max_depth

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` as (tagged) JSON bytes."""
        try:
            native, tagged = _tag(value)
        except RecursionError as exc:  # circular or absurdly deep structures
            raise SerializationError(f"JSON serializer cannot encode value: {exc}") from exc
        try:
            text = json.dumps(native, ensure_ascii=self._ensure_ascii, separators=(",", ":"))
        except (ValueError, TypeError) as exc:  # circular references
            raise SerializationError(f"JSON serializer cannot encode value: {exc}") from exc
        data = (b"J" if tagged else b"j") + text.encode("utf-8", "surrogatepass")
        if _too_deep(data, self.max_depth):
            raise SerializationError(f"value nests deeper than max_depth={self.max_depth}")
        limit = self.max_value_bytes
        if limit is not None and len(data) > limit:
            raise ValueTooLargeError(len(data), limit)
        return data

    def loads(self, data: bytes) -> Any:
        """Decode bytes produced by ``dumps``; anything else raises ``SerializationError``."""
        data = as_bytes(data)
        if not data:
            raise SerializationError("empty payload")
        check_size(data, self.max_value_bytes, "JSON")
        head = data[:1]
        if head != b"j" and head != b"J":
            raise SerializationError(
                f"payload is not cachekit JSON (format byte {head!r}); refusing to decode it"
            )
        try:
            if _too_deep(data, self.max_depth):
                raise SerializationError(f"JSON payload nests deeper than {self.max_depth}")
            # decoding to str first skips json.loads' byte-encoding detection (~25 % of a hit)
            value = _scan_exact(data[1:].decode("utf-8", "surrogatepass"))
            return value if head == b"j" else _untag(value)
        except SerializationError:
            raise
        except Exception as exc:
            # a known tag holding the wrong type (AttributeError, TypeError, ...), bad
            # Decimal or timedelta (ArithmeticError), an int over Python's digit limit
            # (ValueError), absurd nesting (RecursionError): every one is a corrupt entry
            raise SerializationError(f"corrupt JSON payload: {type(exc).__name__}: {exc}") from exc


class PickleSerializer:
    """Pickle signed with HMAC-SHA256; the signature is checked before unpickling.

    Only use it when every writer of the cache is trusted to hold ``key``. The
    algorithm is fixed here, never read from the payload.

    A ``Cache`` calls ``dumps_for`` / ``loads_for``: the signature then covers
    the full cache key too, so an entry copied under another key is refused.
    Plain ``dumps`` / ``loads`` (for direct use) are not bound to any key, and
    the two formats never read each other.
    """

    _MAC_LEN = 32

    def __init__(
        self,
        key: bytes,
        protocol: int = pickle.HIGHEST_PROTOCOL,
        *,
        max_value_bytes: int | None = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        if not isinstance(key, bytes) or len(key) < 16:
            raise ConfigurationError("PickleSerializer needs a secret key of at least 16 bytes")
        self._key = key
        self._protocol = protocol
        self.max_value_bytes = check_limit(max_value_bytes)

    def __repr__(self) -> str:
        return f"PickleSerializer(protocol={self._protocol})"  # never the key

    def _mac(self, head: bytes, key: str | None, body: bytes) -> bytes:
        mac = hmac.new(self._key, head, hashlib.sha256)
        if key is not None:
            # length-prefixed, so no split of key + body can be read as another one
            k = key.encode("utf-8", "surrogatepass")
            mac.update(len(k).to_bytes(4, "big"))
            mac.update(k)
        mac.update(body)
        return mac.digest()

    def _dump(self, head: bytes, key: str | None, value: Any) -> bytes:
        try:
            body = pickle.dumps(value, protocol=self._protocol)
        except Exception as exc:  # pickle raises many types (PicklingError, TypeError, ...)
            raise SerializationError(f"cannot pickle value: {exc}") from exc
        limit = self.max_value_bytes
        if limit is not None and 1 + self._MAC_LEN + len(body) > limit:
            raise ValueTooLargeError(1 + self._MAC_LEN + len(body), limit)
        return head + self._mac(head, key, body) + body

    def _load(self, head: bytes, key: str | None, data: Any) -> Any:
        data = as_bytes(data)
        if data[:1] != head or len(data) < 1 + self._MAC_LEN:
            kind = "key-bound" if key is not None else "plain"
            raise SerializationError(f"payload is not a {kind} signed cachekit pickle")
        check_size(data, self.max_value_bytes, "pickle")
        mac, body = data[1 : 1 + self._MAC_LEN], data[1 + self._MAC_LEN :]
        if not hmac.compare_digest(mac, self._mac(head, key, body)):
            raise SerializationError("pickle signature mismatch; refusing to unpickle")
        try:
            return pickle.loads(body)
        except Exception as exc:
            raise SerializationError(f"cannot unpickle value: {exc}") from exc

    def dumps(self, value: Any) -> bytes:
        """Pickle and sign ``value``, bound to no key (direct use)."""
        return self._dump(b"p", None, value)

    def loads(self, data: bytes) -> Any:
        """Verify the signature of a ``dumps`` payload, then unpickle it."""
        return self._load(b"p", None, data)

    def dumps_for(self, key: str, value: Any) -> bytes:
        """Pickle ``value`` and sign it together with the full cache ``key``."""
        return self._dump(b"P", key, value)

    def loads_for(self, key: str, data: bytes) -> Any:
        """Unpickle ``data`` read from ``key`` if its signature covers that key."""
        return self._load(b"P", key, data)
