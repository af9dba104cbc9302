"""The tracker's documented surface without a network: argument checks, summaries, counters, scopes."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import uuid

import pytest

import agentsight_otel
from agentsight_otel import ConversationTracker
from agentsight_otel.errors import (
    InvalidAnswerDataException,
    InvalidApiKeyException,
    InvalidAttachmentException,
    InvalidConversationDataException,
    InvalidQuestionDataException,
    MissingConversationIdException,
    NoApiKeyException,
    NoDataToSendException,
)

from .helpers import run_in_threads

B64 = "aGVsbG8="  # "hello"


@pytest.fixture
def t():
    tracker = ConversationTracker()
    yield tracker
    tracker._buckets.clear()  # nothing to send: these tests never configure an endpoint


def _total(tracker):
    return tracker.get_tracked_data_summary()["summary"]["total"]


def test_public_names_and_alias():
    assert agentsight_otel.conversation_tracker is agentsight_otel.tracker
    assert agentsight_otel.configure == agentsight_otel.tracker.configure
    for name in (
        "get_or_create_conversation",
        "initialize_conversation",
        "track_human_message",
        "track_agent_message",
        "track_action",
        "track_button",
        "track_attachments",
        "track_token_usage",
        "get_token_usage",
        "get_tracked_data_summary",
        "send_tracked_data",
        "configure",
    ):
        assert callable(getattr(agentsight_otel.tracker, name))


@pytest.mark.parametrize("bad", [None, "", "   ", 0])
def test_blank_conversation_id_raises(t, bad):
    with pytest.raises(MissingConversationIdException):
        t.get_or_create_conversation(bad)
    with pytest.raises(MissingConversationIdException):
        t.track_human_message("hi", conversation_id=bad if bad is not None else "")


def test_numeric_conversation_id_is_accepted(t):
    t.get_or_create_conversation(123)
    assert t.get_conversation_id() == "123"
    t.get_or_create_conversation(uuid.UUID(int=7))
    assert t.get_conversation_id() == "00000000-0000-0000-0000-000000000007"


@pytest.mark.parametrize("bad", [["x", 1], {"a": 1}, ("x",), b"x", True, False, 1.5])
def test_conversation_ids_whose_text_would_be_a_repr_are_refused(t, bad):
    with pytest.raises(InvalidConversationDataException, match="conversation_id must be a string"):
        t.get_or_create_conversation(bad)
    with pytest.raises(InvalidConversationDataException):
        t.track_human_message("hi", conversation_id=bad)
    assert t.get_conversation_id() is None


# Blank, or not text at all (a bool, bytes or a list would be sent as its repr).
@pytest.mark.parametrize("bad", ["", "   ", "\t", "\n", "\r\n", None, True, b"hello", ["hello"]])
def test_blank_messages_raise_the_legacy_exceptions_and_record_nothing(t, bad):
    t.get_or_create_conversation("c")
    with pytest.raises(InvalidQuestionDataException):
        t.track_human_message(bad)
    with pytest.raises(InvalidAnswerDataException):
        t.track_agent_message(bad)
    assert _total(t) == 1  # only the conversation item


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_action_name_required(t, bad):
    t.get_or_create_conversation("c")
    with pytest.raises(InvalidConversationDataException):
        t.track_action(bad)
    assert _total(t) == 1


@pytest.mark.parametrize("args", [("", "l", "v"), ("e", "", "v"), ("e", "l", ""), ("   ", "l", "v"), (None, "l", "v")])
def test_button_fields_required(t, args):
    t.get_or_create_conversation("c")
    with pytest.raises(InvalidConversationDataException):
        t.track_button(*args)
    assert _total(t) == 1


def test_action_arguments_are_checked(t):
    t.get_or_create_conversation("c")
    with pytest.raises(InvalidConversationDataException):
        t.track_action("a", started_at="yesterday")
    with pytest.raises(InvalidConversationDataException):
        t.track_action("a", duration_ms=-1)
    with pytest.raises(InvalidConversationDataException):
        t.track_action("a", started_at="2026-01-01T00:00:01Z", ended_at="2026-01-01T00:00:00Z")
    with pytest.raises(InvalidConversationDataException):
        t.track_action("a", metadata=["not", "a", "dict"])
    assert _total(t) == 1


@pytest.mark.parametrize(
    ("attachments", "mode", "error", "text"),
    [
        ([], "base64", InvalidAttachmentException, "cannot be empty"),
        ({"filename": "a"}, "base64", InvalidAttachmentException, "as a list"),
        (["x"], "base64", InvalidAttachmentException, "Must be a dictionary"),
        (
            [{"filename": "a", "mime_type": "text/plain", "data": b"x"}],
            "base64",
            InvalidAttachmentException,
            "must be a base64 string",
        ),
        (
            [{"filename": "a", "mime_type": "text/plain", "data": "!!notb64"}],
            "base64",
            InvalidAttachmentException,
            "invalid base64",
        ),
        ([{"filename": "a", "data": B64}], "base64", InvalidAttachmentException, "missing mime_type"),
        ([{"data": "text"}], "form_data", InvalidAttachmentException, "not string"),
        ([{"filename": "a", "mime_type": "text/plain", "data": B64}], "binary", ValueError, "Invalid mode"),
    ],
)
def test_attachment_validation(t, attachments, mode, error, text):
    t.get_or_create_conversation("c")
    with pytest.raises(error, match=text):
        t.track_attachments(attachments, mode=mode)
    if attachments:
        with pytest.raises(error, match=text):
            t.track_human_message("with files", attachments=attachments, attachment_mode=mode)
    assert _total(t) == 1


def test_a_message_with_an_empty_attachment_list_is_a_plain_message(t):
    # As in 0.0.x (`if attachments:`): code passing `attachments=files` with no files must keep working.
    t.get_or_create_conversation("c")
    t.track_human_message("no files", attachments=[], attachment_mode="zip")  # the mode is not looked at either
    t.track_agent_message("none either", attachments=())
    items = t.get_tracked_data_summary()["items"]
    assert [i["type"] for i in items] == ["conversation", "question", "answer"]
    assert "attachments" not in items[1]["data"] and items[1]["data"]["content"] == "no files"


def test_action_previews_and_token_usage_keep_the_legacy_shapes(t):
    t.get_or_create_conversation("c")
    t.track_action("lookup", response="", error_msg="")  # blank counts as not set
    t.track_token_usage(prompt_tokens=3)
    t.track_token_usage(prompt_tokens=1, model="gpt-4o-mini")
    items = t.get_tracked_data_summary()["items"]
    assert items[1]["preview"]["has_error"] is False and items[1]["preview"]["has_response"] is False
    assert "error_msg" not in items[1]["data"] and "response" not in items[1]["data"]
    counts = {"prompt_tokens", "completion_tokens", "total_tokens", "embedding_tokens"}
    assert set(items[2]["data"]["metadata"]) == counts
    assert items[3]["data"]["metadata"]["model"] == "gpt-4o-mini"


def test_the_configured_conversation_id_is_the_default_conversation(monkeypatch):
    monkeypatch.setenv("AGENTSIGHT_CONVERSATION_ID", " env-conv-7 ")
    t = ConversationTracker()
    t.track_human_message("hi")  # no conversation chosen: the configured one, as in 0.0.x
    assert t.get_conversation_id() == "env-conv-7"
    t.get_or_create_conversation("chosen")
    assert t.get_conversation_id() == "chosen"
    t._buckets.clear()  # nothing to send (as the t fixture does)


def test_an_unreadable_env_file_never_makes_a_tracking_call_raise(tmp_path, monkeypatch):
    (tmp_path / ".env").write_bytes(b"AGENTSIGHT_ENVIRONMENT=\xff\xfe production\n")  # not UTF-8
    monkeypatch.chdir(tmp_path)
    t = ConversationTracker()
    t.track_human_message("hi")  # no conversation chosen: the configured default is looked up, .env included
    t.get_or_create_conversation("c")
    assert t.get_conversation_id() == "c"
    t._buckets.clear()  # nothing to send (as the t fixture does)


def test_a_conversation_called_again_without_an_environment_keeps_its_own(t):
    t.get_or_create_conversation("envp", environment="production")
    t.track_human_message("a")
    t.get_or_create_conversation("envp")  # resumed later in the same process: not moved to development
    items = t.get_tracked_data_summary()["items"]
    assert [i["data"]["environment"] for i in items if i["type"] == "conversation"] == ["production", "production"]
    # A default is not remembered as if it had been given: one configured later applies.
    t.get_or_create_conversation("envd")
    t.configure(environment="staging")
    t.get_or_create_conversation("envd")
    items = t.get_tracked_data_summary(conversation_id="envd")["items"]
    assert [i["data"]["environment"] for i in items if i["type"] == "conversation"] == ["development", "staging"]


def test_exceptions_keep_the_legacy_names_and_hierarchy():
    from agentsight_otel import errors

    tracking = errors.ConversationTrackingException
    for name in ("InvalidConversationDataException", "InvalidQuestionDataException", "InvalidAnswerDataException"):
        assert issubclass(getattr(errors, name), tracking) and issubclass(getattr(errors, name), ValueError)
    assert not issubclass(errors.InvalidQuestionDataException, errors.InvalidConversationDataException)
    assert not issubclass(errors.MissingConversationIdException, tracking)
    for name in ("NotFoundException", "UnauthorizedException", "ForbiddenException"):
        assert issubclass(getattr(errors, name), errors.ConversationApiException)
    for name in (
        "NoApiKeyException",
        "NoConversationIdException",
        "ApiServerException",
        "AgentSightClientNotInitializedException",
        "AgentSightApiJwtExpiredException",
        "NoDataToSendException",
        "InvalidAttachmentException",
    ):
        assert issubclass(getattr(errors, name), errors.AgentSightError)


def test_attachment_modes_and_aliases(t):
    t.get_or_create_conversation("c")
    t.track_human_message("b64", attachments=[{"filename": "h.txt", "mime_type": "text/plain", "data": B64}])
    t.track_agent_message("form", attachments=[{"data": io.BytesIO(b"%PDF-1.4 x")}], attachment_mode="form-data")
    t.track_attachments(
        [{"data": b"\x89PNG\r\n\x1a\nxx", "content_type": "image/png", "filename": "p.png"}], "agent", None, "FORM_DATA"
    )
    items = t.get_tracked_data_summary()["items"]
    assert items[1]["data"]["attachment_mode"] == "base64"
    assert items[1]["data"]["attachments"][0]["size"] == 5
    assert items[2]["data"]["attachment_mode"] == "form_data"
    assert items[2]["data"]["attachments"][0]["mime_type"] == "application/pdf"  # sniffed from the bytes
    assert items[2]["data"]["attachments"][0]["filename"] == "attachment_0.pdf"
    assert items[3]["data"]["sender"] == "agent" and items[3]["data"]["mode"] == "form_data"
    assert "attachments" not in t.get_tracked_data_summary()["items"][1]["preview"]


def test_token_usage_accumulates_and_validates(t):
    t.get_or_create_conversation("c")
    assert t.get_token_usage() == {}
    t.track_token_usage(50, 30, 80, 10)
    t.track_token_usage(prompt_tokens=25, completion_tokens=15, total_tokens=40, embedding_tokens=5)
    assert t.get_token_usage() == {
        "prompt_tokens": 75,
        "completion_tokens": 45,
        "total_tokens": 120,
        "embedding_tokens": 15,
    }
    with pytest.raises(InvalidConversationDataException):
        t.track_token_usage(-1)
    with pytest.raises(InvalidConversationDataException):
        t.track_token_usage(prompt_tokens=1.5)
    assert t.get_token_usage()["prompt_tokens"] == 75


def test_summary_shape_and_previews(t):
    t.get_or_create_conversation("c", customer_id="cu", name="N", metadata={"a": 1})
    t.track_human_message("x" * 150, metadata={"k": "v"})
    t.track_agent_message("short")
    t.track_action("lookup", duration_ms=12, response="ok")
    t.track_button("click", "Yes", "y")
    summary = t.get_tracked_data_summary()
    assert summary["conversation_id"] == "c"
    assert summary["summary"] == {
        "conversation": 1,
        "questions": 1,
        "answers": 1,
        "attachments": 0,
        "actions": 1,
        "buttons": 1,
        "total": 5,
    }
    items = summary["items"]
    assert [i["type"] for i in items] == ["conversation", "question", "answer", "action", "button"]
    assert items[0]["data"]["metadata"] == {"a": 1} and items[0]["data"]["environment"] == "development"
    assert items[1]["preview"]["content_preview"] == "x" * 100 + "..." and items[1]["preview"]["has_metadata"]
    assert items[3]["preview"] == {"action_name": "lookup", "duration_ms": 12, "has_error": False, "has_response": True}
    assert items[4]["preview"] == {"label": "Yes", "value": "y", "event": "click"}
    items[1]["data"]["content"] = "changed"  # a deep copy: the store is untouched
    assert t.get_tracked_data_summary()["items"][1]["data"]["content"] == "x" * 150


def test_summary_of_attachments_has_the_legacy_data_shape(t):
    t.get_or_create_conversation("files")
    t.track_attachments([{"filename": "a.txt", "mime_type": "text/plain", "data": B64}], "agent")
    t.track_attachments([{"filename": "b.txt", "mime_type": "text/plain", "data": B64}], metadata={"k": [1]})
    first, second = t.get_tracked_data_summary()["items"][1:]
    hello = {"filename": "a.txt", "mime_type": "text/plain", "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
    assert first["data"] == {
        "attachments": [hello],
        "metadata": {},
        "mode": "base64",
        "sender": "agent",
        "conversation_id": "files",
    }
    assert first["preview"] == {"count": 1, "mode": "base64", "sender": "agent", "files": ["a.txt"]}
    assert second["data"]["metadata"] == {"k": [1]} and second["data"]["sender"] == "end_user"


def test_items_before_any_conversation_get_a_generated_id(t):
    t.track_human_message("orphan?")
    t.track_agent_message("no")
    cid = t.get_conversation_id()
    assert cid is not None and cid.startswith("conv_") and len(cid) == 17
    assert _total(t) == 2


def test_send_with_nothing_tracked_raises(t):
    with pytest.raises(NoDataToSendException):
        t.send_tracked_data()
    t.configure(conversation_id="empty")
    with pytest.raises(NoDataToSendException):
        t.send_tracked_data()


def test_configure_checks_the_key_without_echoing_it(t):
    with pytest.raises(NoApiKeyException):
        t.configure(api_key=None)
    with pytest.raises(NoApiKeyException):
        t.configure(api_key="  ")
    secret = "ags_zz2b3c4d5e6f7890abcdef1234567890_a1b2c3"
    with pytest.raises(InvalidApiKeyException) as err:
        t.configure(api_key=secret)
    assert secret not in str(err.value)


def test_conversation_scopes_are_per_thread(t):
    barrier = threading.Barrier(4)

    def worker(n):
        with t.conversation(f"thread-{n}"):
            barrier.wait()
            for i in range(20):
                t.track_human_message(f"t{n}-{i}")
            assert t.get_conversation_id() == f"thread-{n}"

    run_in_threads(worker, 4)
    for n in range(4):
        items = t.get_tracked_data_summary(conversation_id=f"thread-{n}")["items"]
        assert [i["data"]["content"] for i in items] == [f"t{n}-{i}" for i in range(20)]


def test_conversation_scopes_are_per_asyncio_task(t):
    async def task(n):
        async with t.conversation(f"task-{n}", customer_id=f"cust-{n}"):
            for i in range(10):
                t.track_agent_message(f"a{n}-{i}")
                await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(task(n) for n in range(3)))

    asyncio.run(main())
    for n in range(3):
        items = t.get_tracked_data_summary(conversation_id=f"task-{n}")["items"]
        assert items[0]["type"] == "conversation" and items[0]["data"]["customer_id"] == f"cust-{n}"
        assert [i["data"]["content"] for i in items[1:]] == [f"a{n}-{i}" for i in range(10)]
    assert t.get_conversation_id() is None  # scopes did not leak into the global current conversation


def test_importing_reads_no_configuration(monkeypatch):
    import subprocess
    import sys

    code = (
        "import os, socket; os.environ['AGENTSIGHT_API_KEY'] = 'not-a-key';"
        "orig = socket.socket.connect\n"
        "def no(*a): raise SystemExit('connect at import')\n"
        "socket.socket.connect = no\n"
        "import agentsight_otel; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_configure_rejects_bad_endpoint_and_timeout_at_the_call(t):
    with pytest.raises(ValueError, match="http"):
        t.configure(endpoint="api.agentsight.io")
    with pytest.raises(ValueError, match="timeout"):
        t.configure(timeout=0)


def test_attachment_sender_given_a_conversation_id_by_mistake_is_refused(t):
    # The 0.0.x docs showed track_attachments(attachments, conversation_id); the real second positional is sender.
    files = [{"filename": "a.txt", "mime_type": "text/plain", "data": B64}]
    with pytest.raises(InvalidConversationDataException, match="conversation_id="):
        t.track_attachments(files, "conv_123")
    assert t.get_tracked_data_summary()["summary"]["total"] == 0


@pytest.mark.parametrize("falsy", [0, False])
def test_zero_and_false_fail_the_legacy_blank_rule(t, falsy):
    t.get_or_create_conversation("c")
    with pytest.raises(InvalidQuestionDataException):
        t.track_human_message(falsy)
    with pytest.raises(InvalidAnswerDataException):
        t.track_agent_message(falsy)
    with pytest.raises(InvalidConversationDataException):
        t.track_action(falsy)
    with pytest.raises(InvalidConversationDataException):
        t.track_button(falsy, "l", "v")
    assert _total(t) == 1
    t.track_human_message(123)  # a non-zero number is text, as before
    assert t.get_tracked_data_summary()["items"][-1]["data"]["content"] == "123"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e15, -0.5])
def test_durations_that_cannot_be_real_are_refused(t, bad):
    t.get_or_create_conversation("c")
    with pytest.raises(InvalidConversationDataException, match="duration_ms"):
        t.track_action("a", duration_ms=bad)
    assert _total(t) == 1


def test_conversation_ids_longer_than_agentsight_stores_are_refused(t):
    with pytest.raises(InvalidConversationDataException, match="255"):
        t.get_or_create_conversation("c" * 256)
    t.get_or_create_conversation("c" * 255)


def test_blank_optional_fields_are_treated_as_unset(t):
    t.get_or_create_conversation("c", name="", device="   ", customer_id="")
    data = t.get_tracked_data_summary()["items"][0]["data"]
    assert data["name"] is None and data["device"] is None and data["customer_id"] is None


def test_changing_conversation_inside_a_child_task_does_not_move_the_parent(t):
    async def child():
        t.get_or_create_conversation("child")
        t.track_human_message("from child")

    async def main():
        with t.conversation("parent"):
            t.track_human_message("from parent")
            await asyncio.create_task(child())
            t.track_human_message("from parent, after child ran")
            return t.get_conversation_id()

    assert asyncio.run(main()) == "parent"
    parent = [i["data"].get("content") for i in t.get_tracked_data_summary(conversation_id="parent")["items"]]
    assert parent == ["from parent", "from parent, after child ran"]


def test_environment_comes_from_the_call_then_configuration_then_environment_variable(t, monkeypatch):
    monkeypatch.setenv("AGENTSIGHT_ENVIRONMENT", "prod")
    t.get_or_create_conversation("from-env")
    t.get_or_create_conversation("explicit", environment="development")
    summary = lambda cid: t.get_tracked_data_summary(conversation_id=cid)["items"][0]["data"]  # noqa: E731
    assert summary("from-env")["environment"] == "production"
    assert summary("explicit")["environment"] == "development"
    t.configure(environment="staging")
    t.get_or_create_conversation("configured")
    assert summary("configured")["environment"] == "staging"


def test_legacy_configure_keywords_are_accepted(t, caplog):
    t.configure(app_url="https://app.example.invalid", token_handler="llamaindex")
    assert "token_handler is not supported" in caplog.text


def test_a_key_pasted_into_the_endpoint_is_not_echoed(t):
    key = "ags_1a2b3c4d5e6f7890abcdef1234567890_a1b2c3"
    with pytest.raises(ValueError) as err:
        t.configure(endpoint=key)
    assert key not in str(err.value)


def test_a_key_pasted_into_another_setting_is_not_echoed(monkeypatch):
    from agentsight_otel.config import resolve_settings

    key = "ags_1a2b3c4d5e6f7890abcdef1234567890_a1b2c3"
    for name in ("AGENTSIGHT_TIMEOUT", "AGENTSIGHT_EXIT_TIMEOUT", "AGENTSIGHT_SPOOL_MAX_BYTES"):
        monkeypatch.setenv(name, key)
        with pytest.raises(ValueError) as err:
            resolve_settings()
        assert key not in str(err.value) and name in str(err.value)
        monkeypatch.delenv(name)
