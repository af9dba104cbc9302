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
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

if TYPE_CHECKING:
    from .app import Bridge


_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class _TraceService:
    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    def Export(self, body: bytes, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:  # noqa: N802
        """The request arrives as bytes and is parsed here, after the token check: an undecodable message is the
        sender's INVALID_ARGUMENT, where grpcio's own deserializer would answer INTERNAL."""
        bridge = self._bridge
        with bridge.tracked():
            metadata = {key.lower(): value for key, value in context.invocation_metadata() if isinstance(value, str)}
            if not bridge.authorized(metadata.get):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bridge token is required")
            try:
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            except DecodeError:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the message is not an ExportTraceServiceRequest")
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
    export = grpc.unary_unary_rpc_method_handler(
        _TraceService(bridge).Export,
        request_deserializer=None,  # bytes: parsed in Export
        response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, {"Export": export}),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"cannot bind the gRPC receiver to {address}")
    server.start()
    return server, bound
