"""`agentsight-otel tail` against a live local server: a real subprocess whose stdout lines are read as items
are tracked, stopped with SIGINT as Ctrl-C would."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentsight_otel import ConversationTracker
from agentsight_otel.localserver import LocalServer, generate_api_key
from agentsight_otel.tail import format_item, terminal_safe

from .helpers import wait_until

CLI = [sys.executable, "-m", "agentsight_otel.cli", "tail"]


class Tail:
    """A running `agentsight-otel tail`: its stdout and stderr lines arrive in queues as they are printed."""

    def __init__(self, args: list[str], cwd: Path, key: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSIGHT_")}
        env["PYTHONUNBUFFERED"] = "1"
        if key:
            env["AGENTSIGHT_API_KEY"] = key  # the documented way, which keeps the key out of `ps`
        self.proc = subprocess.Popen(
            CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.err_lines: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream, sink) -> None:
        for line in stream:
            sink.put(line.rstrip("\n"))

    def lines(self, count: int, timeout: float = 15.0) -> list[str]:
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            try:
                got.append(self.out.get(timeout=max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                raise AssertionError(f"got {len(got)} of {count} lines: {got}; stderr: {self.stderr()}") from None
        return got

    def no_more_lines(self, wait: float = 0.6) -> None:
        with pytest.raises(queue.Empty):
            extra = self.out.get(timeout=wait)
            raise AssertionError(f"unexpected line: {extra}")

    def stderr_line(self, containing: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.err_lines:
                if containing in line:
                    return line
            try:
                self.err_lines.append(self.err.get(timeout=max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                raise AssertionError(f"no stderr line with {containing!r}: {self.err_lines}") from None

    def stderr(self) -> str:
        while not self.err.empty():
            self.err_lines.append(self.err.get_nowait())
        return "\n".join(self.err_lines)

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT, then the exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=15)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def tails(tmp_path):
    started: list[Tail] = []

    def start(args: list[str], key: str | None = None) -> Tail:
        tail = Tail(args, tmp_path, key)
        started.append(tail)
        return tail

    yield start
    for tail in started:
        tail.close()


def polled(server: LocalServer, path: str = "/api/feed/", times: int = 1) -> bool:
    return sum(1 for entry in server.request_log() if entry["path"].startswith(path)) >= times


def fields(line: str) -> list[str]:
    """time, conversation id, kind, rest."""
    return line.split(None, 3)


def test_tail_prints_one_line_per_new_item_and_stops_on_ctrl_c(server, tracker, tails):
    tail = tails(["--url", server.url, "--interval", "0.1", "--lines", "0"], key=server.api_key)
    assert "following every conversation on " + server.url in tail.stderr_line("following")
    wait_until(lambda: polled(server))  # its cursor is set: what comes next is new

    tracker.get_or_create_conversation("conv-a", name="Order status")
    tracker.track_human_message("Where is my order?\nIt is late.\x1b[31m")
    tracker.track_action("lookup_order", tools_used={"order_id": 1042}, response="shipped", duration_ms=42)
    tracker.track_token_usage(prompt_tokens=100, completion_tokens=20, total_tokens=120, model="gpt-4o-mini")
    tracker.track_agent_message("It has shipped.")
    tracker.track_button("quick_reply", "Track it", "track")
    tracker.track_action("refund", error_msg="card declined")
    tracker.send_tracked_data()
    lines = tail.lines(6)
    assert [fields(line)[1:3] for line in lines] == [
        ["conv-a", "user"],
        ["conv-a", "action"],
        ["conv-a", "tokens"],
        ["conv-a", "agent"],
        ["conv-a", "button"],
        ["conv-a", "action"],
    ]
    assert all(len(fields(line)[0]) == 12 and fields(line)[0][2] == ":" for line in lines)
    assert lines[0].endswith("user    Where is my order?\\nIt is late.\\x1b[31m")  # one line, nothing raw
    assert lines[1].endswith('action  lookup_order({"order_id": 1042}) -> shipped [42 ms]')
    assert lines[2].endswith("tokens  gpt-4o-mini: 100 in / 20 out / 120 total")
    assert lines[4].endswith("button  [Track it] -> track (quick_reply)")
    assert "refund() error: card declined" in lines[5]
    tail.no_more_lines()

    # a second batch, of another conversation: only the new items
    tracker.get_or_create_conversation("conv-b")
    tracker.track_human_message("hello from b")
    tracker.send_tracked_data()
    assert fields(tail.lines(1)[0])[1:] == ["conv-b", "user", "hello from b"]
    tail.no_more_lines()

    assert tail.interrupt() == 0
    assert "Traceback" not in tail.stderr() and server.api_key not in tail.stderr()


def test_tail_of_one_conversation_without_a_key_shows_its_last_items_first(server, tracker, tails):
    for cid in ("conv-a", "conv-b"):
        tracker.get_or_create_conversation(cid)
        for n in range(4):
            tracker.track_human_message(f"{cid} message {n}")
        tracker.send_tracked_data()
    # no key: a server bound to loopback serves the feed keyless (as to its viewer)
    tail = tails(["--url", server.url + "/", "--conversation", "conv-a", "--lines", "3", "--interval", "0.1"])
    assert [fields(line)[3] for line in tail.lines(3)] == [f"conv-a message {n}" for n in (1, 2, 3)]
    tail.no_more_lines()
    for cid in ("conv-b", "conv-a"):
        tracker.get_or_create_conversation(cid)
        tracker.track_agent_message(f"{cid} answer")
        tracker.send_tracked_data()
    assert fields(tail.lines(1)[0])[1:] == ["conv-a", "agent", "conv-a answer"]
    tail.no_more_lines()
    assert polled(server, "/viewer/api/feed/") and not polled(server, "/api/feed/")
    assert tail.interrupt() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ship(server: LocalServer, cid: str, text: str) -> None:
    tracker = ConversationTracker()
    tracker.configure(api_key=server.api_key, endpoint=server.url)
    try:
        tracker.get_or_create_conversation(cid)
        tracker.track_human_message(text)
        assert tracker.send_tracked_data()["summary"]["errors"] == 0
    finally:
        tracker.shutdown()


def test_tail_waits_for_the_server_and_follows_a_restarted_one(tails):
    port, key = _free_port(), generate_api_key()
    tail = tails(["--url", f"http://127.0.0.1:{port}", "--interval", "0.1"], key=key)
    assert "does not answer" in tail.stderr_line("does not answer")
    with LocalServer(port=port, api_keys=[key]) as first:
        _ship(first, "before-restart", "one")
        assert fields(tail.lines(1)[0])[1:] == ["before-restart", "user", "one"]
        tail.stderr_line("answers again")
        _ship(first, "before-restart", "two")
        assert fields(tail.lines(1)[0])[3] == "two"
    # a new server on the same address starts with an empty in-memory database: tail starts over
    with LocalServer(port=port, api_keys=[key]) as second:
        _ship(second, "after-restart", "three")
        assert fields(tail.lines(1)[0])[1:] == ["after-restart", "user", "three"]
        tail.no_more_lines()
    assert tail.interrupt() == 0


def test_tail_stops_with_status_2_on_a_refused_key_without_printing_it(server, tails):
    other = generate_api_key()
    tail = tails(["--url", server.url], key=other)
    assert tail.proc.wait(timeout=15) == 2
    err = tail.stderr()
    assert "refused the key (HTTP 401)" in err and other not in err and "Traceback" not in err
    bad = tails(["--url", server.url, "--api-key", "not-a-key"])
    assert bad.proc.wait(timeout=15) == 2 and "not-a-key" not in bad.stderr()


def test_tail_stops_with_status_2_on_a_server_without_a_feed(tails, tmp_path):
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        tail = tails(["--url", f"http://127.0.0.1:{httpd.server_port}"])
        assert tail.proc.wait(timeout=15) == 2
        assert "has no change feed" in tail.stderr()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_format_item_and_terminal_safety():
    conversation = {"conversation_id": "c\x1b]0;title\x07"}
    line = format_item(
        {
            "type": "attachments",
            "timestamp": "2025-01-02T03:04:05.678901+00:00",
            "sender": "agent",
            "files": [{"filename": "a.pdf", "size": 12}, {"name": "b\u202etxt.exe", "size": 3}],
            "conversation": conversation,
        }
    )
    assert line == "03:04:05.678  c\\x1b]0;title\\x07  files   agent sent a.pdf (12 B), b\\u202etxt.exe (3 B)"
    assert terminal_safe("tab\there\r\n\u2028ok é 🙂") == "tab\\there\\r\\n\\u2028ok é 🙂"
    later = format_item(
        {"type": "message", "timestamp": "2025-01-02T05:04:05.5+02:00", "sender": "end_user", "content": "hi"}
    )
    assert later == "03:04:05.500  ?  user    hi"
