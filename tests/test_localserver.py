"""Behaviour of the local AgentSight-compatible server, exercised over real HTTP."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from agentsight_otel.localserver import API_KEY_PATTERN, LocalServer, generate_api_key
from agentsight_otel.localserver.bodies import BodyTooLarge, inflate_gzip

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
TRACE = "0123456789abcdef0123456789abcdef"


def ts(seconds: float) -> str:
    """An SDK-style timestamp `seconds` after T0."""
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def make_span(
    span_id: str,
    kind: str,
    name: str,
    start: float,
    end: float | None = None,
    attributes: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
    status: str = "ok",
) -> dict[str, Any]:
    """Build a span dict in the ingest shape."""
    end = start if end is None else end
    return {
        "span_id": span_id,
        "trace_id": TRACE,
        "parent_span_id": None,
        "kind": kind,
        "name": name,
        "started_at": ts(start),
        "ended_at": ts(end),
        "duration_ms": round((end - start) * 1000, 3),
        "status": status,
        "attributes": {"agentsight.span.kind": kind, **(attributes or {})},
        "events": events or [],
        "otel": {"span_kind": "INTERNAL"},
    }


def message(sender: str, content: str, at: float, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A message event of a turn span."""
    attributes = {"agentsight.message.sender": sender, "agentsight.message.content": content}
    if metadata is not None:
        attributes["agentsight.message.metadata"] = json.dumps(metadata)
    return {"name": "agentsight.message", "timestamp": ts(at), "attributes": attributes}


def envelope(*blocks: dict[str, Any]) -> dict[str, Any]:
    """Wrap blocks in the ingest envelope."""
    return {"sdk": {"name": "agentsight-python", "version": "test"}, "conversations": list(blocks)}


def rich_block(conversation_id: str = "conv-1") -> dict[str, Any]:
    """A block exercising every projected kind, deliberately not in chronological order."""
    turn = make_span(
        "1000000000000001",
        "turn",
        "ask",
        0,
        10,
        {"agentsight.turn.complete": True},
        [message("end_user", "Where is my order?", 0.5, {"lang": "en"}), message("agent", "Tomorrow.", 9)],
    )
    tool = make_span(
        "1000000000000002",
        "tool",
        "lookup_order",
        2,
        3,
        {
            "agentsight.tool.name": "lookup_order",
            "agentsight.tool.arguments": json.dumps({"order": 42}),
            "agentsight.tool.response": "shipped",
        },
    )
    llm = make_span(
        "1000000000000003",
        "llm",
        "gpt-4o",
        4,
        5,
        {
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 20,
            "agentsight.llm.cache_read_tokens": 50,
        },
    )
    button = make_span(
        "1000000000000004",
        "button",
        "Track",
        11,
        attributes={
            "agentsight.button.event": "click",
            "agentsight.button.label": "Track",
            "agentsight.button.value": "track-42",
        },
    )
    incomplete = make_span(
        "1000000000000005",
        "turn",
        "ask",
        20,
        21,
        {"agentsight.turn.complete": False, "agentsight.turn.incomplete_reason": "error"},
        [message("end_user", "never shown", 20.5)],
        status="error",
    )
    visit = make_span("1000000000000006", "conversation", "conversation_opened", -5)
    return {
        "conversation_id": conversation_id,
        "customer_id": "cust-9",
        "customer_ip_address": "2001:db8::1",
        "device": "desktop",
        "environment": "development",
        "metadata": {"plan": "pro"},
        "spans": [button, llm, incomplete, tool, turn, visit],
    }


READ_KEY = generate_api_key()


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A started server with one write key and one read key."""
    with LocalServer(read_keys=[READ_KEY]) as srv:
        yield srv


def auth(key: str) -> dict[str, str]:
    """The credential header."""
    return {"Authorization": f"Api-Key {key}"}


def post_json(srv: LocalServer, path: str, payload: Any, key: str | None = None, **kw: Any) -> requests.Response:
    """POST JSON with the server's write key (or another one)."""
    return requests.post(srv.url + path, json=payload, headers=auth(key or srv.api_key), timeout=10, **kw)


def get(srv: LocalServer, path: str, key: str | None = None, **kw: Any) -> requests.Response:
    """GET with the server's write key (or another one)."""
    return requests.get(srv.url + path, headers=auth(key or srv.api_key), timeout=10, **kw)


# -- keys and lifecycle -----------------------------------------------------------------------------------


def test_generated_keys_have_the_documented_shape_and_differ() -> None:
    keys = {generate_api_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(API_KEY_PATTERN.fullmatch(key) for key in keys)
    assert API_KEY_PATTERN.fullmatch("AGS_1A2B3C4D5E6F7890ABCDEF1234567890_A1B2C3")
    assert not API_KEY_PATTERN.fullmatch("ags_1a2b3c4d5e6f7890abcdef123456789_a1b2c3")


def test_constructor_rejects_malformed_keys_without_echoing_them() -> None:
    with pytest.raises(ValueError) as info:
        LocalServer(api_keys=["not-a-key-secret"])
    assert "not-a-key-secret" not in str(info.value)
    with pytest.raises(ValueError):
        LocalServer(api_keys=[])
    key = generate_api_key()
    with pytest.raises(ValueError):
        LocalServer(api_keys=[key], read_keys=[key])


def test_url_port_and_idempotent_stop() -> None:
    srv = LocalServer().start()
    assert srv.url == f"http://127.0.0.1:{srv.port}"
    assert not srv.url.endswith("/")
    assert get(srv, "/api/me/").status_code == 200
    srv.stop()
    srv.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(srv.url + "/api/me/", headers=auth(srv.api_key), timeout=2)


# -- authentication and routing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Api-Key " + generate_api_key(),  # right shape, unknown
        "Api-Key ags_short_abc",  # wrong shape
        "Api-Key " + generate_api_key() + " extra",
    ],
)
def test_bad_key_is_403_on_ingest_and_401_elsewhere(server: LocalServer, header: str) -> None:
    headers = {"Authorization": header}
    ingest = requests.post(server.url + "/api/ingest/", json=envelope(), headers=headers, timeout=10)
    assert ingest.status_code == 403
    assert ingest.json() == {"detail": "Invalid API key."}
    for path in ("/api/me/", "/api/conversations/", "/api/conversations/lookup/?conversation_id=x"):
        response = requests.get(server.url + path, headers=headers, timeout=10)
        assert response.status_code == 401, path
        assert response.json() == {"detail": "Invalid API key."}
        assert header.split()[1] not in response.text


def test_missing_credentials(server: LocalServer) -> None:
    ingest = requests.post(server.url + "/api/ingest/", json=envelope(), timeout=10)
    assert ingest.status_code == 403
    assert ingest.json() == {"detail": "Authentication credentials were not provided."}
    bearer = {"Authorization": f"Bearer {server.api_key}"}
    me = requests.get(server.url + "/api/me/", headers=bearer, timeout=10)
    assert me.status_code == 401
    assert me.json() == {"detail": "Authentication credentials were not provided."}


def test_read_key_can_read_but_not_write(server: LocalServer) -> None:
    me = get(server, "/api/me/", READ_KEY)
    assert me.status_code == 200 and me.json()["role"] == "read"
    forbidden = {"detail": "You do not have permission to perform this action."}
    ingest = post_json(server, "/api/ingest/", envelope(rich_block()), READ_KEY)
    assert (ingest.status_code, ingest.json()) == (403, forbidden)
    create = post_json(server, "/api/conversations/", {"conversation_id": "c"}, READ_KEY)
    assert (create.status_code, create.json()) == (403, forbidden)
    upload = post_json(server, "/api/attachments/", {"conversation": 1, "attachments": []}, READ_KEY)
    assert upload.status_code == 403
    assert server.conversations() == []
    assert get(server, "/api/conversations/", READ_KEY).status_code == 200


def test_key_is_case_insensitive(server: LocalServer) -> None:
    assert get(server, "/api/me/", server.api_key.upper()).json()["role"] == "write"


def test_trailing_slash_is_significant_and_never_redirects(server: LocalServer) -> None:
    response = post_json(server, "/api/ingest", envelope(rich_block()), allow_redirects=False)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert "Location" not in response.headers
    assert get(server, "/api/me", allow_redirects=False).status_code == 404
    assert get(server, "/api/nothing-here/").status_code == 404
    assert server.span_count() == 0


def test_wrong_method_is_405(server: LocalServer) -> None:
    response = get(server, "/api/ingest/")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert requests.delete(server.url + "/api/me/", headers=auth(server.api_key), timeout=10).status_code == 405


# -- /api/me/ ---------------------------------------------------------------------------------------------


def test_me_shape_and_gzip_capability(server: LocalServer) -> None:
    body = get(server, "/api/me/").json()
    assert body["agent_id"] == 1 and body["agent_name"] == "local" and body["role"] == "write"
    assert body["capabilities"] == ["gzip-ingest"]
    assert [env["slug"] for env in body["environments"]] == ["production", "development"]
    production = body["environments"][0]
    assert set(production) == {"id", "slug", "name", "is_production", "created_at", "updated_at"}
    assert production["is_production"] is True and body["environments"][1]["is_production"] is False
    with LocalServer(gzip_ingest=False, environments=("production", "staging")) as plain:
        other = get(plain, "/api/me/").json()
        assert other["capabilities"] == []
        assert [env["slug"] for env in other["environments"]] == ["production", "staging"]


# -- ingest -----------------------------------------------------------------------------------------------


def test_ingest_stores_and_projects_a_transcript_in_order(server: LocalServer) -> None:
    response = post_json(server, "/api/ingest/", envelope(rich_block()))
    assert response.status_code == 200
    assert response.json() == {"conversations": 1, "spans_received": 6, "spans_stored": 6}

    listing = get(server, "/api/conversations/", params={"conversation_id": "conv-1"}).json()
    assert listing["count"] == 1
    pk = listing["results"][0]["id"]
    transcript = get(server, f"/api/conversations/{pk}/transcript/").json()
    assert transcript == server.transcript("conv-1")

    items = transcript["items"]
    assert [item["type"] for item in items] == ["message", "action", "token_usage", "message", "button"]
    assert [item.get("content") for item in items if item["type"] == "message"] == [
        "Where is my order?",
        "Tomorrow.",
    ]
    first = items[0]
    assert first["sender"] == "end_user" and first["metadata"] == {"lang": "en"}
    assert first["span_id"] == "1000000000000001" and first["timestamp"] == ts(0.5)
    action = items[1]
    assert action["name"] == "lookup_order" and action["arguments"] == {"order": 42}
    assert action["response"] == "shipped" and action["error"] is None and action["duration_ms"] == 1000.0
    usage = items[2]
    assert (usage["model"], usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (
        "gpt-4o",
        100,
        20,
        120,
    )
    assert usage["cache_read_tokens"] == 50 and usage["reasoning_tokens"] == 0
    assert items[4]["event"] == "click" and items[4]["value"] == "track-42"
    assert all("never shown" != item.get("content") for item in items)

    assert transcript["counts"] == {"messages": 2, "actions": 1, "buttons": 1, "attachments": 0, "token_usage": 1}
    assert transcript["token_usage"]["by_model"]["gpt-4o"]["total_tokens"] == 120
    assert transcript["token_usage"]["total"]["cache_read_tokens"] == 50
    conversation = transcript["conversation"]
    assert conversation["customer_ip_address"] == "2001:db8::1"
    assert conversation["environment"] == "development"
    assert conversation["metadata"] == {"plan": "pro"}
    assert conversation["is_used"] is True
    assert conversation["last_activity"] == ts(21)

    detail = get(server, f"/api/conversations/{pk}/").json()
    assert [m["content"] for m in detail["messages"]] == ["Where is my order?", "Tomorrow."]
    assert [a["name"] for a in detail["action_logs"]] == ["lookup_order"]
    assert get(server, "/api/conversations/999/transcript/").status_code == 404


def test_resent_spans_are_stored_once(server: LocalServer) -> None:
    payload = envelope(rich_block())
    assert post_json(server, "/api/ingest/", payload).json()["spans_stored"] == 6
    before = server.transcript("conv-1")
    again = post_json(server, "/api/ingest/", payload)
    assert again.status_code == 200
    assert again.json() == {"conversations": 1, "spans_received": 6, "spans_stored": 0}
    assert server.span_count("conv-1") == 6
    after = server.transcript("conv-1")
    assert after is not None and before is not None
    assert after["items"] == before["items"]
    assert len(server.conversations()) == 1


def test_is_used_only_set_by_engagement_and_never_reset(server: LocalServer) -> None:
    visit = {"conversation_id": "v", "spans": [make_span("2000000000000001", "conversation", "opened", 0)]}
    post_json(server, "/api/ingest/", envelope(visit))
    assert server.conversations()[0]["is_used"] is False
    update = {"conversation_id": "v", "spans": [make_span("2000000000000004", "conversation", "md", 0.5)]}
    post_json(server, "/api/ingest/", envelope(update))
    assert server.conversations()[0]["is_used"] is False
    tool = make_span("2000000000000002", "tool", "t", 1, 2)
    post_json(server, "/api/ingest/", envelope({"conversation_id": "v", "spans": [tool]}))
    assert server.conversations()[0]["is_used"] is True
    again = {"conversation_id": "v", "spans": [make_span("2000000000000003", "conversation", "md", 3)]}
    post_json(server, "/api/ingest/", envelope(again))
    assert server.conversations()[0]["is_used"] is True


def test_present_block_fields_overwrite_and_empty_metadata_clears(server: LocalServer) -> None:
    post_json(server, "/api/ingest/", envelope({"conversation_id": "m", "name": "a", "metadata": {"x": 1}}))
    post_json(server, "/api/ingest/", envelope({"conversation_id": "m", "metadata": {"y": 2}}))
    row = server.conversations()[0]
    assert row["name"] == "a" and row["metadata"] == {"y": 2}
    assert row["environment"] == "production"  # the agent default
    post_json(server, "/api/ingest/", envelope({"conversation_id": "m", "metadata": {}, "name": "b"}))
    row = server.conversations()[0]
    assert row["metadata"] == {} and row["name"] == "b"


def test_invalid_blocks_reject_the_whole_batch(server: LocalServer) -> None:
    good = rich_block("good")
    bad_ip = {"conversation_id": "ip", "customer_ip_address": "10.0.0.1, 10.0.0.2"}
    long_name = {"conversation_id": "long", "name": "n" * 256}
    bad_env = {"conversation_id": "env", "environment": "staging"}
    unknown = {"conversation_id": 12345, "colour": "blue"}
    response = post_json(server, "/api/ingest/", envelope(good, bad_ip, long_name, bad_env, unknown))
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "4 conversation(s) rejected"
    assert body["truncated"] is False
    rejected = {entry["index"]: entry for entry in body["conversations"]}
    assert set(rejected) == {1, 2, 3, 4}
    assert rejected[1]["errors"] == {"customer_ip_address": ["Enter a valid IPv4 or IPv6 address."]}
    assert rejected[2]["errors"] == {"name": ["Ensure this field has no more than 255 characters."]}
    assert list(rejected[3]["errors"]) == ["environment"]
    assert rejected[4]["conversation_id"] == "12345"
    assert set(rejected[4]["errors"]) == {"colour", "conversation_id"}
    assert server.span_count() == 0
    assert server.conversations() == []


def test_environment_slugs_match_exactly(server: LocalServer) -> None:
    for value in ("prod", "Production", " production"):
        response = post_json(server, "/api/ingest/", envelope({"conversation_id": "e", "environment": value}))
        assert response.status_code == 400, value
    assert post_json(server, "/api/ingest/", envelope({"conversation_id": "e", "environment": "production"})).ok


def test_span_and_text_limits(server: LocalServer) -> None:
    bad_span = make_span("XYZ", "tool", "t", 0, attributes={"agentsight.tool.response": "r" * 16_385})
    bad_span["trace_id"] = "abc"
    turn = make_span("3000000000000001", "turn", "t", 0, 1, events=[message("agent", "m" * 16_385, 0.5)])
    ok_turn = make_span("3000000000000002", "turn", "t", 0, 1, events=[message("agent", "m" * 16_384, 0.5)])
    response = post_json(
        server,
        "/api/ingest/",
        envelope({"conversation_id": "s", "spans": [bad_span, turn]}, {"conversation_id": "ok", "spans": [ok_turn]}),
    )
    assert response.status_code == 400
    entries = response.json()["conversations"]
    assert [entry["index"] for entry in entries] == [0]
    errors = entries[0]["errors"]
    assert "spans[0].span_id" in errors and "spans[0].trace_id" in errors
    assert "spans[0].attributes.agentsight.tool.response" in errors
    assert "spans[1].events[0].attributes.agentsight.message.content" in errors
    assert server.span_count() == 0


def test_rejection_list_is_capped_at_twenty(server: LocalServer) -> None:
    blocks = [{"conversation_id": f"c{i}", "customer_ip_address": "nope"} for i in range(25)]
    body = post_json(server, "/api/ingest/", envelope(*blocks)).json()
    assert body["detail"] == "25 conversation(s) rejected"
    assert len(body["conversations"]) == 20 and body["truncated"] is True


@pytest.mark.parametrize(
    "raw",
    [b"[]", b'{"sdk": {}}', b'{"conversations": {}}', b"{not json", b'{"conversations": [], "x": NaN}'],
)
def test_envelope_errors_have_no_block_list(server: LocalServer, raw: bytes) -> None:
    headers = {**auth(server.api_key), "Content-Type": "application/json"}
    response = requests.post(server.url + "/api/ingest/", data=raw, headers=headers, timeout=10)
    assert response.status_code == 400
    body = response.json()
    assert isinstance(body["detail"], str) and "conversations" not in body


def test_non_json_content_type_is_415(server: LocalServer) -> None:
    headers = {**auth(server.api_key), "Content-Type": "text/plain"}
    response = requests.post(server.url + "/api/ingest/", data=b"{}", headers=headers, timeout=10)
    assert response.status_code == 415


# -- gzip and size limits ---------------------------------------------------------------------------------


def gzip_post(srv: LocalServer, body: bytes, encoding: str = "gzip") -> requests.Response:
    """POST a pre-encoded body to ingest."""
    headers = {**auth(srv.api_key), "Content-Type": "application/json", "Content-Encoding": encoding}
    return requests.post(srv.url + "/api/ingest/", data=body, headers=headers, timeout=30)


def test_gzip_accepted_when_advertised(server: LocalServer) -> None:
    raw = json.dumps(envelope(rich_block())).encode()
    response = gzip_post(server, gzip.compress(raw))
    assert response.status_code == 200 and response.json()["spans_stored"] == 6
    entry = server.request_log()[-1]
    assert entry["content_encoding"] == "gzip"
    assert entry["body_bytes"] == len(gzip.compress(raw)) < len(raw)


def test_gzip_refused_when_not_advertised() -> None:
    with LocalServer(gzip_ingest=False) as srv:
        raw = json.dumps(envelope(rich_block())).encode()
        response = gzip_post(srv, gzip.compress(raw))
        assert response.status_code == 400
        assert response.json() == {"detail": "Unsupported Content-Encoding"}
        assert srv.span_count() == 0
        assert post_json(srv, "/api/ingest/", envelope(rich_block())).status_code == 200


def test_other_encodings_and_corrupt_gzip_are_400(server: LocalServer) -> None:
    raw = json.dumps(envelope()).encode()
    assert gzip_post(server, raw, "br").status_code == 400
    assert gzip_post(server, b"\x1f\x8b not really gzip").status_code == 400
    assert gzip_post(server, gzip.compress(raw)[:-6]).status_code == 400


def test_body_over_cap_is_413_and_connection_stays_usable() -> None:
    with LocalServer(max_body_bytes=2048) as srv, requests.Session() as session:
        session.headers.update(auth(srv.api_key))
        big = envelope({"conversation_id": "big", "name": "x" * 200, "metadata": {"pad": "p" * 4000}})
        response = session.post(srv.url + "/api/ingest/", json=big, timeout=10)
        assert response.status_code == 413
        assert session.get(srv.url + "/api/me/", timeout=10).status_code == 200
        assert srv.conversations() == []


def test_gzip_bomb_is_413() -> None:
    with LocalServer(max_body_bytes=64 * 1024) as srv:
        bomb = gzip.compress(b" " * (20 * 1024 * 1024), compresslevel=9)
        assert len(bomb) < 64 * 1024
        response = gzip_post(srv, bomb)
        assert response.status_code == 413


def test_inflate_stops_at_the_cap_without_expanding_everything() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1024 * 1024)
    bomb = b"".join(compressor.compress(chunk) for _ in range(100)) + compressor.flush()
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge):
            inflate_gzip(bomb, 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024  # far below the 100 MiB a full inflate would need
    assert inflate_gzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 4) == b"abcd"


# -- legacy conversations ---------------------------------------------------------------------------------


def test_legacy_get_or_create_and_lookup(server: LocalServer) -> None:
    body = {
        "conversation_id": "legacy-1",
        "name": "first",
        "environment": "development",
        "metadata": None,
        "is_used": False,
        "timestamp": ts(0),
    }
    created = post_json(server, "/api/conversations/", body)
    assert created.status_code == 201
    pk = created.json()["id"]
    assert isinstance(pk, int) and created.json()["is_used"] is False
    existing = post_json(server, "/api/conversations/", {"conversation_id": "legacy-1", "name": "second"})
    assert existing.status_code == 200
    assert existing.json()["id"] == pk and existing.json()["name"] == "first"
    lookup = get(server, "/api/conversations/lookup/", params={"conversation_id": "legacy-1"})
    assert lookup.json() == {"id": pk, "conversation_id": "legacy-1"}
    assert get(server, "/api/conversations/lookup/", params={"conversation_id": "nope"}).status_code == 404
    for bad in ({}, {"conversation_id": "   "}, {"conversation_id": "x", "customer_ip_address": "bad"}):
        response = post_json(server, "/api/conversations/", bad)
        assert response.status_code == 400, bad
    assert len(server.conversations()) == 1


def test_conversation_list_pages_newest_activity_first(server: LocalServer) -> None:
    for index, name in enumerate(("old", "middle", "new")):
        spans = [make_span(f"400000000000000{index}", "tool", "t", index * 100)]
        post_json(server, "/api/ingest/", envelope({"conversation_id": name, "spans": spans}))
    first = get(server, "/api/conversations/", params={"page_size": 2}).json()
    assert first["count"] == 3 and first["previous"] is None
    assert [row["conversation_id"] for row in first["results"]] == ["new", "middle"]
    assert first["results"][0]["counts"]["actions"] == 1
    second = requests.get(first["next"], headers=auth(server.api_key), timeout=10).json()
    assert [row["conversation_id"] for row in second["results"]] == ["old"]
    assert second["next"] is None and second["previous"] is not None
    assert get(server, "/api/conversations/", params={"page": 5}).status_code == 404


# -- attachments ------------------------------------------------------------------------------------------


def create_conversation(srv: LocalServer, conversation_id: str = "att") -> int:
    """Get-or-create a conversation through the legacy route and return its pk."""
    return int(post_json(srv, "/api/conversations/", {"conversation_id": conversation_id}).json()["id"])


def test_base64_upload_download_and_idempotency(server: LocalServer) -> None:
    pk = create_conversation(server)
    data = bytes(range(256)) * 4
    upload = {
        "conversation": str(pk),
        "mode": "base64",
        "sender": "end_user",
        "metadata": {},
        "timestamp": ts(0),
        "attachments": [
            {"filename": "bytes.bin", "mime_type": "application/pdf", "data": base64.b64encode(data).decode()}
        ],
    }
    first = post_json(server, "/api/attachments/", upload)
    assert first.status_code == 201
    stored = first.json()["attachments"][0]
    assert stored["sha256"] == hashlib.sha256(data).hexdigest() and stored["size"] == len(data)
    again = post_json(server, "/api/attachments/", upload)
    assert again.status_code == 201 and again.json()["attachments"][0]["id"] == stored["id"]
    assert server.attachment_bytes("att") == [("bytes.bin", data)]

    download = get(server, f"/api/attachments/{stored['id']}/download/")
    assert download.status_code == 200 and download.content == data
    assert download.headers["Content-Type"] == "application/pdf"
    assert 'filename="bytes.bin"' in download.headers["Content-Disposition"]
    assert get(server, "/api/attachments/999/download/").status_code == 404


def test_attachment_span_links_to_the_upload(server: LocalServer) -> None:
    pk = create_conversation(server)
    data = b"%PDF-1.4 invoice"
    upload = {
        "conversation": pk,
        "attachments": [
            {"filename": "invoice.pdf", "mime_type": "application/pdf", "data": base64.b64encode(data).decode()}
        ],
    }
    attachment_id = post_json(server, "/api/attachments/", upload).json()["attachments"][0]["id"]
    files = [
        {"filename": "invoice.pdf", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        {"filename": "elsewhere.png", "size": 3},
    ]
    span = make_span(
        "5000000000000001",
        "attachment",
        "2 attachment(s)",
        1,
        attributes={"agentsight.attachment.files": json.dumps(files), "agentsight.attachment.sender": "agent"},
    )
    post_json(server, "/api/ingest/", envelope({"conversation_id": "att", "spans": [span]}))
    transcript = server.transcript("att")
    assert transcript is not None
    (item,) = transcript["items"]
    assert item["type"] == "attachments" and item["sender"] == "agent"
    assert item["files"][0]["download_url"] == f"/api/attachments/{attachment_id}/download/"
    assert item["files"][0]["attachment_id"] == attachment_id
    assert "download_url" not in item["files"][1]


def test_multipart_upload_round_trip(server: LocalServer) -> None:
    pk = create_conversation(server)
    data = bytes(range(256))[::-1] * 8 + b"\r\n--boundary-lookalike\r\n"
    response = requests.post(
        server.url + "/api/attachments/",
        headers=auth(server.api_key),
        data={"conversation": str(pk), "mode": "form_data", "sender": "agent", "metadata": "{}", "timestamp": ts(1)},
        files={
            "attachment_0": ("raw.dat", data, "application/octet-stream"),
            "attachment_1": ("note.txt", "héllo".encode(), "text/plain"),
        },
        timeout=10,
    )
    assert response.status_code == 201, response.text
    names = [item["filename"] for item in response.json()["attachments"]]
    assert names == ["raw.dat", "note.txt"]
    assert server.attachment_bytes("att") == [("raw.dat", data), ("note.txt", "héllo".encode())]


@pytest.mark.parametrize(
    ("upload", "status"),
    [
        ({"conversation": "999", "attachments": [{"filename": "a", "mime_type": "text/plain", "data": ""}]}, 404),
        ({"conversation": "PK", "attachments": []}, 400),
        ({"conversation": "PK", "attachments": [{"filename": "a", "mime_type": "text/plain", "data": "!!"}]}, 400),
        ({"conversation": "PK", "attachments": [{"filename": "a", "mime_type": "x\r\ny", "data": ""}]}, 400),
        # http.server writes the download's Content-Type as Latin-1: \w must not match beyond ASCII
        ({"conversation": "PK", "attachments": [{"filename": "a", "mime_type": "text/中文", "data": ""}]}, 400),
        (
            {
                "conversation": "PK",
                "sender": "robot",
                "attachments": [{"filename": "a", "mime_type": "text/plain", "data": ""}],
            },
            400,
        ),
        (
            {
                "conversation": "PK",
                "message": "ffffffffffffffff",
                "attachments": [{"filename": "a", "mime_type": "text/plain", "data": ""}],
            },
            404,
        ),
    ],
)
def test_bad_uploads_are_refused(server: LocalServer, upload: dict[str, Any], status: int) -> None:
    pk = create_conversation(server)
    if upload["conversation"] == "PK":
        upload = {**upload, "conversation": str(pk)}
    assert post_json(server, "/api/attachments/", upload).status_code == status
    assert server.attachment_bytes("att") == []


# -- request log, logging and persistence -----------------------------------------------------------------


def test_request_log_and_logging_never_contain_the_key(
    server: LocalServer, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentsight_otel.localserver")
    post_json(server, "/api/ingest/", envelope(rich_block()))
    get(server, "/api/me/", generate_api_key())
    log = server.request_log()
    assert [(entry["method"], entry["path"], entry["status"]) for entry in log] == [
        ("POST", "/api/ingest/", 200),
        ("GET", "/api/me/", 401),
    ]
    assert all("authorization" not in {name.lower() for name in entry["headers"]} for entry in log)
    assert log[0]["headers"]["Content-Type"] == "application/json" and log[0]["body_bytes"] > 0
    assert "/api/ingest/" in caplog.text
    assert server.api_key not in caplog.text and server.api_key not in json.dumps(log)
    assert capsys.readouterr().err == ""


def test_file_database_persists_across_restarts(tmp_path: Any) -> None:
    db = str(tmp_path / "local.db")
    key = generate_api_key()
    with LocalServer(api_keys=[key], db_path=db) as srv:
        assert post_json(srv, "/api/ingest/", envelope(rich_block())).status_code == 200
    with LocalServer(api_keys=[key], db_path=db) as srv:
        assert srv.span_count("conv-1") == 6
        assert post_json(srv, "/api/ingest/", envelope(rich_block())).json()["spans_stored"] == 0


# -- hostile input: a 4xx, never a 500 nor a dropped connection --------------------------------------------------


def nested(depth: int) -> Any:
    """A JSON value of `depth` levels of arrays."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def post_raw(srv: LocalServer, path: str, body: str) -> requests.Response:
    """POST a JSON text as it is (requests' json= would refuse or re-encode what these tests send)."""
    headers = {**auth(srv.api_key), "Content-Type": "application/json"}
    return requests.post(srv.url + path, data=body.encode("utf-8", "surrogatepass"), headers=headers, timeout=10)


def assert_no_server_error(srv: LocalServer) -> None:
    statuses = [entry["status"] for entry in srv.request_log()]
    assert all(status is not None and status < 500 for status in statuses), statuses


def test_json_strings_and_token_counts_that_cannot_be_read_do_not_break_the_reads(server: LocalServer) -> None:
    deep_text = "[" * 5000  # json.loads raises RecursionError, not ValueError
    too_deep = json.dumps(nested(600))  # parses, but nests deeper than any stored document may
    tool = make_span(
        "6000000000000001",
        "tool",
        "lookup",
        1,
        attributes={"agentsight.tool.arguments": deep_text, "agentsight.metadata": too_deep},
    )
    turn = make_span(
        "6000000000000002",
        "turn",
        "ask",
        2,
        attributes={"agentsight.turn.complete": True},
        events=[message("end_user", "hello", 2.5)],
    )
    turn["events"][0]["attributes"]["agentsight.message.metadata"] = deep_text
    files = make_span(
        "6000000000000003", "attachment", "files", 3, attributes={"agentsight.attachment.files": too_deep}
    )
    huge = "9" * 4300  # int() reads it, but the sum of two cannot be written as text (int max str digits)
    llm = make_span(
        "6000000000000004",
        "llm",
        "gpt",
        4,
        attributes={"gen_ai.usage.input_tokens": huge, "gen_ai.usage.output_tokens": huge},
    )
    bad = {"conversation_id": "bad", "spans": [tool, turn, files, llm]}
    assert post_json(server, "/api/ingest/", envelope(bad, rich_block("good"))).status_code == 200
    pk = get(server, "/api/conversations/lookup/", params={"conversation_id": "bad"}).json()["id"]
    for path in ("/api/conversations/", f"/api/conversations/{pk}/", "/api/feed/?since=0", "/api/feed/?last=20"):
        assert get(server, path).status_code == 200, path
    transcript = get(server, f"/api/conversations/{pk}/transcript/")
    assert transcript.status_code == 200
    action, msg, attachments, usage = transcript.json()["items"]
    assert action["arguments"] is None and action["metadata"] == {}
    assert msg["metadata"] == {} and attachments["files"] == []
    assert usage["input_tokens"] == usage["output_tokens"] == usage["total_tokens"] == 0
    assert_no_server_error(server)


def test_a_conversation_that_cannot_be_projected_does_not_fail_the_list(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from agentsight_otel.localserver import views

    bad = rich_block("bad")
    bad["spans"].append(make_span("7000000000000009", "tool", "boom", 30))
    post_json(server, "/api/ingest/", envelope(bad, rich_block("good")))
    project = views.project_items

    def failing(spans: list[dict[str, Any]], uploads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if any(span["name"] == "boom" for span in spans):
            raise RuntimeError("an unforeseen bug")
        return project(spans, uploads)

    monkeypatch.setattr(views, "project_items", failing)
    listing = get(server, "/api/conversations/")
    assert listing.status_code == 200
    counts = {row["conversation_id"]: row["counts"]["messages"] for row in listing.json()["results"]}
    assert counts == {"bad": 0, "good": 2}
    assert "could not be projected" in caplog.text


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_that_leave_the_calendar_in_utc_are_400(server: LocalServer, stamp: str) -> None:
    span = make_span("7000000000000001", "turn", "ask", 0, events=[message("agent", "hi", 1)])
    for field in ("started_at", "ended_at"):
        response = post_json(
            server, "/api/ingest/", envelope({"conversation_id": "c", "spans": [{**span, field: stamp}]})
        )
        assert response.status_code == 400
        assert response.json()["conversations"][0]["errors"] == {f"spans[0].{field}": [BAD_DATETIME]}
    span["events"][0]["timestamp"] = stamp
    response = post_json(server, "/api/ingest/", envelope({"conversation_id": "c", "spans": [span]}))
    assert response.json()["conversations"][0]["errors"] == {"spans[0].events[0].timestamp": [BAD_DATETIME]}
    pk = create_conversation(server)
    upload = {
        "conversation": pk,
        "timestamp": stamp,
        "attachments": [{"filename": "a", "mime_type": "a/b", "data": ""}],
    }
    response = post_json(server, "/api/attachments/", upload)
    assert response.status_code == 400 and response.json() == {"timestamp": [BAD_DATETIME]}
    assert_no_server_error(server)


BAD_DATETIME = "Datetime has wrong format. Use ISO-8601."


@pytest.mark.parametrize(
    ("duration", "error"),
    [
        (2**63, "Ensure this value is less than or equal to 9223372036854775807."),
        (2**64 - 1, "Ensure this value is less than or equal to 9223372036854775807."),
        (2**63 - 1, None),
        (-(2**63), None),
    ],
)
def test_durations_must_fit_the_64_bit_sqlite_column(server: LocalServer, duration: int, error: str | None) -> None:
    span = {**make_span("7000000000000002", "tool", "t", 0), "duration_ms": duration}
    response = post_raw(server, "/api/ingest/", json.dumps(envelope({"conversation_id": "d", "spans": [span]})))
    if error is None:
        assert response.status_code == 200 and server.span_count("d") == 1
    else:
        assert response.status_code == 400
        assert response.json()["conversations"][0]["errors"] == {"spans[0].duration_ms": [error]}


@pytest.mark.parametrize("page", ["10000000000000000000", "1" + "0" * 5000, "999999999999999999"])
def test_pages_beyond_what_sqlite_can_skip_are_invalid(server: LocalServer, page: str) -> None:
    create_conversation(server)
    response = get(server, "/api/conversations/", params={"page": page})
    assert response.status_code == 404 and response.json() == {"detail": "Invalid page."}
    huge_size = get(server, "/api/conversations/", params={"page_size": "9" * 5000})
    assert huge_size.status_code == 200 and huge_size.json()["count"] == 1


def test_documents_nested_too_deeply_are_refused_before_anything_is_stored(server: LocalServer) -> None:
    from agentsight_otel.localserver.validate import MAX_DEPTH, TOO_DEEP

    deepest = {"a": nested(MAX_DEPTH - 1)}  # MAX_DEPTH levels, the object included
    assert (
        post_json(server, "/api/ingest/", envelope({"conversation_id": "ok", "metadata": deepest})).status_code == 200
    )
    assert post_json(server, "/api/conversations/", {"conversation_id": "ok2", "metadata": deepest}).status_code == 201
    too_deep = {"conversation_id": "deep", "metadata": {"a": nested(MAX_DEPTH)}}
    response = post_json(server, "/api/ingest/", envelope(too_deep))
    assert response.status_code == 400
    assert response.json()["conversations"][0]["errors"] == {"metadata": [TOO_DEEP]}
    legacy = post_json(server, "/api/conversations/", too_deep)
    assert legacy.status_code == 400 and legacy.json() == {"metadata": [TOO_DEEP]}
    # deeper still: orjson parses up to 1024 levels (then TOO_DEEP); the standard library's decoder gives up sooner
    for depth in (990, 100_000):
        block = f'{{"conversation_id": "deep{depth}", "metadata": {{"a": {"[" * depth}{"]" * depth}}}}}'
        assert post_raw(server, "/api/ingest/", '{"conversations": [' + block + "]}").status_code == 400, depth
        assert post_raw(server, "/api/conversations/", block).status_code == 400, depth
    assert {row["conversation_id"] for row in server.conversations()} == {"ok", "ok2"}
    assert_no_server_error(server)


def test_values_nested_too_deeply_to_print_still_get_their_error_message(server: LocalServer) -> None:
    deep = "[" * 1000 + "]" * 1000  # orjson parses it; str() of it raises RecursionError
    span = json.dumps(make_span("7000000000000003", "tool", "t", 0)).replace('"ok"', deep)
    for block in ('{"conversation_id": "c", "spans": [' + span + "]}", '{"conversation_id": ' + deep + "}"):
        response = post_raw(server, "/api/ingest/", '{"conversations": [' + block + "]}")
        assert response.status_code == 400
    pk = create_conversation(server)
    files = '"attachments": [{"filename": "a", "mime_type": "a/b", "data": ""}]'
    for field in ("sender", "mode"):
        body = f'{{"conversation": {pk}, "{field}": {deep}, {files}}}'
        assert post_raw(server, "/api/attachments/", body).status_code == 400, field
    assert_no_server_error(server)


@pytest.mark.parametrize(
    "body",
    [
        '{"conversations": [{"conversation_id": "s", "name": "\\ud800"}]}',
        '{"conversations": [{"conversation_id": "\\udc00"}]}',
        '{"conversations": [{"conversation_id": "s", "metadata": {"\\ud800x": 1}}]}',
        '{"conversations": [{"conversation_id": "s", "metadata": {"a": "\\ud800\\ud800"}}]}',
        '{"conversations": [{"conversation_id": "s", "metadata": {"a": 1e400}}]}',
    ],
)
def test_lone_surrogates_and_infinite_numbers_are_json_errors(server: LocalServer, body: str) -> None:
    """orjson refuses both while parsing; the standard-library path (AGENTSIGHT_DISABLE_ORJSON=1) must too."""
    response = post_raw(server, "/api/ingest/", body)
    assert response.status_code == 400 and response.json()["detail"].startswith("JSON parse error - ")
    legacy = post_raw(server, "/api/conversations/", json.dumps(json.loads(body)["conversations"][0]))
    assert legacy.status_code == 400
    assert server.conversations() == []


def test_a_surrogate_pair_written_as_escapes_is_one_character(server: LocalServer) -> None:
    body = '{"conversations": [{"conversation_id": "s", "name": "\\ud83d\\ude42 \\\\ud800"}]}'
    assert post_raw(server, "/api/ingest/", body).status_code == 200
    assert server.conversations()[0]["name"] == "\U0001f642 \\ud800"


def test_multipart_metadata_is_parsed_as_strictly_as_a_json_body(server: LocalServer) -> None:
    pk = create_conversation(server)
    for metadata in ("[" * 100_000, '{"a": "\\ud800"}', "{"):
        response = requests.post(
            server.url + "/api/attachments/",
            headers=auth(server.api_key),
            data={"conversation": str(pk), "metadata": metadata},
            files={"attachment_0": ("a.txt", b"hi", "text/plain")},
            timeout=10,
        )
        assert response.status_code == 400 and response.json() == {"metadata": ["Value must be valid JSON."]}
    assert server.attachment_bytes("att") == []


def test_a_stored_non_ascii_mime_type_is_downloaded_as_octet_stream(server: LocalServer) -> None:
    """Uploads refuse such types now (see test_bad_uploads_are_refused); a database from before may hold one."""
    from agentsight_otel.localserver.store import NewFile

    pk = create_conversation(server)
    (stored,) = server._store.add_attachments(pk, [NewFile("a.txt", "text/中文", b"hi")], sender="agent", message=None)
    download = get(server, f"/api/attachments/{stored['id']}/download/")
    assert download.status_code == 200 and download.content == b"hi"
    assert download.headers["Content-Type"] == "application/octet-stream"
