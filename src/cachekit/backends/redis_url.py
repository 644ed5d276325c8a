"""Redis URL and option parsing: URLs, hosts, credentials and keyword options checked and typed.

Everything here is I/O-free and shared by the one-server, cluster, Sentinel and
asyncio Redis backends. Errors are ``ConfigurationError`` and never carry a
password.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigurationError
from . import redact_url

__all__ = ["DEFAULT_PORT"]

DEFAULT_PORT: Final = 6379


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


# Query parameters we understand, with their types (keyword options need the same types).
_QUERY_TYPES: dict[str, Callable[[str], Any]] = {
    "socket_timeout": float,
    "connect_timeout": float,
    "socket_connect_timeout": float,
    "retries": int,
    "max_connections": int,
    "max_value_size": int,
    "health_check_interval": int,
    "db": int,
    "client_name": str,
    "protocol": int,
    "ssl_cert_reqs": str,
    "ssl_ca_certs": str,
    "ssl_ca_path": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_check_hostname": _flag,
}

# Keyword options handed to redis-py's connections as they are.
_COMMON_OPTIONS = frozenset(
    {
        "username",
        "password",
        "client_name",
        "credential_provider",
        "driver_info",
        "encoding",
        "encoding_errors",
        "lib_name",
        "lib_version",
        "protocol",
        "socket_read_size",
    }
)
_TCP_OPTIONS = frozenset({"socket_keepalive", "socket_keepalive_options"})
_TLS_OPTIONS = frozenset(
    {
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_cert_reqs",
        "ssl_certfile",
        "ssl_check_hostname",
        "ssl_ciphers",
        "ssl_exclude_verify_flags",
        "ssl_include_verify_flags",
        "ssl_keyfile",
        "ssl_min_version",
        "ssl_ocsp_context",
        "ssl_ocsp_expected_cert",
        "ssl_password",
        "ssl_validate_ocsp",
        "ssl_validate_ocsp_stapled",
    }
)
_CERT_REQS = ("none", "optional", "required")
# Every keyword option some Redis backend hands to redis-py (the Sentinel backend checks these).
_PASSTHROUGH = _COMMON_OPTIONS | _TCP_OPTIONS | _TLS_OPTIONS


def _split_options(url: str, options: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Return the split URL and its query merged with ``options`` (keywords win)."""
    parts = _split(url)
    merged: dict[str, Any] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        if name == "serializer":  # consumed by Cache.from_url
            continue
        convert = _QUERY_TYPES.get(name)
        if convert is None:
            known = ", ".join(sorted(_QUERY_TYPES))
            raise ConfigurationError(f"unknown Redis URL option {name!r} (known: {known})")
        try:
            merged[name] = convert(values[-1])
        except ValueError:
            kind = {float: "a number", int: "a whole number", _flag: "true or false"}
            raise ConfigurationError(
                f"Redis URL option {name!r} needs {kind.get(convert, 'a value')}, "
                f"not {values[-1]!r}"
            ) from None
    merged.update(options)
    if "socket_connect_timeout" in merged:
        merged.setdefault("connect_timeout", merged.pop("socket_connect_timeout"))
    return parts._replace(query="", fragment=""), merged


def _split(url: str) -> Any:
    """``urlsplit`` that refuses a URL whose credentials spill out of the host part."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket; the text may hold the password
        raise ConfigurationError(f"malformed Redis URL {redact_url(url)!r}") from None
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        raise ConfigurationError(
            "malformed Redis URL (an '@' after the host): percent-encode '/', '?', '#' "
            "and '@' in the user name and password"
        )
    return parts


def _credentials(netloc: str) -> tuple[str | None, str | None, str]:
    """Split ``[user[:password]@]hosts`` into user, password and the host part."""
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_pw, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if has_pw else None
    return username, password, hosts


def _host_port(text: str, what: str = "Redis URL") -> tuple[str, int]:
    """Parse ``host[:port]`` (``[v6]:port`` too); the port must be 1-65535."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ConfigurationError(f"{what} has no host (e.g. redis://127.0.0.1:6379/0)")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"{what} port {port_text!r} is not a number in 1-65535")
    return host, int(port_text)


def _db_number(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigurationError(f"Redis database ({where}) must be a number, not {value!r}")
    text = str(value)
    if not text.isdigit():
        raise ConfigurationError(f"Redis database {text!r} ({where}) is not a number >= 0")
    return int(text)


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool):
        value = None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}") from None
    if not 0 < seconds <= 3600:
        raise ConfigurationError(f"{name} must be in (0, 3600] seconds, got {value!r}")
    return seconds


def _whole(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def _connection_kwargs(
    *,
    socket_timeout: Any,
    connect_timeout: Any,
    retries: Any,
    max_connections: Any,
    max_value_size: Any,
    options: Mapping[str, Any],
    allowed: frozenset[str],
) -> dict[str, Any]:
    """Validate the shared options; return redis-py connection keywords (no retry object)."""
    unknown = set(options) - allowed
    if unknown:
        extra = unknown & _TLS_OPTIONS
        hint = " (TLS options need rediss://)" if extra else ""
        raise ConfigurationError(f"unknown Redis options: {', '.join(sorted(unknown))}{hint}")
    _whole("retries", retries, 0)
    if max_value_size is not None:
        _whole("max_value_size", max_value_size, 1)
    cert_reqs = options.get("ssl_cert_reqs")
    if isinstance(cert_reqs, str) and cert_reqs.lower() not in _CERT_REQS:
        raise ConfigurationError(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
    if options.get("protocol") not in (None, 2, 3, "2", "3"):
        raise ConfigurationError("protocol must be 2 or 3")
    kwargs: dict[str, Any] = {
        "socket_timeout": _positive("socket_timeout", socket_timeout),
        "socket_connect_timeout": _positive("connect_timeout", connect_timeout),
        **options,
    }
    if max_connections is not None:
        kwargs["max_connections"] = _whole("max_connections", max_connections, 1)
    return kwargs


def _cluster_nodes(hosts: str) -> list[tuple[str, int]]:
    """Parse ``host:port[,host:port...]`` (a port is required)."""
    nodes = []
    for node in hosts.split(","):
        node = node.strip()
        if not node.rpartition(":")[2].isdigit() or node.endswith("]"):
            raise ConfigurationError(f"cluster node {node!r} is not host:port")
        nodes.append(_host_port(node, "Redis Cluster node"))
    return nodes
