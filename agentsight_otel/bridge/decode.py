"""Request bodies in, OTLP requests out: content encodings under size caps, then protobuf or OTLP/JSON.

- ``Content-Encoding``: ``gzip`` (also several concatenated members), ``deflate`` (zlib-wrapped, or raw as some
  clients send it) and ``identity``. Inflating stops one byte past the decompressed cap, so a gzip bomb is refused
  after at most that much work and memory, never inflated whole.
- ``Content-Type``: ``application/x-protobuf`` (the OTLP default), parsed into an ``ExportTraceServiceRequest``,
  or ``application/json`` (OTLP/JSON), parsed into a dict that :mod:`.convert` reads (hex ids, int64 strings).
"""

from __future__ import annotations

import zlib
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..jsondoc import loads

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_MEDIA_ALIASES = {
    "application/x-protobuf": PROTOBUF,
    "application/protobuf": PROTOBUF,
    "application/vnd.google.protobuf": PROTOBUF,
    "application/json": JSON,
}
_INFLATE_CHUNK = 1 << 20


class RequestError(Exception):
    """A request that cannot be taken: ``status`` is the HTTP answer (400, 413, 415, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(content_type: str | None) -> str | None:
    """``PROTOBUF`` or ``JSON`` for a ``Content-Type`` header value (parameters ignored); ``None`` otherwise."""
    if not content_type:
        return None
    return _MEDIA_ALIASES.get(content_type.split(";", 1)[0].strip().lower())


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (codings applied in order are undone in reverse); at most ``limit`` bytes out."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    data = body
    for coding in reversed(codings):
        if coding in ("identity", "none"):
            continue
        if coding in ("gzip", "x-gzip"):
            data = _inflate(data, 16 + zlib.MAX_WBITS, limit, multi_member=True)
        elif coding == "deflate":
            try:
                data = _inflate(data, zlib.MAX_WBITS, limit)
            except RequestError as exc:
                if exc.status != 400:
                    raise
                data = _inflate(data, -zlib.MAX_WBITS, limit)  # raw deflate, as some clients send it
        else:
            raise RequestError(415, f"unsupported Content-Encoding {coding!r}: use gzip, deflate or none")
    if len(data) > limit:
        raise RequestError(413, f"the request body is larger than {limit} bytes")
    return data


def _inflate(data: bytes, wbits: int, limit: int, *, multi_member: bool = False) -> bytes:
    out: list[bytes] = []
    total = 0
    remaining = data
    while True:
        inflater = zlib.decompressobj(wbits)
        pending = remaining
        try:
            while True:
                # max_length bounds the work: never more than one byte past the cap is produced.
                chunk = inflater.decompress(pending, min(_INFLATE_CHUNK, limit + 1 - total))
                total += len(chunk)
                out.append(chunk)
                if total > limit:
                    raise RequestError(413, f"the decompressed request body is larger than {limit} bytes")
                pending = inflater.unconsumed_tail
                if inflater.eof or (not pending and not chunk):
                    break
        except zlib.error as exc:
            raise RequestError(400, f"the compressed body cannot be decoded ({exc})") from None
        if not inflater.eof:
            raise RequestError(400, "the compressed body is truncated")
        remaining = inflater.unused_data
        if not remaining or not multi_member or not remaining.strip(b"\0"):
            break
    return b"".join(out)


def parse(body: bytes, media: str) -> ExportTraceServiceRequest | dict[str, Any]:
    """A decompressed body in ``media``: a protobuf ``ExportTraceServiceRequest``, or the OTLP/JSON document
    (a dict, which :mod:`.convert` reads directly: hex ids, int64 as strings)."""
    if media == PROTOBUF:
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:  # RuntimeError: upb's recursion limit
            raise RequestError(
                400, f"the body is not a valid OTLP protobuf ExportTraceServiceRequest ({exc})"
            ) from None
        return request
    if not body.strip():
        return {}
    try:
        document = loads(body)
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, f"the body is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise RequestError(400, "an OTLP/JSON body must be a JSON object")
    return document
