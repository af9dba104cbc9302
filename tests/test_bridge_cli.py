"""``agentsight-otel bridge`` as a process: banner, flags, SIGTERM drains what was accepted, exit codes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import pytest
import requests

from agentsight_otel.bridge.settings import parse_byte_count
from agentsight_otel.localserver import Faults, LocalServer

from .helpers import wait_until
from .test_bridge_helpers import PROTOBUF, body_of, tracker_spans


def _start(server, *args, extra_env=None):
    env = dict(os.environ, AGENTSIGHT_API_KEY=server.api_key, AGENTSIGHT_API_ENDPOINT=server.url, **(extra_env or {}))
    process = subprocess.Popen(
        [sys.executable, "-m", "agentsight_otel.cli", "bridge", "--port", "0", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"on (http://127\.0\.0\.1:\d+/v1/traces)", line)
    assert match, line + process.stderr.read() if process.poll() is not None else line
    return process, match.group(1)


def test_sigterm_drains_accepted_spans_and_exits_0():
    with LocalServer() as server:
        process, url = _start(server, "--token", "cli-token")
        try:
            assert requests.post(url, data=b"", headers={"Content-Type": PROTOBUF}, timeout=10).status_code == 401
            server.set_faults(Faults(latency=1.0))  # the export is still running when SIGTERM arrives
            result = {}

            def send():
                result["r"] = requests.post(
                    url,
                    data=body_of(tracker_spans(4, "cli")),
                    headers={"Content-Type": PROTOBUF, "Authorization": "Bearer cli-token"},
                    timeout=30,
                )

            sender = threading.Thread(target=send)
            sender.start()
            wait_until(lambda: server.fault_stats()["latency"] >= 1, timeout=10)  # the export is in flight
            process.send_signal(signal.SIGTERM)
            sender.join(30)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        assert result["r"].status_code == 200
        assert process.returncode == 0, err
        assert len(server.transcript("cli-0")["items"]) == 8


def test_without_a_key_the_bridge_refuses_to_start():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSIGHT_")}
    result = subprocess.run(
        [sys.executable, "-m", "agentsight_otel.cli", "bridge", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "AGENTSIGHT_API_KEY" in result.stderr


def test_bad_settings_are_reported():
    with LocalServer() as server:
        env = dict(os.environ, AGENTSIGHT_API_KEY=server.api_key, AGENTSIGHT_BRIDGE_MAX_QUEUED_SPANS="many")
        result = subprocess.run(
            [sys.executable, "-m", "agentsight_otel.cli", "bridge", "--port", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert "AGENTSIGHT_BRIDGE_MAX_QUEUED_SPANS" in result.stderr


def test_help_lists_the_flags():
    result = subprocess.run(
        [sys.executable, "-m", "agentsight_otel.cli", "bridge", "--help"], capture_output=True, text=True, timeout=60
    )
    for flag in ("--host", "--port", "--grpc-port", "--token", "--auth-header", "--max-body-bytes", "--drain-timeout"):
        assert flag in result.stdout


def test_byte_counts():
    assert parse_byte_count("1048576") == 1 << 20
    assert parse_byte_count("32MiB") == 32 << 20
    assert parse_byte_count("512 KiB") == 512 << 10
    assert parse_byte_count("1.5MB") == 1_500_000
    for bad in ("", "MiB", "-5", "12parsecs"):
        with pytest.raises(ValueError):
            parse_byte_count(bad)
