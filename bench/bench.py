#!/usr/bin/env python
"""agentsight-otel benchmarks (issue 6): one command, a table on stdout and in bench/results.md.

    .venv/bin/python bench/bench.py            # full run (a few minutes)
    .venv/bin/python bench/bench.py --quick    # short run, smaller workloads
    .venv/bin/python bench/bench.py --profile  # also write cProfile summaries to bench/profiles/

Every measurement runs in a fresh subprocess of this file (``--worker NAME``), so peak RSS figures do not mix; the
local AgentSight server and the bridge run in processes of their own, on loopback only. Ratios are measured side by
side in the same worker process. See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import gc
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
RESULT_MARK = "@@BENCH-RESULT@@ "
MIB = 1024 * 1024

# -- targets (issue 6) -----------------------------------------------------------------------------------------

HOT_MAX_RATIO = 1.5  # each track_* call vs a bare span.add_event() with the same attributes
EXPORT_MAX_RATIO = 0.2  # read + batch + encode vs the OTLP protobuf encoder, per item
E2E_MIN_ITEMS_PER_S = 50_000
BRIDGE_MIN_SPANS_PER_S = 20_000
MEMORY_MAX_GROWTH_MIB = 64
MEMORY_ITEMS = 1_000_000
# Bench-defined (the issue asks to "show" linear growth without a number): per-item cost at 10x the work may be
# at most this much above the 1x figure.
GROWTH_MAX_COST_RATIO = 1.3

# -- sizes ------------------------------------------------------------------------------------------------------

FULL = {
    "hot_calls": 2048,  # calls per timed block (4 tracker span segments of 512 events)
    "hot_rounds": 9,
    "export_conversations": 512,  # one full export call (EXPORT_CHUNK spans) at 1x
    "export_reps": 7,
    "e2e_conversations": 1000,
    "e2e_runs": 3,  # runs of the 1x end to end (half a second each); the 10x run is long enough on its own
    "bridge_spans": 10_000,
    "memory_items": MEMORY_ITEMS,
    "memory_budget": 180.0,
}
QUICK = {
    "hot_calls": 1024,
    "hot_rounds": 3,
    "export_conversations": 512,
    "export_reps": 3,
    "e2e_conversations": 200,
    "e2e_runs": 1,
    "bridge_spans": 4_000,
    "memory_items": 100_000,
    "memory_budget": 60.0,
}
TURNS = 5  # turns per conversation (export, e2e, memory): 4 items per turn, a button every third turn -> 21 items
BRIDGE_TURNS = 5  # the bridge's spans are one turn each (send_tracked_data after every turn)
BRIDGE_SPANS_PER_REQUEST = 2_000  # "collector size": otelcol's batch processor sends up to 8,192
BRIDGE_SENDERS = 4  # concurrent sender connections (otelcol's sending_queue has 10 consumers by default)
E2E_THREADS = 4
EXPORT_CHUNK = 512  # spans per export call, as a BatchSpanProcessor hands them to an exporter
SEGMENT_EVENTS = 512  # events per span in the hot-path baseline (the tracker's own provider rolls over at 512)

# -- the workload: what an agent tracks ----------------------------------------------------------------------------

HUMAN_TEXT = "Where is my order 1042? It was supposed to arrive yesterday and the tracking page says nothing."
AGENT_TEXT = "Your order 1042 shipped yesterday evening and arrives tomorrow before noon; the courier is DHL."
TOOL_ARGS = {"order_id": 1042, "include_tracking": True}
TOOL_RESULT = {"status": "shipped", "carrier": "DHL", "eta": "2025-06-02"}
SMALL_FILE_B64 = "VGhhbmtzIGZvciB5b3VyIG9yZGVyIQpPcmRlcjogMTA0MgpUb3RhbDogNDIuMDAgRVVSCg=="  # a 52-byte text file


def hot_calls() -> dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """Each measured ``track_*`` method with realistic arguments: method name, args, kwargs."""
    return {
        "track_human_message": ("track_human_message", (HUMAN_TEXT,), {}),
        "track_agent_message": ("track_agent_message", (AGENT_TEXT,), {}),
        "track_action": (
            "track_action",
            ("lookup_order",),
            {"tools_used": TOOL_ARGS, "response": TOOL_RESULT, "duration_ms": 42.0},
        ),
        "track_button": ("track_button", ("feedback", "Helpful", "yes"), {}),
        "track_attachments": (
            "track_attachments",
            ([{"filename": "receipt.txt", "mime_type": "text/plain", "data": SMALL_FILE_B64}],),
            {},
        ),
        "track_token_usage": (
            "track_token_usage",
            (),
            {"prompt_tokens": 812, "completion_tokens": 64, "total_tokens": 876, "model": "gpt-4o-mini"},
        ),
    }


def track_turn(tracker: Any, turn: int) -> int:
    """One turn of the realistic mix; returns the number of items tracked."""
    tracker.track_human_message(HUMAN_TEXT)
    tracker.track_action("lookup_order", tools_used=TOOL_ARGS, response=TOOL_RESULT, duration_ms=42.0)
    tracker.track_agent_message(AGENT_TEXT)
    tracker.track_token_usage(prompt_tokens=812, completion_tokens=64, total_tokens=876, model="gpt-4o-mini")
    if turn % 3 == 2:
        tracker.track_button("feedback", "Helpful", "yes")
        return 5
    return 4


def conversation_fields(index: int) -> dict[str, Any]:
    return {"customer_id": f"customer-{index % 997}", "name": "Order status"}


def track_conversation(
    tracker: Any, cid: str, index: int, turns: int = TURNS, wait: bool = True
) -> tuple[int, dict[str, Any]]:
    """A whole conversation, sent at the end; returns (items tracked, the send report)."""
    items = 0
    with tracker.conversation(cid, **conversation_fields(index)):
        for turn in range(turns):
            items += track_turn(tracker, turn)
        report = tracker.send_tracked_data(wait=wait)
    return items, report


def report_failures(report: dict[str, Any]) -> int:
    """Items the send reported as failed (queued items are counted by the server check instead)."""
    return sum(1 for item in report.get("items", ()) if not item.get("success") and not item.get("queued"))


# -- small helpers -------------------------------------------------------------------------------------------------


def rss_kib() -> int:
    """Current resident set size of this process (KiB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux >= 4.0), so VmHWM afterwards is the peak since now."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def has_orjson() -> bool:
    from agentsight_otel import jsondoc

    return bool(getattr(jsondoc, "HAS_ORJSON", False))


def free_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tracker_spans_provider() -> tuple[Any, Any]:
    """An SDK provider whose processor keeps finished spans in memory (for export and bridge inputs)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def item_events(span: Any) -> int:
    """Tracked items carried by a tracker span: its events except the conversation marker."""
    from agentsight_otel import semconv as sc

    return sum(1 for e in span.events if e.name != sc.EVENT_CONVERSATION)


# -- profiling -----------------------------------------------------------------------------------------------------


class AllThreadsProfile:
    """cProfile (of thread CPU time) for the main thread and every thread started after ``start()``, merged."""

    def __init__(self) -> None:
        self._profiles: list[Any] = []
        self._lock = threading.Lock()
        self._main: Any = None

    def start(self) -> AllThreadsProfile:
        import cProfile

        threading.setprofile(self._thread_started)
        self._main = cProfile.Profile(time.thread_time)  # CPU time: a thread waiting for a lock or socket costs none
        self._profiles.append(self._main)
        self._main.enable()
        return self

    def _thread_started(self, frame: Any, event: str, arg: Any) -> None:
        import cProfile

        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self._profiles.append(profile)
        profile.enable()  # replaces this hook for the rest of the thread

    def stop(self) -> None:
        threading.setprofile(None)
        if self._main is not None:
            self._main.disable()

    def write(self, path: Path, title: str, limit: int = 40) -> None:
        import pstats

        merged = None
        for profile in self._profiles:
            try:
                stats = pstats.Stats(profile)
            except (TypeError, ValueError):  # a thread that recorded nothing
                continue
            merged = stats if merged is None else merged.add(stats)
        write_profile(path, title, merged, limit)


def write_profile(path: Path, title: str, stats: Any, limit: int = 40) -> None:
    import io

    out = io.StringIO()
    out.write(f"# {title}\n\n")
    if stats is None:
        out.write("(nothing recorded)\n")
    else:
        stats.stream = out
        out.write(f"## by own time (tottime), top {limit}\n")
        stats.sort_stats("tottime").print_stats(limit)
        out.write(f"\n## by cumulative time, top {limit}\n")
        stats.sort_stats("cumulative").print_stats(limit)
    text = out.getvalue()
    for prefix in _path_prefixes():  # paths relative to the repository, site-packages or the standard library
        text = text.replace(prefix, "")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(text + "\n\n")


def _path_prefixes() -> list[str]:
    import site
    import sysconfig

    prefixes = [str(ROOT) + os.sep, sysconfig.get_paths()["stdlib"] + os.sep]
    prefixes += [p + os.sep for p in site.getsitepackages()]
    return sorted(set(prefixes), key=len, reverse=True)


def profile_call(path: Path, title: str, fn: Callable[[], Any], limit: int = 40) -> Any:
    """Profile one call on this thread and append its summary to ``path``."""
    import cProfile
    import pstats

    profile = cProfile.Profile()
    result = profile.runcall(fn)
    write_profile(path, title, pstats.Stats(profile), limit)
    return result


# ==================================================================================================================
# Workers: each runs in a fresh process and prints one result line (RESULT_MARK + JSON) on stdout.
# ==================================================================================================================


def capture_tracker_events(calls: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]]) -> dict[str, Any]:
    """The span attributes and the events (name, attributes) the tracker produces for one call of each method."""
    from agentsight_otel import ConversationTracker
    from agentsight_otel import semconv as sc

    provider, memory = tracker_spans_provider()
    tracker = ConversationTracker()
    tracker.configure(tracer_provider=provider)
    captured = {}
    for name, (method, args, kwargs) in calls.items():
        cid = f"capture-{name}"
        with tracker.conversation(cid):
            getattr(tracker, method)(*args, **kwargs)
            tracker.send_tracked_data()
        spans = [s for s in memory.get_finished_spans() if (s.attributes or {}).get(sc.CONVERSATION_ID) == cid]
        span = spans[-1]
        captured[name] = {
            "span_name": span.name,
            "span_attributes": dict(span.attributes or {}),
            "events": [(e.name, dict(e.attributes or {})) for e in span.events if e.name != sc.EVENT_CONVERSATION],
        }
        memory.clear()
    return captured


def worker_hot(p: dict[str, Any]) -> dict[str, Any]:
    """Caller-thread CPU per call of each track_* method next to a bare span.add_event() with the same attributes."""
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    from agentsight_otel import ConversationTracker

    calls = hot_calls()
    captured = capture_tracker_events(calls)
    tracker = ConversationTracker()
    tracker.configure(api_key=p["key"], endpoint=p["url"])
    tracer = TracerProvider(span_limits=SpanLimits(max_events=SEGMENT_EVENTS)).get_tracer("bench")
    calls_per_block, rounds = p["calls"], p["rounds"]
    failures = 0
    sequence = 0

    def tracker_block(name: str, count: int, profiler: Any = None) -> float:
        nonlocal failures, sequence
        method, args, kwargs = calls[name]
        sequence += 1
        tracker.get_or_create_conversation(f"hot-{name}-{sequence}", customer_id="customer-1", name="Hot path")
        fn = getattr(tracker, method)
        gc.collect()
        if profiler is not None:
            profiler.enable()
        t0 = time.thread_time()
        for _ in range(count):
            fn(*args, **kwargs)
        elapsed = time.thread_time() - t0
        if profiler is not None:
            profiler.disable()
        failures += report_failures(tracker.send_tracked_data())  # not timed: delivers to the local server
        return elapsed / count * 1e6

    def baseline_block(name: str, count: int) -> float:
        info = captured[name]
        events = info["events"]
        elapsed = 0.0
        done = 0
        gc.collect()
        while done < count:
            n = min(SEGMENT_EVENTS, count - done)
            span = tracer.start_span(info["span_name"], attributes=info["span_attributes"])
            add = span.add_event
            if len(events) == 1:
                args: tuple[Any, ...] = events[0]
                kwargs: dict[str, Any] = {}
                t0 = time.thread_time()
                for _ in range(n):
                    add(*args, **kwargs)
                elapsed += time.thread_time() - t0
            else:  # a method that records several events per call: all of them, per call
                t0 = time.thread_time()
                for _ in range(n):
                    for event in events:
                        add(*event)
                elapsed += time.thread_time() - t0
            span.end()
            done += n
        return elapsed / count * 1e6

    names = list(calls)
    for name in names:  # warm-up: first connection, imports, caches
        tracker_block(name, 64)
        baseline_block(name, 64)
    failures = 0
    samples: dict[str, dict[str, list[float]]] = {n: {"tracker": [], "baseline": []} for n in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            if r % 2 == 0:
                samples[name]["tracker"].append(tracker_block(name, calls_per_block))
                samples[name]["baseline"].append(baseline_block(name, calls_per_block))
            else:
                samples[name]["baseline"].append(baseline_block(name, calls_per_block))
                samples[name]["tracker"].append(tracker_block(name, calls_per_block))
    if p.get("profile_dir"):
        import cProfile
        import pstats

        path = Path(p["profile_dir"]) / "hot.txt"
        path.unlink(missing_ok=True)
        count = p.get("profile_calls", 20_000)
        for name in names:
            profiler = cProfile.Profile()
            tracker_block(name, count, profiler)
            write_profile(
                path,
                f"hot path: {count} calls of {name} (tracker, caller thread; the calls only, span rollovers included)",
                pstats.Stats(profiler),
                limit=25,
            )
        profile_call(
            path,
            f"hot path baseline: span.add_event x {count} (track_action's attributes; span start/end included)",
            lambda: baseline_block("track_action", count),
            limit=15,
        )
    tracker.shutdown()
    return {
        "samples": samples,
        "events": {n: [e[0] for e in captured[n]["events"]] for n in names},
        "attributes": {n: sorted(captured[n]["events"][0][1]) if captured[n]["events"] else [] for n in names},
        "failures": failures,
        "calls": calls_per_block,
        "rounds": rounds,
    }


def build_tracker_spans(conversations: int, turns: int = TURNS) -> tuple[list[Any], int]:
    """Finished spans of ``conversations`` tracked conversations (sent one by one), and the items tracked."""
    from agentsight_otel import ConversationTracker

    provider, memory = tracker_spans_provider()
    tracker = ConversationTracker()
    tracker.configure(tracer_provider=provider)
    items = 0
    for i in range(conversations):
        tracked, _ = track_conversation(tracker, f"conv-{i:07d}", i, turns)
        items += tracked
    spans = list(memory.get_finished_spans())
    memory.clear()
    return spans, items


def export_stages() -> tuple[Callable[..., int], Callable[[Sequence[Any]], int]]:
    """(ours, otlp): each encodes spans export-call by export-call and returns the bytes produced.

    The exporter's stages, as ``AgentSightSpanExporter`` runs them: readers -> batch -> wire, where the wire
    stage gives each conversation block as the JSON bytes that go into the request body.
    """
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans

    from agentsight_otel.batch import group_by_conversation
    from agentsight_otel.readers import SpanReader
    from agentsight_otel.wire import BlockRules, encode

    def ours(spans: Sequence[Any], stages: dict[str, float] | None = None) -> int:
        reader = SpanReader()
        rules = BlockRules()
        size = 0
        if stages is None:
            for chunk in chunks(spans, EXPORT_CHUNK):
                for block in encode(group_by_conversation(reader.read(chunk, release_all=True)), rules):
                    size += len(block.json)
            return size
        clock = time.thread_time
        for chunk in chunks(spans, EXPORT_CHUNK):  # the same, with a clock between the stages
            t0 = clock()
            found = reader.read(chunk, release_all=True)
            t1 = clock()
            batches = group_by_conversation(found)
            t2 = clock()
            for block in encode(batches, rules):
                size += len(block.json)
            t3 = clock()
            for stage, seconds in zip(("read", "batch", "encode"), (t1 - t0, t2 - t1, t3 - t2)):
                stages[stage] = stages.get(stage, 0.0) + seconds
        return size

    def otlp(spans: Sequence[Any]) -> int:
        size = 0
        for chunk in chunks(spans, EXPORT_CHUNK):
            size += len(encode_spans(chunk).SerializeToString())
        return size

    return ours, otlp


def worker_export(p: dict[str, Any]) -> dict[str, Any]:
    """Read + batch + encode of tracker spans next to the OTLP protobuf encoder, per tracked item, on the first
    tenth of the spans (1x) and on all of them (10x), interleaved in this one process so that both scales and both
    encoders meet the same machine."""
    t0 = time.perf_counter()
    spans, _ = build_tracker_spans(p["conversations"] * 10)
    build_s = time.perf_counter() - t0
    # The spans this harness holds are not the exporter's working set: keep the garbage collector from rescanning
    # them, so the cost per item does not depend on how many spans the benchmark built.
    gc.collect()
    gc.freeze()
    ours, otlp = export_stages()
    ours(spans[:50])  # warm-up
    otlp(spans[:50])
    work = {1: spans[: len(spans) // 10], 10: spans}
    items = {scale: sum(item_events(s) for s in subset) for scale, subset in work.items()}
    samples: dict[int, dict[str, list[float]]] = {scale: {"ours": [], "otlp": []} for scale in work}
    sizes: dict[int, dict[str, int]] = {scale: {} for scale in work}
    for rep in range(p["reps"] * 3):
        # The 1x pass is short: three times as many repetitions, so its median is as steady as the 10x one's.
        for scale in (1, 10) if rep % 3 == 0 else (1,):
            for which in ("ours", "otlp") if rep % 2 == 0 else ("otlp", "ours"):
                fn = ours if which == "ours" else otlp
                gc.collect()
                t0 = time.thread_time()
                sizes[scale][which] = fn(work[scale])
                samples[scale][which].append((time.thread_time() - t0) / items[scale] * 1e6)
    stages: dict[int, dict[str, float]] = {}
    for scale, subset in work.items():
        stages[scale] = {}
        gc.collect()
        ours(subset, stages[scale])
    if p.get("profile_dir"):
        subset = work[1]
        path = Path(p["profile_dir"]) / "export.txt"
        path.unlink(missing_ok=True)
        profile_call(
            path,
            f"export: read + batch + encode + dumps of {len(subset)} spans ({items[1]} items)",
            lambda: ours(subset),
        )
        profile_call(
            path,
            f"export baseline: OTLP encode_spans + SerializeToString of {len(subset)} spans",
            lambda: otlp(subset),
            limit=15,
        )
    return {
        "scales": {
            str(scale): {
                "spans": len(work[scale]),
                "items": items[scale],
                "samples": samples[scale],
                "stages": {k: v / items[scale] * 1e6 for k, v in stages[scale].items()},
                "bytes": sizes[scale],
            }
            for scale in work
        },
        "build_s": build_s,
        "peak_rss_kib": peak_rss_kib(),
    }


def worker_e2e(p: dict[str, Any]) -> dict[str, Any]:
    """Conversations tracked and sent by several threads to the local server; items/s and peak RSS."""
    from agentsight_otel import ConversationTracker

    profile = AllThreadsProfile().start() if p.get("profile_dir") else None
    tracker = ConversationTracker()
    tracker.configure(api_key=p["key"], endpoint=p["url"])
    warm_items, warm_report = track_conversation(tracker, "e2e-warmup", 0)  # connection, /api/me/, imports
    warm_failures = report_failures(warm_report)
    gc.collect()
    rss_before = rss_kib()
    conversations, threads = p["conversations"], p["threads"]
    counts = [0] * threads
    failures = [0] * threads
    errors: list[str] = []
    start = threading.Barrier(threads + 1)

    def run(k: int) -> None:
        try:
            start.wait(60)
            for i in range(k, conversations, threads):
                items, report = track_conversation(tracker, f"e2e-{i:07d}", i, wait=p.get("wait", True))
                counts[k] += items
                failures[k] += report_failures(report)
        except Exception as exc:  # noqa: BLE001 - reported, the count check then fails
            errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=run, args=(k,), name=f"bench-tracker-{k}", daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    start.wait(60)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for w in workers:
        w.join(p.get("timeout", 600))
    tracker.flush(timeout=p.get("timeout", 600))  # queued sends are delivered before the clock stops
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    peak = peak_rss_kib()
    tracker.shutdown()
    if profile is not None:
        profile.stop()
        path = Path(p["profile_dir"]) / "e2e-client.txt"
        path.unlink(missing_ok=True)
        profile.write(
            path,
            f"end to end, client process: {threads} tracker thread(s) + the exporter's threads, "
            f"{conversations} conversations (all threads merged)",
        )
    items = sum(counts)
    return {
        "items": items,
        "warmup_items": warm_items,
        "warmup_failures": warm_failures,
        "failed_items": sum(failures),
        "errors": errors[:5],
        "conversations": conversations,
        "threads": threads,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "items_per_s": items / elapsed if elapsed > 0 else 0.0,
        "rss_before_kib": rss_before,
        "peak_rss_kib": peak,
        "alive_threads": sum(w.is_alive() for w in workers),
    }


def build_bridge_requests(spans_total: int, per_request: int, turns: int) -> tuple[list[tuple[bytes, int, int]], int]:
    """gzip OTLP protobuf requests of tracker spans: one span per turn (sent after every turn), conversations
    interleaved as many concurrent chats are. Returns [(body, spans, items)] and the raw protobuf bytes."""
    import gzip

    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans

    from agentsight_otel import ConversationTracker

    provider, memory = tracker_spans_provider()
    tracker = ConversationTracker()
    tracker.configure(tracer_provider=provider)
    conversations = max(1, -(-spans_total // turns))
    requests: list[tuple[bytes, int, int]] = []
    pending: list[Any] = []
    raw_bytes = 0

    def flush(final: bool = False) -> None:
        nonlocal pending, raw_bytes
        pending.extend(memory.get_finished_spans())
        memory.clear()
        while len(pending) >= per_request or (final and pending):
            chunk, pending = pending[:per_request], pending[per_request:]
            raw = encode_spans(chunk).SerializeToString()
            raw_bytes += len(raw)
            requests.append((gzip.compress(raw, 6), len(chunk), sum(item_events(s) for s in chunk)))

    made = 0
    for turn in range(turns):
        for i in range(conversations):
            if made >= spans_total:
                break
            cid = f"bridge-{i:07d}"
            fields = conversation_fields(i) if turn == 0 else {}
            with tracker.conversation(cid, **fields):
                track_turn(tracker, turn)
                tracker.send_tracked_data()
            made += 1
            if made % per_request == 0:
                flush()
    flush(final=True)
    return requests, raw_bytes


def worker_bridge_send(p: dict[str, Any]) -> dict[str, Any]:
    """POST pre-encoded collector-size OTLP requests to the bridge from several connections; spans/s."""
    import http.client
    import urllib.parse

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    t0 = time.perf_counter()
    requests, raw_bytes = build_bridge_requests(p["spans"], p["per_request"], p["turns"])
    build_s = time.perf_counter() - t0
    url = urllib.parse.urlsplit(p["traces_url"])
    next_index = iter(range(len(requests)))
    lock = threading.Lock()
    stats = {"retries": 0, "rejected": 0, "failed_requests": 0}
    errors: list[str] = []
    start = threading.Barrier(p["senders"] + 1)
    deadline = time.monotonic() + p.get("timeout", 600)

    def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes, str | None]:
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        conn.request("POST", url.path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Retry-After")

    def sender() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        start.wait(60)
        while time.monotonic() < deadline:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            body = requests[index][0]
            for _attempt in range(50):
                try:
                    status, answer, retry_after = post(conn, body)
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
                    status, answer, retry_after = -1, str(exc).encode(), "1"
                if status == 200:
                    response = ExportTraceServiceResponse()
                    response.ParseFromString(answer)
                    with lock:
                        stats["rejected"] += response.partial_success.rejected_spans
                    break
                if status in (-1, 429, 502, 503, 504) and time.monotonic() < deadline:
                    with lock:
                        stats["retries"] += 1
                    time.sleep(min(float(retry_after or 1), 5.0))
                    continue
                with lock:
                    stats["failed_requests"] += 1
                    errors.append(f"HTTP {status}: {answer[:200]!r}")
                break
        conn.close()

    senders = [threading.Thread(target=sender, daemon=True) for _ in range(p["senders"])]
    for s in senders:
        s.start()
    start.wait(60)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for s in senders:
        s.join(p.get("timeout", 600))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    spans = sum(r[1] for r in requests)
    return {
        "requests": len(requests),
        "spans": spans,
        "items": sum(r[2] for r in requests),
        "wire_bytes": sum(len(r[0]) for r in requests),
        "raw_bytes": raw_bytes,
        "build_s": build_s,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "spans_per_s": spans / elapsed if elapsed > 0 else 0.0,
        "errors": errors[:5],
        **stats,
    }


def worker_memory(p: dict[str, Any]) -> dict[str, Any]:
    """Track up to a million items with the server unreachable; RSS before and peak after, and the spool on disk."""
    from agentsight_otel import ConversationTracker
    from agentsight_otel.localserver import generate_api_key

    profile = AllThreadsProfile().start() if p.get("profile_dir") else None
    tracker = ConversationTracker()
    tracker.configure(api_key=generate_api_key(), endpoint=f"http://127.0.0.1:{p['closed_port']}")
    t0 = time.perf_counter()
    items, report = track_conversation(tracker, "mem-warmup", 0)  # finds the server unreachable (retries once)
    warmup_s = time.perf_counter() - t0
    warm_spooled = sum(1 for it in report.get("items", ()) if it.get("spooled"))
    gc.collect()
    rss_before = rss_kib()
    peak_before = peak_rss_kib()
    hwm_reset = reset_peak_rss()
    budget_end = time.perf_counter() + p["budget"]
    target = p["items"]
    tracked = 0
    not_spooled = 0
    i = 0
    t0 = time.perf_counter()
    while tracked < target and time.perf_counter() < budget_end:
        i += 1
        n, report = track_conversation(tracker, f"mem-{i:08d}", i)
        tracked += n
        not_spooled += sum(1 for it in report.get("items", ()) if not it.get("success") and not it.get("spooled"))
    elapsed = time.perf_counter() - t0
    peak = peak_rss_kib()
    hwm = proc_status_kib(os.getpid(), "VmHWM") if hwm_reset else None
    rss_after = rss_kib()
    spool_dir = Path(os.environ["AGENTSIGHT_SPOOL_DIR"])
    spool_bytes = sum(f.stat().st_size for f in spool_dir.rglob("*") if f.is_file())
    spool_stats: dict[str, Any] = {}
    exporter = getattr(tracker, "_exporter", None)
    spool = getattr(exporter, "spool", None)
    if spool is not None:
        try:
            s = spool.stats()
            spool_stats = {k: getattr(s, k) for k in ("entries", "bytes", "dropped_entries", "dropped_bytes")}
        except Exception as exc:  # noqa: BLE001 - informational only
            spool_stats = {"error": str(exc)}
    if profile is not None:
        profile.stop()
        path = Path(p["profile_dir"]) / "memory.txt"
        path.unlink(missing_ok=True)
        profile.write(path, f"server unreachable: {tracked} items tracked and spooled (all threads merged)")
    return {
        "items": tracked,
        "target_items": target,
        "completed": tracked >= target,
        "elapsed_s": elapsed,
        "items_per_s": tracked / elapsed if elapsed > 0 else 0.0,
        "warmup_s": warmup_s,
        "warmup_spooled": warm_spooled,
        "not_spooled": not_spooled,
        "rss_before_kib": rss_before,
        "peak_rss_before_kib": peak_before,
        "peak_rss_kib": peak,
        "hwm_since_before_kib": hwm,
        "rss_after_kib": rss_after,
        "spool_bytes_on_disk": spool_bytes,
        "spool": spool_stats,
    }


def worker_serve(p: dict[str, Any]) -> dict[str, Any]:
    """The local server or the bridge in this process with every thread profiled (only for --profile)."""
    profile = AllThreadsProfile().start()
    stop = threading.Event()
    if p["kind"] == "server":
        from agentsight_otel.localserver import LocalServer

        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        server = LocalServer(api_keys=[p["key"]], db_path=":memory:").start()
        print(f"profiled local server listening on {server.url}", flush=True)
        while not stop.wait(0.2):
            pass
        server.stop()
    else:
        from agentsight_otel.bridge import Bridge, BridgeSettings

        bridge = Bridge(BridgeSettings(port=0), api_key=p["key"], endpoint=p["url"], spool_dir=p["spool_dir"])
        bridge.serve_until_signalled(on_ready=lambda b: print(f"profiled bridge on {b.traces_url}", flush=True))
    profile.stop()
    profile.write(Path(p["profile_path"]), p["title"])
    return {}


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "hot": worker_hot,
    "export": worker_export,
    "e2e": worker_e2e,
    "bridge-send": worker_bridge_send,
    "memory": worker_memory,
    "serve": worker_serve,
}


def worker_main(name: str, params: str) -> int:
    result = WORKERS[name](json.loads(params))
    try:
        result["orjson"] = has_orjson()
    except Exception:  # noqa: BLE001
        result["orjson"] = None
    print(RESULT_MARK + json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)  # no exit-time flushing by the package: every measurement is already taken


# ==================================================================================================================
# Orchestrator: processes, sections, the table.
# ==================================================================================================================

_children: list[subprocess.Popen[bytes]] = []


def _child_setup() -> None:
    """In a child, before exec: default SIGINT handling (a background shell starts us with it ignored), and
    SIGTERM from the kernel if the benchmark dies, so that no server outlives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort (not Linux)
        pass


def _kill_children() -> None:
    for child in _children:
        if child.poll() is None:
            child.terminate()
    for child in _children:
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)


class Run:
    """Shared state of one benchmark run: options, the scratch directory, child processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = dict(QUICK if args.quick else FULL)
        if args.memory_budget is not None:
            self.sizes["memory_budget"] = args.memory_budget
        self.scratch = Path(tempfile.mkdtemp(prefix="agentsight-bench-"))
        self.profile_dir = BENCH_DIR / "profiles" if args.profile else None
        self.worker_timeout = 300 if args.quick else 900
        self.orjson: bool | None = None  # what the workers reported
        self.load_start = f"{os.getloadavg()[0]:.2f}"
        self._seq = 0

    def child_env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AGENTSIGHT_", "OTEL_"))
            and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        }
        if "AGENTSIGHT_DISABLE_ORJSON" in os.environ:
            env["AGENTSIGHT_DISABLE_ORJSON"] = os.environ["AGENTSIGHT_DISABLE_ORJSON"]
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env

    def _files(self, name: str) -> tuple[Path, Path, Path]:
        self._seq += 1
        base = self.scratch / f"{self._seq:02d}-{name}"
        (base / "spool").mkdir(parents=True)
        return base, base / "stdout.txt", base / "stderr.txt"

    def spawn(self, name: str, cmd: list[str], **env: str) -> tuple[subprocess.Popen[bytes], Path, Path, Path]:
        base, out, err = self._files(name)
        env.setdefault("AGENTSIGHT_SPOOL_DIR", str(base / "spool"))
        with open(out, "wb") as o, open(err, "wb") as e:
            child = subprocess.Popen(
                cmd,
                cwd=base,
                env=self.child_env(**env),
                stdout=o,
                stderr=e,
                stdin=subprocess.DEVNULL,
                preexec_fn=_child_setup if sys.platform.startswith("linux") else None,
                start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops its children itself
            )
        _children.append(child)
        return child, base, out, err

    def worker(self, name: str, params: dict[str, Any], **env: str) -> dict[str, Any]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--params", json.dumps(params)]
        child, _, out, err = self.spawn(name, cmd, **env)
        try:
            child.wait(self.worker_timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
            raise RuntimeError(f"worker {name} timed out after {self.worker_timeout}s; stderr: {tail(err)}") from None
        for line in out.read_text(errors="replace").splitlines():
            if line.startswith(RESULT_MARK):
                return dict(json.loads(line[len(RESULT_MARK) :]))
        raise RuntimeError(f"worker {name} exited {child.returncode} without a result; stderr: {tail(err)}")

    def start_service(self, name: str, cmd: list[str], **env: str) -> Service:
        child, base, out, err = self.spawn(name, cmd, **env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = re.search(r"https?://[^\s()]+", out.read_text(errors="replace").split("\n", 1)[0])
            if match and out.read_text(errors="replace").count("\n") >= 1:
                return Service(name, child, match.group(0).rstrip(".,"), base, err)
            if child.poll() is not None:
                raise RuntimeError(f"{name} exited {child.returncode} at start: {tail(err)}")
            time.sleep(0.05)
        child.kill()
        raise RuntimeError(f"{name} did not print its URL within 60 s: {tail(err)}")

    def start_server(self, key: str, profile_as: str | None = None) -> Service:
        if profile_as and self.profile_dir:
            params = {
                "kind": "server",
                "key": key,
                "profile_path": str(self.profile_dir / f"{profile_as}.txt"),
                "title": f"local AgentSight server process during {profile_as} (all threads merged)",
            }
            (self.profile_dir / f"{profile_as}.txt").unlink(missing_ok=True)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "serve", "--params", json.dumps(params)]
            return self.start_service("server-profiled", cmd)
        cmd = [
            sys.executable,
            "-m",
            "agentsight_otel.cli",
            "serve",
            "--port",
            "0",
            "--db",
            ":memory:",
            "--api-key",
            key,
        ]
        return self.start_service("server", cmd)

    def start_bridge(self, key: str, server: Service, profile_as: str | None = None) -> Service:
        if profile_as and self.profile_dir:
            base = self.scratch / f"bridge-spool-{self._seq}"
            base.mkdir()
            params = {
                "kind": "bridge",
                "key": key,
                "url": server.url,
                "spool_dir": str(base),
                "profile_path": str(self.profile_dir / f"{profile_as}.txt"),
                "title": "bridge process (HTTP, decode, convert, queue, exporter; all threads merged)",
            }
            (self.profile_dir / f"{profile_as}.txt").unlink(missing_ok=True)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "serve", "--params", json.dumps(params)]
            return self.start_service("bridge-profiled", cmd)
        cmd = [sys.executable, "-m", "agentsight_otel.cli", "bridge", "--port", "0", "--endpoint", server.url]
        return self.start_service("bridge", cmd, AGENTSIGHT_API_KEY=key)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Service:
    """A server or bridge process."""

    def __init__(self, name: str, child: subprocess.Popen[bytes], url: str, base: Path, err: Path) -> None:
        self.name, self.child, self.url, self.base, self.err = name, child, url, base, err

    def peak_rss_kib(self) -> int | None:
        return proc_status_kib(self.child.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        """User + system CPU the process has used so far (all its threads)."""
        try:
            fields = Path(f"/proc/{self.child.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 45) -> int | None:
        """Stop (the bridge drains accepted spans on SIGTERM); returns the peak RSS seen just before."""
        peak = self.peak_rss_kib()
        if self.child.poll() is None:
            self.child.send_signal(sig)
            try:
                self.child.wait(timeout)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait(5)
        return peak


def api_get(url: str, key: str, timeout: float = 120) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Authorization": f"Api-Key {key}", "Accept": "application/json"})
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read())


def stored_counts(server_url: str, key: str) -> tuple[int, int, dict[str, int]]:
    """(conversations, transcript items, items per type) the server stored, read back over HTTP."""
    conversations = 0
    totals: dict[str, int] = {}
    url: str | None = f"{server_url}/api/conversations/?page_size=100"
    pages = 0
    max_pages = 10_000
    while url and pages < max_pages:
        page = api_get(url, key)
        pages += 1
        if pages == 1:
            max_pages = page["count"] // 100 + 2
        for row in page["results"]:
            conversations += 1
            for kind, n in (row.get("counts") or {}).items():
                totals[kind] = totals.get(kind, 0) + int(n)
        url = page.get("next")
        if url:  # keep the request on loopback, whatever host the server put in the link
            url = server_url + url[url.index("/api/") :]
    return conversations, sum(totals.values()), totals


def wait_for_count(server_url: str, key: str, expected: int, wait: float) -> tuple[int, int, dict[str, int], float]:
    """Stored counts, re-read until they reach ``expected`` or ``wait`` seconds pass; also the seconds waited after
    the first read (0 when the first read already had everything)."""
    conversations, items, per_type = stored_counts(server_url, key)
    t0 = time.monotonic()
    waited = 0.0
    while items < expected and waited < wait:
        time.sleep(1.0)
        conversations, items, per_type = stored_counts(server_url, key)
        waited = time.monotonic() - t0
    return conversations, items, per_type, waited


# -- sections --------------------------------------------------------------------------------------------------


def generate_key() -> str:
    from agentsight_otel.localserver import generate_api_key

    return generate_api_key()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def fmt_int(n: float) -> str:
    return f"{n:,.0f}"


def mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def section_hot(run: Run, rows: list[dict[str, Any]], details: list[str]) -> None:
    key = generate_key()
    server = run.start_server(key)
    try:
        res = run.worker(
            "hot",
            {
                "url": server.url,
                "key": key,
                "calls": run.sizes["hot_calls"],
                "rounds": run.sizes["hot_rounds"],
                "profile_dir": str(run.profile_dir) if run.profile_dir else None,
            },
        )
    finally:
        server.stop()
    run.orjson = res.get("orjson")
    details.append("### 1. Hot path\n")
    details.append(
        f"{res['calls']:,} calls per timed block, {res['rounds']} blocks per method, tracker and baseline "
        "blocks alternated; caller-thread CPU (`time.thread_time()`) per call. Tracker: its own provider, "
        f"shipping to a local server process; items not delivered: {res['failures']}.\n"
    )
    details.append("| Method | event | tracker median (best) µs | add_event median (best) µs | ratio median (best) |")
    details.append("|---|---|---|---|---|")
    for name, sample in res["samples"].items():
        t_med, b_med = median(sample["tracker"]), median(sample["baseline"])
        t_min, b_min = min(sample["tracker"]), min(sample["baseline"])
        ratio = t_med / b_med
        events = ", ".join(res["events"][name])
        rows.append(
            {
                "row": "1 Hot path",
                "what": f"`{name}`",
                "measured": f"{t_med:.2f} µs/item (best {t_min:.2f})",
                "baseline": f"{b_med:.2f} µs (best {b_min:.2f}) `add_event`",
                "ratio": f"{ratio:.2f}×",
                "target": f"≤ {HOT_MAX_RATIO}×",
                "result": verdict(ratio <= HOT_MAX_RATIO and res["failures"] == 0),
            }
        )
        details.append(
            f"| `{name}` | `{events}` | {t_med:.2f} ({t_min:.2f}) | {b_med:.2f} ({b_min:.2f}) | "
            f"{ratio:.2f}× ({t_min / b_min:.2f}×) |"
        )
    details.append("")


def section_export(run: Run, rows: list[dict[str, Any]], details: list[str], growth: dict[str, Any]) -> None:
    details.append("### 2. Export\n")
    res = run.worker(
        "export",
        {
            "conversations": run.sizes["export_conversations"],
            "reps": run.sizes["export_reps"],
            "profile_dir": str(run.profile_dir) if run.profile_dir else None,
        },
    )
    details.append(
        f"Spans from the tracker (one per conversation of {TURNS} turns, sent with `send_tracked_data()`) "
        f"through an SDK provider into an `InMemorySpanExporter`; encoded {EXPORT_CHUNK} spans per export "
        "call, as a `BatchSpanProcessor` hands them over. One process builds the 10× spans and times the first "
        "tenth (1×) and all of them (10×), both encoders, interleaved: thread CPU per tracked item, "
        f"{run.sizes['export_reps'] * 3} (1×) and {run.sizes['export_reps']} (10×) repetitions; the stage split "
        f"comes from one more pass with a clock between the stages. Peak RSS of that process (it holds every "
        f"span): {mib(res['peak_rss_kib'])}.\n"
    )
    details.append(
        "| Work | spans | items | ours median (best) µs/item | OTLP median (best) µs/item | ratio | "
        "stages µs/item: read / batch / encode (to JSON bytes) | JSON bytes | protobuf bytes |"
    )
    details.append("|---|---|---|---|---|---|---|---|---|")
    for scale in (1, 10):
        one = res["scales"][str(scale)]
        ours, otlp = median(one["samples"]["ours"]), median(one["samples"]["otlp"])
        ratio = ours / otlp
        growth[f"export-{scale}"] = {"cost": ours, "otlp": otlp}
        stages = " / ".join(f"{one['stages'].get(k, 0.0):.2f}" for k in ("read", "batch", "encode"))
        rows.append(
            {
                "row": "2 Export" + (" (10×)" if scale == 10 else ""),
                "what": f"read + batch + encode, {fmt_int(one['items'])} items",
                "measured": f"{ours:.2f} µs/item (best {min(one['samples']['ours']):.2f})",
                "baseline": f"{otlp:.2f} µs/item (best {min(one['samples']['otlp']):.2f}) OTLP protobuf",
                "ratio": f"{ratio:.2f}×",
                "target": f"≤ {EXPORT_MAX_RATIO}×",
                "result": verdict(ratio <= EXPORT_MAX_RATIO),
            }
        )
        details.append(
            f"| {scale}× | {fmt_int(one['spans'])} | {fmt_int(one['items'])} | {ours:.2f} "
            f"({min(one['samples']['ours']):.2f}) | {otlp:.2f} ({min(one['samples']['otlp']):.2f}) | "
            f"{ratio:.2f}× | {stages} | {fmt_int(one['bytes']['ours'])} | {fmt_int(one['bytes']['otlp'])} |"
        )
    details.append("")


def section_e2e(run: Run, rows: list[dict[str, Any]], details: list[str], growth: dict[str, Any]) -> None:
    details.append("### 3. End to end\n")
    details.append(
        f"{run.args.threads} tracker threads in one client process, each tracking whole conversations "
        f"({TURNS} turns, 21 items) and calling `send_tracked_data(wait={run.args.e2e_wait})` after each "
        "(wait=False hands each conversation to the background sender, which batches many per request; the "
        "clock stops once `flush()` has delivered everything); the local server "
        "(`agentsight-otel serve --db :memory:`) in its own process. Items/s = items tracked / wall time "
        "from the first call to the last send's answer. Stored = the sum of `counts` over "
        "`GET /api/conversations/` pages. Client peak RSS = `ru_maxrss` of a fresh process. CPU: the client's "
        "during the timed run, the server's while the client process ran; with 2 cores, a process near the wall "
        "time is saturated (one core's worth, which is all the GIL gives a Python process).\n"
    )
    details.append(
        "| Work | conversations | items tracked | stored | failed items | seconds | items/s | "
        "CPU s: client / server | client RSS before → peak | server peak RSS |"
    )
    details.append("|---|---|---|---|---|---|---|---|---|---|")
    all_runs: list[str] = []
    for scale in (1, 10):
        conversations = int(run.sizes["e2e_conversations"]) * scale
        runs = [e2e_run(run, conversations) for _ in range(int(run.sizes["e2e_runs"]) if scale == 1 else 1)]
        # The median run by rate stands for the scale: one short run on a shared VM swings by ±15%.
        median = sorted(runs, key=lambda r: r.client["items_per_s"])[len(runs) // 2]
        res, expected, stored = median.client, median.expected, median.stored
        # Every run must store exactly what it tracked (no loss, no duplicate) and report no failed item.
        exact = all(r.stored == r.expected and not r.client["failed_items"] for r in runs)
        ok = res["items_per_s"] >= E2E_MIN_ITEMS_PER_S and exact
        growth[f"e2e-{scale}"] = {
            "cost": 1e6 / res["items_per_s"],
            "rss": res["peak_rss_kib"],
            "rss_before": res["rss_before_kib"],
        }
        rows.append(
            {
                "row": "3 End to end" + (" (10×)" if scale == 10 else ""),
                "what": f"tracker → local server, {fmt_int(res['items'])} items, {res['threads']} threads",
                "measured": f"{fmt_int(res['items_per_s'])} items/s; stored {fmt_int(stored)}/{fmt_int(expected)}; "
                f"client peak RSS {mib(res['peak_rss_kib'])}",
                "baseline": "—",
                "ratio": "—",
                "target": f"≥ {E2E_MIN_ITEMS_PER_S:,} items/s, nothing lost",
                "result": verdict(ok),
            }
        )
        details.append(
            f"| {scale}× | {fmt_int(conversations)} (+1 warm-up) | {fmt_int(expected)} | {fmt_int(stored)} "
            f"({median.stored_conversations} conversations"
            f"{f', {median.waited_s:.0f} s after the run' if median.waited_s else ''}) | "
            f"{res['failed_items']} | {res['elapsed_s']:.2f} | {fmt_int(res['items_per_s'])} | "
            f"{res['cpu_s']:.1f} / {median.server_cpu_s:.1f} | "
            f"{mib(res['rss_before_kib'])} → {mib(res['peak_rss_kib'])} | {mib(median.server_peak_kib)} |"
        )
        if len(runs) > 1:
            rates = ", ".join(
                fmt_int(r.client["items_per_s"])
                + ("" if r.stored == r.expected else f" (stored {fmt_int(r.stored)} of {fmt_int(r.expected)})")
                + (f" ({r.client['failed_items']} failed items)" if r.client["failed_items"] else "")
                for r in runs
            )
            all_runs.append(f"{scale}×: {rates} items/s")
        for r in runs:
            if r.client["errors"]:
                details.append(f"\nErrors in tracker threads: {r.client['errors']}\n")
    details.append(f"\nStored per type (10×): {median.per_type}\n")
    if all_runs:
        details.append(
            "Rates of every run (each with a fresh client and server; the table shows the median one): "
            + "; ".join(all_runs)
            + "\n"
        )


class E2ERun(NamedTuple):
    client: dict[str, Any]  # what the client worker reported
    server_cpu_s: float
    expected: int  # items tracked, warm-up included
    stored_conversations: int
    stored: int
    per_type: dict[str, int]
    waited_s: float  # how long after the run the stored count took to reach ``expected``
    server_peak_kib: int | None


def e2e_run(run: Run, conversations: int) -> E2ERun:
    """One end-to-end run: a fresh client process tracking ``conversations`` into a fresh local server."""
    key = generate_key()
    server = run.start_server(key)
    try:
        server_cpu = server.cpu_seconds()
        res = run.worker(
            "e2e",
            {
                "url": server.url,
                "key": key,
                "conversations": conversations,
                "threads": run.args.threads,
                "timeout": run.worker_timeout - 60,
                "wait": run.args.e2e_wait,
            },
        )
        server_cpu = server.cpu_seconds() - server_cpu  # the client's start-up and warm-up included
        expected = res["items"] + res["warmup_items"]
        stored_conv, stored, per_type, waited = wait_for_count(server.url, key, expected, 10)
    finally:
        server_peak = server.stop()
    return E2ERun(res, server_cpu, expected, stored_conv, stored, per_type, waited, server_peak)


def section_bridge(run: Run, rows: list[dict[str, Any]], details: list[str], growth: dict[str, Any]) -> None:
    details.append("### 4. Bridge\n")
    details.append(
        f"Tracker spans (one per turn: `send_tracked_data()` after every turn, {BRIDGE_TURNS} turns per "
        "conversation, conversations interleaved) encoded up front with `encode_spans(...)"
        f".SerializeToString()` into gzip requests of {BRIDGE_SPANS_PER_REQUEST:,} spans, POSTed from a "
        f"sender process over {BRIDGE_SENDERS} keep-alive connections to `agentsight-otel bridge` (own "
        "process), which exports to the local server (own process). Spans/s = spans / wall time from the "
        "first POST to the last answer (the bridge answers once the spans are delivered or spooled). CPU: the "
        "sender's during the POSTs, the bridge's and the server's over the sender process's life (they are idle "
        "while it builds its requests).\n"
    )
    details.append(
        "| Work | requests | spans | items | wire MiB (raw) | seconds | spans/s | retries (503) | "
        "CPU s: sender / bridge / server | stored / items | bridge peak RSS | server peak RSS |"
    )
    details.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    exporter_stats: dict[str, Any] = {}
    for scale in (1, 10):
        key = generate_key()
        server = run.start_server(key)
        bridge = None
        try:
            bridge = run.start_bridge(key, server)
            cpu0 = (bridge.cpu_seconds(), server.cpu_seconds())
            res = run.worker(
                "bridge-send",
                {
                    "traces_url": bridge.url,
                    "spans": run.sizes["bridge_spans"] * scale,
                    "per_request": BRIDGE_SPANS_PER_REQUEST,
                    "turns": BRIDGE_TURNS,
                    "senders": BRIDGE_SENDERS,
                    "timeout": run.worker_timeout - 120,
                },
            )
            cpu = (bridge.cpu_seconds() - cpu0[0], server.cpu_seconds() - cpu0[1])  # both idle while spans are built
            _, stored, per_type, waited = wait_for_count(server.url, key, res["items"], 30)
            try:
                health = api_get(bridge.url.split("/v1/", 1)[0] + "/health", key, timeout=30)
            except Exception as exc:  # noqa: BLE001 - informational
                health = {"error": str(exc)}
            bridge_peak = bridge.stop(signal.SIGTERM)
        finally:
            if bridge is not None:
                bridge.stop(signal.SIGTERM)
            server_peak = server.stop()
        lost = res["items"] - stored
        ok = res["spans_per_s"] >= BRIDGE_MIN_SPANS_PER_S and lost == 0 and not res["errors"]
        growth[f"bridge-{scale}"] = {"cost": 1e6 / res["spans_per_s"], "rss": bridge_peak}
        rows.append(
            {
                "row": "4 Bridge" + (" (10×)" if scale == 10 else ""),
                "what": f"OTLP → bridge → local server, {fmt_int(res['spans'])} spans",
                "measured": f"{fmt_int(res['spans_per_s'])} spans/s; stored {fmt_int(stored)}/{fmt_int(res['items'])} "
                f"items; bridge peak RSS {mib(bridge_peak)}",
                "baseline": "—",
                "ratio": "—",
                "target": f"≥ {BRIDGE_MIN_SPANS_PER_S:,} spans/s, nothing lost",
                "result": verdict(ok),
            }
        )
        details.append(
            f"| {scale}× | {res['requests']} | {fmt_int(res['spans'])} | {fmt_int(res['items'])} | "
            f"{res['wire_bytes'] / MIB:.1f} ({res['raw_bytes'] / MIB:.1f}) | {res['elapsed_s']:.2f} | "
            f"{fmt_int(res['spans_per_s'])} | {res['retries']} | "
            f"{res['cpu_s']:.1f} / {cpu[0]:.1f} / {cpu[1]:.1f} | {fmt_int(stored)} / "
            f"{fmt_int(res['items'])}{f' ({waited:.0f} s after the run)' if waited else ''} | "
            f"{mib(bridge_peak)} | {mib(server_peak)} |"
        )
        if res["errors"] or res["rejected"]:
            details.append(f"\nRejected spans: {res['rejected']}; errors: {res['errors']}\n")
        exporter_stats[f"{scale}×"] = health.get("exporter", health)
    details.append(
        "\nThe bridge's exporter counters (`GET /health`) at the end: "
        + "; ".join(f"{k}: {v}" for k, v in exporter_stats.items())
        + "\n"
    )


def section_growth(rows: list[dict[str, Any]], growth: dict[str, Any]) -> None:
    for name, label, unit in (
        ("export", "Export", "µs/item"),
        ("e2e", "End to end", "µs/item"),
        ("bridge", "Bridge", "µs/span"),
    ):
        one, ten = growth.get(f"{name}-1"), growth.get(f"{name}-10")
        if not one or not ten:
            continue
        ratio = ten["cost"] / one["cost"]
        memory = ""
        if name == "e2e":
            memory = (
                f"; client peak RSS {mib(one['rss'])} → {mib(ten['rss'])} (growth over start "
                f"{mib(one['rss'] - one['rss_before'])} → {mib(ten['rss'] - ten['rss_before'])})"
            )
        elif name == "bridge":
            memory = f"; bridge peak RSS {mib(one['rss'])} → {mib(ten['rss'])}"
        elif name == "export":
            memory = (
                f" (OTLP encoder, same runs: {one['otlp']:.2f} → {ten['otlp']:.2f}, {ten['otlp'] / one['otlp']:.2f}×)"
            )
        rows.append(
            {
                "row": "5 Growth",
                "what": f"{label}: cost per unit at 10× vs 1×",
                "measured": f"{one['cost']:.2f} → {ten['cost']:.2f} {unit}{memory}",
                "baseline": "the 1× run",
                "ratio": f"{ratio:.2f}×",
                "target": f"≤ {GROWTH_MAX_COST_RATIO}× (bench's own bar)",
                "result": verdict(ratio <= GROWTH_MAX_COST_RATIO),
            }
        )


def section_memory(run: Run, rows: list[dict[str, Any]], details: list[str]) -> None:
    port = free_port()
    res = run.worker(
        "memory",
        {"items": run.sizes["memory_items"], "budget": run.sizes["memory_budget"], "closed_port": port},
        AGENTSIGHT_SPOOL_MAX_BYTES=str(64 * 1024 * MIB),
    )
    growth_kib = res["peak_rss_kib"] - res["rss_before_kib"]
    ok = res["completed"] and res["target_items"] >= MEMORY_ITEMS and growth_kib <= MEMORY_MAX_GROWTH_MIB * 1024
    note = "" if res["completed"] else f" — stopped by the {run.sizes['memory_budget']:.0f} s budget"
    if res["target_items"] < MEMORY_ITEMS:
        note += f" (quick: {fmt_int(res['target_items'])} items, not the target's {fmt_int(MEMORY_ITEMS)})"
    rows.append(
        {
            "row": "5 Memory",
            "what": f"{fmt_int(res['items'])} items tracked, server unreachable{note}",
            "measured": f"peak RSS growth {mib(growth_kib)} "
            f"({mib(res['rss_before_kib'])} → {mib(res['peak_rss_kib'])}); "
            f"spool {res['spool_bytes_on_disk'] / MIB:.0f} MiB on disk",
            "baseline": "RSS before",
            "ratio": "—",
            "target": f"≤ {MEMORY_MAX_GROWTH_MIB} MiB growth over 1,000,000 items",
            "result": verdict(ok),
        }
    )
    details.append("### 5. Memory with the server unreachable\n")
    details.append(
        f"One process tracks conversations ({TURNS} turns, 21 items, `send_tracked_data()` after each) "
        f"against `http://127.0.0.1:{port}` (nothing listens), spool in a temporary directory with its cap "
        "raised to 64 GiB so nothing is dropped. RSS before = `VmRSS` after a warm-up conversation (which "
        "finds the server unreachable); peak = `ru_maxrss` at the end.\n"
    )
    details.append(
        "| items | seconds | items/s | warm-up s | RSS before | peak RSS (ru_maxrss) | peak since before "
        "(VmHWM after reset) | RSS at end | growth | spool on disk | spool entries | items neither "
        "delivered nor spooled |"
    )
    details.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    spool = res.get("spool") or {}
    details.append(
        f"| {fmt_int(res['items'])} / {fmt_int(res['target_items'])} | {res['elapsed_s']:.1f} | "
        f"{fmt_int(res['items_per_s'])} | {res['warmup_s']:.1f} | {mib(res['rss_before_kib'])} | "
        f"{mib(res['peak_rss_kib'])} | {mib(res['hwm_since_before_kib'])} | {mib(res['rss_after_kib'])} | "
        f"{mib(growth_kib)} | {res['spool_bytes_on_disk'] / MIB:.1f} MiB | "
        f"{spool.get('entries', 'n/a')} (dropped {spool.get('dropped_entries', 'n/a')}) | "
        f"{res['not_spooled']} |"
    )
    details.append("")


def section_profiles(run: Run, details: list[str], sections: Sequence[str]) -> None:
    """Extra runs with cProfile in every process that does the work (measurements above are not profiled).

    The hot path and export workers profile themselves after measuring (``hot.txt``, ``export.txt``)."""
    assert run.profile_dir is not None
    if "e2e" in sections:
        key = generate_key()
        server = run.start_server(key, profile_as="e2e-server")
        try:
            run.worker(  # one tracker thread: own times are not blurred by threads waiting for the GIL
                "e2e",
                {
                    "url": server.url,
                    "key": key,
                    "conversations": run.sizes["e2e_conversations"],
                    "threads": 1,
                    "wait": run.args.e2e_wait,  # as measured above
                    "profile_dir": str(run.profile_dir),
                },
            )
        finally:
            server.stop(signal.SIGTERM)
    if "bridge" in sections:
        key = generate_key()
        server = run.start_server(key, profile_as="bridge-server")
        bridge = None
        try:
            bridge = run.start_bridge(key, server, profile_as="bridge")
            run.worker(
                "bridge-send",
                {
                    "traces_url": bridge.url,
                    "spans": run.sizes["bridge_spans"],
                    "per_request": BRIDGE_SPANS_PER_REQUEST,
                    "turns": BRIDGE_TURNS,
                    "senders": BRIDGE_SENDERS,
                },
            )
        finally:
            if bridge is not None:
                bridge.stop(signal.SIGTERM)
            server.stop(signal.SIGTERM)
    if "memory" in sections:
        run.worker(
            "memory",
            {
                "items": min(run.sizes["memory_items"], 30_000),
                "budget": 60,
                "closed_port": free_port(),
                "profile_dir": str(run.profile_dir),
            },
            AGENTSIGHT_SPOOL_MAX_BYTES=str(64 * 1024 * MIB),
        )
    files = sorted(p.name for p in run.profile_dir.glob("*.txt"))
    details.append("### Profiles\n")
    details.append(
        "`--profile` wrote cProfile summaries (own time and cumulative) of separate, profiled runs to "
        f"`bench/profiles/`: {', '.join(f'`{f}`' for f in files)}.\n"
    )


# -- machine and report ----------------------------------------------------------------------------------------


def machine_info(run: Run) -> list[str]:
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from google.protobuf.internal import api_implementation

        protobuf_impl = api_implementation.Type()
    except Exception:  # noqa: BLE001
        protobuf_impl = "?"

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    dirty = git("status", "--porcelain", "--untracked-files=no")
    packages = ", ".join(
        f"{d} {version(d)}"
        for d in (
            "agentsight-otel",
            "opentelemetry-api",
            "opentelemetry-sdk",
            "opentelemetry-exporter-otlp-proto-common",
            "opentelemetry-proto",
            "protobuf",
            "orjson",
            "requests",
        )
    )
    orjson = run.orjson
    if orjson is None:
        orjson = has_orjson()
    return [
        f"- nproc: {os.cpu_count()} ({cpu}); {platform.system()} {platform.release()}; "
        f"load average at start {run.load_start}, at end {os.getloadavg()[0]:.2f}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), `{sys.executable}`",
        f"- packages: {packages}; protobuf implementation: {protobuf_impl}",
        f"- orjson used by agentsight_otel: {'yes' if orjson else 'no'}"
        + (" (AGENTSIGHT_DISABLE_ORJSON set)" if os.environ.get("AGENTSIGHT_DISABLE_ORJSON") else ""),
        f"- git: {git('rev-parse', '--short', 'HEAD')}"
        + (f" with uncommitted changes in {len(dirty.splitlines())} tracked file(s)" if dirty else " (clean)"),
    ]


def render(
    run: Run, rows: list[dict[str, Any]], details: list[str], command: str, started: datetime, elapsed: float
) -> tuple[str, str]:
    header = "| Row | What | Measured | Baseline (same run) | Ratio | Target | Result |\n|---|---|---|---|---|---|---|"
    table = (
        header
        + "\n"
        + "\n".join(
            f"| {r['row']} | {r['what']} | {r['measured']} | {r['baseline']} | {r['ratio']} | {r['target']} | "
            f"**{r['result']}** |"
            if r["result"] in ("FAIL", "ERROR")
            else f"| {r['row']} | {r['what']} | {r['measured']} | {r['baseline']} | {r['ratio']} | {r['target']} | "
            f"{r['result']} |"
            for r in rows
        )
    )
    failed = [r for r in rows if r["result"] != "PASS"]
    summary = f"{len(rows) - len(failed)} of {len(rows)} rows pass" + (
        f"; not met: {', '.join(sorted({r['row'] for r in failed}))}" if failed else "; every target met"
    )
    doc = [
        "# agentsight-otel benchmark results",
        "",
        f"Command: `{command}`  ",
        f"Date: {started.strftime('%Y-%m-%d %H:%M:%S UTC')} (the run took {elapsed:.0f} s)",
        "",
        "Machine:",
        "",
        *machine_info(run),
        "",
        f"Summary: {summary}.",
        "",
        table,
        "",
        "## Details",
        "",
        *details,
        "How to read this: see [README.md](README.md).",
        "",
    ]
    return table, "\n".join(doc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller workloads, fewer repetitions (about a minute)")
    parser.add_argument("--only", help="comma-separated sections: hot,export,e2e,bridge,memory (default: all)")
    parser.add_argument("--profile", action="store_true", help="also write cProfile summaries to bench/profiles/")
    parser.add_argument("--threads", type=int, default=E2E_THREADS, help=f"tracker threads end to end ({E2E_THREADS})")
    parser.add_argument(
        "--e2e-wait",
        action="store_true",
        help="end to end: send_tracked_data() waits for each answer (default: wait=False, batched sends)",
    )
    parser.add_argument("--memory-budget", type=float, help="seconds the memory run may take (180; --quick 60)")
    parser.add_argument("--out", default=str(BENCH_DIR / "results.md"), help="where to write the results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.params or "{}")

    sections = ["hot", "export", "e2e", "bridge", "memory"]
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = set(wanted) - set(sections)
        if unknown:
            parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
        sections = [s for s in sections if s in wanted]

    run = Run(args)
    atexit.register(shutil.rmtree, run.scratch, ignore_errors=True)  # runs after the children are stopped
    atexit.register(_kill_children)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    command = " ".join(
        shlex.quote(a) for a in [python, "bench/bench.py", *(argv if argv is not None else sys.argv[1:])]
    )
    rows: list[dict[str, Any]] = []
    details: list[str] = []
    growth: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], None]]] = [
        ("hot", lambda: section_hot(run, rows, details)),
        ("export", lambda: section_export(run, rows, details, growth)),
        ("e2e", lambda: section_e2e(run, rows, details, growth)),
        ("bridge", lambda: section_bridge(run, rows, details, growth)),
        ("growth", lambda: section_growth(rows, growth)),  # from the export, e2e and bridge figures
        ("memory", lambda: section_memory(run, rows, details)),
    ]
    try:
        for name, step in steps:
            if name == "growth":
                step()
                continue
            if name not in sections:
                continue
            print(f"[bench] {name} ... ", end="", file=sys.stderr, flush=True)
            s0 = time.perf_counter()
            try:
                step()
                print(f"done in {time.perf_counter() - s0:.0f} s", file=sys.stderr, flush=True)
            except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
                print(f"ERROR: {exc}", file=sys.stderr, flush=True)
                rows.append(
                    {
                        "row": name,
                        "what": "section failed",
                        "measured": f"`{type(exc).__name__}: {str(exc)[:300]}`".replace("\n", " "),
                        "baseline": "—",
                        "ratio": "—",
                        "target": "—",
                        "result": "ERROR",
                    }
                )
        if args.profile:
            print("[bench] profiles ... ", end="", file=sys.stderr, flush=True)
            try:
                section_profiles(run, details, sections)
                print("done", file=sys.stderr, flush=True)
            except Exception as exc:  # noqa: BLE001
                print(f"ERROR: {exc}", file=sys.stderr, flush=True)
    except (KeyboardInterrupt, SystemExit):
        print("\n[bench] interrupted: child processes stopped, no results written", file=sys.stderr)
        _kill_children()
        raise
    finally:
        _kill_children()
    table, document = render(run, rows, details, command, started, time.perf_counter() - t0)
    print(table)
    Path(args.out).write_text(document)
    print(f"\nwritten to {os.path.relpath(args.out)}", file=sys.stderr)
    return 0 if all(r["result"] == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
