"""The transcript viewer in a real browser: headless Chromium (Debian's package) over the DevTools pipe.

A local server fed by the tracker; the page is opened, the conversation found with the search box and opened
with a click; the transcript must show every item in order, update when a new batch arrives, and let files be
downloaded. A second conversation carries markup and script in its name and messages: shown as text, never run.
Screenshots go to test-artifacts/ (viewer.png, viewer-escaping.png).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest

from agentsight_otel import ConversationTracker
from agentsight_otel.localserver import LocalServer

from .cdp import Browser, Page
from .conftest import ARTIFACTS

pytestmark = pytest.mark.browser

INVOICE = b"%PDF-1.4\n% invoice 1042\n"
SCRIPT_MESSAGE = "<script>window.__pwned=1</script>"
IMG_NAME = '<img src=x onerror="window.__pwned=2">Sneaky order'
LATE_MESSAGE = '<img src=x onerror="window.__pwned=3"> arrived later <b>bold?</b>'

# Per transcript item: its kind and the text that identifies it on the page.
ITEMS_JS = """
Array.from(document.querySelectorAll('#transcript > li')).map(function (li) {
  function text(sel) { var e = li.querySelector(sel); return e ? e.textContent : null; }
  function all(sel) { return Array.from(li.querySelectorAll(sel)).map(function (e) { return e.textContent; }); }
  return {kind: li.getAttribute('data-kind'), cls: li.className, text: text('.text'), who: text('.who'),
          name: text('.action-name'), result: text('.result pre'), error: text('.error pre'),
          args: text('.arguments pre'), duration: text('.duration'), label: text('.button-label'),
          value: text('.button-value'), files: all('.file-name'),
          hrefs: Array.from(li.querySelectorAll('a.file-name')).map(function (a) { return a.getAttribute('href'); }),
          model: text('.model'), tokens: text('.tokens-row'), time: text('time'),
          elements: li.querySelectorAll('script, img, b, iframe').length};
})
"""


def expected_view(item: dict[str, Any]) -> dict[str, Any]:
    """What the page must show for one item of the server's transcript JSON."""
    kind = item["type"]
    if kind == "message":
        return {"kind": kind, "text": item["content"], "who": "User" if item["sender"] == "end_user" else "Agent"}
    if kind == "action":
        return {"kind": kind, "name": item["name"], "result": item["response"], "error": item["error"]}
    if kind == "button":
        return {"kind": kind, "label": item["label"], "value": item["value"]}
    if kind == "attachments":
        return {"kind": kind, "files": [f["filename"] for f in item["files"]]}
    return {"kind": kind, "model": item["model"]}


def shown_view(shown: dict[str, Any]) -> dict[str, Any]:
    """The same fields, read from the page."""
    return {key: shown[key] for key in expected_view_keys(shown["kind"])}


def expected_view_keys(kind: str) -> tuple[str, ...]:
    return {
        "message": ("kind", "text", "who"),
        "action": ("kind", "name", "result", "error"),
        "button": ("kind", "label", "value"),
        "attachments": ("kind", "files"),
        "token_usage": ("kind", "model"),
    }[kind]


def track_order(tracker: ConversationTracker, cid: str) -> None:
    tracker.get_or_create_conversation(cid, customer_id="customer-42", name="Order status", language="en")
    tracker.track_human_message("Hi! Where is my order #1042?")
    tracker.track_action(
        "lookup_order", tools_used={"order_id": 1042}, response='{"status": "shipped"}', duration_ms=42
    )
    tracker.track_token_usage(prompt_tokens=182, completion_tokens=41, total_tokens=223, model="gpt-4o-mini")
    tracker.track_agent_message("Order #1042 has shipped.\nWant the tracking link?")
    tracker.track_button("quick_reply", "Yes, send the link", "send_tracking_link")
    tracker.track_attachments(
        [{"filename": "invoice-1042.pdf", "mime_type": "application/pdf", "data": base64.b64encode(INVOICE).decode()}],
        "agent",
    )
    tracker.track_action("refund", tools_used={"order_id": 1042}, error_msg="card declined", duration_ms=1250)
    tracker.track_agent_message("Here it is, with your invoice attached.")
    result = tracker.send_tracked_data()
    assert result["summary"]["errors"] == 0, result


def track_hostile(tracker: ConversationTracker, cid: str) -> None:
    tracker.get_or_create_conversation(cid, customer_id="<b>mallory</b>", name=IMG_NAME)
    tracker.track_human_message(SCRIPT_MESSAGE)
    tracker.track_agent_message("I will not run that: </div><script>window.__pwned=4</script>")
    tracker.track_action(
        "<i>tool</i>", tools_used={"html": "<svg onload=alert(1)>"}, response="</pre><script>x</script>"
    )
    assert tracker.send_tracked_data()["summary"]["errors"] == 0


def open_from_search(page: Page, server: LocalServer, query: str, conversation_id: str) -> None:
    """On the list page: type a search, wait for the single matching row, click it, wait for the conversation."""
    page.wait_for("document.body.getAttribute('data-page') === 'list' && document.body.hasAttribute('data-ready')")
    page.type_into("#search", query)
    page.wait_for(
        f"document.body.getAttribute('data-query') === {json.dumps(query)} && "
        "document.querySelectorAll('#conversation-rows tr').length === 1 && "
        f"document.querySelector('#conversation-rows a.conv-link').textContent === {json.dumps(conversation_id)}"
    )
    assert page.evaluate("new URLSearchParams(location.search).get('q')") == query  # the address keeps the search
    page.click("#conversation-rows a.conv-link")
    page.wait_for(
        "document.body.getAttribute('data-page') === 'conversation' && document.body.hasAttribute('data-ready')"
    )


def check_transcript(page: Page, server: LocalServer, conversation_id: str) -> list[dict[str, Any]]:
    """Every item of the stored transcript is on the page, in the same order, with its identifying text."""
    items = server.transcript(conversation_id)["items"]
    shown = page.evaluate(ITEMS_JS)
    assert [s["kind"] for s in shown] == [i["type"] for i in items]
    assert [shown_view(s) for s in shown] == [expected_view(i) for i in items]
    return shown


def test_viewer_in_chromium(browser: Browser) -> None:
    started = time.monotonic()
    order_id = f"order-{uuid.uuid4().hex[:8]}"
    hostile_id = f"hostile-{uuid.uuid4().hex[:8]}"
    with LocalServer() as server:
        tracker = ConversationTracker()
        tracker.configure(api_key=server.api_key, endpoint=server.url)
        try:
            for n in range(3):
                tracker.get_or_create_conversation(f"filler-{n}", name=f"Filler {n}")
                tracker.track_human_message(f"filler message {n}")
                tracker.send_tracked_data()
            track_order(tracker, order_id)
            track_hostile(tracker, hostile_id)

            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for("document.querySelectorAll('#conversation-rows tr').length === 5")
            # the list shows id, name, customer, environment, last activity and counts
            row = page.evaluate(
                "Array.from(document.querySelectorAll('#conversation-rows tr')).map(function (tr) {"
                " return Array.from(tr.cells).map(function (td) { return td.textContent; }); })"
                f".find(function (cells) {{ return cells[0] === {json.dumps(order_id)}; }})"
            )
            assert row[:4] == [order_id, "Order status", "customer-42", "development"]
            assert row[4].endswith(" UTC") and row[5:] == ["3", "2", "223"]

            # find the conversation with the search box, open it
            open_from_search(page, server, order_id[:10], order_id)
            pk = next(c["id"] for c in server.conversations() if c["conversation_id"] == order_id)
            assert page.evaluate("location.pathname") == f"/conversations/{pk}/"
            shown = check_transcript(page, server, order_id)
            kinds = [s["kind"] for s in shown]
            assert kinds == [
                "message", "action", "token_usage", "message", "button", "attachments", "action", "message"
            ]  # fmt: skip
            assert shown[0]["cls"] == "item message user" and shown[3]["cls"] == "item message agent"
            assert shown[3]["text"] == "Order #1042 has shipped.\nWant the tracking link?"
            assert json.loads(shown[1]["args"]) == {"order_id": 1042} and shown[1]["duration"] == "42 ms"
            assert "failed" in shown[6]["cls"] and shown[6]["duration"] == "1.25 s"
            assert shown[2]["tokens"] == "182 in · 41 out · 223 total"
            assert all(len(s["time"]) == 12 for s in shown)
            usage = page.evaluate(
                "Array.from(document.querySelectorAll('#usage tr')).map(function (tr) {"
                " return Array.from(tr.cells).map(function (c) { return c.textContent; }); })"
            )
            assert usage == [["Model", "Input", "Output", "Total"], ["gpt-4o-mini", "182", "41", "223"],
                             ["Total", "182", "41", "223"]]  # fmt: skip

            # the file downloads from the page, as an attachment
            href = shown[5]["hrefs"][0]
            download = page.evaluate(
                f"fetch({json.dumps(href)}).then(function (r) {{ return r.text().then(function (t) {{"
                " return [r.status, r.headers.get('content-disposition'), t]; }); })"
            )
            assert download[0] == 200 and download[1].startswith("attachment;") and download[2] == INVOICE.decode()

            # a new batch arrives: the open page shows it without a reload
            version = page.evaluate("document.body.getAttribute('data-version')")
            tracker.get_or_create_conversation(order_id)
            tracker.track_human_message("Thanks! One more question about <b>shipping</b>.")
            tracker.track_token_usage(prompt_tokens=10, completion_tokens=5, total_tokens=15, model="claude-3-haiku")
            tracker.track_agent_message("Ask away.")
            assert tracker.send_tracked_data()["summary"]["errors"] == 0
            page.wait_for(f"document.body.getAttribute('data-version') !== {json.dumps(version)}")
            page.wait_for("document.querySelectorAll('#transcript > li').length === 11")
            shown = check_transcript(page, server, order_id)
            assert shown[8]["text"] == "Thanks! One more question about <b>shipping</b>." and shown[8]["elements"] == 0
            assert page.evaluate("document.querySelector('#counts').textContent") == (
                "5 Messages2 Actions1 Buttons1 Files238 Tokens"
            )
            usage = page.evaluate(
                "Array.from(document.querySelectorAll('#usage tbody tr, #usage tfoot tr')).map(function (tr) {"
                " return Array.from(tr.cells).map(function (c) { return c.textContent; }); })"
            )
            assert usage == [["claude-3-haiku", "10", "5", "15"], ["gpt-4o-mini", "182", "41", "223"],
                             ["Total", "192", "46", "238"]]  # fmt: skip
            page.screenshot(ARTIFACTS / "viewer.png")
            assert page.evaluate("window.__csp") == []

            # the hostile conversation: found by its message text, markup shown as text, nothing run
            page.click("nav.back a")
            page.wait_for("document.body.getAttribute('data-page') === 'list'")
            open_from_search(page, server, "__PWNED=1", hostile_id)
            shown = check_transcript(page, server, hostile_id)
            assert shown[0]["text"] == SCRIPT_MESSAGE
            assert page.evaluate("document.querySelector('#title').textContent") == IMG_NAME
            assert page.evaluate("document.title") == IMG_NAME + " · AgentSight local"
            # then a batch rendered by the script (not the server) carrying markup too
            tracker.get_or_create_conversation(hostile_id)
            tracker.track_agent_message(LATE_MESSAGE)
            assert tracker.send_tracked_data()["summary"]["errors"] == 0
            page.wait_for(f"document.querySelectorAll('#transcript > li').length === {len(shown) + 1}")
            shown = check_transcript(page, server, hostile_id)
            assert shown[-1]["text"] == LATE_MESSAGE
            assert all(s["elements"] == 0 for s in shown)
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert page.evaluate("document.querySelectorAll('script').length") == 1  # viewer.js only
            assert page.evaluate("document.querySelectorAll('main img, main b, main i, main svg').length") == 0
            assert page.evaluate("window.__csp") == []  # nothing even tried to run (the CSP saw no inline script)
            page.screenshot(ARTIFACTS / "viewer-escaping.png")

            # nothing but the local server was contacted, and the page threw nothing
            assert page.requests and all(url.startswith(server.url + "/") for url in page.requests), page.requests
            assert page.exceptions == []
        finally:
            tracker.shutdown()
    assert (ARTIFACTS / "viewer.png").stat().st_size > 10_000
    print(f"browser test took {time.monotonic() - started:.1f}s")
