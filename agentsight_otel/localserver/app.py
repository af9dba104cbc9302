"""HTTP front end of the local AgentSight-compatible server: routing, auth, body limits and lifecycle."""

from __future__ import annotations

import logging
import re
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from ..httpserver import TrackingHTTPServer, tune_gc_for_serving
from . import feed, viewer, views
from .bodies import BadBody, BodyTooLarge, inflate_gzip
from .faults import INGEST_PATH, FaultInjector, FaultPlan, Faults
from .keys import generate_api_key, is_well_formed, normalise_key
from .store import Store
from .timeutil import utc_now
from .viewer_auth import ViewerAccess
from .views import ApiError, Request, Response, ServerState, json_response

logger = logging.getLogger("agentsight_otel.localserver")

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_ENVIRONMENTS = ("production", "development")
REQUEST_LOG_LIMIT = 10_000
_DRAIN_LIMIT = 64 * 1024 * 1024
_SLUG_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")

NO_CREDENTIALS = "Authentication credentials were not provided."
INVALID_KEY = "Invalid API key."
NO_PERMISSION = "You do not have permission to perform this action."
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

View = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    """A path pattern (trailing slash included, matched exactly) and its views per method."""

    pattern: re.Pattern[str]
    methods: dict[str, View]
    ingest: bool = False  # ingest answers auth failures with 403 and may accept gzip
    viewer: bool = False  # the transcript viewer: keyless on loopback, key or session cookie elsewhere (viewer_auth)
    public: bool = False  # viewer assets (stylesheet, script, icon): no auth at all


ROUTES = (
    Route(re.compile(r"/api/me/"), {"GET": views.me}),
    Route(re.compile(r"/api/ingest/"), {"POST": views.ingest}, ingest=True),
    Route(
        re.compile(r"/api/conversations/"),
        {"GET": views.list_conversations, "POST": views.create_conversation},
    ),
    Route(re.compile(r"/api/conversations/lookup/"), {"GET": views.lookup_conversation}),
    Route(re.compile(r"/api/conversations/([0-9]{1,18})/"), {"GET": views.conversation_detail}),
    Route(
        re.compile(r"/api/conversations/([0-9]{1,18})/transcript/"),
        {"GET": views.conversation_transcript},
    ),
    Route(re.compile(r"/api/attachments/"), {"POST": views.create_attachments}),
    Route(re.compile(r"/api/attachments/([0-9]{1,18})/download/"), {"GET": views.download_attachment}),
    Route(re.compile(r"/api/feed/"), {"GET": feed.feed}),
    # the transcript viewer (viewer.py): HTML pages, the JSON they poll, downloads, sign-in, assets
    Route(re.compile(r"/"), {"GET": viewer.index}, viewer=True),
    Route(re.compile(r"/conversations/([0-9]{1,18})/"), {"GET": viewer.conversation_page}, viewer=True),
    Route(re.compile(r"/viewer/api/conversations/"), {"GET": viewer.api_conversations}, viewer=True),
    Route(re.compile(r"/viewer/api/conversations/([0-9]{1,18})/"), {"GET": viewer.api_conversation}, viewer=True),
    Route(re.compile(r"/viewer/api/feed/"), {"GET": viewer.api_feed}, viewer=True),
    Route(re.compile(r"/viewer/attachments/([0-9]{1,18})/download/"), {"GET": viewer.download}, viewer=True),
    Route(re.compile(r"/login/"), {"GET": viewer.login, "POST": viewer.login}, viewer=True),
    Route(re.compile(r"/logout/"), {"POST": viewer.logout}, viewer=True),
    Route(re.compile(r"/static/viewer\.css"), {"GET": viewer.static_css}, viewer=True, public=True),
    Route(re.compile(r"/static/viewer\.js"), {"GET": viewer.static_js}, viewer=True, public=True),
    Route(re.compile(r"/static/favicon\.svg"), {"GET": viewer.favicon}, viewer=True, public=True),
)


def find_route(path: str) -> tuple[Route, re.Match[str]] | None:
    """Match a path against the routes exactly: no slash appending, no redirects."""
    for route in ROUTES:
        match = route.pattern.fullmatch(path)
        if match is not None:
            return route, match
    return None


class _Reset(Exception):
    """Raised inside the request pipeline to drop the connection with a TCP reset instead of answering."""


class _Backend:
    """Shared per-server state the request handlers use: keys, settings, store, faults and request log."""

    def __init__(
        self,
        roles: dict[str, str],
        state: ServerState,
        max_body_bytes: int,
        faults: Faults | None = None,
    ) -> None:
        self.roles = roles
        self.state = state
        self.max_body_bytes = max_body_bytes
        self.faults = FaultInjector(faults)
        self.stopping = False
        self._log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_LIMIT)
        self._log_lock = threading.Lock()

    def role_of(self, key: str) -> str | None:
        """Return the role of a known key, or None."""
        return self.roles.get(normalise_key(key))

    def record(self, entry: dict[str, Any]) -> None:
        """Append one request to the (bounded) request log."""
        with self._log_lock:
            self._log.append(entry)

    def request_log(self) -> list[dict[str, Any]]:
        """Return a copy of the request log."""
        with self._log_lock:
            return [dict(entry, headers=dict(entry["headers"])) for entry in self._log]


class _HTTPServer(TrackingHTTPServer):
    """The local server's HTTP server: it knows its backend."""

    def __init__(self, address: tuple[str, int], backend: _Backend, family: int) -> None:
        self.backend = backend
        super().__init__(address, _Handler, family)


class _Handler(BaseHTTPRequestHandler):
    """Per-connection request handler: HTTP/1.1 keep-alive, exact Content-Length, JSON errors."""

    protocol_version = "HTTP/1.1"
    server_version = "AgentSightLocal/0.1"
    timeout = 60
    disable_nagle_algorithm = True  # headers and body are separate writes: without this, keep-alive stalls 40 ms
    wbufsize = -1  # buffer the response: status line, headers and a small body leave in one send, not two

    _declared_length: int | None = 0
    _body_pending = False
    _fault: str | None = None  # what was injected into the current request, for the request log

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by base class
        """Send http.server's per-request lines to our logger at DEBUG instead of stderr."""
        if logger.isEnabledFor(logging.DEBUG):  # formatted only when it goes somewhere: this runs per request
            logger.debug("%s - %s", self.address_string(), format % args)

    def handle_expect_100(self) -> bool:
        """Send `100 Continue` at once: the response stream is buffered (wbufsize) and the client waits for it."""
        proceed = super().handle_expect_100()
        self.wfile.flush()
        return proceed

    @property
    def backend(self) -> _Backend:
        """The backend of the server this handler belongs to."""
        return cast(_HTTPServer, self.server).backend

    # -- request pipeline ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Handle one request end to end, turning ApiError and crashes into JSON responses."""
        self._declared_length = self._parse_length()
        self._body_pending = bool(self._declared_length)
        self._fault = None
        try:
            response = self._handle()
        except _Reset:
            self._reset_connection()
            return
        except ApiError as exc:
            response = json_response(exc.status, exc.payload, exc.headers)
        except Exception:  # a bug must not kill the connection thread silently
            logger.exception("local server failed to handle %s", self.command)
            response = json_response(500, {"detail": "Internal server error."})
        self._respond(response)

    # Every method goes through one dispatcher: unknown methods on known routes get 405 there.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def _handle(self) -> Response:
        """Route, authenticate, check method and role, read the body and call the view."""
        url = urlsplit(self.path)
        found = find_route(url.path)
        if found is None:
            raise views.not_found()
        route, match = found
        plan = self.backend.faults.plan(url.path)
        if plan is not None:
            self._inject_before(plan)
        headers = {name.lower(): value for name, value in self.headers.items()} if route.viewer else {}
        role = self._viewer_role(route, headers) if route.viewer else self._authenticate(route)
        view = route.methods.get(self.command)
        if view is None:
            allow = ", ".join(sorted(route.methods))
            raise ApiError(405, {"detail": f'Method "{self.command}" not allowed.'}, {"Allow": allow})
        if self.command in WRITE_METHODS and role != "write" and not route.viewer:
            raise ApiError(403, {"detail": NO_PERMISSION})
        request = Request(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            content_type=self.headers.get("Content-Type"),
            body=self._read_body(route),
            role=role,
            base_url=f"http://{self.headers.get('Host') or self._server_host()}",
            headers=headers,
        )
        response = view(self.backend.state, request, *match.groups())
        if plan is not None and plan.accept_then_fail and 200 <= response.status < 300:
            self._inject(plan, "accept_then_fail", "accept_then_fail")
            if plan.accept_then_fail == "reset":
                raise _Reset
            raise ApiError(503, {"detail": "injected 503"}, plan.headers_for(503))
        if url.path == INGEST_PATH and 200 <= response.status < 300:
            self.backend.faults.count("ingest_ok")
        return response

    # -- fault injection -------------------------------------------------------------------------------

    def _inject(self, plan: FaultPlan, stat: str, label: str) -> None:
        """Count an injected fault and remember it for the request log."""
        self.backend.faults.count(stat)
        self._fault = label if self._fault is None else f"{self._fault},{label}"
        logger.debug("fault injected: %s on %s %s", label, self.command, plan.path)

    def _inject_before(self, plan: FaultPlan) -> None:
        """Carry out the faults decided before processing: delay, outage, size limit, reset, status."""
        if plan.latency > 0:
            self._inject(plan, "latency", "latency")
            time.sleep(plan.latency)
        if plan.outage is not None:
            self._inject(plan, "outage", f"outage_{plan.outage}")
            if plan.outage == "reset":
                raise _Reset
            raise ApiError(503, {"detail": "injected 503 (outage)"}, plan.headers_for(503))
        length = self._declared_length
        if plan.max_ingest_bytes is not None and length is not None and length > plan.max_ingest_bytes:
            self._inject(plan, "413", "413")
            raise ApiError(413, {"detail": "Request body too large."})
        if plan.reset:
            self._inject(plan, "reset", "reset")
            raise _Reset
        if plan.status is not None:
            self._inject(plan, f"status_{plan.status}", f"status_{plan.status}")
            raise ApiError(plan.status, {"detail": f"injected {plan.status}"}, plan.headers_for(plan.status))

    def _reset_connection(self) -> None:
        """Read what is left of the body, then close with SO_LINGER 0 so the peer gets a reset, not an answer."""
        self._drain_body()
        self.close_connection = True
        self._record(None)
        connection = self.connection
        linger = struct.pack("hh" if sys.platform == "win32" else "ii", 1, 0)
        try:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass
        try:
            self.rfile.close()
            connection.close()
        except OSError:
            pass

    def _server_host(self) -> str:
        """host:port of the listening socket, for absolute links when the client sent no Host."""
        address = cast(tuple[str, int], self.server.server_address)
        return f"{address[0]}:{address[1]}"

    def _authenticate(self, route: Route) -> str:
        """Return the key's role or raise: 403 on ingest (no WWW-Authenticate there), 401 elsewhere."""
        status = 403 if route.ingest else 401
        headers = {} if route.ingest else {"WWW-Authenticate": 'Api-Key realm="api"'}
        parts = (self.headers.get("Authorization") or "").split()
        if not parts or parts[0].lower() != "api-key":
            raise ApiError(status, {"detail": NO_CREDENTIALS}, headers)
        if len(parts) != 2 or not is_well_formed(parts[1]):
            raise ApiError(status, {"detail": INVALID_KEY}, headers)
        role = self.backend.role_of(parts[1])
        if role is None:
            raise ApiError(status, {"detail": INVALID_KEY}, headers)
        return role

    def _viewer_role(self, route: Route, headers: dict[str, str]) -> str:
        """The viewer's rule (viewer_auth): "viewer" when the request may read, "" when it must sign in first."""
        access = self.backend.state.viewer
        if route.public or access is None:
            return ""
        if not access.host_allowed(headers):
            raise ApiError(403, {"detail": viewer.HOST_NOT_ALLOWED})
        return access.role_for(headers)

    def _parse_length(self) -> int | None:
        """Declared body length; None when it cannot be known (chunked or malformed)."""
        if self.headers.get("Transfer-Encoding"):
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        raw = raw.strip()
        return int(raw) if raw.isascii() and raw.isdigit() else None

    def _read_body(self, route: Route) -> bytes:
        """Read the body within the cap and undo an accepted Content-Encoding (gzip on ingest only)."""
        length = self._declared_length
        if length is None:
            self.close_connection = True
            raise ApiError(411, {"detail": "A valid Content-Length is required."})
        if length > self.backend.max_body_bytes:
            raise ApiError(413, {"detail": "Request body too large."})
        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        gzip_ok = route.ingest and self.backend.state.gzip_ingest
        if encoding not in ("", "identity") and not (encoding == "gzip" and gzip_ok):
            raise ApiError(400, {"detail": "Unsupported Content-Encoding"})
        raw = self.rfile.read(length)
        self._body_pending = False
        if len(raw) < length:
            self.close_connection = True
            raise ApiError(400, {"detail": "Incomplete request body."})
        if encoding != "gzip":
            return raw
        try:
            return inflate_gzip(raw, self.backend.max_body_bytes)
        except BodyTooLarge as exc:
            raise ApiError(413, {"detail": "Request body too large once decompressed."}) from exc
        except BadBody as exc:
            raise ApiError(400, {"detail": str(exc)}) from exc

    def _drain_body(self) -> None:
        """Discard an unread body so the keep-alive connection stays in sync, or close it if too big."""
        if not self._body_pending:
            return
        self._body_pending = False
        remaining = self._declared_length or 0
        if remaining > _DRAIN_LIMIT:
            self.close_connection = True
            return
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(65536, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            remaining = 1
        if remaining > 0:
            self.close_connection = True

    def _respond(self, response: Response) -> None:
        """Write the response with an exact Content-Length and record it in the request log."""
        self._drain_body()
        if self._declared_length is None or self.backend.stopping:
            self.close_connection = True
        self._record(response.status)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _record(self, status: int | None) -> None:
        """Log what was sent (never the Authorization header) for tests to inspect; a reset has status None."""
        headers = {
            name: value
            for name, value in self.headers.items()
            if name.lower() not in ("authorization", "proxy-authorization")
        }
        self.backend.record(
            {
                "method": self.command,
                "path": self.path,
                "status": status,
                "content_encoding": self.headers.get("Content-Encoding"),
                "body_bytes": self._declared_length or 0,
                "headers": headers,
                "fault": self._fault,
            }
        )


def _build_roles(api_keys: Iterable[str] | None, read_keys: Iterable[str]) -> tuple[dict[str, str], str]:
    """Map normalised keys to roles and return (roles, first write key); shapes are checked."""
    write = list(api_keys) if api_keys is not None else [generate_api_key()]
    if not write:
        raise ValueError("LocalServer needs at least one write key")
    roles: dict[str, str] = {}
    for role, keys in (("write", write), ("read", list(read_keys))):
        for key in keys:
            if not isinstance(key, str) or not is_well_formed(key):
                raise ValueError(f"a {role} key does not match ags_<32 hex>_<6 hex>")
            if roles.setdefault(normalise_key(key), role) != role:
                raise ValueError("a key cannot be both a write key and a read key")
    return roles, write[0]


def _check_environments(environments: Iterable[str]) -> tuple[str, ...]:
    """Environment slugs must be non-empty, lowercase, unique; the first is the default."""
    slugs = tuple(environments)
    if not slugs:
        raise ValueError("LocalServer needs at least one environment")
    for slug in slugs:
        if not isinstance(slug, str) or _SLUG_RE.fullmatch(slug) is None:
            raise ValueError(f"invalid environment slug: {slug!r}")
    if len(set(slugs)) != len(slugs):
        raise ValueError("environment slugs must be unique")
    return slugs


class LocalServer:
    """A local AgentSight-compatible API server (SQLite-backed) for demos, tests and offline development.

    Usage: ``with LocalServer() as srv: ...`` then point a client at ``srv.url`` with ``srv.api_key``.
    The transcript viewer is at ``srv.url + "/"``: keyless when bound to loopback (unless
    ``viewer_requires_key=True``), otherwise it asks for a key (see viewer_auth.py).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_keys: Iterable[str] | None = None,
        read_keys: Iterable[str] = (),
        db_path: str = ":memory:",
        gzip_ingest: bool = True,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        environments: Iterable[str] = DEFAULT_ENVIRONMENTS,
        faults: Faults | None = None,
        viewer_requires_key: bool = False,
    ) -> None:
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        roles, self._api_key = _build_roles(api_keys, read_keys)
        slugs = _check_environments(environments)
        self._host = host
        self._requested_port = port
        self._store = Store(db_path)
        viewer_access = ViewerAccess(host, roles, require_key=viewer_requires_key)
        state = ServerState(self._store, slugs, bool(gzip_ingest), utc_now(), viewer_access)
        self._backend = _Backend(roles, state, max_body_bytes, faults)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> LocalServer:
        """Bind and serve in a daemon thread; returns self. Starting twice is a no-op."""
        if self._stopped:
            raise RuntimeError("LocalServer cannot be restarted after stop()")
        if self._httpd is not None:
            return self
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        try:
            self._httpd = _HTTPServer((self._host, self._requested_port), self._backend, family)
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"agentsight-localserver:{self.port}",
            daemon=True,
        )
        self._backend.faults.restart_outage()
        self._thread.start()
        logger.debug("local server listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and close the database; safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        self._backend.stopping = True
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._store.close()

    def wait(self) -> None:
        """Block until the server thread ends (interruptible by KeyboardInterrupt)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses and keys ------------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The first write-role key (generated when none was given)."""
        return self._api_key

    @property
    def port(self) -> int:
        """The bound port (useful with port=0)."""
        if self._httpd is None:
            raise RuntimeError("LocalServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. http://127.0.0.1:54321."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self._host, self._host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # -- in-process read helpers -------------------------------------------------------------------------

    def transcript(self, conversation_id: str) -> dict[str, Any] | None:
        """The transcript JSON of a conversation (same as the HTTP route), or None if unknown."""
        row = self._store.conversation_by_id(conversation_id)
        return None if row is None else views.load_transcript(self._store, row)

    def conversations(self) -> list[dict[str, Any]]:
        """Every conversation as list-route JSON, newest activity first."""
        _, rows = self._store.list_conversations({})
        return [views.render_conversation(self._store, row) for row in rows]

    def span_count(self, conversation_id: str | None = None) -> int:
        """Stored spans, overall or for one conversation id (0 when unknown)."""
        if conversation_id is None:
            return self._store.span_count()
        row = self._store.conversation_by_id(conversation_id)
        return 0 if row is None else self._store.span_count(row["id"])

    def stored_items(self, conversation_id: str) -> int:
        """Number of transcript items of a conversation (0 when unknown)."""
        transcript = self.transcript(conversation_id)
        return 0 if transcript is None else len(transcript["items"])

    def request_log(self) -> list[dict[str, Any]]:
        """Every request received so far: method, path, status (None for a reset), content_encoding,
        body_bytes, headers and fault (what was injected, or None)."""
        return self._backend.request_log()

    # -- fault injection ---------------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """A copy of the faults in effect."""
        return self._backend.faults.faults

    def set_faults(self, faults: Faults | None) -> None:
        """Replace the faults from the next request on; None (or Faults()) turns them all off, outage included.

        The random generator is re-seeded from `faults.seed`, and an `outage_seconds` outage starts now.
        """
        self._backend.faults.set(faults)

    def outage(self, seconds: float, mode: str = "reset") -> None:
        """Start an outage now: for `seconds`, every request on the fault paths gets a reset (or a 503, with
        mode="503") and nothing is stored. `outage(0)` ends one early."""
        self._backend.faults.outage(seconds, mode)

    def outage_remaining(self) -> float:
        """Seconds left in the current outage (0 when there is none)."""
        return self._backend.faults.outage_remaining()

    def fault_stats(self) -> dict[str, int]:
        """What was injected so far: `status_<N>`, `reset`, `accept_then_fail`, `413`, `outage`, `latency`,
        plus `ingest_ok` (ingest requests processed and answered normally). Counts accumulate across
        set_faults() calls."""
        return self._backend.faults.stats()

    def attachment_bytes(self, conversation_id: str) -> list[tuple[str, bytes]]:
        """The uploaded files of a conversation as (filename, bytes), in upload order."""
        row = self._store.conversation_by_id(conversation_id)
        if row is None:
            return []
        uploads = self._store.attachments_of(row["id"], with_data=True)
        return [(item["filename"], bytes(item["data"])) for item in uploads]


def serve(
    host: str = "127.0.0.1",
    port: int = 8787,
    *,
    api_keys: Iterable[str] | None = None,
    read_keys: Iterable[str] = (),
    db_path: str = ":memory:",
    gzip_ingest: bool = True,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    environments: Iterable[str] = DEFAULT_ENVIRONMENTS,
    faults: Faults | None = None,
    on_ready: Callable[[LocalServer], None] | None = None,
    tune_gc: bool = True,
) -> None:
    """Run a LocalServer until KeyboardInterrupt; `on_ready` gets the started server (e.g. for its URL).

    ``tune_gc`` (for a process that does nothing but serve, as the bridge does): freeze the start-up objects and
    collect the young generation less often. A batch parses into hundreds of thousands of objects, all freed by
    reference counting; with the default thresholds the cycle collector keeps rescanning them while they are
    being built and validated (measured: about 10% of the server's CPU on megabyte batches).
    """
    if tune_gc:
        tune_gc_for_serving(50_000)
    server = LocalServer(
        host,
        port,
        api_keys=api_keys,
        read_keys=read_keys,
        db_path=db_path,
        gzip_ingest=gzip_ingest,
        max_body_bytes=max_body_bytes,
        environments=environments,
        faults=faults,
    )
    try:
        server.start()
        if on_ready is not None:
            on_ready(server)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
