"""A small OpenAI-compatible HTTP server with scripted replies, for the interoperability tests.

Only ``POST /v1/chat/completions`` (standard library only, 127.0.0.1, a free port):

- the last message is a user message asking about the weather and tools are offered -> a ``tool_calls`` reply
  (``get_weather`` with arguments ``{"city": "Paris"}``, finish_reason ``tool_calls``);
- the last message is a tool result -> ``"It is sunny and 21 C in Paris."``;
- anything else -> an echo of the last user message.

``stream: true`` answers with server-sent events (``chat.completion.chunk`` objects, then ``data: [DONE]``), adding a
final usage chunk when ``stream_options.include_usage`` is set, as OpenAI does; otherwise one JSON completion with
``usage``. Token counts are fixed per kind of reply (:data:`USAGE`) so tests can check them exactly.

In-process: ``with FakeOpenAI() as fake: fake.base_url`` (and ``fake.requests``, the bodies received). As a
module: ``python -m tests.interop.fake_openai`` (or ``python fake_openai.py``) prints ``base_url=<url>`` on its
first line and serves until interrupted or its standard input closes.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "gpt-4o-mini-2024-07-18"  # the response model (what OpenAI answers for a request for "gpt-4o-mini")
TOOL_CALL_ID = "call_fake_weather_1"
TOOL_ARGUMENTS = {"city": "Paris"}
WEATHER_ANSWER = "It is sunny and 21 C in Paris."
FINGERPRINT = "fp_fake0001"
# (prompt_tokens, completion_tokens, cached prompt tokens) per kind of reply; prompt_tokens includes the cached ones.
USAGE = {"tool_call": (50, 12, 10), "weather_answer": (80, 9, 32), "echo": (20, 6, 0)}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def scripted_reply(body: dict[str, Any]) -> dict[str, Any]:
    """What to answer: ``{"kind", "content", "tool_calls", "finish_reason"}`` for a request body."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    role = last.get("role")
    if role == "user" and body.get("tools") and "weather" in _text(last.get("content")).lower():
        call = {
            "id": TOOL_CALL_ID,
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps(TOOL_ARGUMENTS)},
        }
        return {"kind": "tool_call", "content": None, "tool_calls": [call], "finish_reason": "tool_calls"}
    if role == "tool":
        return {"kind": "weather_answer", "content": WEATHER_ANSWER, "tool_calls": None, "finish_reason": "stop"}
    question = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    return {"kind": "echo", "content": f"You said: {question}", "tool_calls": None, "finish_reason": "stop"}


def usage_of(kind: str) -> dict[str, Any]:
    prompt, completion, cached = USAGE[kind]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _send_json(self, status: int, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_fake_{self.server.next_id()}")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": {"message": message, "type": "invalid_request_error", "code": None}})

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._error(404, f"no route GET {self.path}")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no route POST {self.path}")
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._error(400, "body is not JSON")
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
            self._error(400, "model and messages are required")
            return
        self.server.record(body)
        reply = scripted_reply(body)
        completion_id = f"chatcmpl-fake{self.server.next_id():04d}"
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(completion_id, created, reply, include_usage)
            return
        message: dict[str, Any] = {"role": "assistant", "content": reply["content"], "refusal": None}
        if reply["tool_calls"]:
            message["tool_calls"] = reply["tool_calls"]
        self._send_json(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": MODEL,
                "system_fingerprint": FINGERPRINT,
                "service_tier": "default",
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": reply["finish_reason"]}
                ],
                "usage": usage_of(reply["kind"]),
            },
        )

    def _stream(self, completion_id: str, created: int, reply: dict[str, Any], include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", f"req_fake_{self.server.next_id()}")
        self.end_headers()

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            document: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": MODEL,
                "system_fingerprint": FINGERPRINT,
                "service_tier": "default",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                document["usage"] = None
            return document

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if reply["tool_calls"]:
            for index, call in enumerate(reply["tool_calls"]):
                arguments = call["function"]["arguments"]
                head = {"index": index, "id": call["id"], "type": "function"}
                head["function"] = {"name": call["function"]["name"], "arguments": ""}
                events.append(chunk({"tool_calls": [head]}))
                for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                    events.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        else:
            words = reply["content"].split(" ")
            for n, word in enumerate(words):
                events.append(chunk({"content": word if n == 0 else " " + word}))
        events.append(chunk({}, reply["finish_reason"]))
        if include_usage:
            events.append(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": MODEL,
                    "system_fingerprint": FINGERPRINT,
                    "service_tier": "default",
                    "choices": [],
                    "usage": usage_of(reply["kind"]),
                }
            )
        for event in events:
            self._write_chunk(f"data: {json.dumps(event)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")  # end of the chunked body

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self._lock = threading.Lock()
        self._counter = 0
        self.requests: list[dict[str, Any]] = []

    def next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)


class FakeOpenAI:
    """The fake server on a background thread: ``with FakeOpenAI() as fake:`` -> ``fake.base_url``."""

    def __init__(self) -> None:
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeOpenAI:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What to give the ``openai`` client as ``base_url`` (ends in ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The chat completion request bodies received so far, in order."""
        assert self._server is not None, "not started"
        with self._server._lock:
            return list(self._server.requests)


def main() -> None:
    with FakeOpenAI() as fake:
        print(f"base_url={fake.base_url}", flush=True)
        try:
            sys.stdin.read()  # serve until standard input closes (or Ctrl-C)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
