"""The local server's fast ingest path must behave exactly like the detailed one.

Ingest checks each block with quick predicates (validate.block_is_clean), stores batches in the SDKs' compact
shape block by block (bodies.ingest_block_texts) and orders conversations by comparing canonical timestamps as
text (store.block_activity). Each shortcut is compared here with the plain computation it replaces.
"""

from __future__ import annotations

import copy
import gzip
import itertools
import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from agentsight_otel.jsondoc import HAS_ORJSON, dumps_fast
from agentsight_otel.localserver import LocalServer, validate
from agentsight_otel.localserver.bodies import BadBody, BodyTooLarge, inflate_gzip, ingest_block_texts, parse_json
from agentsight_otel.localserver.store import block_activity
from agentsight_otel.localserver.timeutil import all_canonical, format_timestamp, parse_timestamp

ENVIRONMENTS = ("production", "development")
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def span(span_id: str = "1000000000000001", kind: str = "turn", start: float = 0.0, **extra: Any) -> dict[str, Any]:
    """A valid span dict in the SDKs' shape."""
    value = {
        "span_id": span_id,
        "trace_id": "0123456789abcdef0123456789abcdef",
        "parent_span_id": None,
        "kind": kind,
        "name": kind,
        "started_at": ts(start),
        "ended_at": ts(start + 1),
        "duration_ms": 1000.0,
        "status": "ok",
        "attributes": {"agentsight.span.kind": kind, "agentsight.tool.response": "fine"},
        "events": [
            {
                "name": "agentsight.message",
                "timestamp": ts(start + 0.5),
                "attributes": {"agentsight.message.sender": "end_user", "agentsight.message.content": "hi"},
            }
        ],
        "otel": {"span_kind": "INTERNAL", "resource": {"service.name": "test"}},
    }
    value.update(extra)
    return value


# Values each field is set to (or removed with MISSING): valid and invalid, and the near misses in between.
MISSING = object()
LONG = "x" * (validate.MAX_TEXT_CHARS + 1)
STAMPS = [
    None,
    MISSING,
    ts(3),
    "2024-05-01T12:00:00Z",
    "2024-05-01T12:00:00",
    "2024-05-01 12:00:00.000000+00:00",
    "2024-05-01T12:00:00.000000+02:00",
    "2024-05-01T12:00:00.1234567+00:00",
    "2024-05-01",
    "2024-02-30T12:00:00.000000+00:00",
    "2024-05-01T24:00:00.000000+00:00",
    "2024-W18-3T12:00:00.000000+00:00",
    "",
    17,
    True,
    [],
]
FIELD_VALUES: dict[str, list[Any]] = {
    "span_id": [MISSING, None, "1000000000000001", "1000000000000ABC", "100000000000000", "10000000000000011", 5],
    "trace_id": [MISSING, None, "0123456789abcdef0123456789abcdeF", "0123456789abcdef", 7],
    "parent_span_id": [MISSING, None, "2000000000000002", "nothex0000000000", 1],
    "kind": [MISSING, None, "tool", "", 3],
    "name": [MISSING, None, "ask", 4.5],
    "started_at": STAMPS,
    "ended_at": STAMPS,
    "duration_ms": [MISSING, None, 0, 1.5, True, "1", [1], 2**63 - 1, 2**63, -(2**63), -(2**63) - 1],
    "status": [MISSING, None, "ok", "error", "unset", "OK", 1, ["ok"]],
    "attributes": [
        MISSING,
        None,
        {},
        [],
        "x",
        {"agentsight.tool.response": LONG},
        {"agentsight.tool.error": LONG},
        {"agentsight.tool.response": 5},
    ],
    "events": [
        MISSING,
        None,
        [],
        {},
        "x",
        [None],
        [{"name": "m", "timestamp": ts(1)}],
        [{"name": "m", "timestamp": ts(1), "attributes": None}],
        [{"name": "m", "timestamp": ts(1), "attributes": []}],
        [{"name": "m", "timestamp": ts(1), "attributes": {"agentsight.message.content": LONG}}],
        [{"name": 1, "timestamp": ts(1)}],
        [{"timestamp": ts(1)}],
        [{"name": "m"}],
        [{"name": "m", "timestamp": None}],
        *[[{"name": "m", "timestamp": stamp}] for stamp in STAMPS if stamp is not MISSING],
    ],
    "otel": [MISSING, None, {}, [], "x"],
}


def nested(depth: int) -> Any:
    """A JSON value of `depth` levels of arrays."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def variants() -> Iterator[Any]:
    """Spans with one field changed (every field, every value), then a few hundred with several changed."""
    yield span()
    yield None
    yield []
    for key, values in FIELD_VALUES.items():
        for value in values:
            changed = span()
            if value is MISSING:
                del changed[key]
            else:
                changed[key] = copy.deepcopy(value)
            yield changed
    rng = random.Random(7)
    for _ in range(400):
        changed = span()
        for key in rng.sample(sorted(FIELD_VALUES), 3):
            value = rng.choice(FIELD_VALUES[key])
            if value is MISSING:
                changed.pop(key, None)
            else:
                changed[key] = copy.deepcopy(value)
        yield changed


def detailed_errors(value: Any) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    validate._check_span(value, errors, "spans[0]")
    return errors


def test_a_span_the_fast_check_passes_has_no_detailed_errors() -> None:
    passed = 0
    for value in variants():
        if validate._span_is_clean(value):
            passed += 1
            assert detailed_errors(value) == {}, value
    assert passed > 50  # the valid variants do take the fast path


def test_the_fast_check_passes_the_spans_the_sdks_send() -> None:
    assert validate._span_is_clean(span())
    assert validate._span_is_clean(span(parent_span_id="2000000000000002", events=[], otel=None))


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"customer_id": "c" * 255},
        {"customer_id": "c" * 256},
        {"customer_ip_address": "10.0.0.1"},
        {"customer_ip_address": "not an ip"},
        {"environment": "production"},
        {"environment": "prod"},
        {"environment": None},
        {"metadata": {"a": 1}},
        {"metadata": "a"},
        {"metadata": {"a": nested(validate.MAX_DEPTH - 1)}},
        {"metadata": {"a": nested(validate.MAX_DEPTH)}},
        {"conversation_id": " "},
        {"conversation_id": 5},
        {"surprise": 1},
        {"spans": None},
        {"spans": {}},
        {"spans": [span(), span(span_id="BAD")]},
    ],
)
def test_a_block_the_fast_check_passes_has_no_detailed_errors(change: dict[str, Any], monkeypatch: Any) -> None:
    block = {"conversation_id": "c-1", "name": "n", "spans": [span(), span(span_id="1000000000000002")], **change}
    clean = validate.block_is_clean(block, ENVIRONMENTS)
    monkeypatch.setattr(validate, "_span_is_clean", lambda _span: False)  # the detailed checks only
    errors = validate.validate_block(block, ENVIRONMENTS)
    assert clean == (errors == {})  # for these blocks the fast check is also exact


def reference_activity(spans: list[dict[str, Any]]) -> str | None:
    """What block_activity computed before it compared canonical stamps as text: parse all, take the latest."""
    latest = None
    for item in spans:
        stamps = [item.get("started_at"), item.get("ended_at")]
        stamps.extend(event.get("timestamp") for event in item.get("events") or [])
        for stamp in stamps:
            parsed = parse_timestamp(stamp)
            if parsed is not None and (latest is None or parsed > latest):
                latest = parsed
    return None if latest is None else format_timestamp(latest)


def test_block_activity_matches_parsing_every_stamp() -> None:
    rng = random.Random(11)
    pool = [stamp for stamp in STAMPS if stamp is not MISSING] + [ts(rng.uniform(-1e6, 1e6)) for _ in range(30)]
    pool += ["2024-05-01T11:00:00+05:00", "2024-05-01T23:59:59.999999-11:00", "0999-01-01T00:00:00.000000+00:00"]
    for _ in range(600):
        spans = []
        for index in range(rng.randint(0, 4)):
            events = [{"timestamp": rng.choice(pool)} for _ in range(rng.randint(0, 2))]
            spans.append({"started_at": rng.choice(pool), "ended_at": rng.choice(pool), "events": events})
            if rng.random() < 0.5:  # mostly canonical, as the SDKs send
                spans[index] = {"started_at": ts(rng.uniform(0, 100)), "ended_at": ts(rng.uniform(0, 100))}
        assert block_activity(spans) == reference_activity(spans), spans


def test_all_canonical_accepts_only_real_dates_in_the_sdk_format() -> None:
    assert all_canonical([ts(0), ts(1.5)])
    for bad in (
        [],
        [None],
        [ts(0), "2024-02-30T00:00:00.000000+00:00"],
        [ts(0) + "\n" + ts(1)],
        ["2024-05-01T12:00:00Z"],
    ):
        assert not all_canonical(bad), bad


# -- block by block: compact bodies -----------------------------------------------------------------------------


def compact(payload: Any) -> bytes:
    """The body as the SDKs write it (compact JSON)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def envelope(*blocks: Any) -> dict[str, Any]:
    return {"sdk": {"name": "agentsight-otel", "version": "0.1.0"}, "conversations": list(blocks)}


def block(conversation_id: str, start: float = 0.0, **extra: Any) -> dict[str, Any]:
    spans = [span("1000000000000001", "turn", start), span("1000000000000002", "tool", start + 2)]
    return {"conversation_id": conversation_id, "customer_id": "cust", "spans": spans, **extra}


def test_block_texts_parse_to_the_same_blocks_as_the_whole_body() -> None:
    blocks = [block(f"c-{index}", index, metadata={"i": index, "quote": 'a"},{"b'}) for index in range(5)]
    raw = compact(envelope(*blocks))
    texts = ingest_block_texts(raw)
    assert texts is not None and len(texts) == 5
    assert [parse_json(text) for text in texts] == json.loads(raw)["conversations"]
    assert ingest_block_texts(compact(envelope())) == []


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(envelope(block("c-1"))).encode(),  # the standard library's default separators
        compact({"conversations": [block("c-1")], "sdk": {"name": "x", "version": "1"}}),
        compact({"sdk": {"name": "x", "version": "1", "extra": 1}, "conversations": []}),
        compact({"sdk": {"name": 'q"uote', "version": "1"}, "conversations": []}),
        compact(envelope(block("c-1"))) + b" ",
        b"\xef\xbb\xbf" + compact(envelope(block("c-1"))),
    ],
)
def test_other_shapes_are_parsed_whole(raw: bytes) -> None:
    assert ingest_block_texts(raw) is None


def test_a_separator_inside_a_block_makes_a_piece_that_does_not_parse() -> None:
    nested = block("c-1", metadata={"list": [{"conversation_id": "x"}, {"conversation_id": "y"}]})
    texts = ingest_block_texts(compact(envelope(nested, block("c-2"))))
    assert texts is not None and len(texts) == 3  # cut between the two inner objects, and between the blocks
    with pytest.raises(BadBody):
        parse_json(texts[0])


@pytest.fixture
def servers() -> Iterator[tuple[LocalServer, LocalServer]]:
    with LocalServer() as first, LocalServer() as second:
        yield first, second


def post(srv: LocalServer, raw: bytes, gzipped: bool = False) -> requests.Response:
    headers = {"Authorization": f"Api-Key {srv.api_key}", "Content-Type": "application/json"}
    if gzipped:
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"
    return requests.post(f"{srv.url}/api/ingest/", data=raw, headers=headers, timeout=30)


def stored(srv: LocalServer) -> list[Any]:
    """Everything stored, without the times of storing."""
    result = []
    for row in srv.conversations():
        pk = row["id"]
        conversation = srv._store.conversation_by_pk(pk)
        assert conversation is not None
        conversation = {k: v for k, v in conversation.items() if k not in ("created_at", "updated_at")}
        spans = [{k: v for k, v in item.items() if k != "received_at"} for item in srv._store.spans_of(pk)]
        transcript = srv.transcript(row["conversation_id"])
        assert transcript is not None
        for key in ("created_at", "updated_at"):
            del transcript["conversation"][key]
        if conversation["last_activity"] is None:  # then the transcript shows the time of storing instead
            del transcript["conversation"]["last_activity"]
        result.append((conversation, spans, transcript))
    return result


BATCHES = {
    "plain": [block("c-1"), block("c-2", 10, environment="production"), block("c-1", 20, name="again")],
    "nested separator": [
        block("c-1", metadata={"list": [{"conversation_id": "x"}, {"conversation_id": "y"}]}),
        block("c-2"),
    ],
    "escaped separator": [block("c-1", metadata={"text": '},{"conversation_id":'}), block("c-2")],
    "valid but not canonical stamps": [
        block("c-1", spans=[span(started_at="2024-05-01T12:00:00Z", ended_at="2024-05-01T14:00:00+02:00")])
    ],
    "null stamps and no spans": [
        block("c-1", spans=[span(started_at=None, ended_at=None)]),
        {"conversation_id": "c-2"},
    ],
    "non-ascii": [block("c-ü", name="naïve ☃", metadata={"emoji": "🙂"})],
}


@pytest.mark.parametrize("name", sorted(BATCHES))
@pytest.mark.parametrize("gzipped", [False, True])
def test_compact_and_spaced_bodies_store_the_same(name: str, gzipped: bool, servers: Any) -> None:
    fast, slow = servers
    payload = envelope(*BATCHES[name])
    first = post(fast, compact(payload), gzipped)
    second = post(slow, json.dumps(payload).encode(), gzipped)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    again = post(fast, compact(payload), gzipped)  # re-sent spans are stored once
    assert again.json() == post(slow, json.dumps(payload).encode(), gzipped).json()
    assert stored(fast) == stored(slow)


@pytest.mark.parametrize(
    "bad",
    [
        {"conversation_id": "c-3", "spans": [span(span_id="NOT-HEX")]},
        {"conversation_id": "c-3", "environment": "staging"},
        {"conversation_id": "", "unknown": 1},
        "not a block",
    ],
)
def test_a_bad_block_late_in_a_compact_batch_refuses_it_all(bad: Any, servers: Any) -> None:
    fast, slow = servers
    payload = envelope(block("c-1"), block("c-2"), bad)
    first = post(fast, compact(payload))
    second = post(slow, json.dumps(payload).encode())
    assert first.status_code == second.status_code == 400
    assert first.json() == second.json()
    assert fast.conversations() == [] and fast.span_count() == 0  # the blocks before it were rolled back


def test_broken_json_late_in_a_compact_batch_gives_the_whole_body_parse_error(servers: Any) -> None:
    fast, _ = servers
    raw = compact(envelope(block("c-1"), block("c-2")))
    broken = raw[:-40] + b"\x00" + raw[-39:]
    response = post(fast, broken)
    assert response.status_code == 400
    with pytest.raises(BadBody) as expected:
        parse_json(broken)
    assert response.json() == {"detail": str(expected.value)}
    assert fast.conversations() == []


def test_inflate_handles_members_truncation_and_the_cap() -> None:
    data = b"".join(itertools.repeat(b"abc", 1000))
    assert inflate_gzip(gzip.compress(data) + gzip.compress(data), 10_000) == data + data
    assert inflate_gzip(b"", 10) == b""
    with pytest.raises(BadBody):
        inflate_gzip(gzip.compress(data)[:-12], 10_000)
    with pytest.raises(BodyTooLarge):
        inflate_gzip(gzip.compress(data) + gzip.compress(data), 5_000)
    assert inflate_gzip(gzip.compress(data), 3_000) == data  # exactly at the cap
    with pytest.raises(BodyTooLarge):
        inflate_gzip(gzip.compress(data), 2_999)


# -- nesting: left to orjson on the fast path ---------------------------------------------------------------------


def documents_at(depth: int) -> dict[str, dict[str, Any]]:
    """Spans whose attributes, events or otel document nests exactly `depth` levels (the document included)."""
    event = {"name": "m", "timestamp": ts(1), "attributes": {"x": nested(depth - 3)}}
    return {
        "attributes": span(attributes={"x": nested(depth - 1)}),
        "events": span(events=[event]),
        "otel": span(otel={"x": nested(depth - 1)}),
    }


@pytest.mark.parametrize("document", sorted(documents_at(3)))
def test_span_documents_nested_one_level_too_deep_are_refused_by_both_paths(document: str, servers: Any) -> None:
    """The fast check does not walk span documents when orjson is there: the store's encoder refuses them."""
    fast, slow = servers
    deepest = documents_at(validate.MAX_DEPTH)[document]
    payload = envelope(block("c-1"), {"conversation_id": "c-2", "spans": [deepest]})
    assert post(fast, compact(payload)).status_code == post(slow, json.dumps(payload).encode()).status_code == 200
    assert stored(fast) == stored(slow)
    too_deep = documents_at(validate.MAX_DEPTH + 1)[document]
    payload = envelope(block("c-3"), {"conversation_id": "c-4", "spans": [too_deep]})
    first, second = post(fast, compact(payload)), post(slow, json.dumps(payload).encode())
    assert first.status_code == second.status_code == 400
    assert first.json() == second.json()
    assert first.json()["conversations"][0]["errors"] == {f"spans[0].{document}": [validate.TOO_DEEP]}
    assert {row["conversation_id"] for row in fast.conversations()} == {"c-1", "c-2"}  # c-3 was rolled back


@pytest.mark.skipif(not HAS_ORJSON, reason="without orjson, block_is_clean measures the nesting itself")
def test_orjson_writes_exactly_what_nests_at_most_max_depth() -> None:
    """What the fast path relies on (store._encode_checked); if an orjson release moves its limit, this says so."""
    rng = random.Random(5)

    def build(depth: int) -> Any:
        if depth == 0:
            return rng.choice([1, "x", None, {}, []])
        inner = build(depth - 1)
        return {"k": inner, "s": rng.choice([1, [1], {}])} if rng.random() < 0.5 else [{"a": []}, inner]

    for _ in range(200):
        value = build(rng.randint(validate.MAX_DEPTH - 8, validate.MAX_DEPTH + 8))
        try:
            dumps_fast(value)
            written = True
        except TypeError:
            written = False
        assert written is not validate.nests_deeper(value)
