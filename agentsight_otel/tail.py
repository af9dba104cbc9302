"""``agentsight-otel tail``: follow a local AgentSight-compatible server in a terminal, one line per new item.

It polls the server's change feed (``GET /api/feed/?since=<cursor>`` with the key, or ``/viewer/api/feed/``
without one, which a server bound to loopback answers) and prints each transcript item once, as it arrives::

    01:26:13.054  demo-8c0bfbd6  user    Hi! Where is my order #1042?
    01:26:13.055  demo-8c0bfbd6  action  lookup_order({"order_id": 1042}) -> {"status": "shipped"} [42 ms]

Text from the conversation is made safe for a terminal: line breaks and control characters (escape sequences
included) are shown as ``\\n``, ``\\x1b``…, never sent raw. It stops on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

import requests

from .config import DEFAULT_ENDPOINT, resolve_settings

DEFAULT_URL = "http://127.0.0.1:8787"
_BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F))


class TailError(Exception):
    """A condition that waiting will not fix (bad key, not a local server): the command stops with status 2."""


def terminal_safe(text: str) -> str:
    """One line of inert text: control and bidirectional-override characters are shown escaped."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or 0x7F <= code < 0xA0 or ch in _BIDI_CONTROLS or ch in "\u2028\u2029":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _clock(value: Any) -> str:
    """HH:MM:SS.mmm of an ISO timestamp (as sent: UTC), or 12 blanks."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value[11:23].ljust(12) if len(value) >= 19 else " " * 12
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(timezone.utc)
        return parsed.strftime("%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}"
    return " " * 12


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def describe(item: dict[str, Any]) -> str:
    """The item part of a line: `user    text`, `action  name(args) -> result [12 ms]`, …"""
    kind = item.get("type")
    if kind == "message":
        who = {"end_user": "user", "agent": "agent"}.get(item.get("sender") or "", str(item.get("sender")))
        return f"{who:<7} {_value(item.get('content'))}"
    if kind == "action":
        arguments = "" if item.get("arguments") is None else json.dumps(item["arguments"], ensure_ascii=False)
        if item.get("error"):
            result = f"error: {_value(item['error'])}"
        else:
            result = f"-> {_value(item.get('response'))}" if item.get("response") is not None else "-> (no result)"
        took = item.get("duration_ms")
        took = f" [{took:.1f}".rstrip("0").rstrip(".") + " ms]" if isinstance(took, (int, float)) else ""
        return f"action  {_value(item.get('name'))}({arguments}) {result}{took}"
    if kind == "button":
        return f"button  [{_value(item.get('label'))}] -> {_value(item.get('value'))} ({_value(item.get('event'))})"
    if kind == "attachments":
        names = ", ".join(
            f"{_value(f.get('filename') or f.get('name'))} ({f.get('size', '?')} B)"
            if isinstance(f, dict)
            else _value(f)
            for f in item.get("files") or []
        )
        return f"files   {_value(item.get('sender'))} sent {names}"
    if kind == "token_usage":
        return (
            f"tokens  {_value(item.get('model'))}: {item.get('input_tokens', 0)} in / "
            f"{item.get('output_tokens', 0)} out / {item.get('total_tokens', 0)} total"
        )
    return f"{kind}"


def format_item(item: dict[str, Any]) -> str:
    """One terminal line for one feed item: time, conversation id, then the item."""
    conversation = (item.get("conversation") or {}).get("conversation_id", "?")
    return terminal_safe(f"{_clock(item.get('timestamp'))}  {_value(conversation)}  {describe(item)}")


class Feed:
    """Reads the server's change feed from a cursor: each call to `poll()` gives the items that arrived since."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        conversation: str | None = None,
        *,
        last: int = 0,
        timeout: float = 10.0,
    ) -> None:
        self.base = url.rstrip("/")
        self.path = "/api/feed/" if api_key else "/viewer/api/feed/"
        self.keyed = bool(api_key)
        self.conversation = conversation
        self.last = last
        self.timeout = timeout
        self.cursor: int | None = None
        self.session = requests.Session()
        self.session.trust_env = False  # a local server: no proxy from the environment
        if api_key:
            self.session.headers["Authorization"] = f"Api-Key {api_key}"

    def _get(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.conversation:
            params["conversation_id"] = self.conversation
        response = self.session.get(self.base + self.path, params=params, timeout=self.timeout)
        if response.status_code in (401, 403):
            if self.keyed:
                raise TailError(
                    f"{self.base} refused the key (HTTP {response.status_code}); a server bound to loopback needs "
                    "none: pass --api-key '' to ignore AGENTSIGHT_API_KEY"
                )
            raise TailError(
                f"{self.base} needs a key (it is not bound to loopback): pass --api-key or set AGENTSIGHT_API_KEY"
            )
        if response.status_code == 404:
            raise TailError(
                f"{self.base} has no change feed ({self.path}): tail follows the local server "
                "(`agentsight-otel serve`, or `agentsight-otel demo --keep-serving`)"
            )
        if response.status_code != 200:
            raise requests.ConnectionError(f"HTTP {response.status_code}")
        answer = response.json()
        if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
            raise TailError(f"{self.base}{self.path} did not answer a change feed")
        return answer

    def poll(self) -> Iterator[dict[str, Any]]:
        """Yield the items that arrived since the last poll (the first poll: the last `last` items)."""
        while True:
            if self.cursor is None:
                answer = self._get({"last": self.last})
            else:
                answer = self._get({"since": self.cursor})
                if isinstance(answer.get("latest"), int) and answer["latest"] < self.cursor:
                    self.cursor = 0  # a new server (in-memory database) on the same address: start over
                    continue
            self.cursor = int(answer["cursor"])
            yield from answer["items"]
            if not answer.get("more"):
                return


def resolve_target(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The server URL and key: flags first, then AGENTSIGHT_API_ENDPOINT / AGENTSIGHT_API_KEY (or .env).

    Without a configured endpoint (the hosted service's default) tail goes to the local server's default
    address, http://127.0.0.1:8787.
    """
    settings = resolve_settings(api_key=api_key, endpoint=url)
    endpoint = settings.endpoint
    if url is None and endpoint == DEFAULT_ENDPOINT:
        endpoint = DEFAULT_URL
    return endpoint, settings.api_key


def follow(
    feed: Feed,
    interval: float = 1.0,
    out: TextIO | None = None,
    err: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print new items as they arrive until interrupted; a server that is down is waited for."""
    out = out or sys.stdout
    err = err or sys.stderr
    down = False
    while True:
        try:
            for item in feed.poll():
                out.write(format_item(item) + "\n")
                out.flush()
            if down:
                err.write(f"tail: {feed.base} answers again\n")
                err.flush()
                down = False
        except (requests.ConnectionError, requests.Timeout, ValueError) as exc:
            if not down:
                reason = type(exc).__name__ if isinstance(exc, (requests.ConnectionError, ValueError)) else "timeout"
                err.write(f"tail: {feed.base} does not answer ({reason}); trying again every {interval:g}s\n")
                err.flush()
                down = True
        sleep(interval)


def run(
    url: str | None = None,
    api_key: str | None = None,
    conversation: str | None = None,
    interval: float = 1.0,
    last: int = 10,
) -> int:
    """The `tail` command: 0 when stopped with Ctrl-C, 2 on a problem waiting cannot fix."""
    if interval <= 0:
        print("agentsight-otel tail: error: --interval must be positive", file=sys.stderr)
        return 2
    try:
        endpoint, key = resolve_target(url, api_key)
    except ValueError as exc:  # the messages never contain the key
        print(f"agentsight-otel tail: error: {exc}", file=sys.stderr)
        return 2
    feed = Feed(endpoint, key, conversation, last=max(last, 0))
    which = f"conversation {terminal_safe(conversation)}" if conversation else "every conversation"
    print(f"tail: following {which} on {endpoint} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        follow(feed, interval)
    except TailError as exc:
        print(f"agentsight-otel tail: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # e.g. `agentsight-otel tail | head`: stop quietly, without a second error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0
