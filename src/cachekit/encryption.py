"""Encryption at rest: AES-256-GCM around another serializer, bound to the full cache key.

A payload is::

    format byte | key id (8) | nonce (12) | ciphertext + GCM tag (16)

- format ``e``: the inner serializer's bytes; ``z``: the same, zlib-compressed
  before encryption (only with ``compress_over=``);
- key id: the first 8 bytes of HMAC-SHA256(key, "cachekit key id"), so a reader
  knows which key to try without the key ever leaving the process;
- nonce: 12 random bytes per value;
- associated data: the format byte, key id and the full cache key
  (length-prefixed), so an entry copied under another key, a changed header
  or a changed byte anywhere fails authentication.

The first key encrypts; every key decrypts (rotation: put the new key first,
keep the old ones until their entries have expired). Anything that does not
decrypt raises ``SerializationError``, which a ``Cache`` counts as a decode
error and treats as a miss.

Needs the ``cryptography`` package: ``pip install 'cachekit-py[encryption]'``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, SerializationError, ValueTooLargeError
from .serializers import (
    DEFAULT_MAX_VALUE_BYTES,
    KeyBoundSerializer,
    PassthroughSerializer,
    Serializer,
    as_bytes,
    check_limit,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["DEFAULT_MAX_RATIO", "KEY_ID_LENGTH", "EncryptedSerializer", "key_id"]

#: Length of the key fingerprint stored in each payload.
KEY_ID_LENGTH = 8
#: Largest decompressed/compressed size ratio read back (and written compressed).
DEFAULT_MAX_RATIO = 200

_NONCE = 12
_TAG = 16
_HEADER = 1 + KEY_ID_LENGTH + _NONCE
_PLAIN, _ZLIB = b"e", b"z"
_AAD_PREFIX = b"cachekit-aes256gcm-v1"
_HEX = frozenset("0123456789abcdefABCDEF")
_INSTALL = "pip install 'cachekit-py[encryption]'"


def key_id(key: bytes) -> bytes:
    """The public fingerprint of ``key`` written in each payload (never the key)."""
    return hmac.new(key, b"cachekit key id", hashlib.sha256).digest()[:KEY_ID_LENGTH]


def _parse_key(key: object, index: int) -> bytes:
    """Return the 32 raw bytes of ``key``: bytes, or a string of hex or base64."""
    if isinstance(key, (bytes, bytearray)):
        raw = bytes(key)
    elif isinstance(key, str):
        text = key.strip()
        if len(text) == 64 and _HEX.issuperset(text):
            raw = bytes.fromhex(text)
        else:
            try:
                # standard or URL-safe alphabet, padding optional
                padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
                raw = base64.b64decode(padded, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigurationError(
                    f"encryption key #{index} is neither 64 hex digits nor base64 "
                    "(generate one with EncryptedSerializer.generate_key())"
                ) from exc
    else:
        raise ConfigurationError(
            f"encryption key #{index} must be bytes or a hex/base64 string, "
            f"not {type(key).__qualname__}"
        )
    if len(raw) != 32:
        raise ConfigurationError(
            f"encryption key #{index} is {len(raw)} bytes; AES-256 needs exactly 32 "
            "(generate one with EncryptedSerializer.generate_key())"
        )
    return raw


def _aesgcm() -> type[AESGCM]:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise ConfigurationError(
            f"EncryptedSerializer needs the cryptography package: {_INSTALL}"
        ) from exc
    return AESGCM


class EncryptedSerializer:
    """Encrypts another serializer's bytes with AES-256-GCM; the first key encrypts.

    ``keys``: 32-byte keys, newest first, as ``bytes`` or strings of 64 hex
    digits or base64 (standard or URL-safe). Every key decrypts, so adding a new
    key in front rotates without losing entries. ``compress_over=N`` zlib-compresses
    inner payloads of at least ``N`` bytes before encrypting them. Payloads over
    ``max_value_bytes`` and decompression beyond ``max_ratio`` are refused.

    A ``Cache`` calls ``dumps_for`` / ``loads_for`` with the full key; plain
    ``dumps`` / ``loads`` (direct use) are bound to no key, and the two never
    read each other's payloads.
    """

    def __init__(
        self,
        inner: Serializer,
        keys: Sequence[bytes | str],
        *,
        compress_over: int | None = None,
        max_value_bytes: int | None = DEFAULT_MAX_VALUE_BYTES,
        max_ratio: int = DEFAULT_MAX_RATIO,
    ) -> None:
        aesgcm = _aesgcm()
        if isinstance(inner, PassthroughSerializer) or not callable(getattr(inner, "dumps", None)):
            raise ConfigurationError(
                "EncryptedSerializer needs an inner serializer that makes bytes"
            )
        if isinstance(keys, (bytes, str)) or not keys:
            raise ConfigurationError("EncryptedSerializer needs a non-empty list of keys")
        if compress_over is not None and (not isinstance(compress_over, int) or compress_over < 0):
            raise ConfigurationError(
                f"compress_over must be an int >= 0 or None: {compress_over!r}"
            )
        if not isinstance(max_ratio, int) or max_ratio < 1:
            raise ConfigurationError(f"max_ratio must be a positive int, not {max_ratio!r}")
        self.inner = inner
        self.compress_over = compress_over
        self.max_value_bytes = check_limit(max_value_bytes)
        self.max_ratio = max_ratio
        self._keyed = inner if isinstance(inner, KeyBoundSerializer) else None
        self._ciphers: dict[bytes, AESGCM] = {}
        for index, key in enumerate(keys):
            raw = _parse_key(key, index)
            self._ciphers.setdefault(key_id(raw), aesgcm(raw))
        self._current_id = next(iter(self._ciphers))
        self._current = self._ciphers[self._current_id]

    @classmethod
    def from_env(
        cls,
        inner: Serializer,
        var: str = "CACHEKIT_KEYS",
        *,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> EncryptedSerializer:
        """Build one from a comma-separated list of keys (newest first) in ``var``."""
        env = os.environ if environ is None else environ
        text = env.get(var, "")
        keys = [part.strip() for part in text.split(",") if part.strip()]
        if not keys:
            raise ConfigurationError(f"environment variable {var} holds no encryption key")
        return cls(inner, keys, **options)

    @staticmethod
    def generate_key() -> str:
        """A new random 32-byte key, base64-encoded (for ``keys=`` or the environment)."""
        return base64.b64encode(os.urandom(32)).decode("ascii")

    @property
    def key_ids(self) -> list[str]:
        """The hex fingerprints of the keys, the encrypting one first (safe to log)."""
        return [kid.hex() for kid in self._ciphers]

    def __repr__(self) -> str:
        return f"EncryptedSerializer({self.inner!r}, key_ids={self.key_ids})"  # never a key

    # ------------------------------------------------------------ payloads

    @staticmethod
    def _aad(head: bytes, kid: bytes, key: str | None) -> bytes:
        if key is None:
            return _AAD_PREFIX + head + kid + b"\x00"
        k = key.encode("utf-8", "surrogatepass")
        return _AAD_PREFIX + head + kid + b"\x01" + len(k).to_bytes(4, "big") + k

    def _seal(self, key: str | None, value: Any) -> bytes:
        if key is not None and self._keyed is not None:
            plain = self._keyed.dumps_for(key, value)
        else:
            plain = self.inner.dumps(value)
        if not isinstance(plain, (bytes, bytearray)):
            raise SerializationError(f"inner serializer made {type(plain).__qualname__}, not bytes")
        limit = self.max_value_bytes
        if limit is not None and len(plain) > limit:
            raise ValueTooLargeError(len(plain), limit)
        head = _PLAIN
        if self.compress_over is not None and len(plain) >= self.compress_over:
            packed = zlib.compress(plain)
            # written compressed only if smaller and readable back under the ratio cap
            if len(packed) < len(plain) and len(plain) <= len(packed) * self.max_ratio:
                head, plain = _ZLIB, packed
        kid, nonce = self._current_id, os.urandom(_NONCE)
        sealed = self._current.encrypt(nonce, plain, self._aad(head, kid, key))
        return b"".join((head, kid, nonce, sealed))

    def _open(self, key: str | None, data: Any) -> Any:
        data = as_bytes(data)
        head = data[:1]
        if head != _PLAIN and head != _ZLIB:
            raise SerializationError(f"payload is not cachekit encrypted (format byte {head!r})")
        if len(data) < _HEADER + _TAG:
            raise SerializationError(f"encrypted payload truncated ({len(data)} bytes)")
        limit = self.max_value_bytes
        if limit is not None and len(data) > limit + _HEADER + _TAG:
            raise SerializationError(f"encrypted payload of {len(data)} bytes is over the cap")
        kid = data[1 : 1 + KEY_ID_LENGTH]
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise SerializationError(f"value encrypted with unknown key id {kid.hex()}")
        nonce = data[1 + KEY_ID_LENGTH : _HEADER]
        try:
            plain = cipher.decrypt(nonce, memoryview(data)[_HEADER:], self._aad(head, kid, key))
        except Exception as exc:  # InvalidTag: tampered, truncated, or moved to another key
            raise SerializationError(
                f"encrypted value does not authenticate under key id {kid.hex()} "
                "(tampered, truncated, or stored under another key)"
            ) from exc
        if head == _ZLIB:
            plain = self._inflate(plain)
        try:
            if key is not None and self._keyed is not None:
                return self._keyed.loads_for(key, plain)
            return self.inner.loads(plain)
        except Exception as exc:
            # Not chained: the inner error's text may quote the decrypted value,
            # and this message ends up in logs. The kind of error is enough.
            raise SerializationError(
                f"decrypted value (key id {kid.hex()}) does not decode with "
                f"{type(self.inner).__name__}: {type(exc).__name__}"
            ) from None

    def _inflate(self, packed: bytes) -> bytes:
        cap = len(packed) * self.max_ratio
        if self.max_value_bytes is not None:
            cap = min(cap, self.max_value_bytes)
        inflater = zlib.decompressobj()
        try:
            plain = inflater.decompress(packed, cap)
        except zlib.error as exc:
            raise SerializationError(f"corrupt compressed value: {exc}") from exc
        if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
            raise SerializationError(f"compressed value is truncated or inflates past {cap} bytes")
        return plain

    def dumps_for(self, key: str, value: Any) -> bytes:
        """Encrypt ``value`` for storage under the full cache ``key``."""
        return self._seal(key, value)

    def loads_for(self, key: str, data: bytes) -> Any:
        """Decrypt ``data`` read from ``key``; raise ``SerializationError`` if it is not genuine."""
        return self._open(key, data)

    def dumps(self, value: Any) -> bytes:
        """Encrypt ``value`` bound to no key (direct use; a ``Cache`` calls ``dumps_for``)."""
        return self._seal(None, value)

    def loads(self, data: bytes) -> Any:
        """Decrypt a ``dumps`` payload."""
        return self._open(None, data)
