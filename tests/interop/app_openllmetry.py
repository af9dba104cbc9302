"""An app traced with OpenLLMetry: ``traceloop-sdk`` driving OpenLLMetry's OpenAI instrumentation
(``opentelemetry-instrumentation-openai``, Traceloop's package of that name).

Content capture: ``TRACELOOP_TRACE_CONTENT=true`` (set by the test; it is also the default), ``use_attributes`` left
at its default (content on span attributes). The conversation id goes where OpenLLMetry puts it:
``Traceloop.set_association_properties({"session_id": cid})``, which the SDK's span processors stamp on every span
started afterwards as ``traceloop.association.properties.session_id``. The app's spans come from the SDK's
decorators: ``@agent`` around the turn and ``@tool`` for get_weather (``traceloop.span.kind=tool``).

The app builds its own SDK ``TracerProvider`` and sets it as the global one; ``Traceloop.init`` then adds the
processors it is given to that provider (hooking its association-property logic into them) and creates no
exporter of its own. Metrics are off; nothing may leave the machine (see ``_app_common.loopback_only``).

Run by ``tests/test_interop.py`` in its own virtual environment (see ``requirements-openllmetry.txt``).
"""

from __future__ import annotations

import json

import _app_common as common

common.loopback_only()

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from traceloop.sdk import Traceloop  # noqa: E402
from traceloop.sdk.decorators import agent, tool  # noqa: E402
from traceloop.sdk.instruments import Instruments  # noqa: E402

from agentsight_otel import AgentSightSpanExporter  # noqa: E402


@tool(name="get_weather")
def get_weather(city: str) -> str:
    return common.weather(city)


def main() -> None:
    base_url, conversation_id = common.settings()
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    processors = [BatchSpanProcessor(AgentSightSpanExporter())]
    dump = common.span_dump_processor()
    if dump is not None:
        processors.append(dump)
    Traceloop.init(
        app_name="interop-openllmetry",
        processor=processors,
        instruments={Instruments.OPENAI},
        telemetry_enabled=False,
    )
    Traceloop.set_association_properties({"session_id": conversation_id})
    client = common.openai_client(base_url)

    @agent(name="weather_agent")
    def weather_agent(question: str) -> str:
        assert question == common.QUESTION
        return common.run_conversation(client, lambda call: get_weather(**json.loads(call.function.arguments)))

    weather_agent(common.QUESTION)
    provider.shutdown()


if __name__ == "__main__":
    main()
