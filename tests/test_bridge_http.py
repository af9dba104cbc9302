"""The OTLP/HTTP contract, as the official collector's ``otlphttp`` exporter relies on it: paths, protobuf and
OTLP/JSON with hex ids, gzip/deflate, answer bodies (ExportTraceServiceResponse / google.rpc.Status), status
codes (never 500 for transient trouble), Retry-After on backpressure, size caps, authentication, keep-alive."""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
import time

import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

from agentsight_otel.bridge import Bridge, BridgeSettings

from .helpers import wait_until
from .test_bridge_helpers import JSON, PROTOBUF, RecordingExporter, body_of, request_of, running_bridge, tracker_spans

GRPC_UNAVAILABLE = 14


def _post(bridge, body, media=PROTOBUF, encoding=None, path="/v1/traces", headers=None, **kwargs):
    all_headers = {"Content-Type": media, **({"Content-Encoding": encoding} if encoding else {}), **(headers or {})}
    return requests.post(bridge.url + path, data=body, headers=all_headers, timeout=30, **kwargs)


def _status(response) -> status_pb2.Status:
    if response.headers["Content-Type"] == PROTOBUF:
        return status_pb2.Status.FromString(response.content)
    document = response.json()
    return status_pb2.Status(code=document["code"], message=document["message"])


# -- success -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [None, "gzip", "deflate"])
@pytest.mark.parametrize("media", [PROTOBUF, JSON])
def test_spans_in_every_encoding_reach_the_exporter(media, encoding):
    spans = tracker_spans(6)
    exporter = RecordingExporter()
    with running_bridge(exporter) as bridge:
        response = _post(bridge, body_of(spans, media, encoding), media, encoding)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == media  # answered in the request's encoding
        if media == PROTOBUF:
            assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")
        else:
            assert response.json() == {}
    got = sorted((s.context.trace_id, s.context.span_id, s.name) for s in exporter.spans)
    assert got == sorted((s.context.trace_id, s.context.span_id, s.name) for s in spans)
    assert [e.attributes["agentsight.message.content"] for e in exporter.spans[0].events] == [
        e.attributes["agentsight.message.content"] for e in spans[0].events
    ]


def test_partial_success_counts_refused_spans_in_both_encodings():
    request = request_of(tracker_spans(4))
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = b"\0" * 16
    exporter = RecordingExporter()
    with running_bridge(exporter) as bridge:
        response = _post(bridge, request.SerializeToString())
        answer = ExportTraceServiceResponse.FromString(response.content)
        assert response.status_code == 200
        assert answer.partial_success.rejected_spans == 1
        assert "trace id" in answer.partial_success.error_message
        response = _post(bridge, body_of(request, JSON), JSON)
        assert response.status_code == 200
        assert response.json()["partialSuccess"]["rejectedSpans"] == "1"  # int64 as a string
    assert len(exporter.spans) == 6


def test_an_empty_request_is_fine():
    with running_bridge() as bridge:
        assert _post(bridge, b"").status_code == 200
        assert _post(bridge, b"{}", JSON).status_code == 200


def test_trailing_slash_and_query_string_are_accepted_and_other_paths_are_404():
    with running_bridge() as bridge:
        body = body_of(tracker_spans(1))
        assert _post(bridge, body, path="/v1/traces/").status_code == 200
        assert _post(bridge, body, path="/v1/traces?x=1").status_code == 200
        for path in ("/v1/logs", "/v1/metrics", "/traces", "/v1/traces/v1/traces"):
            response = _post(bridge, body, path=path)
            assert response.status_code == 404
            assert _status(response).code == 5  # NOT_FOUND


def test_a_custom_path():
    with running_bridge(path="/otlp/v1/traces") as bridge:
        assert bridge.traces_url.endswith("/otlp/v1/traces")
        assert _post(bridge, body_of(tracker_spans(1)), path="/otlp/v1/traces").status_code == 200
        assert _post(bridge, body_of(tracker_spans(1))).status_code == 404


def test_methods_and_content_types():
    with running_bridge() as bridge:
        for method in ("GET", "PUT", "OPTIONS", "HEAD"):
            response = requests.request(method, bridge.traces_url, data=b"x" if method == "PUT" else None, timeout=5)
            assert response.status_code == 405 and response.headers["Allow"] == "POST", method
        head = requests.head(bridge.url + "/health", timeout=5)  # load balancers check health with HEAD
        assert head.status_code == 200 and head.headers["Content-Type"] == JSON and not head.content
        assert requests.options(bridge.url + "/health", timeout=5).headers["Allow"] == "GET, HEAD"
        response = _post(bridge, b"x", "text/plain")
        assert response.status_code == 415
        assert response.headers["Content-Type"] == JSON
        assert _status(response).code == 3
        response = _post(bridge, b"x", PROTOBUF, "br")
        assert response.status_code == 415
        assert _status(response).code == 3  # in protobuf, the request's encoding


def test_a_client_trickling_its_headers_loses_its_connection_at_the_request_timeout():
    # One byte at a time within the idle timeout: without a deadline per request, two such clients would hold
    # both connection slots for good, and every collector request would get 503 "too many connections".
    with running_bridge(request_timeout=3.0, idle_timeout=5.0, max_connections=2) as bridge:
        cut_off = []

        def trickle():
            with socket.create_connection(("127.0.0.1", bridge.port), timeout=5) as sock:
                try:
                    for byte in b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:  # ~25 s
                        sock.sendall(bytes([byte]))
                        time.sleep(0.2)
                except OSError:  # the bridge closed the connection
                    cut_off.append(True)

        trickles = [threading.Thread(target=trickle) for _ in range(2)]
        for t in trickles:
            t.start()
        wait_until(lambda: bridge._httpd.connection_count == 2, timeout=3)  # both slots taken by trickles
        try:  # held: no room for a collector's request (a 503, or a reset before the client reads it)
            assert requests.get(bridge.url + "/health", timeout=5).status_code == 503
        except requests.ConnectionError:
            pass
        wait_until(lambda: requests.get(bridge.url + "/health", timeout=5).status_code == 200, timeout=15)
        for t in trickles:
            t.join(10)
        assert cut_off == [True, True]  # both were cut off long before they finished trickling


def test_a_refused_request_whose_body_never_comes_is_answered_within_the_drain_bound():
    # Without a token the body is not wanted: it is read away for at most 5 s, not for the whole request timeout.
    with running_bridge(tokens=("s3cret",), request_timeout=20.0) as bridge:
        with socket.create_connection(("127.0.0.1", bridge.port), timeout=30) as sock:
            started = time.monotonic()
            sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            answer = sock.recv(65536)
            took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 401") and took < 10, (answer[:40], took)


def test_requests_the_http_layer_refuses_get_a_status_body_too():
    with running_bridge() as bridge:
        for raw in (b"NONSENSE\r\n\r\n", b"BREW /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", bridge.port), timeout=5) as sock:
                sock.sendall(raw)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.split()[1] in (b"400", b"501") and b"Content-Type: application/json" in head, answer
            assert b"Connection: close" in head and b'"message"' in body and b"<html" not in body.lower()


def test_malformed_bodies_are_400_with_a_status_body_in_the_request_encoding():
    with running_bridge() as bridge:
        response = _post(bridge, b"\xff\xff\xff\xff")
        assert response.status_code == 400
        assert response.headers["Content-Type"] == PROTOBUF
        status = _status(response)
        assert status.code == 3 and "protobuf" in status.message
        response = _post(bridge, b"{broken", JSON)
        assert response.status_code == 400
        assert response.json()["code"] == 3
        response = _post(bridge, b'{"resourceSpans": 5}', JSON)
        assert response.status_code == 400
        response = _post(bridge, gzip.compress(b"abc")[:-6], PROTOBUF, "gzip")
        assert response.status_code == 400


# -- caps ----------------------------------------------------------------------------------------------------


def test_body_over_the_wire_cap_is_413_and_the_connection_closes():
    with running_bridge(max_body_bytes=2000) as bridge:
        response = _post(bridge, b"\0" * 5000)
        assert response.status_code == 413
        assert response.headers.get("Connection") == "close"
        assert _status(response).code == 8
        assert _post(bridge, body_of(tracker_spans(1))).status_code == 200


def test_decompressed_cap_and_gzip_bomb():
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(packer.compress(bytes(1 << 20)) for _ in range(128)) + packer.flush()
    with running_bridge(max_decompressed_bytes=1 << 20) as bridge:
        started = time.monotonic()
        response = _post(bridge, bomb, PROTOBUF, "gzip")
        assert response.status_code == 413
        assert time.monotonic() - started < 3
        assert "decompressed" in _status(response).message
        assert _post(bridge, body_of(tracker_spans(3), encoding="gzip"), encoding="gzip").status_code == 200


def test_missing_length_is_411_and_chunked_bodies_work():
    spans = tracker_spans(2)
    exporter = RecordingExporter()
    with running_bridge(exporter) as bridge:
        body = body_of(spans)

        def chunks():
            yield body[:10]
            yield body[10:]

        response = requests.post(bridge.traces_url, data=chunks(), headers={"Content-Type": PROTOBUF}, timeout=10)
        assert response.status_code == 200
        connection = socket.create_connection(("127.0.0.1", bridge.port), timeout=5)
        connection.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n\r\n")
        assert connection.recv(4096).startswith(b"HTTP/1.1 411 ")
        connection.close()
    assert len(exporter.spans) == 2


def test_a_slow_body_times_out_with_408():
    with running_bridge(request_timeout=0.5) as bridge:
        connection = socket.create_connection(("127.0.0.1", bridge.port), timeout=5)
        connection.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 100\r\n\r\n0123456789"
        )
        started = time.monotonic()
        answer = connection.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"Connection: close" in answer
        assert time.monotonic() - started < 3
        connection.close()


# -- authentication ------------------------------------------------------------------------------------------


def test_bearer_token_and_custom_header():
    exporter = RecordingExporter()
    with running_bridge(exporter, tokens=("s3cret", "next-key"), auth_header="x-agentsight-token") as bridge:
        body = body_of(tracker_spans(1))
        response = _post(bridge, body)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert _status(response).code == 16
        assert _post(bridge, body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert _post(bridge, body, headers={"Authorization": "Basic czNjcmV0"}).status_code == 401
        assert _post(bridge, body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert _post(bridge, body, headers={"authorization": "bearer next-key"}).status_code == 200
        assert _post(bridge, body, headers={"X-Agentsight-Token": "s3cret"}).status_code == 200  # canonicalised name
        assert _post(bridge, body, headers={"x-agentsight-token": "Bearer s3cret"}).status_code == 200
        assert _post(bridge, body, headers={"x-other": "s3cret"}).status_code == 401
        assert requests.get(bridge.url + "/health", timeout=5).status_code == 200  # health needs no token
        bridge.unavailable(30)  # during maintenance a stranger still gets 401, not the bridge's state
        assert _post(bridge, body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert _post(bridge, body, headers={"Authorization": "Bearer s3cret"}).status_code == 503
        bridge.unavailable(0)
    assert len(exporter.spans) == 4


def test_token_from_the_environment(monkeypatch):
    from agentsight_otel.bridge import resolve_bridge_settings

    monkeypatch.setenv("AGENTSIGHT_BRIDGE_TOKEN", "tok-one, tok-two")
    monkeypatch.setenv("AGENTSIGHT_BRIDGE_PORT", "0")
    settings = resolve_bridge_settings()
    assert settings.tokens == ("tok-one", "tok-two") and settings.port == 0
    assert "tok-" not in repr(settings)
    assert resolve_bridge_settings(tokens=("c",)).tokens == ("c",)
    # A token variable that is set but empty (a secret that failed to arrive) must not start an open bridge.
    for empty in ("", " , "):
        monkeypatch.setenv("AGENTSIGHT_BRIDGE_TOKEN", empty)
        with pytest.raises(ValueError, match="AGENTSIGHT_BRIDGE_TOKEN is set but holds no token"):
            resolve_bridge_settings()
    monkeypatch.delenv("AGENTSIGHT_BRIDGE_TOKEN")
    assert resolve_bridge_settings().tokens == ()


# -- backpressure and transient trouble ---------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "counter"), [(5, "refused_requests"), (6, "busy")])
def test_a_full_queue_answers_503_with_retry_after_and_recovers(limit, counter):
    """Full (5 of 5 waiting): refused before the body is read. Nearly full (5 of 6): refused when 2 more come."""
    exporter = RecordingExporter()
    exporter.gate = threading.Event()
    with running_bridge(exporter, max_queued_spans=limit, retry_after=3) as bridge:
        first = {}
        sender = threading.Thread(target=lambda: first.update(r=_post(bridge, body_of(tracker_spans(5)))))
        sender.start()
        assert exporter.entered.wait(5)
        response = _post(bridge, body_of(tracker_spans(2)))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "3"
        assert _status(response).code == GRPC_UNAVAILABLE
        exporter.gate.set()
        sender.join(10)
        assert first["r"].status_code == 200
        assert _post(bridge, body_of(tracker_spans(2))).status_code == 200
        stats = bridge.stats()
        assert (stats["queue"] if counter == "busy" else stats)[counter] == 1
        assert stats["status"] == "ok"


def test_an_exporter_failure_is_503_never_500():
    with running_bridge(RecordingExporter(SpanExportResult.FAILURE), retry_after=1) as bridge:
        response = _post(bridge, body_of(tracker_spans(2)))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"


def test_an_exporter_that_raises_is_503_never_500():
    class Broken(RecordingExporter):
        def export(self, spans):
            raise RuntimeError("bug")

    with running_bridge(Broken()) as bridge:
        assert _post(bridge, body_of(tracker_spans(1))).status_code == 503


def test_a_bug_in_the_bridge_is_503_never_500(monkeypatch):
    with running_bridge() as bridge:

        def broken(request):
            raise RuntimeError("bug")

        monkeypatch.setattr(bridge.converter, "convert", broken)
        response = _post(bridge, body_of(tracker_spans(1)))
        assert response.status_code == 503
        assert "Retry-After" in response.headers


def test_maintenance_window_answers_503_with_the_time_left():
    with running_bridge() as bridge:
        bridge.unavailable(4.2)
        response = _post(bridge, body_of(tracker_spans(1)))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert requests.get(bridge.url + "/health", timeout=5).json()["status"] == "unavailable"
        bridge.unavailable(0)
        assert _post(bridge, body_of(tracker_spans(1))).status_code == 200


def test_a_slow_export_is_answered_retry_and_still_exported():
    exporter = RecordingExporter()
    exporter.gate = threading.Event()
    with running_bridge(exporter, ack_timeout=0.3) as bridge:
        response = _post(bridge, body_of(tracker_spans(2)))
        assert response.status_code == 503
        exporter.gate.set()
    assert len(exporter.spans) == 2


def test_requests_waiting_together_are_exported_in_one_call():
    exporter = RecordingExporter()
    exporter.gate = threading.Event()
    with running_bridge(exporter) as bridge:
        results = []
        threads = [
            threading.Thread(target=lambda: results.append(_post(bridge, body_of(tracker_spans(3))).status_code))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
            if thread is threads[0]:
                assert exporter.entered.wait(5)
        deadline = time.monotonic() + 5
        while bridge.queue.queued_spans < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        exporter.gate.set()
        for thread in threads:
            thread.join(10)
    assert results == [200] * 4
    assert [len(batch) for batch in exporter.batches] == [3, 9]


# -- connection behaviour ------------------------------------------------------------------------------------


@pytest.mark.parametrize("media", [PROTOBUF, JSON])
def test_keep_alive_has_no_per_request_stall(media):
    body = body_of(tracker_spans(1), media)
    with running_bridge() as bridge:
        connection = http.client.HTTPConnection("127.0.0.1", bridge.port, timeout=10)
        started = time.monotonic()
        for _ in range(60):
            connection.request("POST", "/v1/traces", body=body, headers={"Content-Type": media})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        elapsed = time.monotonic() - started
        connection.close()
    # 60 requests with a 40 ms Nagle/delayed-ACK stall each would take 2.4 s.
    assert elapsed < 1.6, elapsed


def test_connection_cap_answers_503():
    with running_bridge(max_connections=2) as bridge:
        idle = [socket.create_connection(("127.0.0.1", bridge.port), timeout=5) for _ in range(2)]
        wait_until(lambda: bridge.health()["connections"] == 2, timeout=5)
        extra = socket.create_connection(("127.0.0.1", bridge.port), timeout=5)
        assert extra.recv(4096).startswith(b"HTTP/1.1 503 ")
        for sock in [*idle, extra]:
            sock.close()


def test_health_endpoint():
    with running_bridge() as bridge:
        response = requests.get(bridge.url + "/health", timeout=5)
        assert response.status_code == 200
        document = response.json()
        assert document["status"] == "ok"
        assert "queued_spans" in document["queue"]


# -- shutdown ------------------------------------------------------------------------------------------------


def test_graceful_stop_exports_what_was_accepted_then_refuses():
    exporter = RecordingExporter()
    exporter.gate = threading.Event()
    bridge = Bridge(BridgeSettings(port=0), exporter=exporter).start()
    result = {}
    sender = threading.Thread(target=lambda: result.update(r=_post(bridge, body_of(tracker_spans(3)))))
    sender.start()
    assert exporter.entered.wait(5)
    stopper = threading.Thread(target=lambda: result.update(drained=bridge.stop(timeout=10)))
    stopper.start()
    wait_until(lambda: bridge.stopping, timeout=5)
    exporter.gate.set()
    stopper.join(15)
    sender.join(15)
    assert result["drained"] is True
    assert result["r"].status_code == 200
    assert len(exporter.spans) == 3
    assert exporter.shut_down
    with pytest.raises(requests.ConnectionError):
        _post(bridge, body_of(tracker_spans(1)))


def test_a_request_on_a_kept_alive_connection_during_shutdown_gets_503():
    exporter = RecordingExporter()
    bridge = Bridge(BridgeSettings(port=0), exporter=exporter).start()
    connection = http.client.HTTPConnection("127.0.0.1", bridge.port, timeout=10)
    connection.request("POST", "/v1/traces", body=body_of(tracker_spans(1)), headers={"Content-Type": PROTOBUF})
    assert connection.getresponse().read() == b""
    bridge._stopping = True  # the moment between "stop taking requests" and closing the connections
    connection.request("POST", "/v1/traces", body=body_of(tracker_spans(1)), headers={"Content-Type": PROTOBUF})
    response = connection.getresponse()
    assert response.status == 503
    assert response.getheader("Connection") == "close"
    assert status_pb2.Status.FromString(response.read()).code == GRPC_UNAVAILABLE
    bridge.stop(timeout=5)
