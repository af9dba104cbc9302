"""What the interop apps share: the conversation they run, the loopback guard, and a debug dump of the spans.

The apps (``app_<library>.py``) run in their library's own virtual environment, as scripts: this module is
imported from the script's directory. Each app builds an OpenTelemetry SDK ``TracerProvider`` whose pipeline
ends in ``BatchSpanProcessor(AgentSightSpanExporter())`` (configured from ``AGENTSIGHT_*`` in the environment),
instruments the real ``openai`` client with its library, and runs :func:`run_conversation` against the fake
OpenAI server at ``INTEROP_OPENAI_BASE_URL``, with the conversation id ``INTEROP_CONVERSATION_ID``.

Every finished span is also written as one JSON line to ``INTEROP_SPANS_FILE`` (when set), so a failing test can
show what the library really emitted.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable

SYSTEM = "You are a weather bot."
QUESTION = "What's the weather in Paris?"
REQUEST_MODEL = "gpt-4o-mini"
TOOL_DESCRIPTION = "Current weather in a city."
TOOL_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"],
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": TOOL_DESCRIPTION, "parameters": TOOL_PARAMETERS},
    }
]


TOOL_SECONDS = 0.05  # the tool takes this long, so its action has a duration worth checking


def weather(city: str) -> str:
    """The tool's real work."""
    time.sleep(TOOL_SECONDS)
    return f"Sunny, 21 C in {city}"


def _loopback_host(host: Any) -> bool:
    if not isinstance(host, str) or host == "":
        return True  # unix sockets, wildcard binds
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def loopback_only() -> None:
    """Refuse any connection or name lookup that would leave this machine (a library phoning home fails loudly)."""

    def refuse(what: str) -> None:
        message = f"{what} refused (loopback only)"
        sys.stderr.write(f"INTEROP-NETWORK-REFUSED: {message}\n")  # the test fails on this line
        raise PermissionError(message)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.connect":
            address = args[1]
            if isinstance(address, tuple) and not _loopback_host(address[0]):
                refuse(f"connection to {address!r}")
        elif event == "socket.getaddrinfo":
            if not _loopback_host(args[0]):
                refuse(f"name lookup of {args[0]!r}")

    sys.addaudithook(hook)
    socket.setdefaulttimeout(30)


def settings() -> tuple[str, str]:
    """(OpenAI base URL, conversation id) from the environment."""
    return os.environ["INTEROP_OPENAI_BASE_URL"], os.environ["INTEROP_CONVERSATION_ID"]


def openai_client(base_url: str) -> Any:
    import openai

    return openai.OpenAI(api_key="test", base_url=base_url, max_retries=0, timeout=30)


def _span_document(span: Any) -> dict[str, Any]:
    def jsonable(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    scope = getattr(span, "instrumentation_scope", None)
    return {
        "name": span.name,
        "kind": span.kind.name,
        "scope": getattr(scope, "name", None),
        "scope_version": getattr(scope, "version", None),
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {k: jsonable(v) for k, v in (span.attributes or {}).items()},
        "events": [
            {"name": e.name, "attributes": {k: jsonable(v) for k, v in (e.attributes or {}).items()}}
            for e in span.events
        ],
    }


def span_dump_processor() -> Any | None:
    """A processor writing every finished span as a JSON line to ``INTEROP_SPANS_FILE`` (None when unset)."""
    path = os.environ.get("INTEROP_SPANS_FILE")
    if not path:
        return None
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class JsonLinesExporter(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            with open(path, "a", encoding="utf-8") as out:
                for span in spans:
                    out.write(json.dumps(_span_document(span), default=str) + "\n")
            return SpanExportResult.SUCCESS

    return SimpleSpanProcessor(JsonLinesExporter())


def run_conversation(client: Any, run_tool: Callable[[Any], str]) -> str:
    """System prompt + the user's weather question with ``get_weather`` offered (not streamed) -> the app runs the
    tool (``run_tool(tool_call)`` returns its result) -> the tool result goes back, streamed with usage -> the
    final answer, returned."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTION},
    ]
    first = client.chat.completions.create(model=REQUEST_MODEL, messages=messages, tools=TOOLS)
    reply = first.choices[0].message
    if not reply.tool_calls:
        raise RuntimeError(f"expected a tool call, got {reply!r}")
    messages.append(reply.model_dump(exclude_none=True))
    for call in reply.tool_calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": run_tool(call)})
    stream = client.chat.completions.create(
        model=REQUEST_MODEL, messages=messages, tools=TOOLS, stream=True, stream_options={"include_usage": True}
    )
    pieces = []
    with stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    answer = "".join(pieces)
    print(f"answer={answer}", flush=True)
    return answer
