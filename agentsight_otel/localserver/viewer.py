"""The transcript viewer: server-rendered HTML pages plus the small JSON routes their script polls.

Pages (see `viewer_auth` for who may read them):

- `GET /` — the conversations, newest activity first, searchable (`?q=`) by id, name, customer, environment or
  any text of the transcript (messages, action names and results, buttons, file names, models).
- `GET /conversations/{pk}/` — one conversation: its details, token usage per model and in total, and the
  transcript in chronological order (messages as a chat, actions, buttons, downloadable files, token usage).
- `GET /viewer/api/conversations/?q=` and `GET /viewer/api/conversations/{pk}/?version=` — what the pages poll
  to update themselves as new batches arrive (the second answers `{"changed": false}` while nothing changed).
- `GET /viewer/api/feed/` — the change feed (feed.py) with the viewer's access rule, for `agentsight-otel tail`.
- `GET /viewer/attachments/{id}/download/` — an uploaded file, always as a download (never rendered inline).
- `GET|POST /login/`, `POST /logout/` — the key form, when the server is not bound to loopback.
- `GET /static/viewer.css`, `/static/viewer.js`, `/static/favicon.svg` — the only assets (nothing external: the
  viewer works offline).

Everything shown is escaped: here with `html.escape`, in the browser by the script with `textContent` only. The
pages also carry a Content-Security-Policy that allows no inline script, as a second line of defence.
"""

from __future__ import annotations

import html
import json
import logging
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from . import feed, views
from .bodies import media_type
from .store import Store
from .timeutil import parse_timestamp
from .transcript import build_transcript, count_items, project_items, token_usage_summary
from .viewer_assets import FAVICON_SVG, VIEWER_CSS, VIEWER_JS
from .viewer_auth import COOKIE_NAME, SESSION_SECONDS, VIEWER_ROLE, ViewerAccess, parse_cookies
from .views import ApiError, Request, Response, ServerState, json_response

logger = logging.getLogger("agentsight_otel.localserver")

LIST_LIMIT = 200
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# What a Location header keeps as it is: printable ASCII (`%` too, so escapes are not escaped twice). http.server
# writes headers as Latin-1, so anything else (a next=/中 path) is percent-encoded as UTF-8.
_LOCATION_SAFE = "".join(chr(code) for code in range(0x21, 0x7F))
HOST_NOT_ALLOWED = (
    "This viewer needs no key because the server is bound to loopback, so it answers only to loopback host names "
    "(DNS rebinding guard): open it as http://127.0.0.1:<port>/ or http://localhost:<port>/."
)
_COUNT_FIELDS = (("messages", "Messages"), ("actions", "Actions"), ("buttons", "Buttons"), ("attachments", "Files"))
_EXTRA_TOKENS = (
    ("cache_read_tokens", "cache read"),
    ("cache_write_tokens", "cache write"),
    ("reasoning_tokens", "reasoning"),
    ("embedding_tokens", "embedding"),
)


# -- formatting shared by the HTML pages and the JSON the script renders ---------------------------------


def esc(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute; None is empty."""
    return "" if value is None else html.escape(str(value), quote=True)


def _parsed(value: Any) -> datetime | None:
    return parse_timestamp(value) if isinstance(value, str) else None


def clock(value: Any) -> str:
    """`HH:MM:SS.mmm` (UTC) of a timestamp, or "" when there is none."""
    parsed = _parsed(value)
    return "" if parsed is None else parsed.strftime("%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}"


def stamp(value: Any) -> str:
    """`YYYY-MM-DD HH:MM:SS UTC` of a timestamp, or the raw value when it does not parse."""
    parsed = _parsed(value)
    if parsed is None:
        return "" if value is None else str(value)
    return parsed.strftime("%Y-%m-%d %H:%M:%S UTC")


def instant(value: Any) -> str:
    """The full timestamp (UTC, microseconds) for a tooltip, or the raw value when it does not parse."""
    parsed = _parsed(value)
    if parsed is None:
        return "" if value is None else str(value)
    return parsed.strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def duration(value: Any) -> str:
    """A duration in milliseconds as `42 ms` / `1.25 s`, or "" when unknown."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value != int(value) else f"{int(value)} ms"


def size(value: Any) -> str:
    """A byte count as `38 B` / `1.2 KiB` / `3.4 MiB`, or "" when unknown."""
    if isinstance(value, bool) or not isinstance(value, int):
        return ""
    if value < 1024:
        return f"{value} B"
    if value < 1024 * 1024:
        return f"{value / 1024:.1f} KiB"
    return f"{value / (1024 * 1024):.1f} MiB"


def _text(value: Any) -> str:
    """Show a value as text: strings as they are, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)


def _who(sender: Any) -> tuple[str, str]:
    """(side, label) of a message or file sender."""
    if sender == "end_user":
        return "user", "User"
    if sender == "agent":
        return "agent", "Agent"
    return "other", str(sender or "Unknown")


def _file(descriptor: Any) -> dict[str, Any]:
    """A file descriptor of an attachments item, with a viewer download link when its bytes were uploaded."""
    if not isinstance(descriptor, dict):
        return {"name": _text(descriptor), "info": "", "href": None}
    attachment_id = descriptor.get("attachment_id")
    linked = isinstance(attachment_id, int) and not isinstance(attachment_id, bool)
    info = [part for part in (size(descriptor.get("size")), _text(descriptor.get("mime_type"))) if part]
    if not linked:
        info.append("not uploaded")
    return {
        "name": _text(descriptor.get("filename") or descriptor.get("name") or "file"),
        "info": " · ".join(info),
        "href": f"/viewer/attachments/{attachment_id}/download/" if linked else None,
    }


def display_item(item: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of one transcript item: every value already a display string."""
    kind = item["type"]
    shown: dict[str, Any] = {"kind": kind, "time": clock(item.get("timestamp")), "when": instant(item.get("timestamp"))}
    if kind == "message":
        shown["side"], shown["who"] = _who(item.get("sender"))
        shown["text"] = _text(item.get("content"))
    elif kind == "action":
        error = item.get("error")
        shown.update(
            name=_text(item.get("name")),
            duration=duration(item.get("duration_ms")),
            arguments=None if item.get("arguments") is None else _text(item.get("arguments")),
            result=None if item.get("response") is None else _text(item.get("response")),
            error=None if error in (None, "") else _text(error),
            status=_text(item.get("status")),
        )
    elif kind == "button":
        shown.update(label=_text(item.get("label")), value=_text(item.get("value")), event=_text(item.get("event")))
    elif kind == "attachments":
        shown["side"], shown["who"] = _who(item.get("sender"))
        shown["files"] = [_file(descriptor) for descriptor in item.get("files") or []]
    elif kind == "token_usage":
        extra = [f"{label} {item[key]}" for key, label in _EXTRA_TOKENS if item.get(key)]
        shown.update(
            model=_text(item.get("model")),
            tokens=f"{item.get('input_tokens', 0)} in · {item.get('output_tokens', 0)} out · "
            f"{item.get('total_tokens', 0)} total",
            extra=" · ".join(extra),
        )
    return shown


def display_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Token usage per model and in total, as table rows of display strings."""

    def row(name: str, counts: dict[str, int]) -> list[str]:
        return [name, *(str(counts.get(key, 0)) for key in ("input_tokens", "output_tokens", "total_tokens"))]

    rows = [row(model, counts) for model, counts in sorted(usage.get("by_model", {}).items())]
    return {"rows": rows, "total": row("Total", usage.get("total", {}))}


def display_conversation(conversation: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """The conversation's heading, detail fields and counts, as display strings."""
    fields = [
        ("Conversation", conversation.get("conversation_id")),
        ("Customer", conversation.get("customer_id")),
        ("Environment", conversation.get("environment")),
        ("Device", conversation.get("device")),
        ("Language", conversation.get("language")),
        ("Source", conversation.get("source")),
        ("Created", stamp(conversation.get("created_at"))),
        ("Last activity", stamp(conversation.get("last_activity"))),
    ]
    metadata = conversation.get("metadata")
    if metadata:
        fields.append(("Metadata", json.dumps(metadata, ensure_ascii=False, sort_keys=True)))
    counts = conversation.get("counts") or {}
    shown_counts = [[label, str(counts.get(key, 0))] for key, label in _COUNT_FIELDS]
    shown_counts.append(["Tokens", str(usage.get("total", {}).get("total_tokens", 0))])
    return {
        "title": _text(conversation.get("name") or conversation.get("conversation_id")),
        "fields": [[label, _text(value)] for label, value in fields if value not in (None, "")],
        "counts": shown_counts,
    }


# -- the conversation list ------------------------------------------------------------------------------


def _haystack(row: dict[str, Any], items: list[dict[str, Any]]) -> str:
    """Everything the search looks in, case-folded."""
    parts = [str(row.get(key) or "") for key in ("conversation_id", "name", "customer_id", "environment")]
    parts += [str(row.get(key) or "") for key in ("device", "language", "source")]
    for item in items:
        if item["type"] == "message":
            parts.append(_text(item.get("content")))
        elif item["type"] == "action":
            parts += [_text(item.get(key)) for key in ("name", "arguments", "response", "error")]
        elif item["type"] == "button":
            parts += [_text(item.get(key)) for key in ("label", "value", "event")]
        elif item["type"] == "attachments":
            parts += [_file(descriptor)["name"] for descriptor in item.get("files") or []]
        elif item["type"] == "token_usage":
            parts.append(_text(item.get("model")))
    return "\n".join(parts).casefold()


def _list_row(row: dict[str, Any], messages: str, actions: str, tokens: str) -> dict[str, Any]:
    """One list row as display strings."""
    return {
        "pk": row["id"],
        "href": f"/conversations/{row['id']}/",
        "conversation_id": _text(row["conversation_id"]),
        "name": _text(row.get("name")),
        "customer": _text(row.get("customer_id")),
        "environment": _text(row.get("environment")),
        "last_activity": stamp(row.get("last_activity") or row.get("updated_at")),
        "messages": messages,
        "actions": actions,
        "tokens": tokens,
    }


def _summary(store: Store, row: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """One list row (display strings) and its search text.

    A conversation whose spans cannot be projected is listed with "?" counts (and logged), so that one bad
    conversation does not fail the page listing the others.
    """
    try:
        items = project_items(store.spans_of(row["id"]), store.attachments_of(row["id"]))
        counts = count_items(items)
        tokens = token_usage_summary(items)["total"]["total_tokens"]
        summary = _list_row(row, str(counts["messages"]), str(counts["actions"]), str(tokens))
        return summary, _haystack(row, items)
    except Exception:
        logger.exception("conversation %s could not be projected; listed without its counts", row["id"])
        return _list_row(row, "?", "?", "?"), _haystack(row, [])


def list_conversations(state: ServerState, query: str) -> dict[str, Any]:
    """The newest matching conversations (at most LIST_LIMIT) and how many there are in all.

    Each conversation's row is cached until its stored content changes (its update time, last activity, span
    count or upload count), so polling the list costs two grouped queries plus the conversations that changed.
    """
    store, access = state.store, _access(state)
    _, rows = store.list_conversations({})
    counts = store.content_counts()
    needle = query.strip().casefold()
    results: list[dict[str, Any]] = []
    matched = 0
    with access.summaries_lock:
        cache = access.summaries
        for row in rows:
            fingerprint = (row["updated_at"], row["last_activity"], counts.get(row["id"], (0, 0)))
            cached = cache.get(row["id"])
            if cached is None or cached[0] != fingerprint:
                cached = (fingerprint, _summary(store, row))
                cache[row["id"]] = cached
            summary, haystack = cached[1]
            if needle and needle not in haystack:
                continue
            matched += 1
            if len(results) < LIST_LIMIT:
                results.append(summary)
    return {"total": len(rows), "matched": matched, "query": query, "results": results}


# -- one conversation -----------------------------------------------------------------------------------


def conversation_version(store: Store, row: dict[str, Any]) -> str:
    """Changes whenever anything the conversation page shows may have changed."""
    spans = store.span_count(row["id"])
    uploads = len(store.attachments_of(row["id"]))
    return f"{spans}.{uploads}.{row['updated_at']}.{row['last_activity'] or ''}"


def conversation_model(store: Store, row: dict[str, Any]) -> dict[str, Any]:
    """Everything the conversation page shows, as display strings."""
    transcript = build_transcript(row, store.spans_of(row["id"]), store.attachments_of(row["id"]))
    conversation = dict(transcript["conversation"], counts=transcript["counts"])
    return {
        "pk": row["id"],
        "conversation": display_conversation(conversation, transcript["token_usage"]),
        "usage": display_usage(transcript["token_usage"]),
        "items": [display_item(item) for item in transcript["items"]],
    }


# -- HTML ---------------------------------------------------------------------------------------------------


def _page(title: str, body: str, page: str, attrs: dict[str, str] | None = None, logout: bool = False) -> str:
    data = "".join(f' data-{name}="{esc(value)}"' for name, value in (attrs or {}).items())
    signout = (
        '<form class="logout" method="post" action="/logout/"><button type="submit">Sign out</button></form>'
        if logout
        else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · AgentSight local</title>"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/viewer.css">'
        '<script src="/static/viewer.js" defer></script></head>'
        f'<body data-page="{esc(page)}"{data}>'
        '<header class="top"><a class="home" href="/">AgentSight <span>local server</span></a>'
        f'<span id="status" class="status" role="status"></span>{signout}</header>'
        f"<main>{body}</main></body></html>\n"
    )


def _time_html(shown: dict[str, Any]) -> str:
    return f'<time title="{esc(shown["when"])}">{esc(shown["time"])}</time>'


def item_html(shown: dict[str, Any]) -> str:
    """One transcript item as HTML (viewer.js builds the same structure with DOM calls)."""
    kind = shown["kind"]
    if kind == "message":
        return (
            f'<li class="item message {esc(shown["side"])}" data-kind="message">'
            f'<div class="meta"><span class="who">{esc(shown["who"])}</span>{_time_html(shown)}</div>'
            f'<div class="bubble text">{esc(shown["text"])}</div></li>'
        )
    if kind == "action":
        fields = ""
        for key, label in (("arguments", "Arguments"), ("result", "Result"), ("error", "Error")):
            if shown.get(key) is not None:
                fields += (
                    f'<div class="field {key}"><span class="field-name">{label}</span>'
                    f'<pre class="value">{esc(shown[key])}</pre></div>'
                )
        failed = " failed" if shown.get("error") is not None else ""
        return (
            f'<li class="item action{failed}" data-kind="action"><div class="meta"><span class="label">Action</span>'
            f'<span class="action-name">{esc(shown["name"])}</span>'
            f'<span class="duration">{esc(shown["duration"])}</span>{_time_html(shown)}</div>{fields}</li>'
        )
    if kind == "button":
        return (
            '<li class="item button" data-kind="button"><div class="meta"><span class="label">Button</span>'
            f'<span class="button-event">{esc(shown["event"])}</span>{_time_html(shown)}</div>'
            f'<div class="button-row"><span class="button-label">{esc(shown["label"])}</span>'
            f'<span class="arrow">→</span><code class="button-value">{esc(shown["value"])}</code></div></li>'
        )
    if kind == "attachments":
        files = ""
        for file in shown["files"]:
            name = (
                f'<a class="file-name" href="{esc(file["href"])}" download>{esc(file["name"])}</a>'
                if file["href"]
                else f'<span class="file-name">{esc(file["name"])}</span>'
            )
            files += f'<li>{name}<span class="file-info">{esc(file["info"])}</span></li>'
        return (
            f'<li class="item attachments {esc(shown["side"])}" data-kind="attachments"><div class="meta">'
            f'<span class="who">{esc(shown["who"])}</span><span class="label">sent files</span>{_time_html(shown)}'
            f'</div><ul class="files">{files}</ul></li>'
        )
    if kind == "token_usage":
        return (
            '<li class="item token_usage" data-kind="token_usage"><div class="meta"><span class="label">Tokens</span>'
            f'<span class="model">{esc(shown["model"])}</span>{_time_html(shown)}</div>'
            f'<div class="tokens-row">{esc(shown["tokens"])}'
            f'<span class="tokens-extra">{esc(shown["extra"])}</span></div></li>'
        )
    return f'<li class="item" data-kind="{esc(kind)}"><div class="meta">{_time_html(shown)}</div></li>'


def _conversation_header_html(conversation: dict[str, Any]) -> str:
    fields = "".join(f"<dt>{esc(label)}</dt><dd>{esc(value)}</dd>" for label, value in conversation["fields"])
    counts = "".join(
        f'<li><span class="count">{esc(value)}</span> {esc(label)}</li>' for label, value in conversation["counts"]
    )
    return (
        f'<h1 id="title">{esc(conversation["title"])}</h1><dl id="details" class="details">{fields}</dl>'
        f'<ul id="counts" class="counts">{counts}</ul>'
    )


def _usage_rows_html(usage: dict[str, Any]) -> str:
    rows = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in usage["rows"])
    total = "".join(f"<th>{esc(cell)}</th>" for cell in usage["total"])
    return f'<tbody id="usage-rows">{rows}</tbody><tfoot id="usage-total"><tr>{total}</tr></tfoot>'


def conversation_html(model: dict[str, Any], version: str, logout: bool) -> str:
    """The conversation page."""
    items = "".join(item_html(shown) for shown in model["items"])
    empty = "" if model["items"] else '<p id="empty" class="empty">Nothing in this transcript yet.</p>'
    body = (
        '<nav class="back"><a href="/">← All conversations</a></nav>'
        f'<section id="conversation" class="conversation">{_conversation_header_html(model["conversation"])}</section>'
        '<section class="usage"><h2>Token usage</h2><table id="usage"><thead><tr><th>Model</th><th>Input</th>'
        f"<th>Output</th><th>Total</th></tr></thead>{_usage_rows_html(model['usage'])}</table></section>"
        f'<section class="transcript"><h2>Transcript</h2>{empty}<ol id="transcript">{items}</ol></section>'
    )
    title = model["conversation"]["title"]
    return _page(title, body, "conversation", {"pk": str(model["pk"]), "version": version}, logout)


def row_html(summary: dict[str, Any]) -> str:
    """One row of the conversation list (viewer.js builds the same structure)."""
    cells = "".join(
        f'<td class="{key}">{esc(summary[key])}</td>' for key in ("name", "customer", "environment", "last_activity")
    )
    numbers = "".join(f'<td class="num {key}">{esc(summary[key])}</td>' for key in ("messages", "actions", "tokens"))
    return (
        f'<tr data-pk="{esc(summary["pk"])}"><td class="id"><a class="conv-link" href="{esc(summary["href"])}">'
        f"{esc(summary['conversation_id'])}</a></td>{cells}{numbers}</tr>"
    )


def list_html(listing: dict[str, Any], logout: bool) -> str:
    """The conversation list page."""
    rows = "".join(row_html(summary) for summary in listing["results"])
    body = (
        '<h1>Conversations</h1><form id="search-form" class="search" method="get" action="/" role="search">'
        f'<input id="search" type="search" name="q" value="{esc(listing["query"])}" autocomplete="off" '
        'placeholder="Search by id, name, customer, environment or any text" aria-label="Search conversations">'
        f'<button type="submit">Search</button></form><p id="summary" class="summary">{esc(_list_summary(listing))}</p>'
        '<table id="conversations"><thead><tr><th>Conversation</th><th>Name</th><th>Customer</th>'
        '<th>Environment</th><th>Last activity</th><th class="num">Messages</th><th class="num">Actions</th>'
        f'<th class="num">Tokens</th></tr></thead><tbody id="conversation-rows">{rows}</tbody></table>'
    )
    return _page("Conversations", body, "list", {"query": listing["query"]}, logout)


def _list_summary(listing: dict[str, Any]) -> str:
    total, matched, shown = listing["total"], listing["matched"], len(listing["results"])
    if not total:
        return "No conversation yet: ship one (agentsight-otel demo does) and it appears here."
    noun = "conversation" if total == 1 else "conversations"
    if listing["query"].strip():
        text = f"{matched} of {total} {noun} match"
    else:
        text = f"{total} {noun}, newest activity first"
    return text + (f" (showing the first {shown})" if shown < matched else "")


def login_html(next_path: str, failed: bool) -> str:
    """The key form shown when the server is bound off loopback."""
    error = '<p class="error" role="alert">That key is not valid for this server.</p>' if failed else ""
    body = (
        '<section class="login"><h1>Sign in</h1><p>This server is reachable from other machines, so the viewer '
        "asks for an API key this server accepts (the one <code>agentsight-otel serve</code> printed).</p>"
        f'{error}<form method="post" action="/login/"><input type="hidden" name="next" value="{esc(next_path)}">'
        '<label for="key">API key</label><input id="key" name="key" type="password" autocomplete="current-password" '
        'required placeholder="ags_…" autofocus><button type="submit">Open the viewer</button></form></section>'
    )
    return _page("Sign in", body, "login")


# -- views ---------------------------------------------------------------------------------------------------


def _access(state: ServerState) -> ViewerAccess:
    if state.viewer is None:  # a ServerState built without one (tests of other views): keyless, loopback
        state.viewer = ViewerAccess("127.0.0.1", {})
    return state.viewer


def html_response(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    """An HTML page with the viewer's security headers."""
    return Response(status, text.encode("utf-8"), "text/html; charset=utf-8", {**PAGE_HEADERS, **(headers or {})})


def _redirect(location: str, headers: dict[str, str] | None = None) -> Response:
    location = quote(location, safe=_LOCATION_SAFE)
    return Response(303, b"", "text/plain; charset=utf-8", {"Location": location, **PAGE_HEADERS, **(headers or {})})


def _safe_next(value: str | None) -> str:
    """A local path to return to after signing in (never another site: no `//host` or `\\host`)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")) or any(ch < " " for ch in value):
        return "/"
    return value


def _here(request: Request) -> str:
    query = urlencode([(key, value) for key, values in request.query.items() for value in values])
    return request.path + (f"?{query}" if query else "")


def _require_page(request: Request) -> Response | None:
    """None when the request may see the page; otherwise the redirect to the key form."""
    if request.role == VIEWER_ROLE:
        return None
    return _redirect("/login/?" + urlencode({"next": _here(request)}))


def _refuse_cross_origin(request: Request, action: str) -> None:
    """A form POST from another site's page carries its Origin: refuse it (a cookie alone is no intent)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and origin.rstrip("/") != request.base_url:
        raise ApiError(403, {"detail": f"Cross-origin {action} refused."})


def _require_json(request: Request) -> None:
    if request.role != VIEWER_ROLE:
        raise ApiError(401, {"detail": "Sign in at /login/ first, or send Authorization: Api-Key <key>."})


def index(state: ServerState, request: Request) -> Response:
    """`GET /`: the conversation list."""
    denied = _require_page(request)
    if denied is not None:
        return denied
    listing = list_conversations(state, request.param("q") or "")
    return html_response(200, list_html(listing, logout=not _access(state).open))


def conversation_page(state: ServerState, request: Request, pk: str) -> Response:
    """`GET /conversations/{pk}/`: one conversation and its transcript."""
    denied = _require_page(request)
    if denied is not None:
        return denied
    row = state.store.conversation_by_pk(int(pk))
    if row is None:
        body = '<nav class="back"><a href="/">← All conversations</a></nav><h1>No such conversation</h1>'
        return html_response(404, _page("Not found", body, "missing", logout=not _access(state).open))
    version = conversation_version(state.store, row)
    model = conversation_model(state.store, row)
    return html_response(200, conversation_html(model, version, logout=not _access(state).open))


def api_conversations(state: ServerState, request: Request) -> Response:
    """`GET /viewer/api/conversations/?q=`: the list page's rows."""
    _require_json(request)
    listing = list_conversations(state, request.param("q") or "")
    listing["summary"] = _list_summary(listing)
    return json_response(200, listing, {"Cache-Control": "no-store"})


def api_conversation(state: ServerState, request: Request, pk: str) -> Response:
    """`GET /viewer/api/conversations/{pk}/?version=`: the conversation page's content when it changed."""
    _require_json(request)
    row = state.store.conversation_by_pk(int(pk))
    if row is None:
        raise views.not_found()
    version = conversation_version(state.store, row)
    if request.param("version") == version:
        return json_response(200, {"version": version, "changed": False}, {"Cache-Control": "no-store"})
    model = conversation_model(state.store, row)
    return json_response(200, {"version": version, "changed": True, **model}, {"Cache-Control": "no-store"})


def api_feed(state: ServerState, request: Request) -> Response:
    """`GET /viewer/api/feed/`: the change feed of feed.py for the viewer's users (what `tail` reads keyless)."""
    _require_json(request)
    return feed.feed(state, request)


def download(state: ServerState, request: Request, attachment_id: str) -> Response:
    """`GET /viewer/attachments/{id}/download/`: an uploaded file as a download, never rendered."""
    denied = _require_page(request)
    if denied is not None:
        return denied
    response = views.download_attachment(state, request, attachment_id)
    response.headers.update(
        {
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "no-store",
        }
    )
    return response


def login(state: ServerState, request: Request) -> Response:
    """`GET /login/` shows the key form (off loopback); `POST /login/` checks the key and starts a session."""
    access = _access(state)
    if request.method == "GET":
        next_path = _safe_next(request.param("next"))
        if request.role == VIEWER_ROLE:
            return _redirect(next_path)
        return html_response(200, login_html(next_path, failed=False))
    _refuse_cross_origin(request, "sign-in")
    if media_type(request.content_type) != "application/x-www-form-urlencoded":
        raise ApiError(415, {"detail": "Send the key form (application/x-www-form-urlencoded)."})
    form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
    next_path = _safe_next((form.get("next") or [""])[0])
    key = (form.get("key") or [""])[0]
    if access.open:
        return _redirect(next_path)
    if access.key_role(key) is None:
        return html_response(401, login_html(next_path, failed=True))
    token = access.new_session()
    cookie = f"{COOKIE_NAME}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}"
    return _redirect(next_path, {"Set-Cookie": cookie})


def logout(state: ServerState, request: Request) -> Response:
    """`POST /logout/`: end the session and forget the cookie (not at another site's request)."""
    _refuse_cross_origin(request, "sign-out")
    _access(state).end_session(parse_cookies(request.headers.get("cookie")).get(COOKIE_NAME))
    cookie = f"{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    return _redirect("/login/" if not _access(state).open else "/", {"Set-Cookie": cookie})


def static_css(state: ServerState, request: Request) -> Response:
    """`GET /static/viewer.css`."""
    return Response(200, VIEWER_CSS.encode("utf-8"), "text/css; charset=utf-8", {"Cache-Control": "no-cache"})


def static_js(state: ServerState, request: Request) -> Response:
    """`GET /static/viewer.js`."""
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return Response(200, VIEWER_JS.encode("utf-8"), "text/javascript; charset=utf-8", headers)


def favicon(state: ServerState, request: Request) -> Response:
    """`GET /static/favicon.svg` (the pages name it, so browsers do not ask for /favicon.ico)."""
    return Response(200, FAVICON_SVG.encode("utf-8"), "image/svg+xml", {"Cache-Control": "max-age=86400"})
