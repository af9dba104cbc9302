"""The transcript viewer over HTTP (no browser): pages, escaping, search, polling routes, downloads, access rules,
and the change feed that `tail` reads. The browser test is tests/browser/test_viewer_browser.py."""

from __future__ import annotations

import base64
import html
import logging
import os
import re
import signal
import subprocess
import sys
from typing import Any

import pytest
import requests

from agentsight_otel import ConversationTracker
from agentsight_otel.localserver import LocalServer
from agentsight_otel.localserver.viewer_auth import ViewerAccess, host_name, is_loopback_host, parse_cookies

PDF = b"%PDF-1.4\n% test\n"
HOSTILE = "<script>window.__pwned=1</script>"


def track_order(tracker: ConversationTracker, cid: str = "order-1") -> None:
    tracker.get_or_create_conversation(cid, customer_id="customer-42", name="Order status")
    tracker.track_human_message("Where is my order #1042?")
    tracker.track_action("lookup_order", tools_used={"order_id": 1042}, response="shipped", duration_ms=42)
    tracker.track_token_usage(prompt_tokens=100, completion_tokens=20, total_tokens=120, model="gpt-4o-mini")
    tracker.track_agent_message("It has shipped.")
    tracker.track_button("quick_reply", "Track it", "track")
    tracker.track_attachments(
        [{"filename": "invoice.pdf", "mime_type": "application/pdf", "data": base64.b64encode(PDF).decode()}], "agent"
    )
    tracker.track_action("refund", error_msg="card declined", duration_ms=5)
    tracker.track_token_usage(prompt_tokens=7, completion_tokens=3, total_tokens=10, model="claude-3-haiku")
    assert tracker.send_tracked_data()["summary"]["errors"] == 0


def track_hostile(tracker: ConversationTracker, cid: str = "hostile-1") -> None:
    tracker.get_or_create_conversation(cid, name='<img src=x onerror="alert(1)">', customer_id="<b>m</b>")
    tracker.track_human_message(HOSTILE)
    tracker.track_action("<i>x</i>", tools_used={"k": "</pre><script>"}, response="<svg onload=alert(2)>")
    assert tracker.send_tracked_data()["summary"]["errors"] == 0


def pk_of(server: LocalServer, cid: str) -> int:
    return next(c["id"] for c in server.conversations() if c["conversation_id"] == cid)


def texts(page: str, css_class: str) -> list[str]:
    """The unescaped text of every element with this exact class attribute (enough for these flat templates)."""
    return [html.unescape(m) for m in re.findall(rf'class="{re.escape(css_class)}"[^>]*>([^<]*)<', page)]


# -- pages -------------------------------------------------------------------------------------------------


def test_list_page_needs_no_key_on_loopback_and_shows_every_column(server, tracker):
    track_order(tracker)
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    row = re.search(r'<tr data-pk="\d+">.*?</tr>', page.text).group(0)
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(?:<a[^>]*>)?([^<]*)", row)]
    assert cells[:4] == ["order-1", "Order status", "customer-42", "development"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", cells[4])
    assert cells[5:] == ["2", "2", "130"]  # messages, actions, tokens
    assert f'href="/conversations/{pk_of(server, "order-1")}/"' in row
    # no external assets: every src/href is a path on this server
    for url in re.findall(r'(?:src|href|action)="([^"]*)"', page.text):
        assert url.startswith("/") and not url.startswith("//"), url


def test_conversation_page_shows_the_transcript_in_order(server, tracker):
    track_order(tracker)
    page = requests.get(f"{server.url}/conversations/{pk_of(server, 'order-1')}/", timeout=10).text
    kinds = re.findall(r'<li class="item[^"]*" data-kind="([a-z_]+)"', page)
    assert kinds == [item["type"] for item in server.transcript("order-1")["items"]]
    assert kinds == ["message", "action", "token_usage", "message", "button", "attachments", "action", "token_usage"]
    assert texts(page, "bubble text") == ["Where is my order #1042?", "It has shipped."]
    assert texts(page, "action-name") == ["lookup_order", "refund"]
    assert texts(page, "duration") == ["42 ms", "5 ms"]
    assert '<div class="field error"><span class="field-name">Error</span><pre class="value">card declined' in page
    assert '<li class="item action failed" data-kind="action">' in page
    assert texts(page, "button-label") == ["Track it"] and texts(page, "button-value") == ["track"]
    assert texts(page, "model") == ["gpt-4o-mini", "claude-3-haiku"]
    usage = re.search(r'<tbody id="usage-rows">(.*?)</tfoot>', page).group(1)
    assert re.findall(r"<t[dh]>([^<]*)</t[dh]>", usage) == [
        *("claude-3-haiku", "7", "3", "10"),
        *("gpt-4o-mini", "100", "20", "120"),
        *("Total", "107", "23", "130"),
    ]
    link = re.search(r'<a class="file-name" href="(/viewer/attachments/\d+/download/)" download>invoice.pdf</a>', page)
    download = requests.get(server.url + link.group(1), timeout=10)
    assert download.status_code == 200 and download.content == PDF
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert download.headers["X-Content-Type-Options"] == "nosniff" and "sandbox" in download.headers[
        "Content-Security-Policy"
    ]


def test_everything_shown_is_escaped(server, tracker):
    track_hostile(tracker)
    listing = requests.get(server.url + "/", timeout=10).text
    page = requests.get(f"{server.url}/conversations/{pk_of(server, 'hostile-1')}/", timeout=10).text
    for text in (listing, page):
        assert "<script>window" not in text and "<img src=x" not in text and "<b>m</b>" not in text
        assert "<svg" not in text and "<i>x</i>" not in text
        assert text.count("<script") == 1  # the viewer's own script tag, nothing else
    assert texts(page, "bubble text") == [HOSTILE]
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page  # title and heading, escaped
    # the JSON the page's script renders carries the raw text (the script puts it in with textContent)
    data = requests.get(f"{server.url}/viewer/api/conversations/{pk_of(server, 'hostile-1')}/", timeout=10).json()
    assert data["items"][0]["text"] == HOSTILE and data["conversation"]["title"] == '<img src=x onerror="alert(1)">'


def test_viewer_script_never_uses_innerhtml_and_pages_have_no_inline_script(server):
    script = requests.get(server.url + "/static/viewer.js", timeout=10)
    assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert "innerHTML" not in script.text and "outerHTML" not in script.text and "insertAdjacentHTML" not in script.text
    assert "document.write" not in script.text and "eval(" not in script.text
    assert requests.get(server.url + "/static/viewer.css", timeout=10).status_code == 200
    assert requests.get(server.url + "/static/favicon.svg", timeout=10).status_code == 200
    page = requests.get(server.url + "/", timeout=10).text
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/viewer.js" defer>']
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", page)  # no inline event handlers


def test_search_by_id_and_by_transcript_text(server, tracker):
    track_order(tracker, "order-1")
    track_order(tracker, "order-2")
    track_hostile(tracker)

    def ids(query: str) -> list[str]:
        data = requests.get(server.url + "/viewer/api/conversations/", params={"q": query}, timeout=10).json()
        return sorted(row["conversation_id"] for row in data["results"])

    assert ids("") == ["hostile-1", "order-1", "order-2"]
    assert ids("ORDER-2") == ["order-2"]  # id, case-insensitive
    assert ids("window.__pwned") == ["hostile-1"]  # message text
    assert ids("lookup_ord") == ["order-1", "order-2"]  # action name
    assert ids("invoice.pdf") == ["order-1", "order-2"]  # file name
    assert ids("customer-42") == ["order-1", "order-2"]
    assert ids("nothing like this") == []
    page = requests.get(server.url + "/", params={"q": "order-2"}, timeout=10).text
    assert re.findall(r'class="conv-link"[^>]*>([^<]*)<', page) == ["order-2"]
    assert 'value="order-2"' in page and "1 of 3 conversations match" in page


def test_polling_route_answers_unchanged_until_a_batch_arrives(server, tracker):
    track_order(tracker)
    url = f"{server.url}/viewer/api/conversations/{pk_of(server, 'order-1')}/"
    first = requests.get(url, timeout=10).json()
    assert first["changed"] is True and len(first["items"]) == 8
    same = requests.get(url, params={"version": first["version"]}, timeout=10).json()
    assert same == {"version": first["version"], "changed": False}
    tracker.get_or_create_conversation("order-1")
    tracker.track_human_message("one more thing")
    tracker.send_tracked_data()
    after = requests.get(url, params={"version": first["version"]}, timeout=10).json()
    assert after["changed"] is True and after["version"] != first["version"]
    assert after["items"][-1] == {
        "kind": "message",
        "side": "user",
        "who": "User",
        "text": "one more thing",
        "time": after["items"][-1]["time"],
        "when": after["items"][-1]["when"],
    }
    assert ["Messages", "3"] in after["conversation"]["counts"]
    # the list follows too (its per-conversation cache notices the change)
    row = requests.get(server.url + "/viewer/api/conversations/", timeout=10).json()["results"][0]
    assert row["messages"] == "3"


def test_unknown_conversation_page_is_a_404_page(server):
    page = requests.get(server.url + "/conversations/999/", timeout=10)
    assert page.status_code == 404 and "No such conversation" in page.text
    assert requests.get(server.url + "/viewer/api/conversations/999/", timeout=10).status_code == 404


def test_json_routes_still_need_the_key(server, tracker):
    track_order(tracker)
    for path in ("/api/conversations/", "/api/feed/", f"/api/conversations/{pk_of(server, 'order-1')}/transcript/"):
        assert requests.get(server.url + path, timeout=10).status_code == 401


# -- access rules ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("", False), ("::", False), ("192.168.1.20", False), ("example.com", False)],
)  # fmt: skip
def test_loopback_detection(host, loopback):
    assert is_loopback_host(host) is loopback
    assert ViewerAccess(host, {}).open is (loopback and host != "")


def test_host_and_cookie_parsing():
    assert host_name("[::1]:8787") == "::1" and host_name("localhost:80") == "localhost" and host_name("::1") == "::1"
    assert parse_cookies('a=1; agentsight_viewer="tok"; bad; =x') == {"a": "1", "agentsight_viewer": "tok"}


def test_loopback_viewer_refuses_foreign_host_names(server):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    port = server.port
    assert requests.get(server.url + "/", headers={"Host": f"evil.example:{port}"}, timeout=10).status_code == 403
    feed = requests.get(server.url + "/viewer/api/feed/", headers={"Host": "evil.example"}, timeout=10)
    assert feed.status_code == 403
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"127.0.0.2:{port}"):
        assert requests.get(server.url + "/", headers={"Host": host}, timeout=10).status_code == 200


@pytest.fixture
def keyed_server():
    with LocalServer(viewer_requires_key=True) as srv:
        yield srv


def test_off_loopback_the_viewer_asks_for_the_key(keyed_server, caplog):
    caplog.set_level(logging.DEBUG, logger="agentsight_otel")
    srv, key = keyed_server, keyed_server.api_key
    s = requests.Session()
    first = s.get(srv.url + "/conversations/1/?x=1", allow_redirects=False, timeout=10)
    assert first.status_code == 303 and first.headers["Location"] == "/login/?next=%2Fconversations%2F1%2F%3Fx%3D1"
    assert s.get(srv.url + "/viewer/api/conversations/", timeout=10).status_code == 401
    assert s.get(srv.url + "/viewer/api/feed/", timeout=10).status_code == 401
    assert s.get(srv.url + "/viewer/attachments/1/download/", allow_redirects=False, timeout=10).status_code == 303
    form = s.get(srv.url + "/login/?next=/conversations/1/", timeout=10)
    assert form.status_code == 200 and 'name="key" type="password"' in form.text
    # a wrong key: the form again, nothing echoed
    wrong = "ags_" + "0" * 32 + "_000000"
    bad = s.post(srv.url + "/login/", data={"key": wrong, "next": "/"}, allow_redirects=False, timeout=10)
    assert bad.status_code == 401 and "not valid" in bad.text and wrong not in bad.text and not s.cookies
    # the right key: a session cookie (a random token, not the key), then the pages open
    good = s.post(srv.url + "/login/", data={"key": key, "next": "/?q=a"}, allow_redirects=False, timeout=10)
    assert good.status_code == 303 and good.headers["Location"] == "/?q=a"
    cookie = good.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and key not in cookie and key.lower() not in cookie
    page = s.get(srv.url + "/", timeout=10)
    assert page.status_code == 200 and 'action="/logout/"' in page.text and key not in page.text
    assert s.get(srv.url + "/viewer/api/conversations/", timeout=10).status_code == 200
    # the Api-Key header works too, without a session
    header = {"Authorization": f"Api-Key {key}"}
    assert requests.get(srv.url + "/", headers=header, timeout=10).status_code == 200
    # signing out ends the session on the server, not just in this client
    token = s.cookies.get("agentsight_viewer")
    assert s.post(srv.url + "/logout/", allow_redirects=False, timeout=10).status_code == 303
    stolen = requests.get(srv.url + "/", cookies={"agentsight_viewer": token}, allow_redirects=False, timeout=10)
    assert stolen.status_code == 303
    # the key is in no log line and no recorded request
    assert key not in caplog.text and key.lower() not in caplog.text
    assert key not in repr(srv.request_log())


def test_sign_in_never_redirects_off_site_nor_accepts_cross_origin_posts(keyed_server):
    srv, key = keyed_server, keyed_server.api_key
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        answer = requests.post(
            srv.url + "/login/", data={"key": key, "next": target}, allow_redirects=False, timeout=10
        )
        assert answer.headers["Location"] == "/", target
    cross = requests.post(
        srv.url + "/login/", data={"key": key}, headers={"Origin": "http://evil.example"}, timeout=10
    )
    assert cross.status_code == 403 and "Set-Cookie" not in cross.headers
    assert requests.post(srv.url + "/login/", json={"key": key}, timeout=10).status_code == 415


def test_sign_in_redirects_to_non_ascii_paths_percent_encoded(keyed_server):
    """http.server writes headers as Latin-1: a next=/中 must not drop the connection."""
    srv, key = keyed_server, keyed_server.api_key
    header = {"Authorization": f"Api-Key {key}"}
    signed_in = requests.get(srv.url + "/login/?next=/%E4%B8%AD", headers=header, allow_redirects=False, timeout=10)
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/%E4%B8%AD"
    form = requests.get(srv.url + "/login/?next=/%E4%B8%AD", timeout=10)
    assert form.status_code == 200 and 'name="next" value="/中"' in form.text
    for target in ("/中", "/%E4%B8%AD"):  # as typed, and as already encoded (not encoded twice)
        answer = requests.post(
            srv.url + "/login/", data={"key": key, "next": target}, allow_redirects=False, timeout=10
        )
        assert answer.status_code == 303 and answer.headers["Location"] == "/%E4%B8%AD", target


def test_sign_out_refuses_cross_origin_posts(keyed_server):
    srv = keyed_server
    s = requests.Session()
    assert s.post(srv.url + "/login/", data={"key": srv.api_key}, allow_redirects=False, timeout=10).status_code == 303
    cross = s.post(srv.url + "/logout/", headers={"Origin": "http://evil.example"}, allow_redirects=False, timeout=10)
    assert cross.status_code == 403 and "Set-Cookie" not in cross.headers
    assert s.get(srv.url + "/", allow_redirects=False, timeout=10).status_code == 200  # still signed in
    own = s.post(srv.url + "/logout/", headers={"Origin": srv.url}, allow_redirects=False, timeout=10)
    assert own.status_code == 303
    assert s.get(srv.url + "/", allow_redirects=False, timeout=10).status_code == 303


def test_a_read_key_opens_the_viewer():
    from agentsight_otel.localserver import generate_api_key

    read = generate_api_key()
    with LocalServer(read_keys=[read], viewer_requires_key=True) as srv:
        answer = requests.post(srv.url + "/login/", data={"key": read}, allow_redirects=False, timeout=10)
        assert answer.status_code == 303 and "agentsight_viewer=" in answer.headers["Set-Cookie"]


# -- the change feed (what `tail` reads) ------------------------------------------------------------------


def feed(server: LocalServer, **params: Any) -> dict[str, Any]:
    answer = requests.get(
        server.url + "/api/feed/", params=params, headers={"Authorization": f"Api-Key {server.api_key}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_feed_gives_each_new_item_once_after_a_cursor(server, tracker):
    start = feed(server)
    assert start == {"cursor": 0, "latest": 0, "more": False, "items": []}
    track_order(tracker, "order-1")
    page = feed(server, since=0)
    assert [i["type"] for i in page["items"]] == [i["type"] for i in server.transcript("order-1")["items"]]
    assert {i["conversation"]["conversation_id"] for i in page["items"]} == {"order-1"}
    assert page["cursor"] == page["latest"] > 0 and page["more"] is False
    assert feed(server, since=page["cursor"])["items"] == []
    track_hostile(tracker)
    tracker.get_or_create_conversation("order-1")
    tracker.track_agent_message("later")
    tracker.send_tracked_data()
    new = feed(server, since=page["cursor"])
    assert [(i["conversation"]["conversation_id"], i["type"]) for i in new["items"]] == [
        ("hostile-1", "message"),
        ("hostile-1", "action"),
        ("order-1", "message"),
    ]
    only = feed(server, since=page["cursor"], conversation_id="order-1")
    assert [i.get("content") for i in only["items"]] == ["later"]
    # the last few items first, as `tail` shows them on start
    last = feed(server, last=2)
    assert last["cursor"] == new["cursor"] and len(last["items"]) == 2
    assert last["items"][-1]["content"] == "later"
    # small pages: `more` until everything is read
    seen, cursor = [], 0
    while True:
        chunk = feed(server, since=cursor, limit=2)
        seen += chunk["items"]
        cursor = chunk["cursor"]
        if not chunk["more"]:
            break
    assert len(seen) == len(page["items"]) + len(new["items"])
    # an unknown conversation: nothing yet, not an error
    assert feed(server, since=0, conversation_id="not-yet")["items"] == []


def test_feed_rejects_bad_parameters(server):
    headers = {"Authorization": f"Api-Key {server.api_key}"}
    bad = ({"since": "-1"}, {"since": "x"}, {"since": "0", "limit": "0"}, {"since": "0", "limit": "5000"})
    bad += ({"last": "100000"},)
    for params in bad:
        answer = requests.get(server.url + "/api/feed/", params=params, headers=headers, timeout=10)
        assert answer.status_code == 400, params


def test_keyless_feed_for_the_viewer_on_loopback(server, tracker):
    track_order(tracker)
    answer = requests.get(server.url + "/viewer/api/feed/", params={"since": 0}, timeout=10)
    assert answer.status_code == 200 and len(answer.json()["items"]) == 8


# -- the demo prints the page's address ---------------------------------------------------------------------


def test_demo_keep_serving_prints_the_viewer_address_and_serves_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSIGHT_")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentsight_otel.cli", "demo", "--keep-serving"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        lines = []
        while not lines or not lines[-1].startswith("Serving "):
            line = proc.stdout.readline()
            assert line, "".join(lines) + proc.stderr.read()
            lines.append(line)
        out = "".join(lines)
        viewer = re.search(r"^Viewer: (http://127\.0\.0\.1:\d+/)  \(this conversation: (\S+)\)$", out, re.M)
        assert viewer, out
        assert out.index("Transcript as the server stored it") < out.index("Viewer: ")
        page = requests.get(viewer.group(1), timeout=10)
        assert page.status_code == 200 and "Order status" in page.text
        conversation = requests.get(viewer.group(2), timeout=10)
        assert conversation.status_code == 200 and "invoice-1042.pdf" in conversation.text
        assert f"agentsight-otel tail --url {viewer.group(1).rstrip('/')}" in out
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0


# -- conversations that cannot be shown ----------------------------------------------------------------------


def ingest(server: LocalServer, *blocks: dict[str, Any]) -> None:
    answer = requests.post(
        server.url + "/api/ingest/",
        json={"sdk": {"name": "test", "version": "0"}, "conversations": list(blocks)},
        headers={"Authorization": f"Api-Key {server.api_key}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def raw_span(span_id: str, kind: str, name: str, attributes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    stamp = "2024-05-01T12:00:00.000000+00:00"
    span = {"span_id": span_id, "trace_id": "0" * 32, "kind": kind, "name": name, "started_at": stamp}
    return {**span, "ended_at": stamp, "status": "ok", "attributes": attributes, **extra}


VIEWER_READS = ("/", "/conversations/{pk}/", "/viewer/api/conversations/", "/viewer/api/conversations/{pk}/")


def test_pages_survive_stored_values_that_cannot_be_read(server, tracker):
    track_order(tracker)
    message = {
        "name": "agentsight.message",
        "timestamp": "2024-05-01T12:00:01.000000+00:00",
        "attributes": {
            "agentsight.message.sender": "agent",
            "agentsight.message.content": "hi",
            "agentsight.message.metadata": "[" * 5000,
        },
    }
    spans = [
        # json.loads raises RecursionError on these, not ValueError
        raw_span("1000000000000001", "tool", "t", {"agentsight.tool.arguments": "[" * 5000}),
        raw_span("1000000000000002", "turn", "ask", {}, events=[message]),
        raw_span("1000000000000003", "attachment", "f", {"agentsight.attachment.files": "[" * 5000}),
        # int() reads these, but their sum cannot be written as text (int max str digits)
        raw_span("1000000000000004", "llm", "m", {"gen_ai.usage.input_tokens": "9" * 4300,
                                                  "gen_ai.usage.output_tokens": "9" * 4300}),
    ]  # fmt: skip
    ingest(server, {"conversation_id": "unreadable", "spans": spans})
    pk = pk_of(server, "unreadable")
    for path in VIEWER_READS + ("/viewer/api/feed/?since=0", "/viewer/api/feed/?last=50"):
        assert requests.get(server.url + path.format(pk=pk), timeout=10).status_code == 200, path
    rows = requests.get(server.url + "/viewer/api/conversations/", timeout=10).json()["results"]
    assert {row["conversation_id"]: row["tokens"] for row in rows} == {"unreadable": "0", "order-1": "130"}


def test_a_conversation_that_cannot_be_projected_leaves_the_others_listed(server, tracker, monkeypatch, caplog):
    from agentsight_otel.localserver import feed as feed_module
    from agentsight_otel.localserver import viewer

    track_order(tracker)
    ingest(server, {"conversation_id": "broken", "spans": [raw_span("1000000000000001", "tool", "boom", {})]})
    project = viewer.project_items

    def failing(spans, uploads):
        if any(span["name"] == "boom" for span in spans):
            raise RuntimeError("an unforeseen bug")
        return project(spans, uploads)

    monkeypatch.setattr(viewer, "project_items", failing)
    monkeypatch.setattr(feed_module, "project_items", failing)
    rows = requests.get(server.url + "/viewer/api/conversations/", timeout=10).json()["results"]
    assert {row["conversation_id"]: row["messages"] for row in rows} == {"broken": "?", "order-1": "2"}
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and "order-1" in page.text and "broken" in page.text
    items = feed(server, since=0)["items"]
    assert items and {item["conversation"]["conversation_id"] for item in items} == {"order-1"}
    assert "could not be projected" in caplog.text
