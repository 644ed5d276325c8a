"""Deadline-bound sockets for pymemcache: each connect, read and write ends by the command deadline.

A backend sets ``_deadline.at`` (a ``time.monotonic()`` time, 0 for none)
around each command and gives pymemcache ``_socket_module`` (and, for TLS, a
``_DeadlineTLS``) to open its connections with; the sockets that come out
set their timeout to the time left before each blocking call.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import types
from collections.abc import Callable
from typing import Any, Final

__all__: list[str] = []


class _Deadline(threading.local):
    """The ``time.monotonic()`` by which this thread's memcached command must end (0: none)."""

    at = 0.0


_deadline: Final = _Deadline()


#: How far a read's timeout may end from the deadline before it is reset to the
#: time left: resetting costs a system call, and a hit should not pay one per read.
_SLACK: Final = 0.002


class _DeadlineMixin:
    """Socket methods that bound each blocking call by the current command's deadline.

    A read or write whose socket timeout would end within ``_SLACK`` of the
    deadline goes ahead as it is (the hot path: no system call); otherwise the
    timeout is set to the time left first.
    """

    _base_recv: Callable[..., bytes]
    _base_sendall: Callable[..., None]
    _base_connect: Callable[..., None]

    def _tighten(self, at: float) -> None:
        left = at - time.monotonic()
        if left <= 0:
            raise TimeoutError("memcached command deadline passed")
        self.settimeout(left)  # type: ignore[attr-defined]

    def connect(self, address: Any) -> None:
        at = _deadline.at
        if at:
            current = self.gettimeout()  # type: ignore[attr-defined]
            if current is None or current > at - time.monotonic():
                self._tighten(at)
        self._base_connect(self, address)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        at = _deadline.at
        if at:
            left = at - time.monotonic()
            # block neither past the deadline nor give up before it, give or take the slack
            current = self.gettimeout()  # type: ignore[attr-defined]
            if current is None or not 0 < left - _SLACK <= current <= left + _SLACK:
                self._tighten(at)
        return self._base_recv(self, bufsize, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        at = _deadline.at
        if at:
            left = at - time.monotonic()
            current = self.gettimeout()  # type: ignore[attr-defined]
            if current is None or not 0 < left - _SLACK <= current <= left + _SLACK:
                self._tighten(at)
        self._base_sendall(self, data, flags)


class _DeadlineSocket(_DeadlineMixin, socket.socket):
    """A TCP (or unix) socket whose reads and writes end by the command's deadline."""

    _base_recv = staticmethod(socket.socket.recv)
    _base_sendall = staticmethod(socket.socket.sendall)
    _base_connect = staticmethod(socket.socket.connect)


class _DeadlineSSLSocket(_DeadlineMixin, ssl.SSLSocket):  # type: ignore[misc]
    """A TLS socket whose reads and writes end by the command's deadline."""

    _base_recv = staticmethod(ssl.SSLSocket.recv)
    _base_sendall = staticmethod(ssl.SSLSocket.sendall)
    _base_connect = staticmethod(ssl.SSLSocket.connect)


class _DeadlineTLS:
    """Stands in for an ``SSLContext`` given to pymemcache: wraps into deadline-bound sockets."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    def wrap_socket(self, sock: socket.socket, server_hostname: str | None = None) -> ssl.SSLSocket:
        """Wrap ``sock`` with the real context, then give it the deadline-bound methods."""
        wrapped = self.context.wrap_socket(sock, server_hostname=server_hostname)
        wrapped.__class__ = _DeadlineSSLSocket  # same layout: SSLSocket plus methods
        return wrapped


#: What pymemcache gets as ``socket_module``: the standard module, but its sockets
#: keep to the command deadline.
_socket_module: Final = types.ModuleType("cachekit_memcached_socket")
_socket_module.__dict__.update(
    {name: getattr(socket, name) for name in dir(socket) if not name.startswith("__")}
)
_socket_module.socket = _DeadlineSocket  # type: ignore[attr-defined]
