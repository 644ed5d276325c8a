"""The operator's commands: ``cachekit inspect``, ``cachekit stats`` and ``cachekit flush``.

Each one talks to a shared cache server (Redis, Redis Cluster, memcached)
with short timeouts, prints what it found, and fails with one line and exit
status 2 on a bad URL or a server that does not answer; never a traceback.
Credentials in a URL (a password, a ``password=`` query value) never appear in
anything printed: URLs are shown masked, and error texts are scrubbed.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..backends import MISSING, Backend, backend_from_url
from ..backends.base import SupportsServerStats
from ..cache import LEASE_MARK
from ..errors import BackendUnavailableError, CacheError, ConfigurationError
from ..keys import MAX_KEY_LENGTH, encode_key

__all__ = ["COMMANDS", "add_ops_commands", "mask_url", "run_ops_command", "scrub"]

#: The subcommands this module serves.
COMMANDS = ("inspect", "stats", "flush")
#: Seconds every connect and command may take (the design's deadline is 250 ms per command).
TIMEOUT = 0.5
#: Keys a SCAN counts before it stops and says "at least".
COUNT_LIMIT = 100_000
#: Characters of a decoded value shown by ``inspect KEY``.
PREVIEW = 500

_SECRET_PARAMS = re.compile(r"pass|secret|token|key", re.I)
_SAMPLE = re.compile(r"^(cachekit_[A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


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


# ---------------------------------------------------------------- the parser


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_ops_commands(sub: Any) -> None:
    """Add ``inspect``, ``stats`` and ``flush`` to the ``cachekit`` subcommand parsers."""
    inspect = sub.add_parser(
        "inspect",
        usage="cachekit inspect [-h] URL --namespace NS [KEY] [--serializer S] [--limit N]",
        help="show a namespace (version, keys) or one entry (TTL left, size, value)",
        description="Without KEY: the namespace's current version and a count and sample of "
        "its keys (Redis; memcached cannot list keys). With KEY: the entry, its TTL left, its "
        "size in bytes and a decoded preview.",
    )
    # one positional list: argparse (before 3.12) cannot match an optional positional
    # that comes after an option, as in "inspect URL --namespace NS KEY"
    inspect.add_argument(
        "target",
        nargs="+",
        metavar="URL [KEY]",
        help="cache URL (redis://..., memcached://...), then optionally one cache key",
    )
    inspect.add_argument("--namespace", required=True, metavar="NS", help="cache namespace")
    inspect.add_argument(
        "--serializer",
        choices=("json", "pickle", "none"),
        default="json",
        help="how the values were encoded (default json; pickle needs --pickle-key or "
        "CACHEKIT_PICKLE_KEY)",
    )
    inspect.add_argument("--pickle-key", default=None, help="signing key of pickled values")
    inspect.add_argument(
        "--limit", type=_count, default=20, metavar="N", help="keys to show in the sample (20)"
    )
    stats = sub.add_parser(
        "stats",
        help="server-wide counters, and an application's cachekit_* metrics",
        description="Print the server's counters (hits, misses, evictions, expirations) and, "
        "with --metrics, the cachekit_* counters an application exports to Prometheus.",
    )
    stats.add_argument("url", metavar="URL", help="cache URL: redis://..., memcached://...")
    stats.add_argument(
        "--metrics",
        metavar="URL",
        default=None,
        help="an application's Prometheus endpoint, e.g. http://127.0.0.1:9100/metrics",
    )
    flush = sub.add_parser(
        "flush",
        help="drop every entry of one namespace at once (its version changes)",
        description="Bump the namespace's version: every entry written under the old one is "
        "unreachable at once (it expires on its own). Other namespaces are untouched.",
    )
    flush.add_argument("url", metavar="URL", help="cache URL: redis://..., memcached://...")
    flush.add_argument("--namespace", required=True, metavar="NS", help="cache namespace")
    flush.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def run_ops_command(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """Run ``inspect``, ``stats`` or ``flush``; return the exit status."""
    if args.command == "inspect":
        if len(args.target) > 2:
            err.write("cachekit inspect: error: give one URL and at most one KEY\n")
            return 2
        args.url, args.key = args.target[0], (args.target[1:] or [None])[0]
    urls = [args.url, *([args.metrics] if getattr(args, "metrics", None) else [])]
    run: Callable[..., int] = {"inspect": _inspect, "stats": _stats, "flush": _flush}[args.command]
    try:
        return run(args, out, err, stdin)
    except _Failed as exc:
        message, code = str(exc), exc.code
    except KeyboardInterrupt:
        err.write(f"\ncachekit {args.command}: interrupted\n")
        return 130
    except Exception as exc:  # a driver's surprise still gets one line, never a traceback
        message, code = f"{type(exc).__name__}: {exc}", 2
    line = " ".join(scrub(message, *urls).split())
    err.write(f"cachekit {args.command}: error: {line[:400]}\n")
    return code


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


def _glob(text: str) -> str:
    """Escape Redis glob characters."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


# ---------------------------------------------------------------- inspect


def _inspect(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    if not args.namespace:
        raise _Failed("--namespace must not be empty")
    backend = _connect(args.url)
    try:
        version = _read_version(args.url, backend, args.namespace)
        out.write(f"cache:      {mask_url(args.url)}\n")
        if version is None:
            out.write(
                f"namespace:  {args.namespace!r} has no version on this server: nothing was "
                "cached under it yet (or the server lost it), so it holds no entries\n"
            )
            return 1 if args.key is not None else 0
        prefix = _prefix(args.namespace, version)
        out.write(f"namespace:  {args.namespace!r}, version {version} (key prefix {prefix})\n")
        if args.key is None:
            _list_keys(args, backend, prefix, out)
            return 0
        return _show_entry(args, backend, prefix, out)
    finally:
        backend.close()


def _list_keys(args: argparse.Namespace, backend: Backend, prefix: str, out: TextIO) -> None:
    client = getattr(backend, "client", None)
    if client is None or not hasattr(client, "scan_iter"):
        out.write(
            "keys:       this server cannot list its keys (memcached has no SCAN), so there is "
            "no count or sample; look one up with: cachekit inspect URL --namespace NS KEY\n"
        )
        return
    # long keys are stored hashed as "~" + their first 48 characters + "#" + digest
    patterns = [_glob(prefix) + "*", "~" + _glob(prefix[:48]) + ("*" if len(prefix) < 48 else "#*")]
    count, sample = 0, list[str]()
    for pattern in patterns:
        found: Any = _call(args.url, functools.partial(client.scan_iter, match=pattern, count=1000))
        for raw in found:
            key = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)
            count += 1
            if len(sample) < args.limit:
                sample.append(key[len(prefix) :] if key.startswith(prefix) else key)
            if count >= COUNT_LIMIT:
                break
    shown = f"at least {count:,}" if count >= COUNT_LIMIT else f"{count:,}"
    out.write(f"keys:       {shown} under this version (SCAN {patterns[0]})\n")
    for key in sorted(sample):
        out.write(f"            {key}\n")
    if count > len(sample):
        out.write(f"            ... ({len(sample)} shown, --limit N for more)\n")


def _serializer(args: argparse.Namespace) -> Any:
    if args.serializer == "json":
        from ..serializers import JsonSerializer

        return JsonSerializer()
    if args.serializer == "pickle":
        secret = args.pickle_key or os.environ.get("CACHEKIT_PICKLE_KEY")
        if not secret:
            raise _Failed("--serializer pickle needs --pickle-key or CACHEKIT_PICKLE_KEY")
        from ..serializers import PickleSerializer

        try:
            return PickleSerializer(secret.encode())
        except ConfigurationError as exc:
            raise _Failed(str(exc)) from exc
    return None


def _ttl_left(url: str, backend: Backend, full: str) -> str:
    client = getattr(backend, "client", None)
    if client is not None and hasattr(client, "pttl"):
        ms = _call(url, lambda: client.pttl(full.encode("utf-8", "surrogatepass")))
        return "no expiry" if ms == -1 else "gone" if ms == -2 else f"{ms / 1000:,.1f} s"
    node_for = getattr(backend, "node_for", None)
    if node_for is not None:
        return _memcached_ttl(node_for(full), full)
    return "unknown (this backend does not report it)"


def _memcached_ttl(node: str, full: str) -> str:
    """Ask memcached's meta protocol (1.6+) for the TTL left; say so when it cannot tell."""
    from pymemcache.client.base import Client

    from ..backends.memcached import memcached_key

    host, _, port = node.rpartition(":")
    client = Client((host.strip("[]"), int(port)), connect_timeout=TIMEOUT, timeout=TIMEOUT)
    try:
        line = client.raw_command(b"mg " + memcached_key(full).encode() + b" t", b"\r\n")
    except Exception:  # an older server, TLS, a hiccup: the TTL is the only thing lost
        return "unknown (this memcached does not answer meta commands)"
    finally:
        client.close()
    flags = dict((f[:1], f[1:]) for f in line.split()[1:])
    if not line.startswith(b"HD") or b"t" not in flags:
        return "gone" if line.startswith(b"EN") else "unknown"
    seconds = int(flags[b"t"])
    return "no expiry" if seconds == -1 else f"{seconds:,} s"


def _show_entry(args: argparse.Namespace, backend: Backend, prefix: str, out: TextIO) -> int:
    full = prefix + args.key
    if len(full) > MAX_KEY_LENGTH:
        full = encode_key(full)
    serializer = _serializer(args)
    raw = _call(args.url, lambda: backend.get(full))
    out.write(f"key:        {args.key!r} (stored as {full})\n")
    if raw is MISSING:
        out.write("entry:      not in the cache (never stored, expired, evicted or flushed)\n")
        return 1
    data = bytes(raw) if isinstance(raw, (bytes, bytearray, memoryview)) else raw
    out.write(f"ttl left:   {_ttl_left(args.url, backend, full)}\n")
    size = len(data) if isinstance(data, bytes) else len(repr(data))
    out.write(f"size:       {size:,} bytes\n")
    if isinstance(data, bytes) and data.startswith(LEASE_MARK):
        out.write("value:      a load in progress holds this key (a lease), no value yet\n")
        return 0
    if serializer is None:
        text, how = repr(data), "raw"
    else:
        try:
            loads = getattr(serializer, "loads_for", None)
            value = loads(full, data) if loads is not None else serializer.loads(data)
        except Exception as exc:
            out.write(
                f"value:      cannot decode with the {args.serializer} serializer "
                f"({type(exc).__name__}: {exc}); raw: {data[:80]!r}\n"
            )
            return 0
        text, how = json.dumps(value, default=repr, ensure_ascii=False), args.serializer
    cut = f" ... ({len(text):,} characters)" if len(text) > PREVIEW else ""
    out.write(f"value ({how}): {text[:PREVIEW]}{cut}\n")
    return 0


# ---------------------------------------------------------------- stats


def _stats(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    backend = _connect(args.url)
    try:
        stats = None
        if isinstance(backend, SupportsServerStats):
            stats = _call(args.url, backend.server_stats)
        out.write(f"cache:      {mask_url(args.url)}\n")
        if stats is not None:
            for name in sorted(stats):
                out.write(f"{name + ':':<11} {stats[name]:,.0f}\n")
            lookups = stats.get("hits", 0) + stats.get("misses", 0)
            if lookups:
                out.write(f"hit ratio:  {stats.get('hits', 0) / lookups:.1%} (whole server)\n")
        else:
            out.write("server:     this backend keeps no server-wide counters\n")
    finally:
        backend.close()
    if args.metrics:
        _metrics(args.metrics, out)
    return 0


def _scrape(url: str) -> str:
    if urlsplit(url).scheme not in ("http", "https"):
        raise _Failed(f"--metrics needs an http:// or https:// URL, not {mask_url(url)}")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT * 2) as resp:
            body: bytes = resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _Failed(f"cannot scrape {mask_url(url)}: {exc}") from exc
    return body.decode("utf-8", "replace")


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Sum the ``cachekit_*`` samples of a Prometheus text scrape per ``cache`` label and name.

    Counter names lose ``cachekit_`` and ``_total``; histogram buckets are skipped.
    """
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if m is None:
            continue
        name, labels, value = m.groups()
        if name.endswith(("_bucket", "_created")):
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        cache = dict(_LABEL.findall(labels or "")).get("cache", "")
        short = name.removeprefix("cachekit_").removesuffix("_total")
        per = out.setdefault(cache, {})
        per[short] = per.get(short, 0.0) + number
    return out


def _metrics(url: str, out: TextIO) -> None:
    families = parse_metrics(_scrape(url))
    out.write(f"metrics:    {mask_url(url)}\n")
    if not families:
        out.write("            no cachekit_* metrics there (is register_prometheus called?)\n")
        return
    for cache in sorted(families):
        figures = families[cache]
        hits, misses = figures.get("hits", 0.0), figures.get("misses", 0.0)
        ratio = f", hit ratio {hits / (hits + misses):.1%}" if hits + misses else ""
        out.write(f"  cache {cache!r}{ratio}\n")
        for name in sorted(figures):
            out.write(f"    {name + ':':<28} {figures[name]:,.6g}\n")


# ---------------------------------------------------------------- flush


def _flush(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    if not args.namespace:
        raise _Failed("--namespace must not be empty")
    backend = _connect(args.url)
    try:
        before = _read_version(args.url, backend, args.namespace)  # also: is the server there?
    finally:
        backend.close()
    where = f"namespace {args.namespace!r} on {mask_url(args.url)}"
    if not args.yes:
        if not stdin.isatty():
            raise _Failed(f"refusing to flush {where} without confirmation: pass --yes")
        err.write(
            f"Flush {where}? Every entry becomes unreachable at once (other namespaces are "
            "untouched). [y/N] "
        )
        err.flush()
        if stdin.readline().strip().lower() not in ("y", "yes"):
            err.write("not flushed\n")
            return 1
    from ..cache import Cache

    options: dict[str, Any] = {"fail_open": False}
    scheme = urlsplit(args.url).scheme.lower()
    if scheme.startswith(("redis", "rediss", "unix")):
        options.update(socket_timeout=TIMEOUT, connect_timeout=TIMEOUT)
    elif scheme == "memcached":
        options.update(timeout=TIMEOUT, connect_timeout=TIMEOUT)
    # the Cache logs a backend failure as it raises it; here the one-line error says it all
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        cache = _call(
            args.url, lambda: Cache.from_url(args.url, namespace=args.namespace, **options)
        )
        try:
            _call(args.url, cache.clear)
            after = _read_version(args.url, cache.backend, args.namespace)
        finally:
            cache.close()
    finally:
        logging.disable(previous)
    out.write(f"flushed {where}: version {before or '(none)'} -> {after}\n")
    return 0
