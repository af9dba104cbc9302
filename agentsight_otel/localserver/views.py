"""Route handlers of the local server, written against plain Request/Response objects (no socket I/O)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from .bodies import BadBody, ingest_block_texts, media_type, parse_json, parse_multipart
from .store import CONVERSATION_FIELDS, FILTERABLE_FIELDS, IngestResult, NewFile, Store
from .timeutil import parse_timestamp
from .transcript import build_transcript, conversation_json, project_items
from .validate import (
    INT64_MAX,
    MAX_FIELD_CHARS,
    EnvelopeError,
    block_is_clean,
    extract_blocks,
    rejection_body,
    shown,
    validate_ingest,
    validate_legacy_conversation,
)
from .viewer_auth import ViewerAccess

logger = logging.getLogger("agentsight_otel.localserver")

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
ATTACHMENT_SENDERS = ("end_user", "agent")
# ASCII only: the type is sent back as the download's Content-Type header, which http.server writes as Latin-1
_MIME_RE = re.compile(r"[\w!#$&^.+-]+/[\w!#$&^.+-]+", re.ASCII)
_SPAN_ID_RE = re.compile(r"[0-9a-f]{16}")


@dataclass
class ServerState:
    """Everything the handlers need: the store and this server's settings."""

    store: Store
    environments: tuple[str, ...]
    gzip_ingest: bool
    started_at: str
    viewer: ViewerAccess | None = None  # who may read the transcript viewer (viewer_auth.py)

    @property
    def default_environment(self) -> str:
        """The agent's default environment: the first configured slug."""
        return self.environments[0]


@dataclass
class Request:
    """A parsed, authenticated request with its body already read and decoded."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    body: bytes
    role: str
    base_url: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names (the viewer reads Cookie, Origin)

    def param(self, name: str) -> str | None:
        """Return the first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    """What the handler writes back: status, body bytes and extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """Stops a handler with a JSON error response."""

    def __init__(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload
        self.headers = headers or {}


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """Serialise a JSON response."""
    body = json.dumps(payload, allow_nan=False).encode("utf-8")
    return Response(status, body, "application/json", dict(headers or {}))


def not_found(detail: str = "Not found.") -> ApiError:
    """A DRF-style 404."""
    return ApiError(404, {"detail": detail})


def _require_media(request: Request, *accepted: str) -> str:
    """Return the request's media type, or raise 415 when it is not one the route parses."""
    kind = media_type(request.content_type)
    if kind not in accepted:
        raise ApiError(415, {"detail": f'Unsupported media type "{request.content_type or ""}" in request.'})
    return kind


def _json_body(request: Request) -> Any:
    """Parse a JSON request body or raise 400/415."""
    _require_media(request, "application/json")
    try:
        return parse_json(request.body)
    except BadBody as exc:
        raise ApiError(400, {"detail": str(exc)}) from exc


def _conversation_or_404(state: ServerState, pk: int) -> dict[str, Any]:
    """Load a conversation row by pk or raise 404."""
    row = state.store.conversation_by_pk(pk)
    if row is None:
        raise not_found()
    return row


def load_transcript(store: Store, row: dict[str, Any]) -> dict[str, Any]:
    """Project a stored conversation into its transcript JSON."""
    return build_transcript(row, store.spans_of(row["id"]), store.attachments_of(row["id"]))


def render_conversation(store: Store, row: dict[str, Any]) -> dict[str, Any]:
    """Render a conversation with its item counts."""
    items = project_items(store.spans_of(row["id"]), store.attachments_of(row["id"]))
    return conversation_json(row, items)


def _render_listed(store: Store, row: dict[str, Any]) -> dict[str, Any]:
    """render_conversation for a page that lists many: a conversation whose spans cannot be projected is listed
    with zero counts (and logged), so that one bad conversation does not fail the page listing the others."""
    try:
        return render_conversation(store, row)
    except Exception:
        logger.exception("conversation %s could not be projected; listed without its counts", row["id"])
        return conversation_json(row, [])


# -- /api/me/ -----------------------------------------------------------------------------------------


def me(state: ServerState, request: Request) -> Response:
    """Describe the key's agent, role, environments and capabilities."""
    environments = [
        {
            "id": index,
            "slug": slug,
            "name": slug.replace("-", " ").replace("_", " ").title(),
            "is_production": slug == "production",
            "created_at": state.started_at,
            "updated_at": state.started_at,
        }
        for index, slug in enumerate(state.environments, start=1)
    ]
    return json_response(
        200,
        {
            "agent_id": 1,
            "agent_name": "local",
            "role": request.role,
            "environments": environments,
            "capabilities": ["gzip-ingest"] if state.gzip_ingest else [],
        },
    )


# -- /api/ingest/ -------------------------------------------------------------------------------------


def ingest(state: ServerState, request: Request) -> Response:
    """Validate the whole batch, refuse it entirely on any bad block, otherwise store every block.

    Nearly every batch is valid, so the store first tries it with the fast check (block_is_clean) on each block
    just before storing it, and rolls back at the first block that check cannot vouch for. Only then does the
    detailed validation run, to refuse the batch with its messages or, when that block was valid after all, to
    store the batch the slow way.
    """
    environments = state.environments
    blocks = _blocks_one_at_a_time(request)
    result = state.store.ingest_checked(blocks, state.default_environment, lambda b: block_is_clean(b, environments))
    if result is None:
        result = _validate_then_store(state, request)
    return json_response(200, result.as_json())


def _blocks_one_at_a_time(request: Request) -> Iterator[Any]:
    """The blocks of an ingest body, each parsed or released as late as possible (see ingest_block_texts).

    A block text that does not parse is handed on as None, which the check refuses: the slow path then parses
    the whole body and answers with the real parse error, if there is one.
    """
    _require_media(request, "application/json")
    texts = ingest_block_texts(request.body)
    if texts is not None:
        return _parse_each(texts)
    payload = _json_body(request)
    try:
        return _release_each(extract_blocks(payload))
    except EnvelopeError as exc:
        raise ApiError(400, {"detail": exc.detail}) from exc


def _parse_each(texts: list[memoryview]) -> Iterator[Any]:
    """Parse block texts lazily, one when the store asks for it."""
    for text in texts:
        try:
            yield parse_json(text)
        except BadBody:
            yield None


def _release_each(blocks: list[Any]) -> Iterator[Any]:
    """Hand out the blocks of a parsed batch, dropping each from the list so its memory goes once it is stored."""
    for index, block in enumerate(blocks):
        blocks[index] = None
        yield block


def _validate_then_store(state: ServerState, request: Request) -> IngestResult:
    """The detailed path: parse the whole body, validate every block (400 with the messages), then store."""
    payload = _json_body(request)
    try:
        rejections = validate_ingest(payload, state.environments)
    except EnvelopeError as exc:
        raise ApiError(400, {"detail": exc.detail}) from exc
    if rejections:
        raise ApiError(400, rejection_body(rejections))
    return state.store.ingest(extract_blocks(payload), state.default_environment)


# -- /api/conversations/ ------------------------------------------------------------------------------


def _positive_int(value: str | None) -> int | None:
    """Parse a strictly positive integer query value, or return None.

    More than 18 digits read as 10**18: beyond every limit here, and int() refuses texts of over 4,300 digits.
    """
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    number = int(value) if len(value.lstrip("0")) <= 18 else 10**18
    return number if number > 0 else None


def _page_link(request: Request, page: int | None) -> str:
    """Build an absolute page URL keeping the other query parameters (page 1 drops the parameter)."""
    query = [(key, value) for key, values in request.query.items() if key != "page" for value in values]
    if page is not None and page > 1:
        query.append(("page", str(page)))
    suffix = f"?{urlencode(query)}" if query else ""
    return f"{request.base_url}{request.path}{suffix}"


def list_conversations(state: ServerState, request: Request) -> Response:
    """DRF page of conversations, newest activity first, filtered by exact field values."""
    page_size = min(_positive_int(request.param("page_size")) or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    raw_page = request.param("page")
    page = 1 if raw_page is None else _positive_int(raw_page)
    if page is None or (page - 1) * page_size > INT64_MAX:  # SQLite takes an offset of 64 bits at most
        raise not_found("Invalid page.")
    filters = {key: value for key in FILTERABLE_FIELDS if (value := request.param(key)) is not None}
    count, rows = state.store.list_conversations(filters, page_size, (page - 1) * page_size)
    if page > 1 and not rows:
        raise not_found("Invalid page.")
    return json_response(
        200,
        {
            "count": count,
            "next": _page_link(request, page + 1) if page * page_size < count else None,
            "previous": _page_link(request, page - 1) if page > 1 else None,
            "results": [_render_listed(state.store, row) for row in rows],
        },
    )


def create_conversation(state: ServerState, request: Request) -> Response:
    """Legacy get-or-create: 201 with a new row, 200 with the existing row left untouched."""
    body = _json_body(request)
    errors = validate_legacy_conversation(body, state.environments)
    if errors:
        raise ApiError(400, errors)
    fields = {key: body[key] for key in CONVERSATION_FIELDS if key in body}
    if fields.get("environment") is None:
        fields["environment"] = state.default_environment
    is_used = body.get("is_used")
    row, created = state.store.get_or_create_conversation(
        str(body["conversation_id"]), fields, True if is_used is None else is_used
    )
    return json_response(201 if created else 200, render_conversation(state.store, row))


def lookup_conversation(state: ServerState, request: Request) -> Response:
    """Resolve a client conversation id to its pk."""
    conversation_id = request.param("conversation_id")
    if not conversation_id:
        raise ApiError(400, {"conversation_id": ["This field is required."]})
    row = state.store.conversation_by_id(conversation_id)
    if row is None:
        raise not_found()
    return json_response(200, {"id": row["id"], "conversation_id": row["conversation_id"]})


def conversation_detail(state: ServerState, request: Request, pk: str) -> Response:
    """One conversation with its messages, action logs and attachments from the projection."""
    row = _conversation_or_404(state, int(pk))
    transcript = load_transcript(state.store, row)
    items = transcript["items"]
    detail = dict(transcript["conversation"])
    detail["messages"] = [item for item in items if item["type"] == "message"]
    detail["action_logs"] = [item for item in items if item["type"] == "action"]
    detail["attachments"] = [item for item in items if item["type"] == "attachments"]
    return json_response(200, detail)


def conversation_transcript(state: ServerState, request: Request, pk: str) -> Response:
    """The transcript projection of one conversation."""
    return json_response(200, load_transcript(state.store, _conversation_or_404(state, int(pk))))


# -- /api/attachments/ --------------------------------------------------------------------------------


@dataclass
class Upload:
    """An attachments request normalised from either JSON or multipart form."""

    conversation: Any
    conversation_id: Any
    sender: Any
    metadata: Any
    message: Any
    timestamp: Any
    files: list[NewFile]


def _check_mode(mode: Any, accepted: tuple[str, ...]) -> None:
    """The optional `mode` field must match the body encoding."""
    if mode is not None and mode not in accepted:
        raise ApiError(400, {"mode": [f'"{shown(mode)}" is not a valid choice.']})


def _check_file_fields(index: int, filename: Any, mime_type: Any) -> None:
    """Filenames are non-blank and ≤255 characters; MIME types must be type/subtype tokens."""
    if not isinstance(filename, str) or not filename.strip() or len(filename) > MAX_FIELD_CHARS:
        raise ApiError(400, {"attachments": [f"Attachment {index}: invalid filename"]})
    if not isinstance(mime_type, str) or _MIME_RE.fullmatch(mime_type) is None:
        raise ApiError(400, {"attachments": [f"Attachment {index}: invalid mime_type"]})


def _decode_base64_file(index: int, item: Any) -> NewFile:
    """Validate one base64 attachment dict and decode its data strictly."""
    if not isinstance(item, dict):
        raise ApiError(400, {"attachments": [f"Attachment {index}: Must be a dictionary"]})
    for key in ("filename", "mime_type", "data"):
        if key not in item:
            raise ApiError(400, {"attachments": [f"Attachment {index}: '{key}' is required"]})
    _check_file_fields(index, item["filename"], item["mime_type"])
    if not isinstance(item["data"], str):
        raise ApiError(400, {"attachments": [f"Attachment {index}: data must be a base64 string"]})
    try:
        data = base64.b64decode(item["data"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, {"attachments": [f"Attachment {index}: invalid base64 data"]}) from exc
    return NewFile(item["filename"], item["mime_type"], data)


def _json_upload(request: Request) -> Upload:
    """Read a base64-mode JSON upload."""
    body = _json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
    _check_mode(body.get("mode"), ("base64",))
    attachments = body.get("attachments")
    if not isinstance(attachments, list):
        raise ApiError(400, {"attachments": ["Attachments must be provided as a list"]})
    files = [_decode_base64_file(index, item) for index, item in enumerate(attachments)]
    return Upload(
        body.get("conversation"),
        body.get("conversation_id"),
        body.get("sender"),
        body.get("metadata"),
        body.get("message"),
        body.get("timestamp"),
        files,
    )


def _form_upload(request: Request) -> Upload:
    """Read a multipart form upload (text parts plus attachment_N file parts)."""
    try:
        fields, parts = parse_multipart(request.content_type or "", request.body)
    except BadBody as exc:
        raise ApiError(400, {"detail": str(exc)}) from exc
    _check_mode(fields.get("mode"), ("form_data", "form-data"))
    metadata: Any = None
    if fields.get("metadata"):
        try:  # as strict as a JSON body: json.loads alone raises RecursionError on "[" * 100000
            metadata = parse_json(fields["metadata"].encode("utf-8"))
        except BadBody as exc:
            raise ApiError(400, {"metadata": ["Value must be valid JSON."]}) from exc
    files = []
    for index, part in enumerate(parts):
        filename = part.filename or f"attachment_{index}.bin"
        _check_file_fields(index, filename, part.mime_type)
        files.append(NewFile(filename, part.mime_type, part.data))
    return Upload(
        fields.get("conversation"),
        fields.get("conversation_id"),
        fields.get("sender"),
        metadata,
        fields.get("message"),
        fields.get("timestamp"),
        files,
    )


def _pk_reference(ref: Any) -> int | None:
    """Read a conversation pk sent as an int or a digit string (out-of-range values match nothing)."""
    if isinstance(ref, str) and ref.strip().isascii() and ref.strip().isdigit():
        ref = int(ref.strip())
    if isinstance(ref, int) and not isinstance(ref, bool):
        return ref if 0 < ref < 2**63 else 0
    return None


def _resolve_upload_conversation(state: ServerState, upload: Upload) -> dict[str, Any]:
    """Find the target conversation by pk (int or digit string), else by conversation_id; 404 if absent."""
    pk = _pk_reference(upload.conversation)
    if pk is not None:
        row = state.store.conversation_by_pk(pk)
    elif isinstance(upload.conversation_id, str) and upload.conversation_id not in ("", "None"):
        row = state.store.conversation_by_id(upload.conversation_id)
    else:
        raise ApiError(400, {"conversation": ["This field is required."]})
    if row is None:
        raise not_found()
    return row


def _check_upload_fields(state: ServerState, upload: Upload, row: dict[str, Any]) -> str | None:
    """Validate sender, metadata, timestamp and message; return the message id to link, if any."""
    if not upload.files:
        raise ApiError(400, {"attachments": ["Attachments list cannot be empty"]})
    if upload.sender is not None and upload.sender not in ATTACHMENT_SENDERS:
        raise ApiError(400, {"sender": [f'"{shown(upload.sender)}" is not a valid choice.']})
    if upload.metadata is not None and not isinstance(upload.metadata, dict):
        raise ApiError(400, {"metadata": ["Expected a JSON object."]})
    if upload.timestamp is not None and parse_timestamp(upload.timestamp) is None:
        raise ApiError(400, {"timestamp": ["Datetime has wrong format. Use ISO-8601."]})
    message = upload.message
    if message is None or message == "":
        return None
    if type(message) is int:  # a span id of digits only, sent as a number
        message = str(message)
    if not isinstance(message, str) or _SPAN_ID_RE.fullmatch(message) is None:  # never str() a nested list
        raise not_found("Message not found.")
    if not state.store.span_exists(row["id"], message):
        raise not_found("Message not found.")
    return message


def create_attachments(state: ServerState, request: Request) -> Response:
    """Store uploaded files (base64 JSON or multipart); identical re-uploads return the same ids."""
    kind = _require_media(request, "application/json", "multipart/form-data")
    upload = _json_upload(request) if kind == "application/json" else _form_upload(request)
    row = _resolve_upload_conversation(state, upload)
    message = _check_upload_fields(state, upload, row)
    stored = state.store.add_attachments(row["id"], upload.files, sender=upload.sender or "end_user", message=message)
    return json_response(201, {"attachments": stored})


def _content_disposition(filename: str) -> str:
    """Build an attachment Content-Disposition with an ASCII fallback and an RFC 5987 UTF-8 name."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def download_attachment(state: ServerState, request: Request, attachment_id: str) -> Response:
    """Return an upload's raw bytes with its stored type and a download filename."""
    row = state.store.attachment(int(attachment_id))
    if row is None:
        raise not_found()
    mime = row["mime_type"] if _MIME_RE.fullmatch(row["mime_type"]) else "application/octet-stream"
    headers = {"Content-Disposition": _content_disposition(row["filename"])}
    return Response(200, bytes(row["data"]), mime, headers)
