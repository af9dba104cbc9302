"""The threading HTTP server that the local server and the bridge share: it binds without a reverse-DNS lookup,
knows its open connections, and can cut idle keep-alive ones when it stops."""

from __future__ import annotations

import gc
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast


class TrackingHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that tracks its connections; subclasses may refuse new ones (:meth:`admit`)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], family: int) -> None:
        self.address_family = family
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse-DNS lookup (getfqdn), which can stall for seconds."""
        socketserver.TCPServer.server_bind(self)
        address = cast(tuple[str, int], self.server_address)
        self.server_name, self.server_port = address[0], address[1]

    def admit(self, open_connections: int) -> bool:
        """Whether to take one more connection; by default always."""
        return True

    def refuse(self, request: socket.socket) -> None:
        """Answer a connection that :meth:`admit` turned away (it is closed afterwards)."""

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track the connection before handing it to a handler thread."""
        with self._connections_lock:
            admitted = self.admit(len(self._connections))
            if admitted:
                self._connections.add(request)
        if not admitted:
            self.refuse(request)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection once its handler is done."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def close_connections(self) -> None:
        """Shut down the open keep-alive connections so their handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def tune_gc_for_serving(young_threshold: int) -> None:
    """For a process that does nothing but serve (the command line's ``serve`` and ``bridge``, never the library in
    an app's process): freeze the start-up objects out of the cycle collector and collect the young generation only
    every ``young_threshold`` allocations. Requests create large numbers of objects that reference counting frees;
    with the default threshold the collector keeps rescanning them while they are still alive."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold, 20, 20)
