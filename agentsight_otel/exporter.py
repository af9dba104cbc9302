"""``AgentSightSpanExporter``: finished spans in, AgentSight batches out (read -> batch -> encode -> deliver)."""

from __future__ import annotations

import atexit
import base64
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, Literal

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .attachments import AttachmentStore, pending_attachments
from .batch import group_by_conversation
from .config import UNSET, Settings, apply_log_level, resolve_settings
from .delivery import Delivery, DeliveryStats, Unit
from .jsondoc import dumps, parse_document
from .outcomes import Outcome, OutcomeLedger, ledger
from .readers import SpanReader
from .records import Attachments, ConversationBatch
from .spool import KIND_ATTACHMENTS, KIND_INGEST, Spool, spool_path
from .transport import Transport
from .wire import BlockRules, encode_block

logger = logging.getLogger("agentsight_otel")


class AgentSightSpanExporter(SpanExporter):
    """An OpenTelemetry ``SpanExporter`` that ships the conversations found in spans to AgentSight.

    Every argument falls back to the environment (``AGENTSIGHT_API_KEY``, ``AGENTSIGHT_API_ENDPOINT``,
    ``AGENTSIGHT_ENVIRONMENT``, ``AGENTSIGHT_TIMEOUT``, ``AGENTSIGHT_SPOOL_DIR``, ... or a ``.env`` file), so
    ``AgentSightSpanExporter()`` works under ``OTEL_TRACES_EXPORTER=agentsight``. ``export`` never raises and
    returns within about ``timeout`` seconds; what it could not deliver waits in the on-disk spool and is
    replayed in the background until AgentSight accepts it.
    """

    def __init__(
        self,
        api_key: str | None = UNSET,
        endpoint: str | None = UNSET,
        *,
        environment: str | None = UNSET,
        timeout: float | None = UNSET,
        log_level: str | None = UNSET,
        spool_dir: Any = UNSET,
        spool_max_bytes: int | None = UNSET,
        max_request_bytes: int | None = UNSET,
        exit_timeout: float | None = UNSET,
        trace_hold: float | None = UNSET,
        session: Any = None,
        attachment_store: AttachmentStore | None = None,
        outcome_ledger: OutcomeLedger | None = None,
        spool_when_full: Literal["drop_oldest", "refuse"] = "drop_oldest",
    ) -> None:
        options = {
            "api_key": api_key,
            "endpoint": endpoint,
            "environment": environment,
            "timeout": timeout,
            "spool_dir": spool_dir,
            "spool_max_bytes": spool_max_bytes,
            "max_request_bytes": max_request_bytes,
            "exit_timeout": exit_timeout,
            "trace_hold": trace_hold,
        }
        explicit = any(v is not UNSET for v in options.values())
        self._config_error: str | None = None
        self._said_not_configured = False
        try:
            self._settings = resolve_settings(log_level=log_level, **options)
        except ValueError as exc:
            if explicit:
                raise
            # Built with no arguments (zero-code path): a bad environment must not crash the app at start-up.
            self._config_error = f"AgentSight exporter disabled: {exc}"
            self._said_not_configured = True
            logger.error("%s", self._config_error)
            self._settings = Settings()
        apply_log_level(self._settings.log_level)
        self._rules = BlockRules(self._settings.environment)
        self._reader = SpanReader(self._settings.trace_hold)
        self._hold_timer: threading.Timer | None = None
        self._attachments = attachment_store or pending_attachments
        self._ledger = outcome_ledger or ledger
        self._spool_when_full = spool_when_full
        self._shutdown = threading.Event()
        self._lock = threading.Lock()
        self._exit_deadline: float | None = None
        self._transport: Transport | None = None
        self._spool: Spool | None = None
        self._delivery: Delivery | None = None
        if self._settings.api_key:
            self._transport = Transport(self._settings, session=session)
            self._spool = self._open_spool()
            self._delivery = Delivery(
                self._transport,
                self._spool,
                timeout=self._settings.timeout,
                max_request_bytes=self._settings.max_request_bytes,
                key_hint=self._settings.key_hint,
            )
            self._delivery.start_replayer()  # data an earlier run could not deliver goes first
        elif self._config_error is None:
            self._config_error = (
                "no AgentSight API key: set AGENTSIGHT_API_KEY or pass api_key= "
                "(run `agentsight-otel serve` for a local server and key)"
            )
        _track_for_fork_and_exit(self)

    def __repr__(self) -> str:
        return f"AgentSightSpanExporter(endpoint={self._settings.endpoint!r}, key={self._settings.key_hint})"

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def spool(self) -> Spool | None:
        """The on-disk spool of undelivered data (``None`` when switched off or without a key)."""
        return self._spool

    def stats(self) -> dict[str, int]:
        """Delivery counters: requests, retries, delivered, spooled, replayed, dead, splits, replay_rounds."""
        return self._delivery.stats.as_dict() if self._delivery is not None else DeliveryStats().as_dict()

    @property
    def in_outage(self) -> bool:
        """Whether AgentSight is failing transiently right now (unreachable, overloaded): new data goes to the spool."""
        return self._delivery is not None and self._delivery.in_outage

    def _open_spool(self) -> Spool | None:
        if self._settings.spool_dir is None:
            return None
        path = spool_path(self._settings.spool_dir, self._settings.endpoint)
        try:
            return Spool(
                path,
                max_bytes=self._settings.spool_max_bytes,
                endpoint=self._settings.endpoint,
                when_full=self._spool_when_full,
            )
        except Exception as exc:  # noqa: BLE001 - an unwritable directory must not stop the app
            logger.error("AgentSight spool %s cannot be opened (%s): undelivered data will be dropped", path, exc)
            return None

    # -- SpanExporter ---------------------------------------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown.is_set():
            logger.warning("AgentSight exporter already shut down; %d span(s) not exported", len(spans))
            return SpanExportResult.FAILURE
        try:
            return self._export(spans)
        except Exception:  # noqa: BLE001 - an exporter must never raise into the SDK
            logger.exception("AgentSight export failed unexpectedly")
            return SpanExportResult.FAILURE

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Ship spans still waiting for their conversation id, stop the replayer and interrupt any backoff wait.

        Idempotent. Undelivered data stays in the spool.
        """
        if self._shutdown.is_set():
            logger.warning("AgentSight exporter shutdown called more than once")
            return
        self._release_held()
        self._shutdown.set()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        if self._delivery is not None:
            self.spool_in_flight()
            self._delivery.stop(timeout=min(0.5, timeout_millis / 1000))
        if self._transport is not None:
            self._transport.close()

    def spool_in_flight(self) -> None:
        """At exit: spool the blocks other threads are still sending, which would die with the process."""
        if self._delivery is not None and self._exit_deadline is not None:
            spooled = self._delivery.spool_unsettled("the process exited before AgentSight answered")
            if spooled:
                logger.warning("AgentSight: %d block(s) still in flight at exit were spooled", spooled)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Replay what waits in the spool, within the timeout; True when nothing is left waiting."""
        if self._shutdown.is_set():
            return False
        self._release_held()
        if self._delivery is None:
            return True
        deadline = time.monotonic() + max(timeout_millis, 0) / 1000
        try:
            return self._delivery.drain(deadline)
        except Exception:  # noqa: BLE001 - like export, a flush must never raise into the caller
            logger.exception("AgentSight spool replay failed; the data stays in the spool")
            return False

    def spool_spans(self, spans: Sequence[ReadableSpan], reason: str) -> None:
        """Encode spans and put them straight into the spool, without touching the network (a full queue)."""
        with self._lock:
            batches = group_by_conversation(self._reader.read(spans))
        if not batches:
            return
        if self._delivery is None:
            self._record(batches, Outcome(False, self._config_error or "exporter not configured"))
            return
        units = self._units(batches)
        outcomes = self._delivery.spool_units(units, reason)
        self._record_outcomes(units, outcomes)

    # -- stages ---------------------------------------------------------------------------------------------

    def _export(self, spans: Sequence[ReadableSpan], *, release_all: bool = False) -> SpanExportResult:
        # Only reading needs the lock (the reader holds traces and history); delivery runs concurrently, so the
        # tracker's threads sending different conversations overlap their network waits.
        with self._lock:
            batches = group_by_conversation(self._reader.read(spans, release_all=release_all))
            self._schedule_release()
        if not batches:
            return SpanExportResult.SUCCESS
        if self._delivery is None or self._transport is None:
            message = self._config_error or "AgentSight exporter is not configured"
            self._record(batches, Outcome(False, message))
            # Said once, at the first data it turns away: every send report carries it anyway.
            if not self._said_not_configured:
                self._said_not_configured = True
                logger.error("%s", message)
            return SpanExportResult.FAILURE
        self._rules.learn_environments(self._transport.server_info().environments)
        units = self._units(batches)
        complete = len([b for b in batches if b.records]) == sum(1 for u in units if u.kind == KIND_INGEST)
        # From here on only the encoded units are needed: the records can go while the request is in flight,
        # rather than outliving it and being promoted into the garbage collector's oldest generation.
        del batches
        deadline = time.monotonic() + self._settings.timeout
        if self._exit_deadline is not None:  # at exit: one shared budget, then straight to the spool
            deadline = min(deadline, self._exit_deadline)
        if deadline <= time.monotonic():
            outcomes = self._delivery.spool_units(units, "the process was exiting")
        else:
            outcomes = self._delivery.deliver(units, deadline)
        self._record_outcomes(units, outcomes)
        delivered = complete and all(outcomes.get(id(u), Outcome(False)).delivered for u in units)
        return SpanExportResult.SUCCESS if delivered else SpanExportResult.FAILURE

    def _release_held(self) -> None:
        """Ship the spans held for their trace's conversation id now (timer, flush or shutdown)."""
        if self._reader.holding and not self._shutdown.is_set():
            try:
                self._export([], release_all=True)
            except Exception:  # noqa: BLE001 - runs on a timer thread or at shutdown
                logger.exception("AgentSight export of held spans failed")

    def _schedule_release(self) -> None:
        """Held traces must not wait for the next export call: release them when their hold time is up."""
        due = self._reader.next_release()
        if due is None or (self._hold_timer is not None and self._hold_timer.is_alive()):
            return
        self._hold_timer = threading.Timer(max(due - time.monotonic(), 0) + 0.05, self._release_expired)
        self._hold_timer.daemon = True
        self._hold_timer.start()

    def _release_expired(self) -> None:
        if self._shutdown.is_set():
            return
        try:
            self._export([])
        except Exception:  # noqa: BLE001
            logger.exception("AgentSight export of held spans failed")

    def _units(self, batches: list[ConversationBatch]) -> list[Unit]:
        """Ingest blocks, then the attachment uploads whose bytes this process holds."""
        units: list[Unit] = []
        encoded = []
        for batch in batches:
            if not batch.records:
                continue
            try:
                block = encode_block(batch, self._rules)
            except Exception as exc:  # noqa: BLE001 - a block that cannot be written must not sink the others
                cid = batch.conversation.conversation_id
                logger.exception("AgentSight: conversation %s could not be encoded; left out", cid)
                self._record([batch], Outcome(False, f"could not be encoded: {type(exc).__name__}", refused=True))
                continue
            units.append(Unit(block.conversation_id, block.json, sources=block.sources))
            encoded.append(batch)
        for batch in encoded:  # files only for messages that are sent
            for record in batch.records:
                if isinstance(record, Attachments):
                    upload = self._attachment_unit(batch.conversation.conversation_id, record)
                    if upload is not None:
                        units.append(upload)
        return units

    def _attachment_unit(self, cid: str, record: Attachments) -> Unit | None:
        descriptors = parse_document(record.files) or []
        files = [
            f
            for f in (
                self._attachments.take(cid, str(d.get("sha256", "")), str(d.get("filename", "")))
                for d in descriptors
                if isinstance(d, dict)
            )
            if f is not None
        ]
        if not files:
            return None
        document = {
            "conversation_id": cid,
            "mode": "base64",
            "sender": record.sender,
            "metadata": parse_document(record.metadata) or {},
            "attachments": [
                {"filename": f.filename, "mime_type": f.mime_type, "data": base64.b64encode(f.data).decode()}
                for f in files
            ],
        }
        return Unit(cid, dumps(document), KIND_ATTACHMENTS, sources=(record.key,))

    # -- reporting ------------------------------------------------------------------------------------------

    def _record_outcomes(
        self, units: list[Unit], outcomes: dict[int, Outcome]
    ) -> None:
        for unit in units:
            outcome = outcomes.get(id(unit))
            if outcome is None:
                continue
            if unit.kind == KIND_ATTACHMENTS:  # files have their own outcome, per event
                for key in unit.sources:
                    self._ledger.record(key.trace_id, key.span_id, outcome, index=key.event)
                continue
            for key in unit.sources:
                self._ledger.record(key.trace_id, key.span_id, outcome)

    def _record(self, batches: list[ConversationBatch], outcome: Outcome) -> None:
        for batch in batches:
            for key in batch.sources:
                self._ledger.record(key.trace_id, key.span_id, outcome)

    # -- process lifecycle ----------------------------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a forked child: fresh locks, HTTP session, spool connection and replayer; no parent data resent."""
        self._lock = threading.Lock()
        if self._transport is not None:
            self._transport.after_fork()
        if self._spool is not None:
            self._spool.after_fork()
        if self._delivery is not None:
            self._delivery.after_fork()
            if not self._shutdown.is_set():
                self._delivery.start_replayer()

    def begin_exit(self) -> float:
        """From here on, all exports share the exit budget; what they cannot deliver in it stays in the spool.

        Returns the seconds left of the budget.
        """
        if self._exit_deadline is None:
            self._exit_deadline = time.monotonic() + self._settings.exit_timeout
        return max(self._exit_deadline - time.monotonic(), 0.0)


_live_exporters: weakref.WeakSet[AgentSightSpanExporter] = weakref.WeakSet()
_hooks_installed = False


def _track_for_fork_and_exit(exporter: AgentSightSpanExporter) -> None:
    global _hooks_installed
    _live_exporters.add(exporter)
    if not _hooks_installed:
        _hooks_installed = True
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
        atexit.register(_at_exit)


def _after_fork_in_child() -> None:
    for exporter in list(_live_exporters):
        exporter._after_fork()


def _at_exit() -> None:
    for exporter in list(_live_exporters):
        exporter.begin_exit()


__all__ = ["AgentSightSpanExporter"]
