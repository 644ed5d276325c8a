"""Which pymemcache failures are a server's refusal and which a node that is down."""

from __future__ import annotations

from typing import Final

from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownCommandError,
)

# Everything pymemcache or the socket layer raises for a server that is down,
# slow or refusing; RuntimeError is the pool's "too many connections".
_FAILURES: Final = (MemcacheError, OSError, RuntimeError)


def _rejected(exc: BaseException) -> bool:
    """True when the server answered and refused (``SERVER_ERROR``, ``CLIENT_ERROR``)."""
    if isinstance(exc, MemcacheServerError):
        return not isinstance(exc, MemcacheUnexpectedCloseError)
    # "ERROR" (an unknown command) comes from something that is not a working memcached
    return isinstance(exc, MemcacheClientError) and not isinstance(exc, MemcacheUnknownCommandError)


def _message(exc: BaseException) -> bytes:
    arg = exc.args[0] if exc.args else b""
    return arg if isinstance(arg, bytes) else str(arg).encode()
