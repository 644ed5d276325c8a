"""The steps every operator command shares: one-line failures, masked credentials, connecting.

A failure is a ``_Failed`` (one line, exit status 2); credentials in a URL (a
password, a ``password=`` query value) are masked in whatever is printed; a
backend is built with short timeouts and its errors become one-line failures.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..backends import MISSING, Backend, backend_from_url
from ..errors import BackendUnavailableError, CacheError

__all__ = ["TIMEOUT", "mask_url", "scrub"]

#: Seconds every connect and command may take (the design's deadline is 250 ms per command).
TIMEOUT = 0.5

_SECRET_PARAMS = re.compile(r"pass|secret|token|key", re.I)


class _Failed(Exception):
    """A one-line failure of an operator command (exit status ``code``)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- secrets


def mask_url(url: str) -> str:
    """Return ``url`` with its password (and any secret query value) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc, query = parts.netloc, parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if "@" not in netloc and not any(_SECRET_PARAMS.search(k) for k, _ in pairs):
        return url  # nothing to hide: keep it exactly as given
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        user, sep, _ = creds.partition(":")
        netloc = f"{user}:***@{host}" if sep else f"***@{host}"
    if query:
        query = urlencode([(k, "***" if _SECRET_PARAMS.search(k) else v) for k, v in pairs])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _secrets(url: str) -> list[str]:
    """The credential strings in ``url``, raw and decoded, longest first."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    netloc = parts.netloc
    if "@" in netloc:
        creds = netloc.rsplit("@", 1)[0]
        user, sep, password = creds.partition(":")
        found.update([password, unquote(password)] if sep else [user, unquote(user)])
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAMS.search(k):
            found.add(v)
    return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)


def scrub(text: str, *urls: str) -> str:
    """Return ``text`` with every URL of ``urls`` masked and their credentials removed."""
    for url in urls:
        masked = mask_url(url)
        if masked != url:
            text = text.replace(url, masked)
        for secret in _secrets(url):
            text = text.replace(secret, "***")
    return text


# ---------------------------------------------------------------- shared steps


def _connect(url: str) -> Backend:
    """Build the backend of ``url`` with short timeouts; memory:// is refused."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise _Failed(f"invalid cache URL {mask_url(url)}: {exc}") from exc
    if not scheme:
        raise _Failed(f"{mask_url(url)} is not a cache URL (e.g. redis://host:6379/0)")
    if scheme == "memory":
        raise _Failed(
            "memory:// lives inside the application's process; these commands need a shared "
            "server (redis://, memcached://)"
        )
    options: dict[str, float] = {}
    if scheme.startswith(("redis", "rediss", "unix")):
        options = {"socket_timeout": TIMEOUT, "connect_timeout": TIMEOUT}
    elif scheme == "memcached":
        options = {"timeout": TIMEOUT, "connect_timeout": TIMEOUT}
    try:
        return backend_from_url(url, **options)
    except (CacheError, ValueError, TypeError) as exc:
        raise _Failed(f"cannot use {mask_url(url)}: {exc}") from exc


def _call(url: str, what: Callable[[], Any]) -> Any:
    """Run one backend command; a down server is a one-line failure."""
    try:
        return what()
    except BackendUnavailableError as exc:
        raise _Failed(f"cannot reach {mask_url(url)}: {exc}") from exc
    except CacheError as exc:
        raise _Failed(f"{mask_url(url)}: {exc}") from exc


def _version_key(namespace: str) -> str:
    return f"ck:{len(namespace)}:{namespace}:v"


def _prefix(namespace: str, version: str) -> str:
    return f"ck:{len(namespace)}:{namespace}:{version}:"


def _read_version(url: str, backend: Backend, namespace: str) -> str | None:
    raw = _call(url, lambda: backend.get(_version_key(namespace)))
    if raw is MISSING:
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
