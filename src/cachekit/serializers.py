"""Serializers turn values into bytes and back; JSON by default, signed pickle on request.

Every payload starts with one format byte, so bytes written by another
serializer (or planted by someone else) are refused with
``SerializationError`` instead of being misread:

- ``j`` plain JSON (the value held only JSON-native types);
- ``J`` tagged JSON (datetime, date, time, Decimal, UUID, bytes, tuple, set,
  frozenset and dicts with non-string keys come back as the type that went in);
- ``p`` HMAC-SHA256 signature + pickle, only from ``PickleSerializer``.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import hmac
import json
import pickle
import uuid
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigurationError, SerializationError

__all__ = [
    "JsonSerializer",
    "KeyBoundSerializer",
    "PassthroughSerializer",
    "PickleSerializer",
    "Serializer",
]


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
    overhead and decoded with a single ``json.loads``.
    """

    def __init__(self, ensure_ascii: bool = False) -> None:
        self._ensure_ascii = ensure_ascii

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
        return (b"J" if tagged else b"j") + text.encode("utf-8", "surrogatepass")

    def loads(self, data: bytes) -> Any:
        """Decode bytes produced by ``dumps``."""
        if not data:
            raise SerializationError("empty payload")
        head = data[:1]
        try:
            # decoding to str first skips json.loads' byte-encoding detection (~25 % of a hit)
            if head == b"j":
                return _scan_exact(data[1:].decode("utf-8", "surrogatepass"))
            if head == b"J":
                return _untag(_scan_exact(data[1:].decode("utf-8", "surrogatepass")))
        except (ValueError, LookupError, TypeError, ArithmeticError, RecursionError) as exc:
            # ArithmeticError: bad Decimal / timedelta overflow; RecursionError: absurd nesting
            raise SerializationError(f"corrupt JSON payload: {exc}") from exc
        raise SerializationError(
            f"payload is not cachekit JSON (format byte {head!r}); refusing to decode it"
        )


class PickleSerializer:
    """Pickle signed with HMAC-SHA256; the signature is checked before unpickling.

    Only use it when every writer of the cache is trusted to hold ``key``. The
    algorithm is fixed here, never read from the payload.
    """

    _MAC_LEN = 32

    def __init__(self, key: bytes, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        if not isinstance(key, bytes) or len(key) < 16:
            raise ConfigurationError("PickleSerializer needs a secret key of at least 16 bytes")
        self._key = key
        self._protocol = protocol

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def dumps(self, value: Any) -> bytes:
        """Pickle and sign ``value``."""
        try:
            body = pickle.dumps(value, protocol=self._protocol)
        except Exception as exc:  # pickle raises many types (PicklingError, TypeError, ...)
            raise SerializationError(f"cannot pickle value: {exc}") from exc
        return b"p" + self._mac(body) + body

    def loads(self, data: bytes) -> Any:
        """Verify the signature of ``data``, then unpickle it."""
        if data[:1] != b"p" or len(data) < 1 + self._MAC_LEN:
            raise SerializationError("payload is not a signed cachekit pickle")
        mac, body = data[1 : 1 + self._MAC_LEN], data[1 + self._MAC_LEN :]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise SerializationError("pickle signature mismatch; refusing to unpickle")
        try:
            return pickle.loads(body)
        except Exception as exc:
            raise SerializationError(f"cannot unpickle value: {exc}") from exc
