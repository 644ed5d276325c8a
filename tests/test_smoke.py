"""Import-time behaviour and the public names: the API contract of DESIGN.md."""

from __future__ import annotations

import inspect
import subprocess
import sys

import cachekit as ck

CONTRACT = {
    "Cache", "MemoryBackend", "TTL", "CacheAside", "WriteThrough", "CacheError",
    "InvalidKeyError", "SerializationError", "ValueTooLargeError",
    "BackendUnavailableError", "ConfigurationError", "Stats", "NO_EXPIRY", "CircuitBreaker",
    "JsonSerializer", "PickleSerializer", "Backend", "register_backend", "backend_from_url",
    # second round
    "AsyncCache", "AsyncBackend", "EncryptedSerializer", "BackendRejectedError",
    "ReentrantLoadError", "KeyBoundSerializer",
}  # fmt: skip

CACHE_METHODS = {
    "from_url", "get", "set", "delete", "get_many", "set_many", "delete_many", "get_or_load",
    "get_many_or_load", "clear", "stats", "cached", "writes", "evicts", "refresh", "add",
    "child", "close",
}  # fmt: skip


def test_public_names_are_pinned() -> None:
    assert set(ck.__all__) >= CONTRACT
    for name in ck.__all__:
        assert hasattr(ck, name), name


def test_cache_methods_are_pinned() -> None:
    missing = {m for m in CACHE_METHODS if not callable(getattr(ck.Cache, m, None))}
    assert not missing


def test_async_cache_has_the_same_methods_awaited() -> None:
    names = (CACHE_METHODS - {"close"}) | {"aclose"}
    missing = {m for m in names if not callable(getattr(ck.AsyncCache, m, None))}
    assert not missing
    for name in names - {"from_url", "stats", "cached", "writes", "evicts", "child"}:
        assert inspect.iscoroutinefunction(getattr(ck.AsyncCache, name)), name


def test_get_has_default_and_set_has_ttl() -> None:
    assert list(inspect.signature(ck.Cache.get).parameters) == ["self", "key", "default"]
    assert list(inspect.signature(ck.Cache.set).parameters) == ["self", "key", "value", "ttl"]


def test_optional_modules_are_pinned() -> None:
    from cachekit import metrics, sqlalchemy

    assert {"CachedRepository", "track"} <= set(sqlalchemy.__all__)
    assert {"register_prometheus", "serve_metrics"} <= set(metrics.__all__)


def test_errors_share_one_root_and_no_builtin_names() -> None:
    import builtins

    for cls in (
        ck.InvalidKeyError,
        ck.SerializationError,
        ck.ValueTooLargeError,
        ck.BackendUnavailableError,
        ck.ConfigurationError,
    ):
        assert issubclass(cls, ck.CacheError)
        assert not hasattr(builtins, cls.__name__)


def test_import_does_no_work_and_pulls_in_no_optional_driver() -> None:
    code = (
        "import sys, threading; n = threading.active_count(); import cachekit; "
        "heavy = {'redis', 'pymemcache', 'sqlalchemy', 'prometheus_client', 'matplotlib'}; "
        "print(sorted(heavy & set(sys.modules)), threading.active_count() - n)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] 0"


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        ck.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
