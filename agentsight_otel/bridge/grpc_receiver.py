"""The optional OTLP/gRPC receiver (``TraceService/Export``), for senders that speak only gRPC, such as the
collector's ``loadbalancing`` exporter. Needs ``grpcio`` (the ``grpc`` extra).

Same path as HTTP: the token (``authorization: Bearer ...`` or the configured header) is checked, spans are
converted, queued and exported; refused spans come back as a partial success, and every transient failure is
``UNAVAILABLE``, which OTLP/gRPC senders retry. Message size is capped at the decompressed-body limit.
"""

from __future__ import annotations

from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

if TYPE_CHECKING:
    from .app import Bridge


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    def Export(  # noqa: N802 - the generated service's method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        bridge = self._bridge
        with bridge.tracked():
            metadata = {key.lower(): value for key, value in context.invocation_metadata() if isinstance(value, str)}
            if not bridge.authorized(metadata.get):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bridge token is required")
            answer = bridge.ingest(request)
            if answer.status != 200:
                if answer.retry_after is not None:
                    context.set_trailing_metadata((("retry-after", str(answer.retry_after)),))
                context.abort(grpc.StatusCode.UNAVAILABLE, answer.message or "retry later")
            response = trace_service_pb2.ExportTraceServiceResponse()
            if answer.rejected or answer.message:
                response.partial_success.rejected_spans = answer.rejected
                response.partial_success.error_message = answer.message or ""
            return response


def start_grpc(bridge: Bridge, host: str, port: int) -> tuple[Any, int]:
    """Start the gRPC server; returns it and the bound port."""
    limit = bridge.settings.max_decompressed_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=bridge.settings.grpc_workers, thread_name_prefix="agentsight-grpc"),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=bridge.settings.max_connections,
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(bridge), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"cannot bind the gRPC receiver to {address}")
    server.start()
    return server, bound
