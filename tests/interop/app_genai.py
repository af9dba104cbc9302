"""An app traced with the OpenTelemetry GenAI instrumentation (``opentelemetry-instrumentation-openai-v2``).

Content capture: ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=span_only`` (set by the test; ``true`` would
capture nothing with util-genai >= 1.0). The conversation id goes where GenAI puts it: ``gen_ai.conversation.id``
on the app's ``invoke_agent`` span (util-genai's ``invoke_local_agent``), the trace's root; the tool runs in an
``execute_tool`` span made with util-genai's ``handler.tool(...)``.

Run by ``tests/test_interop.py`` in its own virtual environment (see ``requirements-genai.txt``).
"""

from __future__ import annotations

import json

import _app_common as common

common.loopback_only()

from opentelemetry import trace  # noqa: E402
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from opentelemetry.util.genai.handler import TelemetryHandler  # noqa: E402
from opentelemetry.util.genai.types import InputMessage, OutputMessage, Text  # noqa: E402

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
    handler = TelemetryHandler(tracer_provider=provider)
    client = common.openai_client(base_url)

    def run_tool(call) -> str:
        with handler.tool(
            call.function.name, tool_call_id=call.id, tool_type="function", tool_description=common.TOOL_DESCRIPTION
        ) as invocation:
            arguments = json.loads(call.function.arguments)
            if invocation.should_capture_content_on_span:
                invocation.arguments = arguments
            result = common.weather(**arguments)
            if invocation.should_capture_content_on_span:
                invocation.tool_result = result
            return result

    with handler.invoke_local_agent(agent_name="weather_agent", request_model=common.REQUEST_MODEL) as agent:
        agent.conversation_id = conversation_id
        agent.input_messages = [InputMessage(role="user", parts=[Text(content=common.QUESTION)])]
        answer = common.run_conversation(client, run_tool)
        agent.output_messages = [OutputMessage(role="assistant", parts=[Text(content=answer)], finish_reason="stop")]
    provider.shutdown()


if __name__ == "__main__":
    main()
