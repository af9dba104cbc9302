"""Whole-system resilience: a chaos run under every fault, a killed process, and logs free of the key."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from agentsight_otel import ConversationTracker
from agentsight_otel.localserver import Faults, LocalServer, generate_api_key

from .helpers import run_in_threads, wait_until

CHAOS = Faults(
    status_rates={429: 0.04, 500: 0.02, 502: 0.04, 503: 0.04, 504: 0.04},
    retry_after="0",
    latency=(0.0, 0.01),
    reset_rate=0.03,
    accept_then_fail_rate=0.05,
    max_ingest_bytes=24_000,
    seed=20261130,
)


def _track_random(t, cid, rng, count):
    """Track ``count`` random items into ``cid``; returns what the transcript must show, in order."""
    expected = []
    for n in range(count):
        kind = rng.choice(("user", "agent", "action", "button", "tokens"))
        if kind == "user":
            t.track_human_message(f"{cid} u{n} " + "x" * rng.randint(0, 300), conversation_id=cid)
        elif kind == "agent":
            t.track_agent_message(f"{cid} a{n}", conversation_id=cid)
        elif kind == "action":
            t.track_action(f"tool_{n}", tools_used={"n": n}, response=f"r{n}", conversation_id=cid)
        elif kind == "button":
            t.track_button("click", f"b{n}", f"v{n}", conversation_id=cid)
        else:
            t.track_token_usage(n + 1, n, 2 * n + 1, model="m", conversation_id=cid)
        expected.append((kind, n))
    return expected


def _observed(server, cid):
    kinds = {"message": None, "action": "action", "button": "button", "token_usage": "tokens"}
    seen = []
    for item in (server.transcript(cid) or {"items": []})["items"]:
        if item["type"] == "message":
            tag = item["content"].split(" ")[1]
            seen.append(("user" if tag[0] == "u" else "agent", int(tag[1:])))
        elif item["type"] == "action":
            seen.append(("action", int(item["name"].split("_")[1])))
        elif item["type"] == "button":
            seen.append(("button", int(item["label"][1:])))
        else:
            seen.append((kinds[item["type"]], item["input_tokens"] - 1))
    return seen


def test_chaos_every_item_arrives_exactly_once_and_in_order(tmp_path, caplog):
    caplog.set_level(logging.CRITICAL)  # hundreds of injected failures are expected here
    conversations, per_conversation, sends = 40, 100, 4
    with LocalServer(gzip_ingest=False, faults=CHAOS) as server:
        t = ConversationTracker()
        t.configure(api_key=server.api_key, endpoint=server.url, timeout=2)
        expected: dict[str, list] = {}

        def client(worker):
            rng = random.Random(worker)
            for c in range(worker, conversations, 4):
                cid = f"chaos-{c:02d}"
                expected[cid] = []
                t.get_or_create_conversation(cid, customer_id=f"cust-{c}")
                for _ in range(sends):
                    expected[cid] += _track_random(t, cid, rng, per_conversation // sends)
                    t.send_tracked_data(conversation_id=cid)
                if c == conversations // 2:
                    server.outage(1.0)  # a temporary outage in the middle of the run

        run_in_threads(client, 4)
        exporter = t._exporter_for_export()
        wait_until(lambda: exporter.spool.stats().entries == 0, timeout=240, interval=0.2)
        for cid, items in expected.items():
            assert _observed(server, cid) == items, cid
        stats, faults = exporter.stats(), server.fault_stats()
        print(f"\nchaos: {conversations * per_conversation} items; delivery {json.dumps(stats)}; faults {faults}")
        assert sum(len(v) for v in expected.values()) == conversations * per_conversation
        assert stats["retries"] > 0 and stats["replayed"] > 0 and stats["dead"] == 0
        assert faults["accept_then_fail"] > 0 and faults["reset"] > 0 and faults["outage"] > 0
        t.shutdown()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_process_loses_nothing_it_sent(tmp_path):
    port, key, spool = _free_port(), generate_api_key(), tmp_path / "spool"
    env = dict(
        os.environ,
        AGENTSIGHT_API_KEY=key,
        AGENTSIGHT_API_ENDPOINT=f"http://127.0.0.1:{port}",
        AGENTSIGHT_SPOOL_DIR=str(spool),
        AGENTSIGHT_TIMEOUT="1",
    )
    script = textwrap.dedent("""
        import itertools, sys
        from agentsight_otel import tracker
        for c in itertools.count():
            cid = f"crash-{c}"
            for i in range(10):
                tracker.track_human_message(f"{cid} message {i}", conversation_id=cid)
            report = tracker.send_tracked_data(conversation_id=cid)
            assert all(item.get("spooled") for item in report["items"]), report
            print(cid, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    sent = []
    try:
        while len(sent) < 25:
            line = proc.stdout.readline()
            assert line, "the tracking process ended early"
            sent.append(line.strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL

    with LocalServer(port=port, api_keys=[key]) as server:
        replay = subprocess.run(
            [sys.executable, "-m", "agentsight_otel.cli", "spool", "replay", "--endpoint", server.url],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert replay.returncode == 0, replay.stdout + replay.stderr
        for cid in sent:
            assert [i["content"] for i in server.transcript(cid)["items"]] == [f"{cid} message {i}" for i in range(10)]
        for conversation in server.conversations():  # sent but killed before it could say so: still exactly once
            contents = [i["content"] for i in server.transcript(conversation["conversation_id"])["items"]]
            assert len(contents) == len(set(contents)) == 10
    status = subprocess.run(
        [sys.executable, "-m", "agentsight_otel.cli", "spool", "--dir", str(spool)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "waiting:    0 entries" in status.stdout


def test_the_api_key_appears_nowhere_in_a_failing_runs_output(tmp_path):
    key = generate_api_key()
    with LocalServer(faults=Faults(status_rates={503: 0.3}, reset_rate=0.1, seed=3)) as server:
        script = textwrap.dedent(f"""
            import logging
            logging.basicConfig(level=logging.DEBUG)
            from agentsight_otel import AgentSightSpanExporter, tracker
            tracker.configure(api_key={key!r}, endpoint={server.url!r}, timeout=1)
            print(repr(tracker), repr(AgentSightSpanExporter(api_key={key!r}, endpoint={server.url!r})))
            for c in range(5):
                tracker.track_human_message("hello", conversation_id=f"leak-{{c}}")
                print(tracker.send_tracked_data(conversation_id=f"leak-{{c}}"))
            try:
                tracker.configure(endpoint={key!r})
            except ValueError as exc:
                print("error:", exc)
        """)
        env = dict(os.environ, AGENTSIGHT_SPOOL_DIR=str(tmp_path / "spool"))
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    everything = out.stdout + out.stderr
    assert out.returncode == 0, everything
    assert "rejected the API key" in everything and "HTTP 403" in everything  # the failure is explained
    assert key not in everything and key[4:36] not in everything


@pytest.mark.parametrize("send", ["never", "without waiting", "in flight"])
def test_at_exit_pending_data_is_sent_in_bounded_time_or_left_in_the_spool(tmp_path, send):
    key = generate_api_key()
    with LocalServer(api_keys=[key], faults=Faults(latency=30.0)) as server:  # a server that hangs
        env = dict(
            os.environ,
            AGENTSIGHT_API_KEY=key,
            AGENTSIGHT_API_ENDPOINT=server.url,
            AGENTSIGHT_SPOOL_DIR=str(tmp_path / "spool"),
            AGENTSIGHT_EXIT_TIMEOUT="1",
            AGENTSIGHT_TIMEOUT="20",
        )
        script = textwrap.dedent(f"""
            from agentsight_otel import tracker
            for c in range(3):
                for i in range(5):
                    tracker.track_human_message(f"exit-{{c}} message {{i}}", conversation_id=f"exit-{{c}}")
                if {send != "never"}:  # queued for the background sender
                    tracker.send_tracked_data(conversation_id=f"exit-{{c}}", wait=False)
            if {send == "in flight"}:  # until the sender has taken them and waits for the hanging server
                import time
                processor, deadline = tracker._processor, time.monotonic() + 10
                while (processor._queue or not processor._in_flight) and time.monotonic() < deadline:
                    time.sleep(0.01)
                for c in range(3):  # queued behind the segments in flight: not handed to any sender before exit
                    tracker.track_human_message(f"exit-{{c}} late", conversation_id=f"exit-{{c}}")
                    tracker.send_tracked_data(conversation_id=f"exit-{{c}}", wait=False)
            print("tracked, exiting", flush=True)
        """)
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
        assert out.returncode == 0, out.stderr
        assert took < 8, f"exit took {took:.1f}s"
        server.set_faults(None)
        replay = subprocess.run(
            [sys.executable, "-m", "agentsight_otel.cli", "spool", "replay"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert replay.returncode == 0, replay.stdout + replay.stderr
        for c in range(3):
            late = [f"exit-{c} late"] if send == "in flight" else []
            assert [i["content"] for i in server.transcript(f"exit-{c}")["items"]] == [
                f"exit-{c} message {i}" for i in range(5)
            ] + late


SEGMENTS = 16


def test_a_full_tracker_queue_spills_to_the_spool_instead_of_dropping(server):
    server.set_faults(Faults(latency=1.0))  # the network drains slower than the program tracks
    t = ConversationTracker()
    t.configure(api_key=server.api_key, endpoint=server.url)
    for i in range(
        SEGMENTS * 512 * 8
    ):  # many rolled-over segments across 8 conversations, far more than the queue holds
        t.track_human_message(f"m{i}", conversation_id=f"spill-{i % 8}")
    exporter = t._exporter_for_export()
    assert t._processor is not None and len(t._processor._queue) <= 64
    server.set_faults(None)
    reports = [t.send_tracked_data(conversation_id=f"spill-{c}") for c in range(8)]
    assert all(len(r["items"]) == SEGMENTS * 512 for r in reports)
    wait_until(lambda: exporter.spool.stats().entries == 0, timeout=120, interval=0.2)
    for c in range(8):
        contents = [i["content"] for i in server.transcript(f"spill-{c}")["items"]]
        assert contents == [f"m{i}" for i in range(c, SEGMENTS * 512 * 8, 8)]
    assert exporter.stats()["spooled"] > 0  # the queue did overflow, and nothing was lost
    t.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the fork start method is POSIX-only")
def test_multiprocessing_children_deliver_what_they_tracked_when_they_end(server, tmp_path):
    # multiprocessing ends its children with os._exit (no atexit): what they tracked, sent without waiting or not
    # sent at all, must still go out when they end, as in any process.
    script = textwrap.dedent("""
        import multiprocessing
        from agentsight_otel import tracker

        def work(i):
            tracker.track_human_message(f"child {i}", conversation_id=f"mp-{i}")
            if i % 2:
                tracker.send_tracked_data(conversation_id=f"mp-{i}", wait=False)

        if __name__ == "__main__":
            tracker.track_human_message("parent", conversation_id="mp-parent")
            tracker.send_tracked_data(conversation_id="mp-parent")
            context = multiprocessing.get_context("fork")
            children = [context.Process(target=work, args=(i,)) for i in range(3)]
            for child in children:
                child.start()
            for child in children:
                child.join(60)
            with context.Pool(2) as pool:
                pool.map(work, range(3, 6))
                pool.close()
                pool.join()
            # forkserver children (the default on Linux from Python 3.14) import the tracker afresh
            server_child = multiprocessing.get_context("forkserver").Process(target=work, args=(6,))
            server_child.start()
            server_child.join(60)
    """)
    (tmp_path / "app.py").write_text(script)
    env = dict(os.environ, AGENTSIGHT_API_KEY=server.api_key, AGENTSIGHT_API_ENDPOINT=server.url)
    out = subprocess.run([sys.executable, "app.py"], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for i in range(7):
        assert [m["content"] for m in server.transcript(f"mp-{i}")["items"]] == [f"child {i}"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_child_forked_while_the_attachment_store_was_locked_can_still_keep_files():
    from agentsight_otel.attachments import AttachmentStore, PendingFile

    store = AttachmentStore()
    held, release = threading.Event(), threading.Event()

    def hold():
        with store._lock:  # a parent thread inside put/take at the moment of the fork
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            store.put("c", PendingFile("a.txt", "text/plain", b"hi", "00"))
            code = 0 if store.take("c", "00", "a.txt") is not None else 2
        finally:
            os._exit(code)
    release.set()
    holder.join()
    ended = []

    def child_ended():
        done_pid, status = os.waitpid(pid, os.WNOHANG)
        if done_pid:
            ended.append(status)
        return done_pid

    try:
        wait_until(child_ended, timeout=10)
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the child hung on the attachment store's lock")
    assert os.waitstatus_to_exitcode(ended[0]) == 0
