"""Attachment files: validation of the tracker's inputs, and the side channel that carries their bytes.

Bytes never ride the span pipeline: spans carry descriptors (name, size, MIME type, sha256) and the bytes wait
here until the exporter uploads them over ``/api/attachments/`` with the batch that describes them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import mimetypes
import sys
import threading
from collections import OrderedDict
from typing import Any, NamedTuple

from .errors import InvalidAttachmentException
from .forking import call_in_forked_child

logger = logging.getLogger("agentsight_otel")

MODES = ("base64", "form_data")
DEFAULT_CAPACITY_BYTES = 64 * 1024 * 1024

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"RIFF", "application/octet-stream"),
)


class PendingFile(NamedTuple):
    """One decoded file (a NamedTuple: made for every tracked attachment, and cheaper than a frozen dataclass)."""

    filename: str
    mime_type: str
    data: bytes
    sha256: str

    def descriptor(self) -> dict[str, Any]:
        return {"filename": self.filename, "mime_type": self.mime_type, "size": len(self.data), "sha256": self.sha256}


def normalize_mode(mode: Any) -> str:
    """``base64``, ``form_data`` or ``form-data`` (any case); anything else is a ``ValueError``."""
    if mode in MODES:
        return mode
    text = str(mode).strip().lower().replace("-", "_") if isinstance(mode, str) else ""
    if text not in MODES:
        raise ValueError(f"Invalid mode: {mode!r}; use 'base64' or 'form_data'")
    return text


if sys.version_info >= (3, 11):

    def _b64decode(text: str) -> bytes:
        # The C decoder's strict mode refuses what ``b64decode(validate=True)`` refuses, without its regex pass.
        return binascii.a2b_base64(text, strict_mode=True)

else:  # pragma: no cover - Python 3.9 and 3.10

    def _b64decode(text: str) -> bytes:
        return base64.b64decode(text, validate=True)


def sniff_mime(data: bytes) -> str:
    """A MIME type from the first bytes; text when it decodes as UTF-8, octet-stream otherwise."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    head = data[:2048]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return "application/json"
    return "text/plain"


def _blank(value: Any) -> bool:
    return not isinstance(value, str) or not value.strip()


def _read_form_data(data: Any, index: int) -> bytes:
    if isinstance(data, str):
        raise InvalidAttachmentException(f"attachment {index}: data must be bytes or file-like object, not string")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    read = getattr(data, "read", None)
    if not callable(read):
        raise InvalidAttachmentException(
            f"attachment {index}: data must be bytes or file-like object, not {type(data).__name__}"
        )
    seek = getattr(data, "seek", None)
    if callable(seek):
        seek(0)
    content = read()
    if callable(seek):
        seek(0)
    if isinstance(content, str):
        content = content.encode()
    return bytes(content)


def process_attachments(attachments: Any, mode: str) -> list[PendingFile]:
    """Validate a tracker attachment list and decode it into files; raise before anything is recorded."""
    if not isinstance(attachments, list):
        raise InvalidAttachmentException("Attachments must be provided as a list")
    if not attachments:
        raise InvalidAttachmentException("Attachments list cannot be empty")
    files = []
    for i, item in enumerate(attachments):
        if not isinstance(item, dict):
            raise InvalidAttachmentException(f"attachment {i}: Must be a dictionary, not {type(item).__name__}")
        if mode == "base64":
            filename, mime, encoded = item.get("filename"), item.get("mime_type"), item.get("data")
            if filename is None or mime is None or encoded is None:
                missing = [k for k in ("filename", "mime_type", "data") if item.get(k) is None]
                raise InvalidAttachmentException(f"attachment {i}: missing {', '.join(missing)}")
            filename = filename.strip() if isinstance(filename, str) else ""
            mime = mime.strip() if isinstance(mime, str) else ""
            if not filename or not mime:
                raise InvalidAttachmentException(f"attachment {i}: filename and mime_type must be non-blank strings")
            if not isinstance(encoded, str):
                raise InvalidAttachmentException(f"attachment {i}: data must be a base64 string")
            try:
                data = _b64decode(encoded)
            except (binascii.Error, ValueError):
                raise InvalidAttachmentException(f"attachment {i}: invalid base64 data") from None
        else:
            if "data" not in item:
                raise InvalidAttachmentException(f"attachment {i}: missing data")
            data = _read_form_data(item["data"], i)
            mime = item.get("mime_type") or item.get("content_type") or sniff_mime(data)
            filename = item.get("filename") or f"attachment_{i}{mimetypes.guess_extension(mime) or '.bin'}"
            if _blank(filename) or _blank(mime):
                raise InvalidAttachmentException(f"attachment {i}: filename and mime_type must be non-blank strings")
        files.append(PendingFile(filename, mime, data, hashlib.sha256(data).hexdigest()))
    return files


class AttachmentStore:
    """Bytes waiting for upload, keyed by conversation, sha256 and file name, bounded in total size."""

    def __init__(self, capacity_bytes: int = DEFAULT_CAPACITY_BYTES) -> None:
        self._capacity = capacity_bytes
        self._reset()
        call_in_forked_child(self._reset)

    def _reset(self) -> None:
        # Also the after-fork hook: a parent thread may have held the lock at the fork, which would hang the
        # child's first attachment; and the parent's files are the parent's to upload.
        self._files: OrderedDict[tuple[str, str, str], PendingFile] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def put(self, conversation_id: str, file: PendingFile) -> None:
        key = (conversation_id, file.sha256, file.filename)
        if key in self._files:  # the same file again (a lookup is safe without the lock; a miss takes it)
            return
        with self._lock:
            if key in self._files:
                return
            self._files[key] = file
            self._size += len(file.data)
            while self._size > self._capacity and len(self._files) > 1:
                (cid, _, _), old = self._files.popitem(last=False)
                self._size -= len(old.data)
                logger.warning(
                    "attachment store full (%d bytes): %r of conversation %s will be sent as a descriptor only",
                    self._capacity,
                    old.filename,
                    cid,
                )

    def take(self, conversation_id: str, sha256: str, filename: str) -> PendingFile | None:
        with self._lock:
            file = self._files.pop((conversation_id, sha256, filename), None)
            if file is not None:
                self._size -= len(file.data)
            return file


pending_attachments = AttachmentStore()
