"""Per-command deadlines for redis-py: connect, handshake, every read and write end by one deadline.

A backend sets ``_DEADLINE.at`` (a ``time.monotonic()`` time) around each
command; the connection classes made by ``deadline_connection_class`` give
every blocking socket call only what is left of it, so a server that trickles
its answer a byte at a time cannot hold a caller past the deadline.
"""

from __future__ import annotations

import threading
from time import monotonic
from typing import Any

__all__ = ["deadline_connection_class"]


class _Deadline(threading.local):
    """The monotonic time by which this thread's current command must be done."""

    at: float | None = None


_DEADLINE = _Deadline()


def _budget(timeout: float | None) -> float | None:
    """``timeout`` shortened to what is left of the command's deadline (if one is running)."""
    at = _DEADLINE.at
    if at is None:
        return timeout
    remaining = at - monotonic()
    if remaining <= 0:
        raise TimeoutError("the command's deadline has passed")  # socket.timeout
    return remaining if timeout is None or remaining < timeout else timeout


class _DeadlineSocket:
    """A connected socket whose blocking calls never run past the command's deadline.

    redis-py sets one timeout per ``recv``; a server trickling its answer resets
    it with every byte. Here each call gets only what is left of the deadline.
    """

    __slots__ = ("_set", "_sock", "_timeout")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._timeout: float | None = sock.gettimeout()  # what redis-py asked for
        self._set = self._timeout  # what the socket has now

    def _arm(self) -> Any:
        want = self._timeout
        if want != 0:  # 0 is a non-blocking poll: nothing to bound
            want = _budget(want)
        if want != self._set:
            self._sock.settimeout(want)
            self._set = want
        return self._sock

    def recv(self, *args: Any) -> bytes:
        data: bytes = self._arm().recv(*args)
        return data

    def recv_into(self, *args: Any) -> int:
        n: int = self._arm().recv_into(*args)
        return n

    def send(self, *args: Any) -> int:
        n: int = self._arm().send(*args)
        return n

    def sendall(self, *args: Any) -> None:
        self._arm().sendall(*args)

    def settimeout(self, value: float | None) -> None:
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def __getattr__(self, name: str) -> Any:  # fileno, shutdown, close, pending, ...
        return getattr(self._sock, name)


class _DeadlineMixin:
    """Connect, TLS handshake and every read and write bounded by the command's deadline."""

    _socket_connect_timeout: float | None
    socket_timeout: float | None

    @property
    def socket_connect_timeout(self) -> float | None:
        return _budget(self._socket_connect_timeout)

    @socket_connect_timeout.setter
    def socket_connect_timeout(self, value: float | None) -> None:
        self._socket_connect_timeout = value

    def _connect(self) -> Any:
        return _DeadlineSocket(super()._connect())  # type: ignore[misc]

    def _wrap_socket_with_ssl(self, sock: Any) -> Any:
        # CPython bounds a whole TLS handshake by the socket's timeout
        sock.settimeout(_budget(self.socket_timeout))
        wrapped = super()._wrap_socket_with_ssl(sock)  # type: ignore[misc]
        wrapped.settimeout(self.socket_timeout)
        return wrapped


_DEADLINE_CLASSES: dict[type[Any], type[Any]] = {}


def deadline_connection_class(base: type[Any]) -> type[Any]:
    """Return a subclass of the redis-py connection class ``base`` that obeys command deadlines."""
    cls = _DEADLINE_CLASSES.get(base)
    if cls is None:
        cls = _DEADLINE_CLASSES[base] = type(f"Deadline{base.__name__}", (_DeadlineMixin, base), {})
    return cls
