"""``agentsight-otel demo``: one sample conversation with every item type, shipped and read back.

With no ``AGENTSIGHT_API_KEY`` it starts the local AgentSight-compatible server on a free loopback port, ships
there, and prints the transcript as the server stored it; with a key it ships to the configured endpoint.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any, Callable

from .config import ENV_SPOOL_DIR, resolve_settings
from .errors import InvalidApiKeyException
from .tracker import ConversationTracker

INVOICE = b"%PDF-1.4\n% demo invoice for order 1042\n"


def track_sample_conversation(tracker: ConversationTracker, conversation_id: str) -> dict[str, Any]:
    """A short support exchange: messages from both sides, a tool call, a button, a file and token usage."""
    tracker.get_or_create_conversation(
        conversation_id,
        customer_id="customer-42",
        device="desktop",
        language="en",
        name="Order status",
        metadata={"plan": "pro", "channel": "web"},
    )
    tracker.track_human_message("Hi! Where is my order #1042?")
    started = time.time()
    tracker.track_action(
        "lookup_order",
        tools_used={"order_id": 1042},
        response='{"status": "shipped", "eta": "tomorrow"}',
        duration_ms=round((time.time() - started) * 1000 + 42, 1),
    )
    tracker.track_token_usage(prompt_tokens=182, completion_tokens=41, total_tokens=223, model="gpt-4o-mini")
    tracker.track_agent_message("Order #1042 has shipped and arrives tomorrow. Want the tracking link?")
    tracker.track_button("quick_reply", "Yes, send the link", "send_tracking_link")
    tracker.track_attachments(
        [{"filename": "invoice-1042.pdf", "mime_type": "application/pdf", "data": base64.b64encode(INVOICE).decode()}],
        "agent",
    )
    tracker.track_agent_message("Here it is, with your invoice attached: https://example.invalid/track/1042")
    return tracker.send_tracked_data()


def format_transcript(transcript: dict[str, Any]) -> str:
    """The server's transcript as text, one line per item, in the order the server stored them."""
    conv = transcript["conversation"]
    lines = [
        f"Conversation {conv['conversation_id']} — {conv.get('name') or 'unnamed'}"
        f" (customer {conv.get('customer_id') or '-'}, {conv.get('environment') or 'default environment'})"
    ]
    for item in transcript["items"]:
        when = item["timestamp"][11:23]
        kind = item["type"]
        if kind == "message":
            who = "user " if item["sender"] == "end_user" else "agent"
            text = f"{who}   {item['content']}"
        elif kind == "action":
            result = f"error: {item['error']}" if item.get("error") else f"-> {item.get('response')}"
            arguments = json.dumps(item["arguments"]) if item.get("arguments") is not None else ""
            took = f" [{item['duration_ms']} ms]" if item.get("duration_ms") else ""
            text = f"action  {item['name']}({arguments}) {result}{took}"
        elif kind == "button":
            text = f"button  [{item['label']}] -> {item['value']}"
        elif kind == "attachments":
            names = ", ".join(f"{f.get('filename')} ({f.get('size')} B)" for f in item["files"])
            text = f"files   {item['sender']} sent {names}"
        elif kind == "token_usage":
            text = f"tokens  {item['model']}: {item['input_tokens']} in / {item['output_tokens']} out"
        else:
            text = kind
        lines.append(f"  {when}  {text}")
    total = transcript.get("token_usage", {}).get("total", {})
    if total:
        lines.append(
            f"Token usage: {total.get('input_tokens', 0)} in, {total.get('output_tokens', 0)} out, "
            f"{total.get('total_tokens', 0)} total"
        )
    return "\n".join(lines)


def _summary_line(result: dict[str, Any]) -> str:
    failed = [i for i in result["items"] if not i["success"]]
    line = f"sent {len(result['items'])} item(s): {result['summary']}"
    if failed:
        line += f"\n{len(failed)} failed: {failed[0].get('error')}"
    return line


@contextlib.contextmanager
def _spool_in(directory: str | None) -> Iterator[None]:
    """``AGENTSIGHT_SPOOL_DIR`` set to ``directory`` for the block (unchanged when ``None``)."""
    if directory is None:
        yield
        return
    before = os.environ.get(ENV_SPOOL_DIR)
    os.environ[ENV_SPOOL_DIR] = directory
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_SPOOL_DIR, None)
        else:
            os.environ[ENV_SPOOL_DIR] = before


def run(print_: Callable[[str], None] = print, keep_serving: bool = False) -> int:
    """Run the demo; returns a process exit code (0 when every item was delivered, 2 for a malformed key)."""
    try:
        key = resolve_settings().api_key  # from the environment or a .env file
    except ValueError as exc:  # a setting is set but unusable: going local instead would hide it
        what = "AGENTSIGHT_API_KEY is" if isinstance(exc, InvalidApiKeyException) else "an AGENTSIGHT_* setting is"
        print_(f"{what} set but unusable: {exc}. Fix it, or unset it to run against a local server.")
        return 2
    if key:
        return _run(print_, keep_serving, None)
    # A local server lives as long as the demo: what it could not take would wait in a spool for a port that is
    # gone, so that spool is temporary rather than in the user's state directory.
    with tempfile.TemporaryDirectory(prefix="agentsight-demo-") as spool, _spool_in(spool):
        return _run(print_, keep_serving, spool)


def _run(print_: Callable[[str], None], keep_serving: bool, local_spool: str | None) -> int:
    from .localserver import LocalServer

    conversation_id = f"demo-{uuid.uuid4().hex[:8]}"
    tracker = ConversationTracker()
    server: LocalServer | None = None
    if local_spool is not None:
        server = LocalServer().start()
        tracker.configure(api_key=server.api_key, endpoint=server.url)
        print_(f"No AGENTSIGHT_API_KEY set: shipping to a local AgentSight-compatible server at {server.url}")
    try:
        result = track_sample_conversation(tracker, conversation_id)
        print_(_summary_line(result))
        if server is not None:
            transcript = server.transcript(conversation_id)
            if transcript is None:
                print_("the local server stored nothing for the conversation")
                return 1
            print_("\nTranscript as the server stored it:\n" + format_transcript(transcript))
            if not keep_serving:
                print_(f"\nViewer: {server.url}/ (it stops with the demo: add --keep-serving to browse it)")
            if keep_serving:
                page = f"{server.url}/conversations/{transcript['conversation']['id']}/"
                print_(f"\nViewer: {server.url}/  (this conversation: {page})")
                print_(f"Follow it in a terminal: agentsight-otel tail --url {server.url}")
                print_(f"Serving {server.url} until interrupted (Ctrl-C)")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
        return 0 if all(i["success"] for i in result["items"]) else 1
    finally:
        tracker.shutdown()
        if server is not None:
            server.stop()
