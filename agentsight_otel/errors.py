"""Exceptions, named as AgentSight's 0.0.x SDK named them so existing ``except`` clauses keep working.

Validation errors also subclass :class:`ValueError`: they mean an argument was wrong.
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
    """Base class of the tracker's errors."""


class InvalidConversationDataException(ConversationTrackingException, ValueError):
    """A tracked item is missing a required field or has a wrong one."""


class InvalidQuestionDataException(InvalidConversationDataException):
    """A human message is blank."""


class InvalidAnswerDataException(InvalidConversationDataException):
    """An agent message is blank."""


class MissingConversationIdException(InvalidConversationDataException):
    """A conversation id is blank (None, "", whitespace or 0)."""


class InvalidAttachmentException(ConversationTrackingException, ValueError):
    """An attachment list or one of its files is malformed."""


class NoDataToSendException(ConversationTrackingException):
    """``send_tracked_data`` was called for a conversation with nothing tracked."""


class ConversationApiException(ConversationTrackingException):
    """AgentSight answered a request with an error status."""

    def __init__(self, message: str, status_code: int | None = None, response_data: object = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response_data = response_data


class ConversationNetworkException(ConversationTrackingException):
    """AgentSight could not be reached."""
