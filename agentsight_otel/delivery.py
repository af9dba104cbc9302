"""The delivery policy: get encoded blocks accepted by AgentSight, or keep them safe in the spool.

- Transient trouble (429, 502, 503, 504, connection errors) is retried by the transport within one deadline;
  what is still undelivered then goes to the spool, and while AgentSight is unreachable new data goes straight to
  the spool, so callers never wait on a dead network. A background replayer drains the spool with backoff.
- Other 5xx and a rejected key (401/403) also wait in the spool: the server or the key may come back.
- A 400 that names blocks: those blocks are dead-lettered with the server's reasons and the others resent at once.
  A 400 that names none is narrowed down by bisection; a gzip body refused is resent plain.
- A 413: the request is split along conversation boundaries, and a single conversation into parts.
- Other 4xx are final: the blocks are dead-lettered with the reason, never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from .jsondoc import dumps, loads
from .outcomes import Outcome
from .records import RecordKey
from .spool import KIND_ATTACHMENTS, KIND_INGEST, Spool, SpoolFull
from .transport import RETRYABLE_STATUSES, Reply, Transport, error_detail
from .version import SDK_NAME, __version__

_T = TypeVar("_T")

logger = logging.getLogger("agentsight_otel")

INGEST_PATH = "/api/ingest/"
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
MIN_REQUEST_BYTES = 4 * 1024
REPLAY_IDLE_POLL_S = 10.0
REPLAY_MAX_BACKOFF_S = 60.0
_PREFIX = b'{"sdk":' + dumps({"name": SDK_NAME, "version": __version__}) + b',"conversations":['


@dataclass
class Unit:
    """One thing to deliver: an encoded conversation block (or an attachment upload) and where it came from."""

    conversation_id: str
    body: bytes
    kind: str = KIND_INGEST
    sources: tuple[RecordKey, ...] = ()
    entry_id: int | None = None  # set when the unit was replayed from the spool


@dataclass
class DeliveryStats:
    """Counters for tests, benchmarks and ``agentsight-otel spool``."""

    requests: int = 0
    retries: int = 0
    delivered: int = 0
    spooled: int = 0
    replayed: int = 0
    dead: int = 0
    splits: int = 0
    replay_rounds: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Count under a lock: export workers and the replayer deliver at the same time."""
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)

    def after_fork(self) -> None:
        self._lock = threading.Lock()  # the parent's may have been held by a thread the child does not have

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


_UNREACHABLE_EARLIER = "AgentSight unreachable earlier; queued until it answers again"


def ingest_body(units: Sequence[Unit]) -> bytes:
    """The ``/api/ingest/`` body for these blocks, assembled from their already-encoded bytes.

    In one join: a request body is megabytes, and every concatenation would copy all of it into fresh memory.
    """
    parts = [_PREFIX]
    for unit in units:
        parts.append(unit.body)
        parts.append(b",")
    if len(parts) > 1:
        parts.pop()  # the last separator
    parts.append(b"]}")
    return b"".join(parts)


def _derived_span_id(span_id: str, first_event: Any) -> str:
    """The id of a turn's later part, from the turn's id and the part's first event: the same cut gives the same
    id on every retry, and parts of parts never share one (an id from a part number would, once a half is cut
    again). The standard library writes the event, so the id does not depend on whether orjson is installed."""
    text = json.dumps(first_event, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(f"{span_id}:{text}".encode(errors="surrogatepass"), digest_size=8).hexdigest()


def split_block(unit: Unit, limit: int) -> list[Unit] | None:
    """Split one conversation block into parts under ``limit`` bytes; ``None`` when it cannot be split further.

    A turn stays with its children where possible; a turn whose messages alone are too big is cut into
    consecutive turn spans with derived (stable) ids.
    """
    block = loads(unit.body)
    spans = block.get("spans") or []
    if len(spans) <= 1 and not (spans and len(spans[0].get("events") or []) > 1):
        return None
    header = {k: v for k, v in block.items() if k != "spans"}
    room = limit - len(dumps(dict(header, spans=[])))  # what the spans of one part may take
    families: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        family = (span.get("attributes") or {}).get("agentsight.turn.id") or span["span_id"]
        families.setdefault(family, []).append(span)
    pieces: list[list[dict[str, Any]]] = []
    for family_spans in families.values():
        # A turn's own span is cut only when it alone cannot fit: cutting gives its second half a new span id,
        # which would duplicate messages on a server that already stored the whole turn.
        if len(dumps(family_spans)) <= room or len(family_spans) > 1:
            pieces.append(family_spans)
            continue
        span = family_spans[0]
        events = span.get("events") or []
        if len(events) <= 1:
            pieces.append(family_spans)
            continue
        half = len(events) // 2
        for part, chunk in enumerate((events[:half], events[half:])):
            copy = dict(span, events=chunk)
            if part:
                copy["span_id"] = _derived_span_id(span["span_id"], chunk[0])
            pieces.append([copy])
    if len(pieces) == 1 and len(pieces[0]) > 1:
        middle = len(pieces[0]) // 2
        pieces = [pieces[0][:middle], pieces[0][middle:]]
    parts: list[list[dict[str, Any]]] = [[]]
    size = 0
    target = max(limit // 2, 1)
    for piece in pieces:
        piece_size = len(dumps(piece))
        if parts[-1] and size + piece_size > target:
            parts.append([])
            size = 0
        parts[-1].extend(piece)
        size += piece_size
    if len(parts) == 1:
        middle = len(parts[0]) // 2
        parts = [parts[0][:middle], parts[0][middle:]]
    parts = [p for p in parts if p]
    if len(parts) < 2:  # no cut made: the caller must not be handed the same block back, forever
        return None
    return [
        Unit(unit.conversation_id, dumps(dict(header, spans=p)), unit.kind, unit.sources, unit.entry_id) for p in parts
    ]


@dataclass
class _Result:
    outcomes: dict[int, Outcome] = field(default_factory=dict)  # id(unit) -> outcome
    splits: list[tuple[Unit, list[Unit]]] = field(default_factory=list)  # a unit and the parts it was sent as


class Delivery:
    """Sends units under the delivery policy; owns the spool replayer thread."""

    def __init__(
        self,
        transport: Transport,
        spool: Spool | None,
        *,
        timeout: float,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        key_hint: str = "<hidden>",
    ) -> None:
        self._transport = transport
        self._spool = spool
        self._timeout = timeout
        self.max_request_bytes = max_request_bytes
        self._key_hint = key_hint
        self.stats = DeliveryStats()
        self._outage = False
        self._outage_reason = _UNREACHABLE_EARLIER  # what new data is told while the outage lasts
        self._unsettled: list[tuple[list[Unit], _Result]] = []  # deliveries in progress, for spool_unsettled
        self._unsettled_lock = threading.Lock()
        # The units spool_unsettled took, by id; holding them keeps their ids from being reused by new units.
        self._rescued: dict[int, Unit] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._replayer: threading.Thread | None = None
        self._replay_lock = threading.Lock()
        self._backing_off = False
        self._said_spool_unreadable = False

    # -- lifecycle -----------------------------------------------------------------------------------------

    def after_fork(self) -> None:
        """In a forked child: the parent's replayer thread does not exist here; start afresh."""
        self._unsettled = []  # the parent's sends: the parent spools them
        self._unsettled_lock = threading.Lock()
        self._rescued = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._replayer = None
        self._replay_lock = threading.Lock()
        self._outage = False
        self.stats.after_fork()

    def start_replayer(self) -> None:
        """Start draining the spool in the background (idempotent); data left by an earlier run goes first."""
        if self._spool is None or self._stop.is_set():
            return
        if self._replayer is None or not self._replayer.is_alive():
            self._replayer = threading.Thread(target=self._replay_loop, name="agentsight-replay", daemon=True)
            self._replayer.start()

    def stop(self, timeout: float = 0.5) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._replayer
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def in_outage(self) -> bool:
        return self._outage

    # -- the live path -------------------------------------------------------------------------------------

    def deliver(self, units: Sequence[Unit], deadline: float) -> dict[int, Outcome]:
        """Deliver new units now (or spool them); returns an outcome per unit, keyed by ``id(unit)``."""
        result = _Result()
        if not units:
            return result.outcomes
        nothing: set[str] = set()
        waiting = self._read_spool(lambda spool: spool.pending_conversations(u.conversation_id for u in units), nothing)
        # While AgentSight is down, new data goes straight to the spool (the replayer probes); with no spool,
        # there is nothing to replay, so every export tries the network itself.
        if (self._outage and self._spool is not None) or self._stop.is_set():
            self._to_spool(list(units), self._outage_reason, result)
            return result.outcomes
        # Older data of a conversation is still in the spool: new data queues behind it, to keep order.
        behind = [u for u in units if u.conversation_id in waiting]
        if behind:
            self._to_spool(behind, "queued behind earlier undelivered data of this conversation", result)
        live = [u for u in units if u.conversation_id not in waiting]
        pending = (live, result)
        with self._unsettled_lock:
            self._unsettled.append(pending)
        try:
            self._send(live, deadline, result)
        finally:
            with self._unsettled_lock:
                self._unsettled = [p for p in self._unsettled if p is not pending]
        return result.outcomes

    def spool_unsettled(self, reason: str) -> int:
        """Spool the units still being sent on other threads that have no outcome yet; how many were spooled.

        For the process's exit: a daemon sender still waiting for AgentSight dies with the process, and its units
        are on disk nowhere else. If AgentSight did take them, the replay re-sends span ids it de-duplicates.
        """
        with self._unsettled_lock:
            unsettled = [
                u
                for units, result in self._unsettled
                for u in units
                if u.entry_id is None and result.outcomes.get(id(u)) is None and id(u) not in self._rescued
            ]
            self._rescued.update((id(u), u) for u in unsettled)  # the sending thread must not spool them again
        if unsettled:
            self._to_spool(unsettled, reason, _Result(), rescue=True)
        return len(unsettled)

    def spool_units(self, units: Sequence[Unit], reason: str) -> dict[int, Outcome]:
        """Put units straight into the spool (no network): used when a queue is full."""
        result = _Result()
        self._to_spool(list(units), reason, result)
        return result.outcomes

    # -- sending -------------------------------------------------------------------------------------------

    def _send(self, units: list[Unit], deadline: float | None, result: _Result) -> None:
        ingest = [u for u in units if u.kind == KIND_INGEST]
        uploads = [u for u in units if u.kind == KIND_ATTACHMENTS]
        for group in self._pack(ingest, result):
            self._send_group(group, deadline, result)
        for whole, parts in result.splits:
            self._merge_parts(whole, parts, result)
        undelivered = {u.conversation_id for u in ingest if not getattr(result.outcomes.get(id(u)), "delivered", False)}
        for unit in uploads:
            if unit.conversation_id in undelivered or self._outage:
                self._wait([unit], "waiting for the conversation's messages to be delivered", result)
            else:
                self._upload(unit, deadline, result)

    def _wait(self, units: list[Unit], reason: str, result: _Result) -> None:
        """Not now, not a failure of the server: a spooled unit keeps its place, a new one joins the spool."""
        spooled = [u.entry_id for u in units if u.entry_id is not None]
        if spooled and self._spool is not None:
            self._spool.release(spooled, reason)
        for u in units:
            if u.entry_id is not None:
                result.outcomes[id(u)] = Outcome(False, reason, None, True)
        self._to_spool([u for u in units if u.entry_id is None], reason, result)

    def _pack(self, units: list[Unit], result: _Result) -> list[list[Unit]]:
        """Requests of at most ``max_request_bytes``, splitting a block that is too large on its own."""
        groups: list[list[Unit]] = [[]]
        size = len(_PREFIX)
        for unit in units:
            pieces = [unit]
            if len(unit.body) + len(_PREFIX) + 2 > self.max_request_bytes:
                pieces = self._split_to_fit(unit, result)
            for piece in pieces:
                if groups[-1] and size + len(piece.body) + 1 > self.max_request_bytes:
                    groups.append([])
                    size = len(_PREFIX)
                groups[-1].append(piece)
                size += len(piece.body) + 1
        return [g for g in groups if g]

    def _split_to_fit(self, unit: Unit, result: _Result) -> list[Unit]:
        pending, fitting, buried = [unit], [], []
        while pending:
            piece = pending.pop()
            if len(piece.body) + len(_PREFIX) + 2 <= self.max_request_bytes:
                fitting.append(piece)
                continue
            parts = split_block(piece, self.max_request_bytes - len(_PREFIX) - 2)  # what a block may take
            if parts is None:
                self._bury([piece], 413, "a single span is larger than the maximum request size", result)
                buried.append(piece)
                continue
            self.stats.add(splits=1)
            pending.extend(reversed(parts))
        fitting.reverse()
        if fitting != [unit]:
            self._link_parts(unit, fitting)
            result.splits.append((unit, fitting + buried))  # a buried piece makes the whole undelivered
        return fitting

    def _link_parts(self, whole: Unit, parts: list[Unit]) -> None:
        """Parts of a spooled entry replace it in the spool, so each part leaves it when accepted."""
        if whole.entry_id is not None and self._spool is not None:
            ids = self._spool.replace(whole.entry_id, [(p.kind, p.conversation_id, p.body) for p in parts])
            for part, entry_id in zip(parts, ids):
                part.entry_id = entry_id

    def _send_group(self, group: list[Unit], deadline: float | None, result: _Result) -> None:
        if not group:
            return
        body = ingest_body(group)
        reply = self._transport.post_body(INGEST_PATH, body, deadline=self._deadline(deadline), allow_gzip=True)
        self.stats.add(requests=1, retries=max(reply.attempts - 1, 0))
        if reply.ok:
            self._delivered(group, reply, result)
            return
        status = reply.status
        if status == 400:
            named = _rejected_blocks(reply, len(group))
            if named:
                for index, reason in named.items():
                    self._bury([group[index]], 400, reason, result)
                rest = [u for i, u in enumerate(group) if i not in named]
                self._send_group(rest, deadline, result)
                return
            if reply.gzipped:
                logger.warning("AgentSight refused a gzip body; sending uncompressed from now on")
                self._transport.disable_gzip()
                self._send_group(group, deadline, result)
                return
            if len(group) > 1:
                middle = len(group) // 2
                self._send_group(group[:middle], deadline, result)
                self._send_group(group[middle:], deadline, result)
                return
            self._bury(group, 400, reply.describe(), result)
            return
        if status == 413:
            self.stats.add(splits=1)
            # Learn the server's limit, so later requests are packed small enough from the start.
            self.max_request_bytes = max(min(self.max_request_bytes, len(body) // 2), MIN_REQUEST_BYTES)
            if len(group) > 1:
                middle = len(group) // 2
                self._send_group(group[:middle], deadline, result)
                self._send_group(group[middle:], deadline, result)
                return
            parts = split_block(group[0], len(group[0].body))
            if parts is None:
                self._bury(group, 413, "a single span is larger than AgentSight accepts", result)
                return
            self._link_parts(group[0], parts)
            for part in parts:
                self._send_group([part], deadline, result)
            self._merge_parts(group[0], parts, result)
            return
        if status is None or status in RETRYABLE_STATUSES or status >= 500 or status in (401, 403):
            self._transient(group, reply, result)
            return
        self._bury(group, status, reply.describe(), result)

    def _ingest_pending(self, unit: Unit) -> bool:
        """Whether the conversation's messages still wait in the spool (so its files must wait too)."""
        return bool(self._read_spool(lambda spool: spool.pending_ingest(unit.conversation_id), None))

    def _read_spool(self, query: Callable[[Spool], _T], default: _T) -> _T:
        """A lookup the live path makes in the spool; ``default`` (as if it were empty) when the spool cannot be
        read, so a damaged spool file costs ordering against its old entries, not every new delivery."""
        if self._spool is None:
            return default
        try:
            return query(self._spool)
        except Exception as exc:  # noqa: BLE001 - a broken disk or file must not stop live delivery
            if not self._said_spool_unreadable:
                self._said_spool_unreadable = True
                logger.error("AgentSight spool %s cannot be read (%s); delivering without it", self._spool.path, exc)
            return default

    def _deadline(self, deadline: float | None) -> float:
        """The live path shares one deadline per export; replay gives each request its own timeout."""
        return deadline if deadline is not None else time.monotonic() + self._timeout

    def _merge_parts(self, whole: Unit, parts: list[Unit], result: _Result) -> None:
        outcomes = [result.outcomes.get(id(p)) for p in parts]
        delivered = bool(outcomes) and all(o is not None and o.delivered for o in outcomes)
        first_error = next((o.error for o in outcomes if o is not None and not o.delivered), None)
        spooled = any(o is not None and o.spooled for o in outcomes)
        failed = [o for o in outcomes if o is None or not o.delivered]
        refused = bool(failed) and not spooled and all(o is not None and o.refused for o in failed)
        result.outcomes[id(whole)] = Outcome(delivered, first_error, None, spooled, refused)

    def _upload(self, unit: Unit, deadline: float | None, result: _Result) -> None:
        """An attachment upload: look up the conversation's pk, then POST the files."""
        doc = loads(unit.body)
        lookup = self._transport.request(
            "GET",
            "/api/conversations/lookup/",
            params={"conversation_id": unit.conversation_id},
            deadline=self._deadline(deadline),
        )
        reply = lookup
        pk = lookup.body.get("id") if lookup.ok and isinstance(lookup.body, dict) else None
        if pk is not None:
            doc["conversation"] = str(pk)
            doc.pop("conversation_id", None)
            reply = self._transport.post_json("/api/attachments/", doc, deadline=self._deadline(deadline))
        self.stats.add(requests=1)
        if reply.ok:
            self._delivered([unit], reply, result)
        elif reply.status is None or reply.status in RETRYABLE_STATUSES or reply.status >= 500:
            # Trouble with uploads alone must not hold back conversations: only the files wait.
            self._wait([unit], self._describe(reply), result)
        elif reply.status == 404 and lookup.status == 404 and self._ingest_pending(unit):
            self._wait([unit], "the conversation is not stored yet", result)  # its messages are still queued
        else:
            self._bury([unit], reply.status, f"attachment upload refused: {reply.describe()}", result)

    # -- outcomes ------------------------------------------------------------------------------------------

    def _delivered(self, units: list[Unit], reply: Reply, result: _Result) -> None:
        self._outage = False
        spooled_ids = [u.entry_id for u in units if u.entry_id is not None]
        if spooled_ids and self._spool is not None:
            self._spool.delete(spooled_ids)
            self.stats.add(replayed=len(spooled_ids))
        self.stats.add(delivered=len(units))
        for u in units:
            result.outcomes[id(u)] = Outcome(True, None, reply.body)

    def _transient(self, units: list[Unit], reply: Reply, result: _Result) -> None:
        # Unreachable, still failing after retries, or a rejected key: stop trying on the caller's thread until
        # the replayer gets through. A lone 500 only sends this data to the spool.
        if reply.status is None or reply.status in RETRYABLE_STATUSES or reply.status in (401, 403):
            self._outage = True
            self._outage_reason = (
                f"AgentSight rejected the API key ({self._key_hint}) earlier; queued until a valid key is set"
                if reply.status in (401, 403)
                else _UNREACHABLE_EARLIER
            )
        message = self._describe(reply)
        replayed = [u for u in units if u.entry_id is not None]
        if replayed and self._spool is not None:
            self._spool.release([u.entry_id for u in replayed if u.entry_id is not None], message)
            for u in replayed:
                result.outcomes[id(u)] = Outcome(False, message, None, True)
        self._to_spool([u for u in units if u.entry_id is None], message, result)

    def _describe(self, reply: Reply) -> str:
        if reply.status in (401, 403):
            message = (
                f"AgentSight rejected the API key ({self._key_hint}) with HTTP {reply.status}: the key is unknown, "
                "revoked or read-only; check AGENTSIGHT_API_KEY. Data waits in the spool until a valid key is set"
            )
            self._transport.report_once("key", message)
            return message
        message = f"AgentSight did not accept the data after {reply.attempts} attempt(s): {reply.describe()}"
        self._transport.report_once(f"transient:{reply.status}", message)
        return message

    def _to_spool(self, units: list[Unit], reason: str, result: _Result, *, rescue: bool = False) -> None:
        if not rescue and self._rescued:  # spool_unsettled spooled these already, at exit
            with self._unsettled_lock:
                for u in units:
                    if id(u) in self._rescued:
                        result.outcomes[id(u)] = Outcome(False, f"spooled for retry: {reason}", None, True)
                units = [u for u in units if id(u) not in self._rescued]
        if not units:
            return
        if self._spool is None:
            message = f"{reason}; no spool is configured, so the data was dropped"
            logger.error("AgentSight: %d block(s) dropped: %s", len(units), message)
            for u in units:
                result.outcomes[id(u)] = Outcome(False, message)
            return
        try:
            self._spool.put_many([(u.kind, u.conversation_id, u.body) for u in units], reason)
        except SpoolFull as exc:  # it keeps what it holds: the caller (the bridge's sender) keeps this
            message = f"{reason}; not spooled: {exc}"
            logger.warning("AgentSight: %d block(s) not taken: %s", len(units), message)
            for u in units:
                result.outcomes[id(u)] = Outcome(False, message)
            return
        except Exception as exc:  # noqa: BLE001 - a broken disk must not break the app
            message = f"{reason}; the spool could not store it ({exc}), so the data was dropped"
            logger.error("AgentSight: %s", message)
            for u in units:
                result.outcomes[id(u)] = Outcome(False, message)
            return
        self.stats.add(spooled=len(units))
        if not rescue:  # at exit the replayer is stopping: no round against the server that did not answer
            self._nudge()
        for u in units:
            result.outcomes[id(u)] = Outcome(False, f"spooled for retry: {reason}", None, True)

    def _bury(self, units: list[Unit], status: int | None, reason: str, result: _Result) -> None:
        self.stats.add(dead=len(units))
        for u in units:
            logger.warning("AgentSight refused conversation %s for good: %s", u.conversation_id, reason)
            if self._spool is not None:
                try:
                    self._spool.bury(u.kind, u.conversation_id, u.body, status, reason, u.entry_id)
                except Exception:  # noqa: BLE001
                    logger.exception("could not keep the refused block in the dead-letter store")
            named = not status or f"HTTP {status}" in reason  # a server's reply already names its status
            result.outcomes[id(u)] = Outcome(False, reason if named else f"HTTP {status}: {reason}", refused=True)

    # -- replay --------------------------------------------------------------------------------------------

    def replay_once(self, deadline: float | None = None) -> bool | None:
        """One replay round: the oldest spooled entries, sent under the same policy.

        Returns ``None`` when the spool had nothing ready, ``True`` when the round made progress (something
        was accepted or dead-lettered), ``False`` when nothing got through.
        """
        if self._spool is None:
            return None
        wait = -1 if deadline is None else max(deadline - time.monotonic(), 0)
        if not self._replay_lock.acquire(timeout=wait):
            return False
        try:
            entries = self._spool.claim(max_bytes=self.max_request_bytes)
            if not entries:
                return None
            self.stats.add(replay_rounds=1)
            units = [Unit(e.conversation_id, e.body, e.kind, (), e.id) for e in entries]
            result = _Result()
            self._send(units, deadline, result)
            return any(o.delivered or not o.spooled for o in result.outcomes.values())
        finally:
            self._replay_lock.release()

    def drain(self, deadline: float) -> bool:
        """Replay until the spool is empty or the deadline passes; True when nothing is left."""
        while time.monotonic() < deadline and not self._stop.is_set():
            outcome = self.replay_once(deadline)
            if outcome is None:
                return self._spool is None or not self._spool.has_entries()
            if outcome is False:
                return False
        return self._spool is None or not self._spool.has_entries()

    def _replay_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                outcome = self.replay_once()
            except Exception:  # noqa: BLE001 - the replayer must survive anything and try again later
                logger.debug("spool replay round failed", exc_info=True)
                outcome = False
            if outcome is None:
                failures, delay = 0, REPLAY_IDLE_POLL_S
            elif outcome:
                failures, delay = 0, 0.0
            else:
                failures += 1
                delay = min(REPLAY_MAX_BACKOFF_S, 0.5 * 2 ** min(failures, 10)) * random.uniform(0.8, 1.2)
            self._backing_off = failures > 0
            self._wake.wait(delay)
            self._wake.clear()

    def _nudge(self) -> None:
        """New data went to the spool: a replayer that is not backing off looks at it now (it keeps its pace
        otherwise, so an outage is not hammered at the rate data arrives)."""
        if not self._backing_off:
            self._wake.set()


def _rejected_blocks(reply: Reply, count: int) -> dict[int, str]:
    """Block index -> reason, from a 400 whose body names the offending conversations."""
    if not isinstance(reply.body, dict):
        return {}
    named = reply.body.get("conversations")
    if not isinstance(named, list):
        return {}
    rejected: dict[int, str] = {}
    for entry in named:
        if isinstance(entry, dict) and isinstance(entry.get("index"), int) and 0 <= entry["index"] < count:
            rejected[entry["index"]] = error_detail(entry.get("errors"), str(entry.get("errors")))
    return rejected
