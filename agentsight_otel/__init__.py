"""agentsight-otel: ship AI-agent conversations to AgentSight through OpenTelemetry.

Importing this package reads no configuration, opens no connection and never raises.

    from agentsight_otel import tracker
    tracker.get_or_create_conversation("conv-1", customer_id="c-42")
    tracker.track_human_message("Where is my order?")
    tracker.track_agent_message("It ships tomorrow.")
    tracker.send_tracked_data()
"""

from . import errors
from .exporter import AgentSightSpanExporter
from .tracker import ConversationTracker, conversation_tracker, tracker
from .version import __version__

configure = tracker.configure

__all__ = [
    "AgentSightSpanExporter",
    "ConversationTracker",
    "__version__",
    "configure",
    "conversation_tracker",
    "errors",
    "tracker",
]
