"""The optional OTLP/gRPC receiver (what the collector's loadbalancing exporter speaks)."""

from __future__ import annotations

import pytest

grpc = pytest.importorskip("grpc")

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc  # noqa: E402

from agentsight_otel.bridge import Bridge, BridgeSettings  # noqa: E402
from agentsight_otel.localserver import LocalServer  # noqa: E402

from .helpers import wait_until  # noqa: E402
from .test_bridge_helpers import RecordingExporter, request_of, running_bridge, tracker_spans  # noqa: E402


def _stub(bridge):
    channel = grpc.insecure_channel(f"127.0.0.1:{bridge.grpc_port}")
    return channel, trace_service_pb2_grpc.TraceServiceStub(channel)


def test_export_over_grpc_with_compression_and_partial_success():
    exporter = RecordingExporter()
    with running_bridge(exporter, grpc_port=0) as bridge:
        assert bridge.grpc_port
        channel, stub = _stub(bridge)
        with channel:
            response = stub.Export(request_of(tracker_spans(3)), timeout=10, compression=grpc.Compression.Gzip)
            assert not response.HasField("partial_success")
            request = request_of(tracker_spans(2))
            request.resource_spans[0].scope_spans[0].spans[0].span_id = b""
            response = stub.Export(request, timeout=10)
            assert response.partial_success.rejected_spans == 1
    assert len(exporter.spans) == 4


def test_grpc_auth_and_unavailable():
    with running_bridge(grpc_port=0, tokens=("tkn",)) as bridge:
        channel, stub = _stub(bridge)
        with channel:
            with pytest.raises(grpc.RpcError) as caught:
                stub.Export(request_of(tracker_spans(1)), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stub.Export(request_of(tracker_spans(1)), timeout=10, metadata=(("authorization", "Bearer tkn"),))
            bridge.unavailable(5)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Export(request_of(tracker_spans(1)), timeout=10, metadata=(("authorization", "Bearer tkn"),))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # retried by OTLP/gRPC senders


def test_an_undecodable_grpc_message_is_invalid_argument():
    with running_bridge(grpc_port=0) as bridge:
        channel = grpc.insecure_channel(f"127.0.0.1:{bridge.grpc_port}")
        try:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            with pytest.raises(grpc.RpcError) as caught:
                export(b"\xff\xff\xff\xff", timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            channel.close()


def test_grpc_message_size_cap():
    with running_bridge(grpc_port=0, max_decompressed_bytes=2000) as bridge:
        channel, stub = _stub(bridge)
        with channel:
            with pytest.raises(grpc.RpcError) as caught:
                stub.Export(request_of(tracker_spans(50)), timeout=10)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_grpc_to_agentsight():
    with (
        LocalServer() as server,
        Bridge(BridgeSettings(port=0, grpc_port=0), api_key=server.api_key, endpoint=server.url) as bridge,
    ):
        channel, stub = _stub(bridge)
        with channel:
            stub.Export(request_of(tracker_spans(4, "grpc")), timeout=10)
        wait_until(lambda: (server.transcript("grpc-0") or {"items": []})["items"].__len__() == 8, timeout=15)
