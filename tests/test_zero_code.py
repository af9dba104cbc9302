"""The zero-code path: OTEL_TRACES_EXPORTER=agentsight opentelemetry-instrument python app.py, in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from agentsight_otel import AgentSightSpanExporter
from agentsight_otel.localserver import LocalServer

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "zero_code_app.py"


def test_the_entry_point_names_the_exporter():
    found = entry_points(group="opentelemetry_traces_exporter", name="agentsight")
    assert [ep.load() for ep in found] == [AgentSightSpanExporter]


def test_opentelemetry_instrument_ships_an_unchanged_app(tmp_path):
    instrument = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert instrument, "opentelemetry-instrument comes with the dev extra (opentelemetry-distro)"
    with LocalServer() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTSIGHT_", "OTEL_"))}
        env.update(
            OTEL_TRACES_EXPORTER="agentsight",
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
            AGENTSIGHT_API_KEY=server.api_key,
            AGENTSIGHT_API_ENDPOINT=server.url,
            AGENTSIGHT_SPOOL_DIR=str(tmp_path / "spool"),
        )
        out = subprocess.run(
            [instrument, sys.executable, str(EXAMPLE)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr
        items = server.transcript("zero-code-1")["items"]
        assert [(i["type"], i.get("sender"), i.get("content")) for i in items] == [
            ("message", "end_user", "When does my order arrive?"),
            ("token_usage", None, None),
            ("message", "agent", "Your order #1042 ships tomorrow."),
        ]
        assert server.api_key not in out.stdout + out.stderr
