"""A TCP forwarder the test controls: cut() drops a link both ways, heal() restores it."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class LinkProxy:
    """Listens on ``listen`` and forwards each connection to ``target``.

    While cut, existing connections are closed and new ones are accepted and
    closed at once, which is what a partition looks like to pysyncobj.
    """

    def __init__(self, *, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(listen, reuse_port=False)
        self._server.setblocking(False)
        self.address = f"{listen[0]}:{self._server.getsockname()[1]}"
        self._cut = threading.Event()
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._server, selectors.EVENT_READ)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for s in list(self._pairs):
                self._close(s)

    def heal(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with self._lock:
            for s in list(self._pairs):
                self._close(s)
        self._server.close()

    def _close(self, s: socket.socket) -> None:
        other = self._pairs.pop(s, None)
        for x in (s, other):
            if x is None:
                continue
            self._pairs.pop(x, None)
            with contextlib.suppress(Exception):
                self._sel.unregister(x)
            with contextlib.suppress(Exception):
                x.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with self._lock:
                    if sock is self._server:
                        self._accept()
                        continue
                    if sock not in self._pairs:
                        continue
                    try:
                        data = sock.recv(1 << 16)
                    except OSError:
                        data = b""
                    if not data or self._cut.is_set():
                        self._close(sock)
                        continue
                    try:
                        self._pairs[sock].sendall(data)
                    except OSError:
                        self._close(sock)

    def _accept(self) -> None:
        try:
            client, _ = self._server.accept()
        except OSError:
            return
        if self._cut.is_set():
            client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=1)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setblocking(True)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pairs[client] = upstream
        self._pairs[upstream] = client
        self._sel.register(client, selectors.EVENT_READ)
        self._sel.register(upstream, selectors.EVENT_READ)
