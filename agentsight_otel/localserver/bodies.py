"""Request-body decoding: capped gzip inflation, strict JSON and multipart/form-data parsing."""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from ..jsondoc import HAS_ORJSON, loads

# The ingest envelope exactly as the SDKs write it (compact JSON, `sdk` with name and version, then the blocks),
# which ingest_block_texts cuts into blocks. The sdk strings are limited to printable ASCII without `"` or `\`,
# so a match is always valid JSON.
_ENVELOPE_HEAD = re.compile(rb'\{"sdk":\{"name":"[ !#-\[\]-~]*","version":"[ !#-\[\]-~]*"\},"conversations":\[')
_ENVELOPE_TAIL = b"]}"
_BLOCK_SEPARATOR = b'},{"conversation_id":'
# A \u escape of a UTF-16 surrogate that is not part of a pair: a high one not followed by a low one, or a low one not
# preceded by a high one. Only an escape can put one in a parsed string (the UTF-8 decoder refuses encoded
# surrogates). The pattern may also match an escaped backslash followed by "ud800", so a match is confirmed on the
# parsed value. It starts with the literal `\u`, which the regex engine scans for quickly: it runs on every body.
_LONE_SURROGATE_ESCAPE = re.compile(
    r"\\u[dD](?:[89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD])[c-fC-F])"
)


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

    Each member is inflated in one call bounded by `max_length`, so a small bomb is never expanded beyond
    cap + 1 bytes (zlib grows its output as it goes, it does not allocate the bound up front).
    Concatenated gzip members are supported, as `gzip.decompress` does.
    """
    parts = []
    size = 0
    pending = data
    while pending:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(pending, cap + 1 - size)  # >= 1: 0 would mean "no limit"
        except zlib.error as exc:
            raise BadBody("Invalid gzip body.") from exc
        size += len(part)
        if size > cap:
            raise BodyTooLarge()
        if not inflater.eof:  # all input consumed below the bound, yet the member did not end
            raise BadBody("Invalid gzip body (truncated).")
        parts.append(part)
        pending = inflater.unused_data
    return b"".join(parts)  # a single member is returned as is, not copied


def _reject_constant(name: str) -> Any:
    """json.loads hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """json.loads hook: a number too large for a double (1e400) is refused, as orjson does, not read as infinity."""
    number = float(text)
    if math.isinf(number):
        raise ValueError("number is infinity when parsed as double")
    return number


def _refuse_lone_surrogates(value: Any) -> None:
    """Raise ValueError when a parsed string or key holds a lone surrogate (orjson refuses them while parsing);
    such a string cannot be encoded as UTF-8, so it could be neither stored nor shown."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("lone surrogate in string") from exc


def parse_json(raw: bytes | memoryview) -> Any:
    """Parse a UTF-8 JSON body strictly (no NaN/Infinity), raising BadBody with a DRF-like detail.

    orjson, when installed, is strict already (it refuses NaN, Infinity, lone surrogates and nesting deeper than
    1024 levels) and several times faster; the standard library is made as strict here.
    """
    try:
        if HAS_ORJSON:
            return loads(raw)
        text = str(raw, "utf-8")
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        if _LONE_SURROGATE_ESCAPE.search(text) is not None:
            _refuse_lone_surrogates(value)
        return value
    except RecursionError as exc:  # the standard library's decoder recurses once per level of nesting
        raise BadBody("JSON parse error - depth limit exceeded") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadBody(f"JSON parse error - {exc}") from exc


def ingest_block_texts(raw: bytes) -> list[memoryview] | None:
    """Cut a compact ingest body into the JSON texts of its blocks; None when the body has any other shape.

    Why: parsed in one go, a batch of megabytes becomes millions of objects before the first block is checked,
    so every block has left the CPU cache again by the time it is checked and stored, and the whole batch stays
    in memory until the end. Parsed one block at a time, each block is handled while cached and its memory is
    reused by the next.

    Why a cut is safe: the separator `},{"conversation_id":` contains unescaped quotes right after `{`, so in
    valid JSON it never starts inside a string. A cut deeper down (an object in some metadata that begins with
    conversation_id) leaves the piece before it with an unclosed bracket, so that piece does not parse. Hence,
    when every piece parses, the body is exactly {"sdk": {...}, "conversations": [piece, piece, ...]}; when one
    does not, the caller must parse the whole body instead (which also gives the right error message).
    """
    head = _ENVELOPE_HEAD.match(raw)
    if head is None or not raw.endswith(_ENVELOPE_TAIL):
        return None
    view = memoryview(raw)
    start, end = head.end(), len(raw) - len(_ENVELOPE_TAIL)
    texts = []
    while start < end:
        cut = raw.find(_BLOCK_SEPARATOR, start, end)
        if cut < 0:
            cut = end - 1  # the last block ends where the list does
        texts.append(view[start : cut + 1])
        start = cut + 2  # skip `},`: the next block starts at its `{`
    return texts


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
