"""Fault injection for tests: private server processes, a listener that never answers, a TCP proxy.

Everything listens on 127.0.0.1 only and stops with its context manager.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator


def free_port() -> int:
    """Return a loopback TCP port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.02)


class ServerProcess:
    """A private redis-server or memcached on its own port; can be killed and restarted."""

    def __init__(self, kind: str, port: int | None = None) -> None:
        if kind not in ("redis", "memcached"):
            raise ValueError(kind)
        binary = "redis-server" if kind == "redis" else "memcached"
        if shutil.which(binary) is None:
            raise RuntimeError(f"{binary} is not installed; run `make test`, which installs it")
        self.kind = kind
        self.port = port or free_port()
        self._dir = tempfile.mkdtemp(prefix=f"ck-{kind}-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.kind}://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        if self.kind == "redis":
            cmd = [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
            ]
        else:
            cmd = ["memcached", "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64"]
            if os.geteuid() == 0:
                cmd += ["-u", "root"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown), and wait until it is gone."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


class StallServer:
    """Accepts TCP connections and never sends a byte (a hung server)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self._conns.append(conn)  # hold it open, read nothing, answer nothing

    def __enter__(self) -> StallServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()
        self._sock.close()


class TcpProxy:
    """Forwards a loopback port to a target; ``stall()`` passes no bytes until ``resume()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []

    def stall(self) -> None:
        """Keep connections open but pass no bytes in either direction."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data or not self._forward():
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _forward(self) -> bool:
        """Called before passing received bytes on: wait while stalled; False drops them."""
        while not self._open.is_set() and not self._stop.is_set():
            self._open.wait(0.05)
        return True

    def _admit(self) -> bool:
        """Whether to connect a newly accepted client (False: it is closed at once)."""
        return True

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                continue
            if not self._admit():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pipe, args=(a, b), daemon=True)
                t.start()
                self._threads.append(t)

    def __enter__(self) -> TcpProxy:
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._open.set()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
        self._sock.close()
        for t in self._threads:
            t.join(timeout=2)


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port with nothing listening (connection refused at once)."""
    yield free_port()


class TrickleProxy:
    """Forwards a loopback port to a target, passing the answers back one byte per ``interval``.

    Requests reach the target at once; each reply byte waits ``interval`` seconds,
    so a client whose socket timeout is per read (not per command) is held for
    as many intervals as its answer has bytes.
    """

    def __init__(self, target_port: int, interval: float = 0.2) -> None:
        self.target_port = target_port
        self.interval = interval
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []

    def _pipe(self, src: socket.socket, dst: socket.socket, trickle: bool) -> None:
        src.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                if not trickle:
                    dst.sendall(data)
                    continue
                for i in range(len(data)):
                    if self._stop.wait(self.interval):
                        break
                    dst.sendall(data[i : i + 1])
            except OSError:
                break
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            self._socks += [client, upstream]
            for a, b, trickle in ((client, upstream, False), (upstream, client, True)):
                t = threading.Thread(target=self._pipe, args=(a, b, trickle), daemon=True)
                t.start()
                self._threads.append(t)

    def __enter__(self) -> TrickleProxy:
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
        self._sock.close()
        for t in self._threads:
            t.join(timeout=2)


class MemcachedProcess(ServerProcess):
    """A private memcached with extra options (``-m 2 -I 512k -M``: small, refuses when full)."""

    def __init__(self, *options: str, port: int | None = None) -> None:
        super().__init__("memcached", port)
        self.options = list(options)

    def start(self) -> MemcachedProcess:
        cmd = ["memcached", "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", *self.options]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self


class CutProxy(TcpProxy):
    """A ``TcpProxy`` that can lose traffic: ``cut()`` drops every byte and every connection.

    Unlike a stalled server (which still runs the buffered commands once it
    resumes), a command sent while cut never reaches the server.
    """

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self._cut = threading.Event()

    def cut(self) -> None:
        """Drop all traffic and close connections until ``restore()``."""
        self._cut.set()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        """Let new connections through again."""
        self._cut.clear()

    def _forward(self) -> bool:
        return not self._cut.is_set()

    def _admit(self) -> bool:
        return not self._cut.is_set()


class ReplyServer:
    """Answers every request it reads with the same bytes (then closes, if ``close``).

    For replies a healthy server rarely sends: ``SERVER_ERROR ...``, garbage, a
    reply cut short.
    """

    def __init__(self, reply: bytes, close: bool = False) -> None:
        self.reply = reply
        self.close = close
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                conn.sendall(self.reply)
            except OSError:
                break
            if self.close:
                break
        with contextlib.suppress(OSError):
            conn.close()

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def __enter__(self) -> ReplyServer:
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sock.close()
        for t in self._threads:
            t.join(timeout=2)
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()


class FullBacklogServer:
    """A listener whose accept queue is full: a new connection's handshake never completes."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(0)  # one queued connection fills it; nothing is ever accepted
        self.port = int(self._sock.getsockname()[1])
        self._filler = socket.create_connection(("127.0.0.1", self.port), timeout=2)

    def __enter__(self) -> FullBacklogServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._filler.close()
        self._sock.close()
