"""The viewer's only assets, served from memory: a stylesheet, a script and an icon (no build step, no CDN).

The script renders what the JSON routes send with `textContent` and DOM calls only — never `innerHTML` — so a
message containing markup is shown as text. It builds the same structure as the server-side HTML in viewer.py.
"""

from __future__ import annotations

FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#1f6feb"/><path d="M4 11l4-7 4 7z" fill="#fff"/></svg>'
)

VIEWER_CSS = r"""
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #f6f8fa; --accent: #1f6feb;
        --user: #ddf4ff; --agent: #ffffff; --error: #cf222e; --ok: #1a7f37; color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
header.top { display: flex; align-items: center; gap: 16px; padding: 10px 24px; background: #24292f; color: #fff; }
header.top .home { color: #fff; font-weight: 600; text-decoration: none; }
header.top .home span { font-weight: 400; opacity: .7; }
.status { margin-left: auto; font-size: 12px; opacity: .85; }
.status.lost { color: #ffb4b4; }
.logout button { background: transparent; color: #fff; border: 1px solid #57606a; border-radius: 6px; padding: 3px 10px;
                 cursor: pointer; }
main { max-width: 1100px; margin: 0 auto; padding: 20px 24px 60px; }
h1 { font-size: 22px; margin: 8px 0 12px; overflow-wrap: anywhere; }
h2 { font-size: 16px; margin: 24px 0 8px; }
a { color: var(--accent); }
.search { display: flex; gap: 8px; margin-bottom: 8px; }
.search input { flex: 1; padding: 7px 10px; font: inherit; border: 1px solid var(--line); border-radius: 6px; }
button { font: inherit; padding: 6px 12px; border: 1px solid var(--line); border-radius: 6px; background: #fff;
         cursor: pointer; }
.summary, .empty { color: var(--muted); }
table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid var(--line); border-radius: 6px; }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid var(--line); vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f6f8fa; font-weight: 600; font-size: 12px; color: var(--muted); white-space: nowrap; }
td.id, td.environment, td.last_activity, td.num { white-space: nowrap; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
#conversations tbody tr:hover { background: #f6f8fa; }
.details { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0 0 10px; }
.details dt { color: var(--muted); }
.details dd { margin: 0; overflow-wrap: anywhere; }
.counts { display: flex; flex-wrap: wrap; gap: 8px; list-style: none; padding: 0; margin: 0; }
.counts li { background: #fff; border: 1px solid var(--line); border-radius: 12px; padding: 2px 10px; }
.counts .count { font-weight: 600; }
#usage td:not(:first-child), #usage th:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
#usage tfoot th { color: var(--fg); }
#transcript { list-style: none; padding: 0; margin: 0; display: flex; flex-direction: column; gap: 10px; }
.item { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; max-width: 85%; }
.item .meta { display: flex; flex-wrap: wrap; align-items: baseline; gap: 8px; font-size: 12px; color: var(--muted); }
.item .meta time { margin-left: auto; font-variant-numeric: tabular-nums; }
.item .who, .item .label { font-weight: 600; color: var(--fg); }
.message { border-radius: 14px; }
.message.user { align-self: flex-end; background: var(--user); border-color: #b6e3ff; }
.message.agent { align-self: flex-start; background: var(--agent); }
.message .text { white-space: pre-wrap; overflow-wrap: anywhere; margin-top: 2px; }
.action, .button, .attachments, .token_usage { align-self: center; width: 85%; background: #fbfcfd; }
.action .action-name { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; color: var(--fg); }
.action.failed { border-color: #ffcecb; background: #fff8f7; }
.field { margin-top: 6px; }
.field-name { display: block; font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.field pre { margin: 2px 0 0; padding: 6px 8px; background: #f6f8fa; border-radius: 6px; white-space: pre-wrap;
             overflow-wrap: anywhere; font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
.field.error pre { background: #ffebe9; color: var(--error); }
.button-row { margin-top: 4px; display: flex; gap: 8px; align-items: baseline; flex-wrap: wrap; }
.button-label { border: 1px solid var(--accent); color: var(--accent); border-radius: 12px; padding: 1px 10px; }
.files { margin: 4px 0 0; padding-left: 18px; }
.file-info { margin-left: 8px; color: var(--muted); font-size: 12px; }
.tokens-row { margin-top: 2px; font-variant-numeric: tabular-nums; }
.tokens-extra { margin-left: 8px; color: var(--muted); font-size: 12px; }
.login { max-width: 420px; margin: 40px auto; background: #fff; border: 1px solid var(--line); border-radius: 8px;
         padding: 20px 24px; }
.login form { display: flex; flex-direction: column; gap: 8px; }
.login input { padding: 7px 10px; font: inherit; border: 1px solid var(--line); border-radius: 6px; }
.login .error { color: var(--error); }
"""

VIEWER_JS = r"""
"use strict";
(function () {
  var body = document.body;
  var statusEl = document.getElementById("status");
  var POLL_MS = 1500;

  // -- DOM helpers: text always goes in through textContent, never parsed as HTML ----------------------
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      parent.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return parent;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function oneOf(value, allowed, fallback) { return allowed.indexOf(value) >= 0 ? value : fallback; }
  function timeOf(shown) { var t = el("time", null, shown.time); t.setAttribute("title", shown.when || ""); return t; }

  function live() {
    if (!statusEl) return;
    statusEl.className = "status live";
    statusEl.textContent = "Live · updated " + new Date().toLocaleTimeString();
  }
  function lost() {
    if (!statusEl) return;
    statusEl.className = "status lost";
    statusEl.textContent = "Server unreachable, retrying…";
  }
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) {
          window.location.assign("/login/?next=" + encodeURIComponent(location.pathname + location.search));
          throw new Error("signed out");
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      });
  }

  // -- one transcript item (same structure as viewer.item_html) ------------------------------------------
  var SIDES = ["user", "agent", "other"];
  function meta() { return add.apply(null, [el("div", "meta")].concat([].slice.call(arguments))); }

  function renderItem(shown) {
    var kind = shown.kind;
    var li = el("li", "item");
    li.setAttribute("data-kind", String(kind));
    if (kind === "message") {
      li.className = "item message " + oneOf(shown.side, SIDES, "other");
      add(li, meta(el("span", "who", shown.who), timeOf(shown)), el("div", "bubble text", shown.text));
    } else if (kind === "action") {
      li.className = "item action" + (shown.error !== null && shown.error !== undefined ? " failed" : "");
      add(li, meta(el("span", "label", "Action"), el("span", "action-name", shown.name),
                   el("span", "duration", shown.duration), timeOf(shown)));
      [["arguments", "Arguments"], ["result", "Result"], ["error", "Error"]].forEach(function (pair) {
        var value = shown[pair[0]];
        if (value === null || value === undefined) return;
        add(li, add(el("div", "field " + pair[0]), el("span", "field-name", pair[1]), el("pre", "value", value)));
      });
    } else if (kind === "button") {
      li.className = "item button";
      add(li, meta(el("span", "label", "Button"), el("span", "button-event", shown.event), timeOf(shown)),
          add(el("div", "button-row"), el("span", "button-label", shown.label), el("span", "arrow", "→"),
              el("code", "button-value", shown.value)));
    } else if (kind === "attachments") {
      li.className = "item attachments " + oneOf(shown.side, SIDES, "other");
      var files = el("ul", "files");
      (shown.files || []).forEach(function (file) {
        var name;
        if (typeof file.href === "string" && /^\/viewer\/attachments\/\d+\/download\/$/.test(file.href)) {
          name = el("a", "file-name", file.name);
          name.setAttribute("href", file.href);
          name.setAttribute("download", "");
        } else {
          name = el("span", "file-name", file.name);
        }
        add(files, add(el("li"), name, el("span", "file-info", file.info)));
      });
      add(li, meta(el("span", "who", shown.who), el("span", "label", "sent files"), timeOf(shown)), files);
    } else if (kind === "token_usage") {
      li.className = "item token_usage";
      add(li, meta(el("span", "label", "Tokens"), el("span", "model", shown.model), timeOf(shown)),
          add(el("div", "tokens-row"), String(shown.tokens), el("span", "tokens-extra", shown.extra)));
    } else {
      add(li, meta(timeOf(shown)));
    }
    return li;
  }

  // -- the conversation page -------------------------------------------------------------------------------
  function renderConversation(data) {
    var section = document.getElementById("conversation");
    var details = el("dl", "details"), counts = el("ul", "counts");
    details.id = "details"; counts.id = "counts";
    data.conversation.fields.forEach(function (pair) {
      add(details, el("dt", null, pair[0]), el("dd", null, pair[1]));
    });
    data.conversation.counts.forEach(function (pair) {
      add(counts, add(el("li"), el("span", "count", pair[1]), " " + pair[0]));
    });
    var title = el("h1", null, data.conversation.title);
    title.id = "title";
    add(clear(section), title, details, counts);
    document.title = data.conversation.title + " · AgentSight local";

    var rows = clear(document.getElementById("usage-rows"));
    data.usage.rows.forEach(function (row) {
      var tr = el("tr");
      row.forEach(function (cell) { add(tr, el("td", null, cell)); });
      add(rows, tr);
    });
    var totalRow = el("tr");
    data.usage.total.forEach(function (cell) { add(totalRow, el("th", null, cell)); });
    add(clear(document.getElementById("usage-total")), totalRow);

    var list = clear(document.getElementById("transcript"));
    data.items.forEach(function (shown) { add(list, renderItem(shown)); });
    var empty = document.getElementById("empty");
    if (empty && data.items.length) empty.parentNode.removeChild(empty);
  }

  function followConversation() {
    var pk = body.getAttribute("data-pk");
    if (!/^\d+$/.test(pk || "")) return;
    var busy = false;
    function poll() {
      if (busy || document.hidden) return;
      busy = true;
      var version = body.getAttribute("data-version") || "";
      getJSON("/viewer/api/conversations/" + pk + "/?version=" + encodeURIComponent(version)).then(function (data) {
        live();
        if (!data.changed) return;
        var doc = document.documentElement;
        var atBottom = window.innerHeight + window.scrollY >= doc.scrollHeight - 40;
        renderConversation(data);
        body.setAttribute("data-version", data.version);
        if (atBottom) window.scrollTo(0, doc.scrollHeight);
      }, lost).then(function () { busy = false; }, function () { busy = false; });
    }
    live();
    setInterval(poll, POLL_MS);
  }

  // -- the conversation list -------------------------------------------------------------------------------
  function renderRow(summary) {
    var tr = el("tr");
    tr.setAttribute("data-pk", String(summary.pk));
    var link = el("a", "conv-link", summary.conversation_id);
    if (/^\/conversations\/\d+\/$/.test(summary.href)) link.setAttribute("href", summary.href);
    add(tr, add(el("td", "id"), link));
    ["name", "customer", "environment", "last_activity"].forEach(function (key) {
      add(tr, el("td", key, summary[key]));
    });
    ["messages", "actions", "tokens"].forEach(function (key) { add(tr, el("td", "num " + key, summary[key])); });
    return tr;
  }

  function followList() {
    var input = document.getElementById("search");
    var form = document.getElementById("search-form");
    var rows = document.getElementById("conversation-rows");
    var summaryEl = document.getElementById("summary");
    var query = input ? input.value : "";
    var asked = 0, shown = "", timer = null;
    function refresh() {
      var mine = ++asked;
      return getJSON("/viewer/api/conversations/?q=" + encodeURIComponent(query)).then(function (data) {
        if (mine !== asked) return;  // a newer search is on its way
        live();
        body.setAttribute("data-query", query);
        var key = JSON.stringify([data.results, data.summary]);
        if (key === shown) return;
        shown = key;
        clear(rows);
        data.results.forEach(function (summary) { add(rows, renderRow(summary)); });
        if (summaryEl) summaryEl.textContent = data.summary;
      }, lost);
    }
    function search() {
      query = input.value;
      history.replaceState(null, "", query ? "/?q=" + encodeURIComponent(query) : "/");
      refresh();
    }
    if (input) {
      input.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(search, 150); });
    }
    if (form) {
      form.addEventListener("submit", function (event) { event.preventDefault(); clearTimeout(timer); search(); });
    }
    live();
    setInterval(function () { if (!document.hidden) refresh(); }, POLL_MS);
  }

  var page = body.getAttribute("data-page");
  if (page === "conversation") followConversation();
  else if (page === "list") followList();
  body.setAttribute("data-ready", "1");  // listeners attached (tests wait for this before typing)
})();
"""
