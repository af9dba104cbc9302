"""The OTLP/HTTP receiver: ``POST /v1/traces`` (protobuf or JSON, gzip/deflate), ``GET /health``.

HTTP/1.1 with keep-alive on the standard library's threading server: one thread per connection, a cap on
connections, a deadline for receiving each request and an idle timeout between requests. Every answer is written
in one ``send`` (and TCP_NODELAY is set), so keep-alive clients never wait out Nagle + delayed-ACK stalls.

Status codes follow the OTLP/HTTP rules as the official collector's ``otlphttp`` exporter applies them:
200 (with a partial success when spans were refused), 400/401/404/413/415 for requests that will never be taken
(the sender drops them), and 503 with ``Retry-After`` for everything transient (the sender keeps and retries).
The bridge never answers 500 for transient trouble: the collector treats 500 as permanent and drops the data.
"""

from __future__ import annotations

import io
import logging
import socket
import time
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from ..httpserver import TrackingHTTPServer
from ..jsondoc import dumps
from . import respond
from .decode import RequestError, decompress, media_type, parse

if TYPE_CHECKING:
    from .app import Bridge

logger = logging.getLogger("agentsight_otel.bridge")

_DRAIN_LIMIT = 1024 * 1024  # an unwanted body up to this size is read and dropped to keep the connection
_READ_CHUNK = 1024 * 1024
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_HEALTH_PATHS = ("/health", "/healthz", "/")


class BridgeHTTPServer(TrackingHTTPServer):
    """The bridge's HTTP server: caps connections (a short 503 beyond the cap) and knows its bridge."""

    request_queue_size = 128

    def __init__(self, address: tuple[str, int], bridge: Bridge, family: int) -> None:
        self.bridge = bridge
        super().__init__(address, _Handler, family)

    def admit(self, open_connections: int) -> bool:
        return open_connections < self.bridge.settings.max_connections

    def refuse(self, request: socket.socket) -> None:
        _refuse_connection(request, self.bridge.settings.retry_after)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that broke mid-request is routine for a server; log it quietly."""
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


def _refuse_connection(sock: socket.socket, retry_after: int) -> None:
    """Too many connections: a short 503 on the new one, written without a handler thread."""
    body = dumps({"code": respond.UNAVAILABLE, "message": "too many connections to the bridge; retry later"})
    head = (
        f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Retry-After: {retry_after}\r\nConnection: close\r\n\r\n"
    )
    try:
        sock.settimeout(1.0)
        sock.sendall(head.encode("latin-1") + body)
    except OSError:
        pass  # the server closes the connection either way


class _RequestClock(io.RawIOBase):
    """The connection's reads, each request bounded by ``request_timeout`` from its first byte, headers included.

    A per-read socket timeout alone lets a client that sends a byte every few seconds hold a connection slot (and
    the thread behind it) forever, before any token is checked. Between requests the idle timeout applies.
    """

    def __init__(self, sock: socket.socket, idle_timeout: float, request_timeout: float) -> None:
        super().__init__()
        self._sock = sock
        self._idle = idle_timeout
        self._limit = request_timeout
        self.deadline: float | None = None
        self.cap: float | None = None  # a shorter deadline of the read in progress (a body read away, say)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        until = min((d for d in (self.deadline, self.cap) if d is not None), default=None)
        if until is None:
            self._sock.settimeout(self._idle)
        else:
            left = until - time.monotonic()
            if left <= 0:
                raise socket.timeout("the request did not arrive in time")
            self._sock.settimeout(min(left, self._idle))
        received = self._sock.recv_into(buffer)
        if received and self.deadline is None:
            self.deadline = time.monotonic() + self._limit
        return received


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "agentsight-otel-bridge"
    sys_version = ""
    server: BridgeHTTPServer

    def setup(self) -> None:
        super().setup()
        settings = self.server.bridge.settings
        self.connection.settimeout(settings.idle_timeout)
        self._clock = _RequestClock(self.connection, settings.idle_timeout, settings.request_timeout)
        self.rfile = io.BufferedReader(self._clock)

    def handle_one_request(self) -> None:
        self._media: str | None = None
        self._body_done = False
        self._clock.deadline = None  # the next request's time starts at its first byte
        try:
            self.connection.settimeout(self.server.bridge.settings.idle_timeout)
        except OSError:
            self.close_connection = True
            return
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
        logger.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug('"%s" %s', getattr(self, "requestline", ""), code)

    # -- routes ----------------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        bridge = self.server.bridge
        path = self.path.split("?", 1)[0]
        if path in _HEALTH_PATHS:
            health = bridge.health()
            self._send(200 if health["status"] == "ok" else 503, "application/json", dumps(health))
            return
        if path in bridge.paths:
            self._error(405, "send traces with POST", {"Allow": "POST"})
            return
        self._error(404, f"nothing at {path}; OTLP traces go to POST {bridge.settings.path}")

    def do_POST(self) -> None:  # noqa: N802
        with self.server.bridge.tracked():
            self._post()

    def _post(self) -> None:
        bridge = self.server.bridge
        self._media = media_type(self.headers.get("Content-Type"))
        path = self.path.split("?", 1)[0]
        if path not in bridge.paths:
            self._error(404, f"no OTLP traces receiver at {path}; send to {bridge.settings.path}")
            return
        if not bridge.authorized(self.headers.get):  # first: a stranger learns nothing of the bridge's state
            self._error(401, "a valid bridge token is required", {"WWW-Authenticate": 'Bearer realm="agentsight-otel"'})
            return
        refusal = bridge.admission()
        if refusal is not None:
            self._error(503, refusal[0], {"Retry-After": str(refusal[1])})
            return
        if self._media is None:
            self._error(
                415,
                f"unsupported Content-Type {self.headers.get('Content-Type')!r}: "
                "use application/x-protobuf or application/json",
            )
            return
        settings = bridge.settings
        try:
            raw = self._read_body(settings.max_body_bytes, settings.request_timeout)
            body = decompress(raw, self.headers.get("Content-Encoding"), settings.max_decompressed_bytes)
            del raw
            request = parse(body, self._media)
            del body
            answer = bridge.ingest(request)
        except RequestError as exc:
            self._error(exc.status, exc.message)
            return
        except Exception:  # noqa: BLE001 - a bug must not become a 500, which a collector treats as permanent
            logger.exception("the bridge failed on a request")
            self.close_connection = True
            self._error(
                503, "the bridge failed on this request; retry later", {"Retry-After": str(settings.retry_after)}
            )
            return
        if answer.status == 200:
            self._send(200, self._media, respond.success(self._media, answer.rejected, answer.message))
        else:
            headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after is not None else None
            self._error(answer.status, answer.message or "retry later", headers)

    def do_HEAD(self) -> None:  # noqa: N802 - load balancers check health with HEAD
        if self.path.split("?", 1)[0] in _HEALTH_PATHS:
            self.do_GET()  # _send writes the head alone for HEAD
        else:
            self._not_allowed()

    def do_PUT(self) -> None:  # noqa: N802
        self._not_allowed()

    def do_DELETE(self) -> None:  # noqa: N802
        self._not_allowed()

    def do_PATCH(self) -> None:  # noqa: N802
        self._not_allowed()

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._not_allowed()

    def _not_allowed(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in self.server.bridge.paths:
            self._error(405, f"{self.command} is not supported; send traces with POST", {"Allow": "POST"})
        elif path in _HEALTH_PATHS:
            self._error(405, f"{self.command} is not supported; read health with GET", {"Allow": "GET, HEAD"})
        else:
            self._error(404, f"nothing at {path}; OTLP traces go to POST {self.server.bridge.settings.path}")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line, an unknown method, oversized headers)
        in the OTLP error shape, like every other answer, and the connection closed."""
        self.close_connection = True
        self._media = None
        self._error(code, message or _REASONS.get(code, "the request could not be read"))

    # -- reading ---------------------------------------------------------------------------------------------

    def _read_body(self, limit: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        encoding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if encoding and encoding != "identity":
            if encoding != "chunked":
                self.close_connection = True
                raise RequestError(400, f"unsupported Transfer-Encoding {encoding!r}")
            return self._read_chunked(limit, deadline)
        declared = self.headers.get("Content-Length")
        if declared is None:
            self.close_connection = True
            raise RequestError(411, "a Content-Length (or chunked transfer encoding) is required")
        try:
            length = int(declared)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise RequestError(400, f"invalid Content-Length {declared!r}") from None
        if length > limit:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise RequestError(413, f"the request body is {length} bytes; the bridge takes at most {limit}")
        data = self._read_exact(length, deadline)
        self._body_done = True
        return data

    def _read_exact(self, length: int, deadline: float) -> bytes:
        parts: list[bytes] = []
        remaining = length
        self._clock.cap = deadline
        try:
            while remaining > 0:
                if deadline - time.monotonic() <= 0:
                    raise TimeoutError
                chunk = self.rfile.read1(min(remaining, _READ_CHUNK))
                if not chunk:
                    self.close_connection = True
                    raise RequestError(400, "the connection closed before the whole body arrived")
                parts.append(chunk)
                remaining -= len(chunk)
        except (TimeoutError, socket.timeout):
            self.close_connection = True
            raise RequestError(408, "the request body did not arrive in time") from None
        finally:
            self._clock.cap = None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_line(self, deadline: float) -> bytes:
        if deadline - time.monotonic() <= 0:
            raise TimeoutError
        self._clock.cap = deadline
        try:
            line = self.rfile.readline(1026)
        finally:
            self._clock.cap = None
        if not line.endswith(b"\n"):
            self.close_connection = True
            raise RequestError(400, "malformed chunked body")
        return line

    def _read_chunked(self, limit: int, deadline: float) -> bytes:
        parts: list[bytes] = []
        total = 0
        try:
            while True:
                size_line = self._read_line(deadline).split(b";", 1)[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    self.close_connection = True
                    raise RequestError(400, "malformed chunk size") from None
                if size == 0:
                    while self._read_line(deadline) not in (b"\r\n", b"\n"):
                        pass  # trailers are ignored
                    break
                total += size
                if total > limit:
                    self.close_connection = True
                    raise RequestError(413, f"the request body is larger than {limit} bytes")
                parts.append(self._read_exact(size, deadline))
                self._read_line(deadline)
        except (TimeoutError, socket.timeout):
            self.close_connection = True
            raise RequestError(408, "the request body did not arrive in time") from None
        self._body_done = True
        return b"".join(parts)

    def _discard_body(self) -> None:
        """An answer before the body was read: read a small body away (keep-alive), or close after answering."""
        headers = getattr(self, "headers", None)  # not there when the request line itself was refused
        if self._body_done or self.close_connection or self.command in ("GET", "HEAD") or headers is None:
            return
        declared = headers.get("Content-Length")
        encoding = headers.get("Transfer-Encoding") or ""
        if encoding or declared is None:
            if encoding:
                self.close_connection = True
            return
        try:
            length = int(declared)
        except ValueError:
            self.close_connection = True
            return
        if length > _DRAIN_LIMIT:
            self.close_connection = True
            return
        try:
            self._read_exact(length, time.monotonic() + 5.0)
            self._body_done = True
        except RequestError:
            self.close_connection = True

    # -- writing ---------------------------------------------------------------------------------------------

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        content_type, body = respond.status(self._media, status, message)
        self._send(status, content_type, body, headers)

    def _send(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        """The whole answer in one write: status line, headers and body."""
        self._discard_body()
        if self.server.bridge.stopping:
            self.close_connection = True
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
            f"Server: {self.server_version}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
        ]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.log_request(status, len(body))
        try:
            self.wfile.write(head + body if self.command != "HEAD" else head)
        except OSError:
            self.close_connection = True
