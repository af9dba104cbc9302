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
