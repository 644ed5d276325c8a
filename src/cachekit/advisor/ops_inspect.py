"""``cachekit inspect``: a namespace's version and keys, or one entry's TTL, size and value."""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
from typing import Any, TextIO

from ..backends import MISSING, Backend
from ..cache import LEASE_MARK
from ..errors import ConfigurationError
from ..keys import MAX_KEY_LENGTH, encode_key
from .ops_common import TIMEOUT, _call, _connect, _Failed, _prefix, _read_version, mask_url

#: Keys a SCAN counts before it stops and says "at least".
COUNT_LIMIT = 100_000
#: Characters of a decoded value shown by ``inspect KEY``.
PREVIEW = 500


def _glob(text: str) -> str:
    """Escape Redis glob characters."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


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
