"""Exceptions, named and arranged as AgentSight's 0.0.x SDK had them, so existing ``except`` clauses keep working.

The hierarchy is the legacy one: :class:`ConversationTrackingException` covers the invalid-data, network and API
errors; :class:`MissingConversationIdException`, :class:`NoDataToSendException` and
:class:`InvalidAttachmentException` stand beside it. Every one is also an :class:`AgentSightError`, and those
that mean an argument was wrong are also :class:`ValueError`. A few legacy names are kept only so that imports
and ``except`` clauses written for 0.0.x still work; the notes say which are never raised.
"""

from __future__ import annotations


class AgentSightError(Exception):
    """Base class of every error this package raises."""


class NoApiKeyException(AgentSightError):
    """No API key is configured where one is required."""


class InvalidApiKeyException(AgentSightError, ValueError):
    """The API key does not have the ``ags_<32 hex>_<6 hex>`` shape.

    The message never contains the key itself.
    """


class ConversationTrackingException(AgentSightError):
    """Base class of the tracker's data, network and API errors."""


class InvalidConversationDataException(ConversationTrackingException, ValueError):
    """A tracked item is missing a required field or has a wrong one."""


class InvalidQuestionDataException(ConversationTrackingException, ValueError):
    """A human message is blank (a sibling of InvalidConversationDataException, as in 0.0.x)."""


class InvalidAnswerDataException(ConversationTrackingException, ValueError):
    """An agent message is blank (a sibling of InvalidConversationDataException, as in 0.0.x)."""


class MissingConversationIdException(AgentSightError, ValueError):
    """A conversation id is blank (None, "", whitespace or 0)."""


class InvalidAttachmentException(AgentSightError, ValueError):
    """An attachment list or one of its files is malformed."""


class NoDataToSendException(AgentSightError):
    """``send_tracked_data`` was called for a conversation with nothing tracked."""


class ConversationApiException(ConversationTrackingException):
    """AgentSight answered a request with an error status."""

    def __init__(self, message: str, status_code: int | None = None, response_data: object = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response_data = response_data


class NotFoundException(ConversationApiException):
    """HTTP 404. Kept for 0.0.x ``except`` clauses: tracking never raises for what AgentSight answers."""


class UnauthorizedException(ConversationApiException):
    """HTTP 401. Kept for 0.0.x ``except`` clauses: a rejected key is reported in send reports and logged once."""


class ForbiddenException(ConversationApiException):
    """HTTP 403. Kept for 0.0.x ``except`` clauses: a rejected key is reported in send reports and logged once."""


class ConversationNetworkException(ConversationTrackingException):
    """AgentSight could not be reached."""


class NoConversationIdException(AgentSightError):
    """Kept for 0.0.x imports: without a conversation the tracker generates an id instead of raising."""


class ApiServerException(AgentSightError):
    """Kept for 0.0.x imports: server errors are retried and spooled, never raised from tracking calls."""


class AgentSightClientNotInitializedException(AgentSightError):
    """Kept for 0.0.x imports: the tracker works unconfigured and reports a missing key when it sends."""


class AgentSightApiJwtExpiredException(AgentSightError):
    """Kept for 0.0.x imports: this package authenticates with API keys only."""
