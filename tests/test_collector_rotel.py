"""A real collector in the path: app (OpenTelemetry SDK + OTLP/HTTP exporter) -> rotel -> bridge -> AgentSight.

rotel (Streamfold, Apache-2.0) is an OTLP collector that installs from PyPI; it is pinned to the exact version
below. The session fixture uses ``$ROTEL_AGENT`` if set, else an importable ``rotel`` package, else installs the
wheel once with ``pip install --no-deps --target build/rotel-<version>`` and reuses it. The agent runs in the
foreground on free loopback ports with the settings of ``collector-config/rotel-to-bridge.env``; nothing leaves
the machine. If the install is impossible the tests fail under CI (``CI`` set) and are skipped elsewhere.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from agentsight_otel import ConversationTracker
from agentsight_otel.bridge import Bridge, BridgeSettings
from agentsight_otel.localserver import LocalServer

from .helpers import wait_until

ROTEL_VERSION = "0.0.1a15"
ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "collector-config" / "rotel-to-bridge.env"
TOKEN = "collector-test-token"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _agent_works(path: Path) -> bool:
    try:
        result = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return result.returncode == 0 and "rotel" in result.stdout


@pytest.fixture(scope="session")
def rotel_agent() -> Path:
    """The rotel-agent binary of the pinned version."""
    explicit = os.environ.get("ROTEL_AGENT")
    if explicit:
        return Path(explicit)
    try:
        import rotel  # type: ignore[import-not-found]

        candidate = Path(rotel.__file__).parent / "rotel-agent"
        if getattr(rotel, "__version__", ROTEL_VERSION) == ROTEL_VERSION and _agent_works(candidate):
            return candidate
    except ImportError:
        pass
    target = ROOT / "build" / f"rotel-{ROTEL_VERSION}"
    agent = target / "rotel" / "rotel-agent"
    if not _agent_works(agent):
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
                str(staging),
                f"rotel=={ROTEL_VERSION}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            _unavailable(f"cannot install rotel=={ROTEL_VERSION}: {result.stderr[-2000:]}")
        if target.exists():
            subprocess.run(["rm", "-rf", str(target)], check=False)
        staging.rename(target)
    if not _agent_works(agent):
        _unavailable(f"{agent} does not run (it needs libpython3 of the interpreter it was built for)")
    return agent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config_env() -> dict[str, str]:
    """collector-config/rotel-to-bridge.env, read as a shell would (the token variable expanded)."""
    values = {}
    for line in CONFIG.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, raw = line.partition("=")
            value = shlex.split(raw)[0] if raw.strip() else ""
            values[name.strip()] = value.replace("${AGENTSIGHT_BRIDGE_TOKEN}", TOKEN)
    return values


class Rotel:
    """rotel-agent in the foreground, configured from the shipped env file with this test's ports and files."""

    def __init__(self, agent: Path, bridge_url: str, tmp: Path, **overrides: str) -> None:
        self.grpc_port, self.http_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
        env.update(_config_env())
        env.update(
            ROTEL_OTLP_GRPC_ENDPOINT=f"127.0.0.1:{self.grpc_port}",
            ROTEL_OTLP_HTTP_ENDPOINT=f"127.0.0.1:{self.http_port}",
            ROTEL_OTLP_EXPORTER_ENDPOINT=bridge_url,
            ROTEL_PID_FILE=str(tmp / "rotel.pid"),
            ROTEL_LOG_FILE=str(tmp / "rotel.log"),
            ROTEL_BATCH_TIMEOUT="100ms",
            **overrides,
        )
        self.output = open(tmp / "rotel.out", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([str(agent), "start"], env=env, stdout=self.output, stderr=subprocess.STDOUT)
        self.tmp = tmp
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"rotel exited: {(tmp / 'rotel.out').read_text(errors='replace')[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.http_port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("rotel did not open its OTLP/HTTP port") from None
                time.sleep(0.05)

    @property
    def traces_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    def log(self) -> str:
        return (self.tmp / "rotel.out").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.output.close()


@pytest.fixture
def server():
    with LocalServer() as srv:
        yield srv


@pytest.fixture
def bridge(server):
    settings = BridgeSettings(port=0, tokens=(TOKEN,), retry_after=1)
    with Bridge(settings, api_key=server.api_key, endpoint=server.url) as running:
        yield running


def _app(collector_url: str):
    provider = TracerProvider(resource=Resource.create({"service.name": "rotel-test-app"}))
    exporter = OTLPSpanExporter(endpoint=collector_url, compression=Compression.Gzip, timeout=30)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=20_000, schedule_delay_millis=50))
    tracker = ConversationTracker()
    tracker.configure(tracer_provider=provider)
    return provider, tracker


def _track_many(tracker, prefix: str, conversations: int, turns: int) -> dict[str, list[tuple[str, str, str]]]:
    expected: dict[str, list[tuple[str, str, str]]] = {}
    for c in range(conversations):
        cid = f"{prefix}-{c}"
        tracker.get_or_create_conversation(cid, customer_id=f"customer-{c}")
        items = []
        for t in range(turns):
            question, answer = f"{cid} asks {t}: ¿qué tal? 🙂", f"{cid} answers {t}"
            tracker.track_human_message(question)
            tracker.track_agent_message(answer)
            items += [("message", "end_user", question), ("message", "agent", answer)]
        tracker.send_tracked_data()
        expected[cid] = items
    return expected


def _items(server, cid):
    transcript = server.transcript(cid) or {"items": []}
    return [(i["type"], i.get("sender"), i.get("content")) for i in transcript["items"]]


def _all_arrived(server, expected) -> bool:
    return all(_items(server, cid) == items for cid, items in expected.items())


def test_app_to_rotel_to_bridge_to_agentsight(rotel_agent, server, bridge, tmp_path):
    rotel = Rotel(rotel_agent, bridge.url, tmp_path)
    try:
        provider, tracker = _app(rotel.traces_url)
        expected = _track_many(tracker, "rotel", conversations=6, turns=3)
        provider.force_flush()
        wait_until(lambda: _all_arrived(server, expected), timeout=30)
        for c in range(6):
            assert server.transcript(f"rotel-{c}")["conversation"]["customer_id"] == f"customer-{c}"
        stats = bridge.stats()
        assert stats["queue"]["spans_failed"] == 0 and stats["refused_requests"] == 0
        provider.shutdown()
        tracker.shutdown()
    finally:
        rotel.stop()


def test_bridge_answering_503_then_recovering_loses_nothing(rotel_agent, server, bridge, tmp_path):
    rotel = Rotel(
        rotel_agent,
        bridge.url,
        tmp_path,
        ROTEL_OTLP_EXPORTER_RETRY_INITIAL_BACKOFF="200ms",
        ROTEL_OTLP_EXPORTER_RETRY_MAX_BACKOFF="1s",
    )
    try:
        bridge.unavailable(3.0)
        provider, tracker = _app(rotel.traces_url)
        expected = _track_many(tracker, "outage", conversations=5, turns=2)
        provider.force_flush()
        wait_until(lambda: bridge.stats()["refused_requests"] >= 2, timeout=15)  # rotel retried through the 503s
        assert not _all_arrived(server, expected)
        wait_until(lambda: _all_arrived(server, expected), timeout=40)
        assert bridge.stats()["queue"]["spans_failed"] == 0
        provider.shutdown()
        tracker.shutdown()
    finally:
        rotel.stop()


def test_wrong_token_is_refused_and_dropped_by_the_collector(rotel_agent, server, bridge, tmp_path):
    """401 is permanent for a collector: nothing is retried forever, and nothing reaches AgentSight."""
    rotel = Rotel(rotel_agent, bridge.url, tmp_path, ROTEL_OTLP_EXPORTER_CUSTOM_HEADERS="authorization=Bearer wrong")
    try:
        provider, tracker = _app(rotel.traces_url)
        _track_many(tracker, "unauthorised", conversations=1, turns=1)
        provider.force_flush()
        wait_until(lambda: "401" in rotel.log(), timeout=20)
        assert server.transcript("unauthorised-0") is None
        provider.shutdown()
        tracker.shutdown()
    finally:
        rotel.stop()
