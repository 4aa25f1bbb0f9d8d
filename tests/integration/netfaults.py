"""A TCP forwarder that drops its first connections: a service that is briefly unreachable."""

from __future__ import annotations

import contextlib
import socket
import threading


class FlakyProxy:
    """Listens on 127.0.0.1:<port>; closes the first `drop_first` connections at once and
    forwards the others to `target`. Counts both."""

    def __init__(self, target: tuple[str, int], drop_first: int = 1) -> None:
        self.target, self.drop_first = target, drop_first
        self.dropped = self.forwarded = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.dropped < self.drop_first:
                self.dropped += 1
                client.close()
                continue
            self.forwarded += 1
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self._server.close()
