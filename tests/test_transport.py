"""The transport alone: retry classes, Retry-After, deadlines, error detail; against a scripted loopback server."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentsight_otel.config import resolve_settings
from agentsight_otel.transport import Transport, error_detail, parse_retry_after

KEY = "ags_1a2b3c4d5e6f7890abcdef1234567890_a1b2c3"


class Scripted:
    """A loopback HTTP server that answers each request with the next (status, headers, body) of a script."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, self.path, dict(self.headers), body, time.monotonic()))
                status, headers, payload, *delay = outer.script.pop(0) if outer.script else (200, {}, b"{}")
                time.sleep(delay[0] if delay else 0)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def make(*script):
        s = Scripted(script)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def _transport(url, timeout=5.0):
    return Transport(resolve_settings(api_key=KEY, endpoint=url, timeout=timeout))


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses_are_retried(scripted, status):
    srv = scripted((status, {"Retry-After": "0"}, b""), (200, {}, b'{"ok": true}'))
    reply = _transport(srv.url).post_json("/api/ingest/", {"a": 1})
    assert reply.ok and reply.body == {"ok": True} and reply.attempts == 2
    assert len(srv.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 500, 501])
def test_other_statuses_are_final(scripted, status):
    srv = scripted((status, {}, b'{"detail": "nope"}'))
    reply = _transport(srv.url).post_json("/api/ingest/", {"a": 1})
    assert not reply.ok and reply.status == status and len(srv.requests) == 1
    assert reply.describe() == f"HTTP {status}: nope"


def test_retry_after_is_honoured(scripted):
    srv = scripted((503, {"Retry-After": "1"}, b""), (200, {}, b"{}"))
    assert _transport(srv.url).post_json("/api/ingest/", {}).ok
    waited = srv.requests[1][4] - srv.requests[0][4]
    assert 0.9 <= waited < 3


def test_a_retry_after_beyond_the_deadline_stops_at_once(scripted):
    srv = scripted((429, {"Retry-After": "20"}, b""), (200, {}, b"{}"))
    started = time.monotonic()
    reply = _transport(srv.url, timeout=2).post_json("/api/ingest/", {}, deadline=time.monotonic() + 2)
    assert reply.status == 429 and len(srv.requests) == 1
    assert time.monotonic() - started < 1.5


def test_connection_errors_give_a_reply_not_an_exception():
    t = _transport("http://127.0.0.1:9", timeout=1)
    reply = t.post_json("/api/ingest/", {}, deadline=time.monotonic() + 1.5)
    assert reply.status is None and "could not be reached" in reply.describe()


def test_close_interrupts_a_backoff_wait(scripted):
    srv = scripted((503, {"Retry-After": "10"}, b""))
    t = _transport(srv.url, timeout=30)
    threading.Timer(0.3, t.close).start()
    started = time.monotonic()
    t.post_json("/api/ingest/", {}, deadline=time.monotonic() + 30)
    assert time.monotonic() - started < 1.0


def test_requests_carry_the_documented_headers_and_the_key_stays_out_of_reprs(scripted):
    srv = scripted((200, {}, b"{}"))
    t = _transport(srv.url)
    t.post_json("/api/ingest/", {"x": 1})
    headers = srv.requests[0][2]
    assert headers["Authorization"] == f"Api-Key {KEY}"
    assert headers["Accept"] == "application/json" and headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("agentsight-otel/")
    assert KEY not in repr(t)


def test_a_server_that_echoes_the_key_never_gets_it_into_replies_or_logs(scripted, caplog):
    # A misconfigured proxy quoting the Authorization header back: its text reaches logs, reports and dead letters.
    echo = f"Invalid API key: Api-Key {KEY}".encode()
    srv = scripted(
        (401, {}, b'{"detail": "' + echo + b'"}'),  # /api/me/
        (400, {}, b'{"conversations": [{"index": 0, "errors": {"key": ["' + KEY.upper().encode() + b'"]}}]}'),
        (500, {"Content-Type": "text/plain"}, echo),
    )
    t = _transport(srv.url)
    with caplog.at_level(logging.DEBUG, logger="agentsight_otel"):
        t.wait_for_server_info(5)
        rejected = t.post_json("/api/ingest/", {"x": 1})
        failed = t.request("POST", "/api/ingest/", body=b"{}", attempts=1)
    for reply in (rejected, failed):
        seen = f"{reply.describe()} {reply.text} {reply.body}"
        assert KEY not in seen and KEY.upper() not in seen, seen
    assert "ags_…b2c3" in failed.describe() and "ags_…B2C3" in rejected.text
    assert "rejected the API key" in caplog.text and KEY not in caplog.text


def test_a_closed_transport_does_not_report_its_key_rejected_afterwards(scripted, caplog):
    # configure() with a new key closes the old exporter; its preflight may still be waiting for an answer.
    srv = scripted((401, {}, b'{"detail": "Invalid API key."}', 0.3))
    t = _transport(srv.url)
    with caplog.at_level(logging.DEBUG, logger="agentsight_otel"):
        t.server_info()  # starts the preflight
        t.close()
        t.wait_for_server_info(5)
    assert len(srv.requests) == 1 and "rejected the API key" not in caplog.text


def test_server_info_learns_capabilities_once(scripted):
    me = b'{"role": "write", "capabilities": ["GZIP-ingest "], "environments": [{"slug": "staging"}]}'
    srv = scripted((200, {}, me))
    t = _transport(srv.url)
    assert t.wait_for_server_info(5).capabilities == frozenset({"gzip-ingest"})
    assert t.server_info().environments == ("staging",)
    assert len(srv.requests) == 1


def test_server_info_from_a_backend_without_me(scripted):
    srv = scripted((404, {}, b'{"detail": "Not found."}'))
    info = _transport(srv.url).wait_for_server_info(5)
    assert info.capabilities == frozenset() and info.reachable


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 7 ", 7.0),
        ("-3", 0.0),
        ("nan", None),
        ("inf", None),
        ("garbage", None),
        (None, None),
        ("999", 30.0),
    ],
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_dates():
    future = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=20), usegmt=True)
    assert 18 <= parse_retry_after(future) <= 20
    past = format_datetime(datetime.now(timezone.utc) - timedelta(seconds=20), usegmt=True)
    assert parse_retry_after(past) == 0.0


def test_error_detail_follows_drf_shapes():
    assert error_detail({"detail": "bad"}, "") == "bad"
    assert error_detail({"error": "worse"}, "") == "worse"
    assert error_detail({"name": ["too long", "bad"]}, "") == "name: too long, bad"
    assert error_detail(["a", "b"], "") == "a; b"
    assert error_detail(None, "x" * 600) == "x" * 500
