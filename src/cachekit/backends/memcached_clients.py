"""The pymemcache clients under the memcached backend: a lock-free read path and counted deletes.

Also what keeps them apart across ``fork()``: ``_Process`` follows this
process's id cheaply, and ``_drop_inherited`` closes a child's copies of its
parent's connections without touching the parent's.
"""

from __future__ import annotations

import collections
import os
from contextlib import suppress
from typing import Any

from pymemcache.client.base import Client, PooledClient, _readline, _readvalue
from pymemcache.exceptions import MemcacheUnknownError

__all__: list[str] = []


class _Process:
    """This process's id, kept by an at-fork hook so the hot path reads it without a system call."""

    pid = 0  # set by hook()
    hooked = False

    @classmethod
    def hook(cls) -> None:
        """Start following forks (once per process)."""
        if not cls.hooked:
            cls.hooked = True
            os.register_at_fork(after_in_child=cls.forked)
            cls.pid = os.getpid()

    @classmethod
    def forked(cls) -> None:
        """Runs in every child made by ``os.fork()`` (multiprocessing, gunicorn, ...)."""
        cls.pid = os.getpid()


class _FastPooledClient(PooledClient):  # type: ignore[misc]
    """A ``PooledClient`` whose ``get`` (the hot path) borrows a connection without a lock.

    pymemcache's pool takes a lock and a context manager per call (~5 us, about a
    fifth of a loopback hit); ``deque.pop``/``append`` are atomic, so reads use an
    idle list of plain clients instead, and send ``get`` through ``_lean_get``.
    Writes keep the regular pool.
    """

    _MAX_IDLE = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle: collections.deque[Client] = collections.deque()

    def get(self, key: Any, default: Any = None) -> Any:
        """Return the bytes stored under ``key`` (a ``memcached_key``), or ``default``."""
        try:
            client = self._idle.pop()
        except IndexError:
            client = self._create_client()
        try:
            value = _lean_get(client, key)
        except BaseException:
            client.close()  # a failed connection is never reused
            raise
        if len(self._idle) < self._MAX_IDLE:
            self._idle.append(client)
        else:
            client.close()
        return default if value is None else value

    def drop_idle(self) -> None:
        """Close every idle connection: after one failed, the rest likely lead to a dead server.

        Reads and writes keep separate idle connections; without this, a write
        after a server restart would still find a stale one that no read touched.
        """
        while True:
            try:
                self._idle.pop().close()
            except IndexError:
                break
        pool = self.client_pool
        with pool._lock:  # pymemcache's ObjectPool has no public "drop the free ones"
            stale = list(pool._free_objs)
            pool._free_objs.clear()
        for conn in stale:
            conn.close()

    def close(self) -> None:
        """Close every connection, pooled and idle."""
        super().close()
        while self._idle:
            self._idle.pop().close()


def _lean_get(client: Client, key: str) -> bytes | None:
    """``get key`` on one connection; ``None`` for a miss.

    pymemcache's ``Client.get`` re-checks the key, maps it back and runs the
    serde (~3 us of Python, a tenth of a loopback hit); the keys here come from
    ``memcached_key`` (safe ASCII) and the values are bytes, so only the reply
    is parsed, with pymemcache's own readers. The caller closes the connection
    on any error, so a half-read reply is never taken for the next one.
    """
    sock = client.sock
    if sock is None:
        client._connect()
        sock = client.sock
    sock.sendall(b"get " + client.key_prefix + key.encode() + b"\r\n")
    buf, line = _readline(sock, b"")
    if line == b"END":
        return None
    if not line.startswith(b"VALUE "):
        client._raise_errors(line, b"get")  # SERVER_ERROR, CLIENT_ERROR, ERROR
        raise MemcacheUnknownError(line[:32])
    header = line.split()  # VALUE <key> <flags> <bytes>
    if len(header) < 4 or not header[3].isdigit():
        raise MemcacheUnknownError(line[:32])
    buf, value = _readvalue(sock, buf, int(header[3]))
    buf, line = _readline(sock, buf)
    if line != b"END" or buf:
        raise MemcacheUnknownError(line[:32])
    return value  # type: ignore[no-any-return]


def _drop_inherited(client: Any) -> None:
    """Close this process's copies of a parent's connections, without the parent's locks.

    Closing a descriptor inherited through ``fork()`` leaves the connection open
    for the parent (no ``shutdown``, no ``quit``); a pool lock is never taken,
    since another thread of the parent may have held it at the fork.
    """
    conns: list[Any] = list(getattr(client, "_idle", ()))
    pool = getattr(client, "client_pool", None)
    if pool is not None:
        conns += [*pool.free, *pool.used]
    elif isinstance(client, Client):
        conns.append(client)
    for conn in conns:
        sock, conn.sock = getattr(conn, "sock", None), None
        if sock is not None:
            with suppress(OSError):
                sock.close()


def _delete_counted(client: Any, mkeys: list[str]) -> int:
    """Pipeline ``delete`` for ``mkeys`` and count the ``DELETED`` answers."""
    pool = getattr(client, "client_pool", None)
    if pool is not None:
        with pool.get_and_release(destroy_on_fail=True) as conn:
            return _delete_on(conn, mkeys)
    if hasattr(client, "_misc_cmd"):
        return _delete_on(client, mkeys)
    client.delete_many(mkeys, noreply=False)  # a client type that cannot count
    return 0


def _delete_on(conn: Any, mkeys: list[str]) -> int:
    # pymemcache's public delete_many() drops the answers; its _misc_cmd keeps them
    cmds = [b"delete " + conn.check_key(k, conn.key_prefix) + b"\r\n" for k in mkeys]
    lines = conn._misc_cmd(cmds, b"delete", False)
    return sum(1 for line in lines if line == b"DELETED")
