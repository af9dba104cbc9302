"""An app already instrumented with OpenTelemetry GenAI spans, shipped to AgentSight with no code change.

    pip install 'agentsight-otel[zero-code]'
    OTEL_TRACES_EXPORTER=agentsight OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
        opentelemetry-instrument python examples/zero_code_app.py

(`opentelemetry-distro` defaults metrics and logs to an OTLP exporter it does not install; hence the two `none`.)

`opentelemetry-instrument` builds the SDK and, through the `opentelemetry_traces_exporter` entry point
`agentsight`, an `AgentSightSpanExporter` configured from the environment (AGENTSIGHT_API_KEY,
AGENTSIGHT_API_ENDPOINT, ...). This file only uses the OpenTelemetry API: in a real app the spans come from an
instrumentation such as opentelemetry-instrumentation-openai-v2, OpenInference or OpenLLMetry.
"""

from __future__ import annotations

import json
import os

from opentelemetry import trace

tracer = trace.get_tracer("zero-code-example")
CONVERSATION = os.environ.get("EXAMPLE_CONVERSATION_ID", "zero-code-1")


def chat(question: str) -> str:
    answer = "Your order #1042 ships tomorrow."
    with tracer.start_as_current_span("chat gpt-4o-mini") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.provider.name", "openai")
        span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
        span.set_attribute(
            "gen_ai.input.messages", json.dumps([{"role": "user", "parts": [{"type": "text", "content": question}]}])
        )
        span.set_attribute(
            "gen_ai.output.messages",
            json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]),
        )
        span.set_attribute("gen_ai.usage.input_tokens", 21)
        span.set_attribute("gen_ai.usage.output_tokens", 9)
    return answer


def main() -> None:
    with tracer.start_as_current_span("invoke_agent support_agent") as agent:
        agent.set_attribute("gen_ai.operation.name", "invoke_agent")
        agent.set_attribute("gen_ai.conversation.id", CONVERSATION)
        with tracer.start_as_current_span("GET /orders/1042") as http:  # not conversational: not shipped
            http.set_attribute("http.request.method", "GET")
        print(chat("When does my order arrive?"))


if __name__ == "__main__":
    main()
