"""Attribute and event names that agentsight-otel reads and writes; nothing else lives here."""

# Conversation attributes: carried by every span so that any span is self-describing.
CONVERSATION_ID = "agentsight.conversation.id"
CONVERSATION_CUSTOMER_ID = "agentsight.conversation.customer_id"
CONVERSATION_CUSTOMER_IP = "agentsight.conversation.customer_ip"
CONVERSATION_DEVICE = "agentsight.conversation.device"
CONVERSATION_SOURCE = "agentsight.conversation.source"
CONVERSATION_LANGUAGE = "agentsight.conversation.language"
CONVERSATION_NAME = "agentsight.conversation.name"
CONVERSATION_ENVIRONMENT = "agentsight.conversation.environment"
CONVERSATION_METADATA = "agentsight.conversation.metadata"

# Conversation block field (AgentSight's name) -> span attribute carrying it. Metadata travels separately.
CONVERSATION_FIELD_ATTRIBUTES = {
    "customer_id": CONVERSATION_CUSTOMER_ID,
    "customer_ip_address": CONVERSATION_CUSTOMER_IP,
    "device": CONVERSATION_DEVICE,
    "source": CONVERSATION_SOURCE,
    "language": CONVERSATION_LANGUAGE,
    "name": CONVERSATION_NAME,
    "environment": CONVERSATION_ENVIRONMENT,
}

# Span-level attributes (agentsight 0.1.x names).
SPAN_KIND = "agentsight.span.kind"
ENTITY_NAME = "agentsight.entity.name"
TURN_ID = "agentsight.turn.id"
TURN_COMPLETE = "agentsight.turn.complete"
METADATA = "agentsight.metadata"

# Values of SPAN_KIND.
KIND_TRACKER = "tracker"  # the tracker's container span; its events are the tracked items
KIND_TURN = "turn"
KIND_TOOL = "tool"
KIND_TASK = "task"
KIND_LLM = "llm"
KIND_BUTTON = "button"
KIND_ATTACHMENT = "attachment"
KIND_CONVERSATION = "conversation"

# Events the tracker adds to its span, one per tracked item.
EVENT_MESSAGE = "agentsight.message"
EVENT_ACTION = "agentsight.action"
EVENT_BUTTON = "agentsight.button"
EVENT_ATTACHMENTS = "agentsight.attachments"
EVENT_TOKEN_USAGE = "agentsight.token_usage"
EVENT_CONVERSATION = "agentsight.conversation"

# Message event attributes.
MESSAGE_SENDER = "agentsight.message.sender"
MESSAGE_CONTENT = "agentsight.message.content"
MESSAGE_METADATA = "agentsight.message.metadata"

# Action (tool span / action event) attributes.
TOOL_NAME = "agentsight.tool.name"
TOOL_ARGUMENTS = "agentsight.tool.arguments"
TOOL_RESPONSE = "agentsight.tool.response"
TOOL_ERROR = "agentsight.tool.error"
ACTION_STARTED_AT = "agentsight.action.started_at"
ACTION_ENDED_AT = "agentsight.action.ended_at"
ACTION_DURATION_MS = "agentsight.action.duration_ms"

# Button attributes.
BUTTON_EVENT = "agentsight.button.event"
BUTTON_LABEL = "agentsight.button.label"
BUTTON_VALUE = "agentsight.button.value"

# Attachment attributes; files are descriptors, never bytes.
ATTACHMENT_SENDER = "agentsight.attachment.sender"
ATTACHMENT_COUNT = "agentsight.attachment.count"
ATTACHMENT_FILES = "agentsight.attachment.files"
ATTACHMENT_MODE = "agentsight.attachment.mode"

# Token usage (llm spans use the GenAI names; the rest are agentsight extensions).
GEN_AI_SYSTEM = "gen_ai.system"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
LLM_TOTAL_TOKENS = "agentsight.llm.total_tokens"
LLM_EMBEDDING_TOKENS = "agentsight.llm.embedding_tokens"
LLM_CACHE_READ_TOKENS = "agentsight.llm.cache_read_tokens"
LLM_CACHE_WRITE_TOKENS = "agentsight.llm.cache_write_tokens"
LLM_REASONING_TOKENS = "agentsight.llm.reasoning_tokens"

# Conversation event attributes (get_or_create_conversation / initialize_conversation).
CONVERSATION_IS_USED = "agentsight.conversation.is_used"
