"""Request-body decoding: capped gzip inflation, strict JSON and multipart/form-data parsing."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from ..jsondoc import HAS_ORJSON, loads

_CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    """The body (as sent or once inflated) exceeds the server's cap."""


class BadBody(ValueError):
    """The body cannot be decoded; the message is safe to return as `detail`."""


@dataclass
class FormFile:
    """One file part of a multipart body."""

    field: str
    filename: str | None
    mime_type: str
    data: bytes


def media_type(content_type: str | None) -> str:
    """Return the bare lowercase media type of a Content-Type header value."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def inflate_gzip(data: bytes, cap: int) -> bytes:
    """Inflate a gzip body, raising BodyTooLarge as soon as the output would pass `cap` bytes.

    Output is produced in bounded steps (`max_length`), so a small bomb is never fully expanded.
    Concatenated gzip members are supported, as `gzip.decompress` does.
    """
    output = bytearray()
    pending = data
    while pending:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        chunk = pending
        while chunk and not inflater.eof:
            try:
                output += inflater.decompress(chunk, min(_CHUNK, cap + 1 - len(output)))
            except zlib.error as exc:
                raise BadBody("Invalid gzip body.") from exc
            if len(output) > cap:
                raise BodyTooLarge()
            chunk = inflater.unconsumed_tail
        if not inflater.eof:
            raise BadBody("Invalid gzip body (truncated).")
        pending = inflater.unused_data
    return bytes(output)


def _reject_constant(name: str) -> Any:
    """json.loads hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """Parse a UTF-8 JSON body strictly (no NaN/Infinity), raising BadBody with a DRF-like detail.

    orjson, when installed, is strict already (it refuses NaN and Infinity) and several times faster.
    """
    try:
        if HAS_ORJSON:
            return loads(raw)
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadBody(f"JSON parse error - {exc}") from exc


def _form_message(content_type: str, body: bytes) -> EmailMessage:
    """Parse a multipart body with the email package by prefixing a synthesized header block."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=policy.default).parsebytes(head + body)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise BadBody("Multipart form parse error - Invalid boundary in multipart: None")
    return message


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], list[FormFile]]:
    """Split a multipart/form-data body into text fields and file parts."""
    try:
        message = _form_message(content_type, body)
    except UnicodeEncodeError as exc:
        raise BadBody("Multipart form parse error - invalid Content-Type header.") from exc
    fields: dict[str, str] = {}
    files: list[FormFile] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is None:
            fields[name] = data.decode("utf-8", errors="replace")
        else:
            mime = part.get_content_type() if part.get("content-type") else "application/octet-stream"
            files.append(FormFile(name, filename or None, mime, data))
    return fields, files
