"""An app traced with OpenInference's OpenAI instrumentation (``openinference-instrumentation-openai``).

Content capture: on by default (the ``OPENINFERENCE_HIDE_*`` settings would remove it; the test sets none). The
conversation id goes where OpenInference puts it: ``with using_session(cid):`` stamps ``session.id`` on every span
of the block. The app's own spans come from an OITracer (``openinference.instrumentation.TracerProvider`` is an SDK
``TracerProvider``): an AGENT span around the turn and a TOOL span from ``@tracer.tool``.

Run by ``tests/test_interop.py`` in its own virtual environment (see ``requirements-openinference.txt``).
"""

from __future__ import annotations

import json

import _app_common as common

common.loopback_only()

from openinference.instrumentation import TracerProvider, using_session  # noqa: E402
from openinference.instrumentation.openai import OpenAIInstrumentor  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402

from agentsight_otel import AgentSightSpanExporter  # noqa: E402


def main() -> None:
    base_url, conversation_id = common.settings()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(AgentSightSpanExporter()))
    dump = common.span_dump_processor()
    if dump is not None:
        provider.add_span_processor(dump)
    trace.set_tracer_provider(provider)
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    tracer = provider.get_tracer("interop.app")
    client = common.openai_client(base_url)

    @tracer.tool(name="get_weather", description=common.TOOL_DESCRIPTION, parameters=common.TOOL_PARAMETERS)
    def get_weather(city: str) -> str:
        return common.weather(city)

    def run_tool(call) -> str:
        return get_weather(**json.loads(call.function.arguments))

    with using_session(conversation_id):
        with tracer.start_as_current_span("weather_agent", openinference_span_kind="agent") as agent:
            agent.set_input(common.QUESTION)
            answer = common.run_conversation(client, run_tool)
            agent.set_output(answer)
    provider.shutdown()


if __name__ == "__main__":
    main()
