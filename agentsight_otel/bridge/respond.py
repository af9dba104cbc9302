"""Answer bodies per OTLP/HTTP: ``ExportTraceServiceResponse`` on success, ``google.rpc.Status`` on error.

Both are written in the encoding of the request (protobuf or OTLP/JSON). ``google.rpc.Status`` is three fields,
so it is encoded here rather than pulling in googleapis-common-protos.
"""

from __future__ import annotations

from ..jsondoc import dumps
from .decode import JSON, PROTOBUF

# google.rpc.Code values used in Status bodies.
OK = 0
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16

_CODE_FOR_STATUS = {
    400: INVALID_ARGUMENT,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: NOT_FOUND,
    405: UNIMPLEMENTED,
    408: DEADLINE_EXCEEDED,
    411: INVALID_ARGUMENT,
    413: RESOURCE_EXHAUSTED,
    415: INVALID_ARGUMENT,
    429: RESOURCE_EXHAUSTED,
    503: UNAVAILABLE,
}


def rpc_code(http_status: int) -> int:
    """The ``google.rpc.Code`` that goes with an HTTP status in an error body."""
    return _CODE_FOR_STATUS.get(http_status, UNAVAILABLE if http_status >= 500 else INVALID_ARGUMENT)


def _varint(number: int) -> bytes:
    out = bytearray()
    number &= (1 << 64) - 1
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def success(media: str, rejected: int = 0, message: str | None = None) -> bytes:
    """An ``ExportTraceServiceResponse``; ``partial_success`` only when spans were refused (or a warning given)."""
    if media == JSON:
        if not rejected and not message:
            return b"{}"
        partial: dict[str, object] = {}
        if rejected:
            partial["rejectedSpans"] = str(rejected)  # int64 is a string in OTLP/JSON
        if message:
            partial["errorMessage"] = message
        return dumps({"partialSuccess": partial})
    if not rejected and not message:
        return b""
    inner = b""
    if rejected:
        inner += _varint(1 << 3 | 0) + _varint(rejected)  # ExportTracePartialSuccess.rejected_spans
    if message:
        inner += _field_bytes(2, message.encode())  # ExportTracePartialSuccess.error_message
    return _field_bytes(1, inner)  # ExportTraceServiceResponse.partial_success


def status(media: str | None, http_status: int, message: str) -> tuple[str, bytes]:
    """(content type, body) of a ``google.rpc.Status`` error answer in the request's encoding."""
    code = rpc_code(http_status)
    if media == PROTOBUF:
        body = (_varint(1 << 3 | 0) + _varint(code) if code else b"") + _field_bytes(2, message.encode())
        return PROTOBUF, body
    return JSON, dumps({"code": code, "message": message})
