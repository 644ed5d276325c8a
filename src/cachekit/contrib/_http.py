"""HTTP response caching decisions shared by the web framework helpers (no I/O).

A cached response lives under ``<resource>#<generation>#<variant>``:

- *resource* is the key a writer invalidates (``@cache.evicts(key=...)``), by
  default ``http:<path>``;
- *generation* is read from the cache entry stored under the resource key
  itself; dropping (or overwriting) that entry moves every variant of the
  resource to a new generation at once, so old responses are never read again
  (they expire by TTL). A reader creates the generation before it renders, so a
  response rendered from data older than a write is stored under a generation
  that write already retired;
- *variant* is a digest of the query string and the request headers the
  response varies on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "CACHEABLE_METHODS",
    "Directives",
    "Entry",
    "canonical_json",
    "etag_for",
    "etag_matches",
    "generation_id",
    "make_entry",
    "new_generation",
    "read_entry",
    "replayable",
    "request_directives",
    "response_key",
    "response_ttl",
    "variant_digest",
]

#: Methods whose responses are cached; every other method goes straight to the view.
CACHEABLE_METHODS = frozenset({"GET", "HEAD"})

_ENTRY_VERSION = 1
_TOKEN_PREFIX = "gen:"


@dataclass(frozen=True)
class Directives:
    """What a ``Cache-Control`` header asks of a cache."""

    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    max_age: int | None = None
    s_maxage: int | None = None


def _parse(value: str | None) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for part in (value or "").split(","):
        name, sep, arg = part.strip().partition("=")
        if name:
            out[name.strip().lower()] = arg.strip().strip('"') if sep else None
    return out


def _seconds(arg: str | None) -> int | None:
    if arg is None:
        return None
    try:
        return max(0, int(arg))
    except ValueError:
        return 0  # a malformed age is treated as stale (RFC 9111 4.2.1)


def request_directives(cache_control: str | None, pragma: str | None = None) -> Directives:
    """Parse a request's ``Cache-Control`` (and HTTP/1.0 ``Pragma: no-cache``)."""
    d = _parse(cache_control)
    no_cache = "no-cache" in d or (not cache_control and "no-cache" in _parse(pragma))
    return Directives(
        no_store="no-store" in d,
        no_cache=no_cache,
        max_age=_seconds(d["max-age"]) if "max-age" in d else None,
    )


def response_ttl(cache_control: str | None, default: float | None) -> tuple[bool, float | None]:
    """Return ``(storable, ttl)`` for a response with this ``Cache-Control``.

    ``no-store``, ``no-cache``, ``private`` and an age of 0 are not stored;
    ``s-maxage`` (for shared caches) wins over ``max-age``, which wins over
    ``default`` (``None``: the cache's policy TTL).
    """
    d = _parse(cache_control)
    if "no-store" in d or "no-cache" in d or "private" in d:
        return False, None
    for name in ("s-maxage", "max-age"):
        if name in d:
            age = _seconds(d[name])
            return (False, None) if not age else (True, float(age))
    return True, default


def variant_digest(query: str, headers: Iterable[tuple[str, Iterable[str]]]) -> str:
    """A digest of the query (order of parameters ignored) and the varying header values."""
    h = hashlib.blake2b(digest_size=12)
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    h.update(json.dumps(pairs, separators=(",", ":")).encode())
    for name, values in headers:
        h.update(b"\0" + name.lower().encode("latin-1") + b"\0")
        h.update(json.dumps(list(values), separators=(",", ":")).encode())
    return h.hexdigest()


def new_generation() -> str:
    """A fresh generation token to store under a resource key."""
    return _TOKEN_PREFIX + secrets.token_hex(8)


def generation_id(value: Any) -> str | None:
    """The generation a resource entry names; ``None`` if there is none.

    Any value counts: a ``@cache.writes`` under write-through stores the new
    value itself there, and its digest is then the generation.
    """
    if value is None:
        return None
    if isinstance(value, str) and value.startswith(_TOKEN_PREFIX):
        return value[len(_TOKEN_PREFIX) :]
    try:
        data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)
    except (TypeError, ValueError):  # e.g. a circular structure: never reused
        return None
    return "v" + hashlib.blake2b(data.encode(), digest_size=8).hexdigest()


def response_key(resource: str, generation: str, variant: str) -> str:
    """The key one cached response is stored under."""
    return f"{resource}#resp#{generation}#{variant}"


def canonical_json(value: Any) -> bytes:
    """``value`` as compact JSON with sorted keys (what an entity tag of a value digests)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr).encode()


def etag_for(body: bytes) -> str:
    """A strong entity tag for ``body``."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, as for GET)."""
    if not if_none_match:
        return False
    want = etag.removeprefix("W/")
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == want:
            return True
    return False


def make_entry(
    *,
    stored_at: float,
    etag: str,
    headers: Iterable[tuple[str, str]],
    status: int = 200,
    body: bytes | None = None,
    value: Any = None,
) -> dict[str, Any]:
    """A JSON-friendly cache entry: a whole response (``body``) or a view's value."""
    entry: dict[str, Any] = {
        "v": _ENTRY_VERSION,
        "t": stored_at,
        "etag": etag,
        "status": status,
        "headers": [[k, v] for k, v in headers],
    }
    if body is not None:
        entry["body"] = base64.b64encode(body).decode("ascii")
    else:
        entry["value"] = value
    return entry


@dataclass(frozen=True)
class Entry:
    """A cached response read back."""

    stored_at: float
    etag: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes | None
    value: Any

    def age(self, now: float) -> float:
        """Seconds since it was stored (never negative)."""
        return max(0.0, now - self.stored_at)


def read_entry(raw: Any) -> Entry | None:
    """Decode a cached entry; ``None`` for anything this version did not write."""
    if not isinstance(raw, Mapping) or raw.get("v") != _ENTRY_VERSION:
        return None
    try:
        body = base64.b64decode(raw["body"]) if "body" in raw else None
        return Entry(
            stored_at=float(raw["t"]),
            etag=str(raw["etag"]),
            status=int(raw["status"]),
            headers=[(str(k), str(v)) for k, v in raw["headers"]],
            body=body,
            value=raw.get("value"),
        )
    except (KeyError, TypeError, ValueError):
        return None


def replayable(headers: Iterable[tuple[str, str]], vary: Iterable[str]) -> bool:
    """Whether a response with these headers may be shared between requests.

    Not if it sets a cookie, or varies on a request header that is not part of
    the cache key (``Vary: Cookie`` would serve one user's page to another).
    """
    allowed = {h.lower() for h in vary}
    for name, value in headers:
        lname = name.lower()
        if lname == "set-cookie":
            return False
        if lname == "vary":
            names = {v.strip().lower() for v in value.split(",") if v.strip()}
            if "*" in names or not names <= allowed:
                return False
    return True
