"""Fault injection of the local server, observed over real HTTP: the misbehaviour the delivery tests rely on."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import pytest
import requests

from agentsight_otel.localserver import Faults, LocalServer

CLI = [sys.executable, "-m", "agentsight_otel.cli"]
TRACE = "0123456789abcdef0123456789abcdef"


# -- helpers ------------------------------------------------------------------------------------------------


def span(index: int, *, padding: str = "") -> dict[str, Any]:
    """A stored-as-is button span with a unique id (padding makes the body bigger without new spans)."""
    stamp = f"2024-05-01T12:00:{index % 60:02d}.000000+00:00"
    return {
        "span_id": f"{index + 1:016x}",
        "trace_id": TRACE,
        "parent_span_id": None,
        "kind": "button",
        "name": "click",
        "started_at": stamp,
        "ended_at": stamp,
        "duration_ms": 0.0,
        "status": "ok",
        "attributes": {
            "agentsight.span.kind": "button",
            "agentsight.button.event": "click",
            "agentsight.button.label": "Go",
            "agentsight.button.value": padding or str(index),
        },
        "events": [],
        "otel": {"span_kind": "INTERNAL"},
    }


def batch(conversation_id: str = "conv-1", count: int = 3, start: int = 0, padding: str = "") -> dict[str, Any]:
    """An ingest envelope with one conversation block of `count` spans."""
    spans = [span(i, padding=padding) for i in range(start, start + count)]
    return {
        "sdk": {"name": "agentsight-python", "version": "test"},
        "conversations": [{"conversation_id": conversation_id, "spans": spans}],
    }


def auth(srv: LocalServer | str) -> dict[str, str]:
    """The credential header for a server (or a bare key)."""
    return {"Authorization": f"Api-Key {srv if isinstance(srv, str) else srv.api_key}"}


def ingest(srv: LocalServer, payload: Any, **kw: Any) -> requests.Response:
    """POST a batch to /api/ingest/ with the server's write key."""
    return requests.post(srv.url + "/api/ingest/", json=payload, headers=auth(srv), timeout=10, **kw)


def me(srv: LocalServer) -> requests.Response:
    """GET /api/me/."""
    return requests.get(srv.url + "/api/me/", headers=auth(srv), timeout=10)


def outcome(srv: LocalServer, payload: Any) -> int | str:
    """The status of an ingest POST, or "reset" when the connection broke without an answer."""
    try:
        return ingest(srv, payload).status_code
    except requests.ConnectionError:
        return "reset"


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as srv:
        yield srv


# -- the Faults value ---------------------------------------------------------------------------------------


def test_defaults_inject_nothing_and_stats_start_at_zero(server: LocalServer) -> None:
    assert not Faults().active
    assert Faults().paths == ("/api/ingest/", "/api/attachments/")
    assert ingest(server, batch()).status_code == 200
    stats = server.fault_stats()
    assert stats["ingest_ok"] == 1
    assert all(stats[key] == 0 for key in ("reset", "accept_then_fail", "413", "outage", "latency"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status_rates": {503: 1.5}},
        {"status_rates": {503: -0.1}},
        {"status_rates": {200: 0.5}},
        {"status_rates": {600: 0.5}},
        {"status_rates": {503: 0.6, 429: 0.6}},
        {"reset_rate": 2},
        {"accept_then_fail_rate": float("nan")},
        {"accept_then_fail_mode": "timeout"},
        {"latency": -1},
        {"latency": (0.3, 0.1)},
        {"max_ingest_bytes": -1},
        {"outage_mode": "drop"},
        {"retry_after": "1\r\nX-Evil: 1"},
        {"retry_after": "date:soon"},
        {"paths": "/api/ingest/"},
    ],
)
def test_bad_faults_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Faults(**kwargs)


# -- injected statuses and Retry-After ----------------------------------------------------------------------


def test_injected_status_with_delta_seconds_retry_after_stores_nothing(server: LocalServer) -> None:
    server.set_faults(Faults(status_rates={429: 1.0}, retry_after="1"))
    response = ingest(server, batch())
    assert response.status_code == 429
    assert response.json() == {"detail": "injected 429"}
    assert response.headers["Retry-After"] == "1"
    assert server.span_count() == 0
    assert server.fault_stats()["status_429"] == 1
    assert server.fault_stats()["ingest_ok"] == 0
    assert server.request_log()[-1]["fault"] == "status_429"


def test_injected_503_with_http_date_retry_after_computed_at_answer_time(server: LocalServer) -> None:
    server.set_faults(Faults(status_rates={503: 1.0}, retry_after="date:30"))
    response = ingest(server, batch())
    assert response.status_code == 503
    assert response.json() == {"detail": "injected 503"}
    when = parsedate_to_datetime(response.headers["Retry-After"])
    ahead = (when - datetime.now(timezone.utc)).total_seconds()
    assert 25 <= ahead <= 31
    fixed = format_datetime(datetime(2030, 1, 1, tzinfo=timezone.utc), usegmt=True)
    server.set_faults(Faults(status_rates={503: 1.0}, retry_after=fixed))
    assert ingest(server, batch()).headers["Retry-After"] == fixed
    assert server.fault_stats()["status_503"] == 2


def test_retry_after_only_on_429_and_503(server: LocalServer) -> None:
    server.set_faults(Faults(status_rates={500: 1.0}, retry_after="1"))
    response = ingest(server, batch())
    assert response.status_code == 500 and response.json() == {"detail": "injected 500"}
    assert "Retry-After" not in response.headers


def test_status_rates_split_requests_between_statuses(server: LocalServer) -> None:
    server.set_faults(Faults(status_rates={502: 0.5, 503: 0.5}, seed=1))
    seen = {ingest(server, batch()).status_code for _ in range(30)}
    assert seen == {502, 503}
    stats = server.fault_stats()
    assert stats["status_502"] + stats["status_503"] == 30


def test_attachments_are_affected_and_me_is_not_by_default(server: LocalServer) -> None:
    server.set_faults(Faults(reset_rate=1.0, latency=0.3))
    started = time.monotonic()
    assert me(server).status_code == 200
    assert time.monotonic() - started < 0.3
    with pytest.raises(requests.ConnectionError):
        requests.post(server.url + "/api/attachments/", json={}, headers=auth(server), timeout=10)
    server.set_faults(Faults(status_rates={503: 1.0}))
    upload = requests.post(server.url + "/api/attachments/", json={}, headers=auth(server), timeout=10)
    assert upload.status_code == 503
    assert me(server).status_code == 200
    server.set_faults(Faults(status_rates={503: 1.0}, paths=("/api/me/",)))
    assert me(server).status_code == 503
    assert ingest(server, batch()).status_code == 200


# -- latency --------------------------------------------------------------------------------------------------


def test_latency_delays_the_answer_and_is_counted(server: LocalServer) -> None:
    server.set_faults(Faults(latency=0.2))
    started = time.monotonic()
    assert ingest(server, batch()).status_code == 200
    assert time.monotonic() - started >= 0.2
    server.set_faults(Faults(latency=(0.1, 0.15)))
    started = time.monotonic()
    assert ingest(server, batch(start=3)).status_code == 200
    assert time.monotonic() - started >= 0.1
    assert server.fault_stats()["latency"] == 2
    assert server.fault_stats()["ingest_ok"] == 2


# -- connection resets ----------------------------------------------------------------------------------------


def test_reset_is_a_connection_error_and_stores_nothing(server: LocalServer) -> None:
    server.set_faults(Faults(reset_rate=1.0))
    with pytest.raises(requests.ConnectionError):
        ingest(server, batch())
    assert server.span_count() == 0
    assert server.fault_stats()["reset"] == 1
    last = server.request_log()[-1]
    assert last["status"] is None and last["fault"] == "reset"
    server.set_faults(None)
    assert ingest(server, batch()).status_code == 200


def test_reset_is_a_tcp_reset_after_the_body_was_read(server: LocalServer) -> None:
    server.set_faults(Faults(reset_rate=1.0))
    body = json.dumps(batch()).encode()
    head = (
        f"POST /api/ingest/ HTTP/1.1\r\nHost: x\r\nAuthorization: Api-Key {server.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + body)
        with pytest.raises(ConnectionResetError):
            sock.recv(65536)
    assert server.request_log()[-1]["body_bytes"] == len(body)


# -- accept then fail -----------------------------------------------------------------------------------------


def test_accept_then_fail_stores_then_answers_503_and_a_resend_stores_nothing_new(server: LocalServer) -> None:
    server.set_faults(Faults(accept_then_fail_rate=1.0, retry_after="1"))
    response = ingest(server, batch(count=4))
    assert response.status_code == 503
    assert response.json() == {"detail": "injected 503"}
    assert response.headers["Retry-After"] == "1"
    assert server.span_count("conv-1") == 4
    assert server.stored_items("conv-1") == 4
    server.set_faults(None)
    again = ingest(server, batch(count=4))
    assert again.status_code == 200
    assert again.json()["spans_received"] == 4 and again.json()["spans_stored"] == 0
    assert server.span_count("conv-1") == 4
    stats = server.fault_stats()
    assert stats["accept_then_fail"] == 1 and stats["ingest_ok"] == 1


def test_accept_then_fail_by_reset_still_stores(server: LocalServer) -> None:
    server.set_faults(Faults(accept_then_fail_rate=1.0, accept_then_fail_mode="reset"))
    with pytest.raises(requests.ConnectionError):
        ingest(server, batch(count=2))
    assert server.span_count("conv-1") == 2
    assert server.fault_stats()["accept_then_fail"] == 1


def test_accept_then_fail_leaves_rejections_alone(server: LocalServer) -> None:
    server.set_faults(Faults(accept_then_fail_rate=1.0))
    bad = batch()
    bad["conversations"][0]["spans"][0]["span_id"] = "not-hex"
    assert ingest(server, bad).status_code == 400
    assert server.fault_stats()["accept_then_fail"] == 0


# -- 413 above a size -----------------------------------------------------------------------------------------


def test_max_ingest_bytes_refuses_bigger_bodies_unprocessed_and_accepts_smaller(server: LocalServer) -> None:
    small = json.dumps(batch("small")).encode()
    big = json.dumps(batch("big", padding="x" * 2000)).encode()
    limit = len(small) + 100
    assert len(big) > limit
    server.set_faults(Faults(max_ingest_bytes=limit))
    headers = {**auth(server), "Content-Type": "application/json"}
    refused = requests.post(server.url + "/api/ingest/", data=big, headers=headers, timeout=10)
    assert refused.status_code == 413
    assert refused.json() == {"detail": "Request body too large."}
    assert server.span_count() == 0
    accepted = requests.post(server.url + "/api/ingest/", data=small, headers=headers, timeout=10)
    assert accepted.status_code == 200
    assert server.span_count("small") == 3
    # the limit is on the wire size: the same big body gzipped fits
    zipped = gzip.compress(big)
    assert len(zipped) <= limit
    gz = requests.post(
        server.url + "/api/ingest/", data=zipped, headers={**headers, "Content-Encoding": "gzip"}, timeout=10
    )
    assert gz.status_code == 200
    assert server.span_count("big") == 3
    assert server.fault_stats()["413"] == 1


# -- outages --------------------------------------------------------------------------------------------------


def poll_until_ok(srv: LocalServer, payload: Any, deadline_seconds: float = 10.0) -> list[int | str]:
    """Send until a 200 comes back (within a deadline); return every outcome seen."""
    seen: list[int | str] = []
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        seen.append(outcome(srv, payload))
        if seen[-1] == 200:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"still failing after {deadline_seconds}s: {seen[-5:]}")


def test_outage_503_then_recovery(server: LocalServer) -> None:
    server.outage(0.4, mode="503")
    response = ingest(server, batch())
    assert response.status_code == 503 and response.json() == {"detail": "injected 503 (outage)"}
    assert server.span_count() == 0
    assert me(server).status_code == 200
    seen = poll_until_ok(server, batch())
    assert set(seen[:-1]) <= {503}
    assert server.span_count() == 3
    assert server.outage_remaining() == 0
    assert server.fault_stats()["outage"] == len(seen)


def test_outage_by_reset_from_faults_then_recovery(server: LocalServer) -> None:
    server.set_faults(Faults(outage_seconds=0.4, reset_rate=0.0))
    with pytest.raises(requests.ConnectionError):
        ingest(server, batch())
    assert server.span_count() == 0
    seen = poll_until_ok(server, batch())
    assert set(seen[:-1]) <= {"reset"}
    assert server.fault_stats()["outage"] == len(seen)


def test_outage_from_the_constructor_starts_with_the_server() -> None:
    with LocalServer(faults=Faults(outage_seconds=30, outage_mode="503")) as srv:
        assert srv.outage_remaining() > 25
        assert ingest(srv, batch()).status_code == 503
        srv.outage(0)
        assert ingest(srv, batch()).status_code == 200


# -- switching off and reproducibility ------------------------------------------------------------------------


def test_set_faults_none_or_empty_turns_everything_off(server: LocalServer) -> None:
    everything = Faults(status_rates={503: 1.0}, reset_rate=1.0, max_ingest_bytes=1, outage_seconds=60)
    for off in (None, Faults()):
        server.set_faults(everything)
        assert outcome(server, batch()) in (503, "reset", 413)
        server.set_faults(off)
        before = server.fault_stats()
        assert ingest(server, batch()).status_code == 200
        after = server.fault_stats()
        assert after.pop("ingest_ok") == before.pop("ingest_ok") + 1
        assert after == before
    assert not server.faults.active


def test_seeded_runs_are_reproducible(server: LocalServer) -> None:
    faults = Faults(status_rates={503: 0.3, 429: 0.2}, reset_rate=0.2, seed=1234)

    def run(srv: LocalServer) -> list[int | str]:
        srv.set_faults(faults)
        return [outcome(srv, batch(count=1, start=i)) for i in range(25)]

    first = run(server)
    assert run(server) == first
    with LocalServer() as other:
        assert run(other) == first
    assert {200, 503, 429, "reset"} <= set(first)
    server.set_faults(Faults(status_rates={503: 0.3, 429: 0.2}, reset_rate=0.2, seed=99))
    assert [outcome(server, batch(count=1, start=i)) for i in range(25)] != first


# -- the command line -----------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AGENTSIGHT_")}


def _read_banner(proc: subprocess.Popen[str]) -> tuple[str, str, list[str]]:
    """Read the first lines until both the URL and the key were printed."""
    assert proc.stdout is not None
    lines: list[str] = []
    url = key = None
    while (url is None or key is None) and len(lines) < 10:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        url = url or (m.group(0) if (m := re.search(r"http://127\.0\.0\.1:\d+", line)) else None)
        key = key or (m.group(1) if (m := re.search(r"AGENTSIGHT_API_KEY=(\S+)", line)) else None)
    assert url and key, lines
    return url, key, lines


def test_cli_fault_flags_inject_into_ingest() -> None:
    proc = subprocess.Popen(
        CLI
        + ["serve", "--port", "0", "--db", ":memory:", "--fail", "503=1", "--retry-after", "2"]
        + ["--latency", "0.01", "--reset-rate", "0", "--accept-then-fail", "0", "--max-ingest-bytes", "100000"]
        + ["--fault-seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        url, key, _ = _read_banner(proc)
        response = requests.post(url + "/api/ingest/", json=batch(), headers=auth(key), timeout=10)
        assert response.status_code == 503
        assert response.json() == {"detail": "injected 503"}
        assert response.headers["Retry-After"] == "2"
        assert requests.get(url + "/api/me/", headers=auth(key), timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.stdout is not None and "Injecting faults: 503=1" in proc.stdout.read()


def test_cli_outage_from_start_ends() -> None:
    proc = subprocess.Popen(
        CLI + ["serve", "--port", "0", "--db", ":memory:", "--outage", "1", "--outage-mode", "503"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        url, key, _ = _read_banner(proc)
        statuses = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            statuses.append(
                requests.post(url + "/api/ingest/", json=batch(), headers=auth(key), timeout=10).status_code
            )
            if statuses[-1] == 200:
                break
            time.sleep(0.05)
        assert statuses[0] == 503 and statuses[-1] == 200, statuses
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--fail", "503=2"], "between 0 and 1"),
        (["--fail", "200=0.1"], "400 to 599"),
        (["--fail", "503"], "STATUS=RATE"),
        (["--reset-rate", "1.5"], "between 0 and 1"),
        (["--latency", "0.3,0.1"], "MIN <= MAX"),
        (["--fail", "503=0.7", "--fail", "429=0.7"], "add up to more than 1"),
    ],
)
def test_cli_bad_fault_flags_exit_non_zero_with_a_clear_message(flags: list[str], message: str) -> None:
    out = subprocess.run(
        CLI + ["serve", "--port", "0", "--db", ":memory:", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert out.returncode != 0
    assert message in out.stderr
    assert "listening" not in out.stdout
