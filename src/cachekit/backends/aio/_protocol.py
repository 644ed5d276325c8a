"""The memcached text protocol of the asyncio driver: a connection, and answers parsed on arrival.

No I/O decisions live here beyond the transport: ``Connection`` sends one command
at a time and resolves its future when the parser says the whole answer is
in; the parsers are pure functions of the bytes received so far.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, Final


class Refused(Exception):
    """memcached answered ``SERVER_ERROR`` or ``CLIENT_ERROR``."""


class Garbled(Exception):
    """An answer that is not memcached's (e.g. ``ERROR``, or an unexpected line)."""


# what the network, a stalled server or a broken answer raise
FAILURES = (OSError, EOFError, Garbled, Refused)

#: Returned by a parser while the buffer does not yet hold the whole answer.
MORE: Any = object()

Parser = Callable[[bytearray], Any]


def check_line(line: bytes) -> bytes:
    """Raise for an error line; return ``line`` otherwise."""
    if line.startswith((b"SERVER_ERROR", b"CLIENT_ERROR")):
        raise Refused(line.rstrip(b"\r\n").decode("utf-8", "replace"))
    if line.startswith(b"ERROR"):
        raise Garbled("memcached answered ERROR (not a memcached, or an unknown command)")
    return line


ERROR_LINES: Final = (b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")


def parse_values(buf: bytearray, with_cas: bool) -> Any:
    """Parse ``VALUE`` blocks up to ``END``: ``{key: (data, cas unique or 0)}``, or ``MORE``."""
    if not buf.endswith(b"END\r\n"):  # every whole answer ends so; parse only then
        if buf.startswith(ERROR_LINES) and b"\r\n" in buf:
            check_line(bytes(buf))
        return MORE
    data = bytes(buf)  # one copy; slicing bytes then copies each value once
    pos, size_all = 0, len(data)
    found: dict[bytes, tuple[bytes, int]] = {}
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return MORE
        if end - pos == 3 and data.startswith(b"END", pos):
            if end + 2 != size_all:  # (an END inside a value is skipped with the value)
                raise Garbled("memcached sent bytes after END")
            return found
        line = data[pos:end]
        fields = check_line(line).split()
        if len(fields) < (5 if with_cas else 4) or fields[0] != b"VALUE":
            raise Garbled(f"unexpected memcached answer {line[:60]!r}")
        start = end + 2
        stop = start + int(fields[3])
        if stop + 2 > size_all:
            return MORE
        if data[stop : stop + 2] != b"\r\n":
            raise Garbled("a memcached value was not followed by CRLF")
        found[fields[1]] = (data[start:stop], int(fields[4]) if with_cas else 0)
        pos = stop + 2


def many_values(buf: bytearray) -> Any:
    return parse_values(buf, False)


def values_with_cas(buf: bytearray) -> Any:
    return parse_values(buf, True)


def one_value(buf: bytearray) -> Any:
    """The answer to ``get`` of one key: its bytes, ``None``, or ``MORE``."""
    if buf == b"END\r\n":  # a miss: the common short answer
        return None
    found = parse_values(buf, False)
    if found is MORE:
        return MORE
    if not found:
        return None
    if len(found) != 1:
        raise Garbled("memcached sent more than one value for one key")
    return next(iter(found.values()))[0]


def answer_lines(count: int) -> Parser:
    """A parser for ``count`` one-line answers (a pipeline of storage or delete commands)."""

    def parse(buf: bytearray) -> Any:
        seen = buf.count(b"\r\n")
        if seen < count:
            if seen and buf.startswith((b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")):
                check_line(bytes(buf[: buf.find(b"\r\n")]))
            return MORE
        if seen > count or not buf.endswith(b"\r\n"):
            raise Garbled("memcached sent more answers than commands")
        return [check_line(line) for line in bytes(buf).split(b"\r\n")[:count]]

    return parse


def stats_lines(buf: bytearray) -> Any:
    """``STAT name value`` lines up to ``END``: ``{name: value}``, or ``MORE``."""
    if buf.startswith((b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")):
        check_line(bytes(buf))
    if not (buf == b"END\r\n" or buf.endswith(b"\r\nEND\r\n")):
        return MORE
    out: dict[bytes, bytes] = {}
    for line in bytes(buf).split(b"\r\n"):
        parts = line.split(b" ", 2)
        if len(parts) == 3 and parts[0] == b"STAT":
            out[parts[1]] = parts[2]
    return out


class Connection(asyncio.Protocol):
    """One connection; one command at a time, whose answer is parsed as its bytes arrive."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Any] | None = None
        self.parse: Parser = many_values
        self.lost: BaseException | None = None
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():  # bytes nobody asked for: never reuse this
            self.lost = Garbled("memcached sent an answer to no command")
            return
        try:
            result = self.parse(buf)
        except Exception as exc:  # a parse or error-line failure ends this command
            self.waiter = None
            waiter.set_exception(exc)
            return
        if result is not MORE:
            self.waiter = None
            buf.clear()
            waiter.set_result(result)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or EOFError("memcached closed the connection")
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self.lost)

    def request(self, command: bytes, parse: Parser) -> asyncio.Future[Any]:
        """Send ``command``; the future gets ``parse``'s result for the whole answer."""
        if self.lost is not None:
            raise self.lost
        assert self.transport is not None
        waiter = self.waiter = self.loop.create_future()
        self.parse = parse
        self.transport.write(command)
        return waiter

    def expire(self) -> None:
        """The command's deadline has passed: fail its answer and drop the connection."""
        error = TimeoutError("memcached command deadline passed")
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.lost = self.lost or error
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once (its state is unknown)."""
        self.lost = self.lost or EOFError("connection dropped")
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close an idle connection at once.

        Aborted rather than closed: an idle connection has nothing left to send,
        and a TLS close would first wait for the server's close_notify, which a
        loop that is shutting down does not wait for (the socket would leak).
        """
        self.abort()


async def close_all(pools: dict[str, collections.deque[Connection]]) -> None:
    """Close every idle connection of one loop's table."""
    for conns in pools.values():
        while conns:
            conns.pop().close()


ONE_LINE: Final = answer_lines(1)


def store_command(verb: bytes, mkey: bytes, data: bytes, exptime: int, extra: bytes = b"") -> bytes:
    return b"%s %s 0 %d %d%s\r\n%s\r\n" % (verb, mkey, exptime, len(data), extra, data)
