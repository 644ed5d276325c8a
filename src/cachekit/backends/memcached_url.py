"""memcached:// URL and option parsing: servers, query options and keyword values checked and typed.

I/O-free, shared by the sync and asyncio memcached backends. Errors are
``ConfigurationError`` and never carry a password.
"""

from __future__ import annotations

import math
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigurationError

__all__ = ["DEFAULT_PORT", "parse_servers"]

DEFAULT_PORT: Final = 11211


def parse_servers(netloc: str) -> list[tuple[str, int]]:
    """Parse ``host:port[,host:port...]`` (IPv6 in brackets; port defaults to 11211)."""
    text = netloc.rsplit("@", 1)[-1]
    if not text.strip():
        raise ConfigurationError("memcached:// URL names no server (memcached://host:port)")
    servers: list[tuple[str, int]] = []
    for position, raw in enumerate(text.split(","), 1):
        part = unquote(raw.strip())
        if not part:
            raise ConfigurationError(f"memcached:// server #{position} in the list is empty")
        if part.startswith("["):
            host, bracket, rest = part[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ConfigurationError(f"memcached:// bad IPv6 server {part!r}")
            port_text: str | None = rest[1:] if rest else None
        elif part.count(":") == 1:
            host, _, port_text = part.partition(":")
        else:
            host, port_text = part, None  # no port, or a bare IPv6 address
        if port_text is not None and not (port_text.isascii() and port_text.isdigit()):
            raise ConfigurationError(f"memcached:// port {port_text!r} of {part!r} is not a number")
        port = int(port_text) if port_text is not None else DEFAULT_PORT
        if not 0 < port < 65536:
            raise ConfigurationError(f"memcached:// port {port} of {part!r} is not in 1-65535")
        if not host or any(c.isspace() or c in "/?#@" for c in host):
            raise ConfigurationError(f"memcached:// bad host {host!r} in {part!r}")
        servers.append((host, port))
    return servers


def _redacted(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at:
        return url
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{hosts}").geturl()


_BOOL_OPTIONS = ("no_delay", "tls")
_INT_OPTIONS = ("max_value_size", "pool_size")
_FLOAT_OPTIONS = ("timeout", "connect_timeout", "pool_idle_timeout", "node_cooldown")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse_query(query: str) -> dict[str, Any]:
    """Turn the URL query into typed options; raise on anything unknown, blank or repeated."""
    try:
        pairs = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ConfigurationError(f"memcached:// query is malformed: {exc}") from None
    out: dict[str, Any] = {}
    unknown = sorted(set(pairs) - set(_INT_OPTIONS + _FLOAT_OPTIONS + _BOOL_OPTIONS))
    unknown = [name for name in unknown if name != "serializer"]  # read by Cache.from_url
    if unknown:
        known = ", ".join(sorted(_INT_OPTIONS + _FLOAT_OPTIONS + _BOOL_OPTIONS))
        raise ConfigurationError(
            f"unknown memcached:// option(s): {', '.join(unknown)} (known: {known}, serializer)"
        )
    for name, values in pairs.items():
        if name == "serializer":
            continue
        if len(values) > 1:
            raise ConfigurationError(f"memcached:// option {name} is given {len(values)} times")
        text = values[0].strip()
        if name in _BOOL_OPTIONS:
            if text.lower() not in _TRUE + _FALSE:
                raise ConfigurationError(
                    f"memcached:// option {name}={text!r} is not a boolean (true/false, 1/0)"
                )
            out[name] = text.lower() in _TRUE
            continue
        try:
            number: float = int(text) if name in _INT_OPTIONS else float(text)
        except ValueError:
            what = "an integer" if name in _INT_OPTIONS else "a number"
            raise ConfigurationError(f"memcached:// option {name}={text!r} is not {what}") from None
        out[name] = number
    return out


def _check_seconds(name: str, value: Any, low: float, high: float, low_open: bool) -> float:
    """Return ``value`` as float if it lies in the range, else raise naming ``name``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ConfigurationError(
            f"memcached {name} must be a number of seconds in {bracket}{low:g}, {high:g}], "
            f"got {value!r}"
        )
    return float(value)


def _parse_url(url: str, schemes: tuple[str, ...]) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Split a ``memcached://`` URL into its servers and its typed query options."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"memcached:// URL {_redacted(url)} is malformed") from exc
    if parts.scheme.lower() not in schemes:
        raise ConfigurationError(f"not a memcached:// URL: {_redacted(url)!r}")
    if "@" in parts.netloc:
        raise ConfigurationError(
            "memcached:// URLs take no user name or password (pymemcache speaks no SASL): "
            f"remove the credentials from {_redacted(url)!r}"
        )
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigurationError(
            f"memcached:// URL {_redacted(url)!r} has a path or fragment; "
            "the form is memcached://host:port[,host:port...][?option=value]"
        )
    options = _parse_query(parts.query)
    return parse_servers(parts.netloc), options
