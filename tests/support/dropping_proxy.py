"""A TCP proxy in front of a server whose connections can be cut on demand: a browser's WebSocket (and any
request in flight) is dropped while the server keeps running and writing (tests/test_monitor.py,
bench/monitor.py). `drop(hold)` resets every open connection and refuses new ones for `hold` seconds."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from types import TracebackType


class DroppingProxy:
    """Forward 127.0.0.1:<port> to `target` (host, port), one pair of threads per connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._refuse_until = 0.0
        self._closed = False
        self.drops = 0
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def __enter__(self) -> DroppingProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self._refuse_until:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), name="proxy-pipe", daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with self._lock:
                    self._open.discard(s)
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def drop(self, hold: float = 0.0) -> int:
        """Reset every open connection (both sides) and refuse new ones for `hold` seconds; returns how
        many connections were cut."""
        with self._lock:
            self._refuse_until = time.monotonic() + hold
            cut = list(self._open)
            self._open.clear()
        for s in cut:
            _reset(s)
        self.drops += 1
        return len(cut) // 2

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.drop()


def _reset(s: socket.socket) -> None:
    """Close with a RST (SO_LINGER 0), as a dropped network path looks to the peer."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.shutdown(socket.SHUT_RDWR)  # wakes the pipe thread blocked reading it
    except OSError:
        pass
    s.close()
