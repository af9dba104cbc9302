"""The agentsight-otel bridge: an OTLP receiver that feeds ``AgentSightSpanExporter``.

A collector (or any OTLP sender) points its ``otlphttp`` exporter at the bridge; spans are rebuilt as SDK
``ReadableSpan`` objects and exported like the spans of an instrumented app, so readers, batching, delivery and the
spool all apply unchanged. Needs the ``bridge`` extra (``opentelemetry-proto``); gRPC needs the ``grpc`` extra.

Modules, one job each: :mod:`.decode` (bodies, encodings, caps), :mod:`.convert` (OTLP -> ``ReadableSpan``),
:mod:`.queue` (the export queue and its verdicts), :mod:`.respond` (answer bodies), :mod:`.server` (OTLP/HTTP),
:mod:`.grpc_receiver` (OTLP/gRPC), :mod:`.settings` and :mod:`.app` (the ``Bridge`` that ties them together).

    agentsight-otel bridge                      # 127.0.0.1:4319, POST /v1/traces

    from agentsight_otel.bridge import Bridge, BridgeSettings
    with Bridge(BridgeSettings(port=0), api_key=key, endpoint=url) as bridge:
        ...  # send OTLP to bridge.traces_url
"""

from .app import Answer, Bridge, make_exporter
from .settings import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HOST,
    DEFAULT_PATH,
    DEFAULT_PORT,
    BridgeSettings,
    resolve_bridge_settings,
)

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HOST",
    "DEFAULT_PATH",
    "DEFAULT_PORT",
    "Answer",
    "Bridge",
    "BridgeSettings",
    "make_exporter",
    "resolve_bridge_settings",
]
