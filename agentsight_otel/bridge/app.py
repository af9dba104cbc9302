"""``Bridge``: the OTLP receivers, the converter and the export queue around one exporter, with its lifecycle."""

from __future__ import annotations

import contextlib
import hmac
import logging
import math
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExporter

from ..exporter import AgentSightSpanExporter
from ..httpserver import tune_gc_for_serving
from .convert import Converter
from .queue import ACCEPTED, BridgeLedger, ExportQueue
from .server import BridgeHTTPServer
from .settings import BridgeSettings

logger = logging.getLogger("agentsight_otel.bridge")

_ledgers: weakref.WeakKeyDictionary[AgentSightSpanExporter, BridgeLedger] = weakref.WeakKeyDictionary()


def make_exporter(**options: Any) -> AgentSightSpanExporter:
    """An ``AgentSightSpanExporter`` (arguments as for it, the rest from ``AGENTSIGHT_*``) that tells the bridge
    per span whether it was delivered, spooled or refused, so requests get exact answers."""
    ledger = BridgeLedger(max_entries=200_000)
    # A full spool refuses rather than dropping its oldest entries: those were acknowledged to a sender, and what
    # it refuses now is answered 503, so the sender keeps it.
    options.setdefault("spool_when_full", "refuse")
    exporter = AgentSightSpanExporter(outcome_ledger=ledger, **options)
    _ledgers[exporter] = ledger
    return exporter


@dataclass(frozen=True)
class Answer:
    """What to tell a sender: 200 (with spans refused, if any) or 503 with a Retry-After."""

    status: int
    rejected: int = 0
    message: str | None = None
    retry_after: int | None = None


class Bridge:
    """OTLP in (HTTP, and gRPC when enabled), ``AgentSightSpanExporter`` out.

        with Bridge(BridgeSettings(port=0), api_key=..., endpoint=...) as bridge:
            print(bridge.traces_url)   # point a collector's otlphttp exporter at bridge.url

    ``exporter`` may be any ``SpanExporter``; by default one is built with :func:`make_exporter` from
    ``exporter_options`` and the ``AGENTSIGHT_*`` environment. The bridge shuts down the exporter it is given.
    """

    def __init__(
        self,
        settings: BridgeSettings | None = None,
        *,
        exporter: SpanExporter | None = None,
        **exporter_options: Any,
    ) -> None:
        self.settings = settings or BridgeSettings()
        if exporter is not None and exporter_options:
            raise TypeError("pass either an exporter or exporter options, not both")
        self.exporter: SpanExporter = exporter if exporter is not None else make_exporter(**exporter_options)
        ledger = _ledgers.get(self.exporter) if isinstance(self.exporter, AgentSightSpanExporter) else None
        self.converter = Converter()
        # Several export lanes need an exporter that may be called from several threads at once, which the SDK
        # never does: AgentSightSpanExporter reads under a lock and delivers concurrently. Others get one lane.
        concurrent = isinstance(self.exporter, AgentSightSpanExporter)
        self.queue = ExportQueue(
            self.exporter,
            max_queued_spans=self.settings.max_queued_spans,
            max_batch_spans=self.settings.max_batch_spans,
            workers=self.settings.export_workers if concurrent else 1,
            ledger=ledger,
        )
        path = self.settings.path.rstrip("/") or "/"
        self.paths = frozenset({path, path + "/"})
        self._httpd: BridgeHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: Any = None
        self._grpc_port: int | None = None
        self._stopping = False
        self._stopped = False
        self._unavailable_until = 0.0
        self._stop_lock = threading.Lock()
        self._active_lock = threading.Lock()
        self._active_requests = 0  # requests between conversion and their answer
        self._refused = 0  # requests turned away whole (maintenance, shutting down, queue full)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> Bridge:
        """Bind the receivers and start serving in background threads; returns self."""
        if self._httpd is not None:
            return self
        if self._stopped:
            raise RuntimeError("a Bridge cannot be restarted after stop()")
        problem = getattr(self.exporter, "_config_error", None)
        if isinstance(self.exporter, AgentSightSpanExporter) and problem:
            raise RuntimeError(f"the bridge's exporter cannot ship anything: {problem}")
        if isinstance(self.exporter, AgentSightSpanExporter) and self.exporter.spool is None:
            logger.warning(
                "the bridge's exporter has no spool: while AgentSight cannot take data, requests are answered 503 "
                "and the sender has to keep it (set AGENTSIGHT_SPOOL_DIR to let the bridge keep it on disk)"
            )
        if not self.settings.loopback and not self.settings.tokens:
            logger.warning(
                "the bridge listens on %s without a token: anyone who reaches it can send data "
                "(set --token or AGENTSIGHT_BRIDGE_TOKEN)",
                self.settings.host,
            )
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        self.queue.start()
        self._httpd = BridgeHTTPServer((self.settings.host, self.settings.port), self, family)
        self._http_thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"agentsight-bridge-http:{self.port}",
            daemon=True,
        )
        self._http_thread.start()
        if self.settings.grpc_port is not None:
            try:
                from .grpc_receiver import start_grpc
            except ImportError as exc:
                self.stop()
                raise RuntimeError("the OTLP/gRPC receiver needs grpcio: pip install 'agentsight-otel[grpc]'") from exc
            self._grpc, self._grpc_port = start_grpc(self, self.settings.host, self.settings.grpc_port)
        logger.info("bridge listening on %s", self.traces_url)
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking requests, export what was accepted (within ``timeout``, default the drain timeout), shut
        the exporter down. Returns True when everything accepted was exported. Safe to call more than once."""
        with self._stop_lock:
            if self._stopped:
                return True
            self._stopped = True
        drain = self.settings.drain_timeout if timeout is None else timeout
        deadline = time.monotonic() + drain
        self._stopping = True
        grpc_done = None
        if self._grpc is not None:
            grpc_done = self._grpc.stop(grace=drain)
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        drained = self.queue.close(max(deadline - time.monotonic(), 0))
        if not drained:
            logger.error("the bridge stopped before exporting everything it had accepted (%s)", self.queue.stats())
        # Let the handlers write the answers of the last requests before connections are cut.
        while self._active_requests and time.monotonic() < deadline + 1.0:
            time.sleep(0.02)
        try:
            self.exporter.shutdown()
        except Exception:  # noqa: BLE001
            logger.exception("the exporter failed to shut down")
        if self._httpd is not None:
            self._httpd.close_connections()
        if grpc_done is not None:
            grpc_done.wait(max(deadline - time.monotonic(), 0.5))
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
        return drained

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def serve_until_signalled(self, on_ready: Callable[[Bridge], None] | None = None, *, tune_gc: bool = True) -> bool:
        """Start, then run until SIGTERM or SIGINT; then drain and stop. For the command line (main thread).

        ``tune_gc`` (for a process that does nothing but bridge): freeze the start-up objects and run the
        young-generation collection less often. Reference counting frees most of what a request creates, but the
        spans waiting for export stay alive a while (about 20 tracked objects each, with what the exporter makes
        of them), and every young collection walks all such objects allocated since the previous one. Measured in
        the bridge benchmark (four concurrent requests of 2,000 spans): about 18 µs of CPU per span in collections
        with a threshold of 50,000, under 1 µs with 200,000. The bridge makes hardly any cyclic garbage, and what
        it makes is still collected.
        """
        if tune_gc:
            tune_gc_for_serving(200_000)
        stop = threading.Event()
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
        try:
            self.start()
            if on_ready is not None:
                on_ready(self)
            while not stop.wait(0.5):
                pass
            logger.warning("bridge: signal received, draining accepted spans (up to %ss)", self.settings.drain_timeout)
            return self.stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- addresses -------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the bridge is not started")
        return int(self._httpd.server_address[1])

    @property
    def grpc_port(self) -> int | None:
        return self._grpc_port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:4319``: what a collector's ``otlphttp`` ``endpoint`` takes."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.settings.host, self.settings.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def traces_url(self) -> str:
        """The full traces URL, e.g. ``http://127.0.0.1:4319/v1/traces``: what an SDK's OTLP exporter takes."""
        return self.url + self.settings.path

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    @contextlib.contextmanager
    def tracked(self) -> Iterator[None]:
        """Around the handling of one request, so that shutdown waits for its answer to be written."""
        with self._active_lock:
            self._active_requests += 1
        try:
            yield
        finally:
            with self._active_lock:
                self._active_requests -= 1

    def unavailable(self, seconds: float) -> None:
        """Answer trace requests with 503 + Retry-After for ``seconds`` (maintenance; 0 ends it early)."""
        self._unavailable_until = time.monotonic() + max(seconds, 0)

    def admission(self) -> tuple[str, int] | None:
        """For a new trace request: (message, Retry-After) when it must be turned away (and counted), else None."""
        refusal = self._refusal()
        if refusal is None and self.queue.full:  # refused before its body is read and converted
            refusal = (
                f"the bridge has {self.queue.queued_spans} spans waiting for export; retry later",
                self.settings.retry_after,
            )
        if refusal is not None:
            with self._active_lock:
                self._refused += 1
        return refusal

    def _refusal(self) -> tuple[str, int] | None:
        if self._stopping:
            return "the bridge is shutting down; retry later", self.settings.retry_after
        left = self._unavailable_until - time.monotonic()
        if left > 0:
            return "the bridge is unavailable for maintenance; retry later", max(1, math.ceil(left))
        return None

    def authorized(self, header: Callable[[str], str | None]) -> bool:
        """True when no token is configured, or the request carries one (``Authorization: Bearer`` or the
        configured header). ``header(name)`` returns a request header's value."""
        tokens = self.settings.tokens
        if not tokens:
            return True
        offered = []
        authorization = header("authorization")
        if authorization:
            scheme, _, credential = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                offered.append(credential.strip())
        if self.settings.auth_header:
            value = header(self.settings.auth_header.lower())
            if value:
                value = value.strip()
                offered.append(value[7:].strip() if value.lower().startswith("bearer ") else value)
        matches = [hmac.compare_digest(o.encode(), t.encode()) for o in offered for t in tokens]
        return any(matches)

    def health(self) -> dict[str, Any]:
        refusal = self._refusal()
        stats = getattr(self.exporter, "stats", None)
        return {
            "status": "ok" if refusal is None else ("draining" if self._stopping else "unavailable"),
            "refused_requests": self._refused,
            "connections": self._httpd.connection_count if self._httpd is not None else 0,
            "queue": self.queue.stats(),
            "exporter": stats() if callable(stats) else {},
        }

    def stats(self) -> dict[str, Any]:
        """Queue counters, and the exporter's delivery counters under ``exporter``."""
        return self.health()

    # -- the common path of both receivers -------------------------------------------------------------------

    def ingest(self, request: ExportTraceServiceRequest | dict[str, Any]) -> Answer:
        """Convert, queue and wait for the export; the answer for the sender."""
        refusal = self.admission()
        if refusal is not None:
            return Answer(503, message=refusal[0], retry_after=refusal[1])
        converted = self.converter.convert(request)  # may raise RequestError (400) for a malformed JSON document
        verdict = self.queue.offer(converted.spans, self.settings.ack_timeout)
        if verdict.outcome != ACCEPTED:
            return Answer(503, message=verdict.message, retry_after=self.settings.retry_after)
        rejected = converted.rejected + verdict.rejected
        messages = [m for m in (converted.reason, verdict.message) if m]
        return Answer(200, rejected, "; ".join(messages) or None)
