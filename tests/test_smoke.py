"""Import-time behaviour and the public names (the API contract in DESIGN.md)."""

from __future__ import annotations

import cachekit as ck


def test_public_names_are_pinned() -> None:
    expected = {
        "Cache", "MemoryBackend", "TTL", "CacheAside", "WriteThrough", "CacheError",
        "InvalidKeyError", "SerializationError", "ValueTooLargeError",
        "BackendUnavailableError", "Stats",
    }
    assert expected <= set(ck.__all__)
    for name in ck.__all__:
        assert hasattr(ck, name), name


def test_errors_share_one_root() -> None:
    for cls in (ck.InvalidKeyError, ck.SerializationError, ck.ValueTooLargeError,
                ck.BackendUnavailableError, ck.ConfigurationError):
        assert issubclass(cls, ck.CacheError)
