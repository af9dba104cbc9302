"""Integration tests with real instrumentation packages from PyPI producing the spans.

For each library (OpenTelemetry GenAI's ``opentelemetry-instrumentation-openai-v2``, OpenInference's
``openinference-instrumentation-openai``, OpenLLMetry's ``opentelemetry-instrumentation-openai`` driven by
``traceloop-sdk``) an app in ``tests/interop/`` instruments the real ``openai`` client and talks to a local
OpenAI-compatible server (``tests/interop/fake_openai.py``): the user asks the weather with a ``get_weather`` tool
offered, the app runs the tool, and the answer comes back streamed. Its spans go through
``BatchSpanProcessor(AgentSightSpanExporter())`` to the local AgentSight server, whose stored transcript is checked.

The libraries disagree about ``openai`` and OpenTelemetry versions, so each runs in its own virtual environment,
built once from ``tests/interop/requirements-<library>.txt`` (exact pins) plus ``pip install -e`` of this repo,
under ``build/interop-venvs/<library>-<hash>/`` (``INTEROP_VENV_DIR`` to put them elsewhere) and reused while the
requirements, ``pyproject.toml`` and the Python version stay the same. Building needs PyPI; the tests themselves
use loopback only (the apps refuse any other connection).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import pytest

from agentsight_otel.localserver import LocalServer

from .helpers import wait_until
from .interop import fake_openai

REPO = Path(__file__).resolve().parent.parent
INTEROP = REPO / "tests" / "interop"
VENV_ROOT = Path(os.environ.get("INTEROP_VENV_DIR") or REPO / "build" / "interop-venvs")
PIP_TIMEOUT = 900  # seconds for one `pip install`
APP_TIMEOUT = 120  # seconds for one app run

QUESTION = "What's the weather in Paris?"
TOOL_RESULT = "Sunny, 21 C in Paris"
TOOL_SECONDS = 0.05  # how long the apps' get_weather takes (tests/interop/_app_common.py)
ANSWER = fake_openai.WEATHER_ANSWER
MODEL = fake_openai.MODEL


def _usage(kind: str, cache_reported: bool = True) -> tuple[str, str, int, int, int]:
    """A token_usage item as projected: AgentSight's input excludes cache reads; the libraries' input includes them."""
    prompt, completion, cached = fake_openai.USAGE[kind]
    if not cache_reported:
        return ("token_usage", MODEL, prompt, completion, 0)
    return ("token_usage", MODEL, prompt - cached, completion, cached)


def _expected(cache_reported: bool) -> list[tuple[Any, ...]]:
    return [
        ("message", "end_user", QUESTION),
        _usage("tool_call", cache_reported),
        ("action", "get_weather", {"city": "Paris"}, TOOL_RESULT, None),
        _usage("weather_answer", cache_reported),
        ("message", "agent", ANSWER),
    ]


# Per library: the app, its content-capture setting (each library's documented one), and the transcript expected.
LIBRARIES: dict[str, dict[str, Any]] = {
    "genai": {
        "env": {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only"},
        # opentelemetry-instrumentation-openai-v2 2.4b0 drops usage.prompt_tokens_details on chat completions: its
        # spans carry gen_ai.usage.input_tokens (= OpenAI prompt_tokens, cached included) and output_tokens but no
        # gen_ai.usage.cache_read.input_tokens. The 10 and 32 cached tokens the server reported are unknowable from
        # the spans, so the transcript shows the whole prompt as input and cache_read_tokens 0.
        "expected": _expected(cache_reported=False),
        # chat spans (util-genai's handler scope) with the messages as JSON strings
        "llm_span": lambda attrs: attrs.get("gen_ai.operation.name") == "chat",
        "content_key": "gen_ai.input.messages",
    },
    "openinference": {
        "env": {},  # content is captured by default (OPENINFERENCE_HIDE_* would remove it)
        "expected": _expected(cache_reported=True),
        "llm_span": lambda attrs: attrs.get("openinference.span.kind") == "LLM",
        "content_key": "llm.input_messages.0.message.content",
    },
    "openllmetry": {
        "env": {
            "TRACELOOP_TRACE_CONTENT": "true",
            "TRACELOOP_TELEMETRY": "false",
            "TRACELOOP_METRICS_ENABLED": "false",
            "TRACELOOP_LOGGING_ENABLED": "false",
        },
        "expected": _expected(cache_reported=True),
        # OpenLLMetry >= 0.55 puts content in gen_ai.input.messages / gen_ai.output.messages (parts format)
        "llm_span": lambda attrs: attrs.get("gen_ai.operation.name") == "chat",
        "content_key": "gen_ai.input.messages",
    },
}


# -- virtual environments ------------------------------------------------------------------------------------


def requirements_file(library: str) -> Path:
    return INTEROP / f"requirements-{library}.txt"


def venv_path(library: str) -> Path:
    """Where the library's venv lives: a new one whenever its pins, the package's metadata or Python change."""
    digest = hashlib.sha256()
    for part in (
        requirements_file(library).read_bytes(),
        (REPO / "pyproject.toml").read_bytes(),
        sys.version.encode(),
        str(REPO).encode(),  # the editable install points here
    ):
        digest.update(hashlib.sha256(part).digest())
    return VENV_ROOT / f"{library}-{digest.hexdigest()[:12]}"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (two pytest runs building the same venv), where fcntl exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_editable_lock = threading.Lock()  # `pip install -e` writes the repo's egg-info: one at a time


def _run_logged(command: list[str], log: Path, timeout: float) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=REPO)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{' '.join(command)} failed with exit code {result.returncode}; log {log}:\n{tail}")


def ensure_venv(library: str) -> Path:
    """The library's venv python, building the venv first when it is missing or was left half-built."""
    venv = venv_path(library)
    ready = venv / ".interop-ready"
    if ready.exists():
        return venv_python(venv)
    with _file_lock(VENV_ROOT / f".{library}.lock"):
        if ready.exists():
            return venv_python(venv)
        for stale in VENV_ROOT.iterdir():  # older pins of this library, and a half-built one
            if re.fullmatch(rf"{re.escape(library)}-[0-9a-f]{{12}}(\.log)?", stale.name):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
        log = venv.with_suffix(".log")
        started = time.monotonic()
        _run_logged([sys.executable, "-m", "venv", str(venv)], log, 120)
        python = str(venv_python(venv))
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        _run_logged([*pip, "-r", str(requirements_file(library))], log, PIP_TIMEOUT)
        with _editable_lock, _file_lock(VENV_ROOT / ".editable.lock"):
            _run_logged([*pip, "-e", str(REPO)], log, PIP_TIMEOUT)
        seconds = round(time.monotonic() - started, 1)
        ready.write_text(json.dumps({"library": library, "install_seconds": seconds}) + "\n")
    return venv_python(venv)


@pytest.fixture(scope="session")
def interop_venv(request) -> Iterator[Callable[[str], Path]]:
    """``interop_venv(library)`` -> that library's venv python; the selected libraries' venvs build in parallel."""
    selected = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        library = callspec.params.get("library") if callspec is not None else None
        if library in LIBRARIES and item.get_closest_marker("interop") and library not in selected:
            selected.append(library)
    pool = ThreadPoolExecutor(max_workers=max(len(selected), 1), thread_name_prefix="interop-venv")
    builds: dict[str, Future[Path]] = {library: pool.submit(ensure_venv, library) for library in selected}

    def get(library: str) -> Path:
        if library not in builds:
            builds[library] = pool.submit(ensure_venv, library)
        return builds[library].result()

    yield get
    pool.shutdown(wait=True)


# -- running an app ------------------------------------------------------------------------------------------


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def describe_spans(spans: list[dict[str, Any]]) -> str:
    """What the library really emitted, for failure messages."""
    lines = []
    for span in spans:
        root = "root" if span["parent_id"] is None else "child"
        lines.append(f"- {span['name']} [{span['kind']}, {root}, scope {span['scope']}, {span['status']}]")
        for key, value in span["attributes"].items():
            lines.append(f"    {key} = {json.dumps(value)[:300]}")
        if span["events"]:
            lines.append(f"    events: {[e['name'] for e in span['events']]}")
    return "\n".join(lines)


def app_environment(library: str, server: LocalServer, fake: fake_openai.FakeOpenAI, tmp_path: Path, cid: str):
    inherited = ("AGENTSIGHT_", "OTEL_", "OPENAI_", "TRACELOOP_", "OPENINFERENCE_", "INTEROP_", "PYTHON")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited) and k != "VIRTUAL_ENV"}
    env.update(
        {
            "AGENTSIGHT_API_KEY": server.api_key,
            "AGENTSIGHT_API_ENDPOINT": server.url,
            "AGENTSIGHT_SPOOL_DIR": str(tmp_path / "spool"),
            "AGENTSIGHT_TRACE_HOLD_SECONDS": "2",
            "INTEROP_OPENAI_BASE_URL": fake.base_url,
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "test",
            "INTEROP_CONVERSATION_ID": cid,
            "INTEROP_SPANS_FILE": str(tmp_path / "spans.jsonl"),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update(LIBRARIES[library]["env"])
    return env


def project(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for item in items:
        if item["type"] == "message":
            out.append(("message", item["sender"], item["content"]))
        elif item["type"] == "action":
            arguments = item["arguments"]
            if isinstance(arguments, str):  # compare arguments as parsed JSON, whatever form they were stored in
                arguments = json.loads(arguments)
            out.append(("action", item["name"], arguments, item["response"], item["error"]))
        elif item["type"] == "token_usage":
            out.append(
                ("token_usage", item["model"], item["input_tokens"], item["output_tokens"], item["cache_read_tokens"])
            )
        else:
            out.append((item["type"],))
    return out


# -- the tests -----------------------------------------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.parametrize("library", list(LIBRARIES))
def test_real_instrumentation_gives_the_conversation(library, interop_venv, tmp_path):
    python = interop_venv(library)
    spec = LIBRARIES[library]
    cid = f"interop-{library}-{uuid.uuid4().hex[:12]}"
    with LocalServer() as server, fake_openai.FakeOpenAI() as fake:
        run = subprocess.run(
            [str(python), str(INTEROP / f"app_{library}.py")],
            env=app_environment(library, server, fake, tmp_path, cid),
            cwd=tmp_path,  # no .env of the developer's checkout is read
            capture_output=True,
            text=True,
            timeout=APP_TIMEOUT,
        )
        spans = read_spans(tmp_path / "spans.jsonl")
        spool = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "spool").rglob("*") if p.is_file())

        def context() -> str:
            return (
                f"\n--- app exit code {run.returncode}\n--- stdout:\n{run.stdout[-3000:]}\n--- stderr:\n"
                f"{run.stderr[-6000:]}\n--- spans the library emitted:\n{describe_spans(spans)}\n"
                f"--- spool files: {spool}\n--- conversations: {server.conversations()}"
            )

        assert run.returncode == 0, context()
        assert "INTEROP-NETWORK-REFUSED" not in run.stderr, "the app tried to leave loopback" + context()
        assert f"answer={ANSWER}" in run.stdout, context()

        # The app drove the real client as intended: a tool-offering plain call, then a streamed one with usage.
        sent = fake.requests
        assert len(sent) == 2, sent
        assert sent[0].get("tools") and not sent[0].get("stream")
        assert sent[1].get("stream") is True and sent[1].get("stream_options") == {"include_usage": True}
        assert sent[1]["messages"][-1]["role"] == "tool"

        # The library really put the content on its spans (its capture setting took effect).
        llm_spans = [s for s in spans if spec["llm_span"](s["attributes"])]
        assert len(llm_spans) == 2, context()
        assert all(spec["content_key"] in s["attributes"] for s in llm_spans), context()

        wait_until(lambda: server.transcript(cid) is not None, timeout=10)
        transcript = server.transcript(cid)
        assert transcript is not None
        assert [c["conversation_id"] for c in server.conversations()] == [cid], context()
        items = transcript["items"]
        got = project(items)
        assert got == spec["expected"], f"\n--- transcript: {json.dumps(items, indent=1)}" + context()

        answers = [i for i in items if i["type"] == "message" and i["sender"] == "agent"]
        assert [a["content"] for a in answers] == [ANSWER]  # the final answer exactly once
        (action,) = [i for i in items if i["type"] == "action"]
        assert action["duration_ms"] is not None
        assert TOOL_SECONDS * 1000 <= action["duration_ms"] < 30_000, action
        timestamps = [i["timestamp"] for i in items]
        assert timestamps == sorted(timestamps), timestamps
