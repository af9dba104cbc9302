"""Fault injection for the local server: error statuses, Retry-After, latency, resets, size limits and outages.

The delivery tests need a server that misbehaves on purpose. A `Faults` value describes what to inject; the
server's `FaultInjector` turns it into a per-request `FaultPlan` with its own seeded random generator, and counts
what it injected. Nothing here touches sockets: the HTTP handler in `app.py` carries the plan out.
"""

from __future__ import annotations

import argparse
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from typing import Union

DEFAULT_FAULT_PATHS = ("/api/ingest/", "/api/attachments/")
INGEST_PATH = "/api/ingest/"
FAILURE_MODES = ("503", "reset")
RETRY_AFTER_STATUSES = frozenset({429, 503})
_DATE_PREFIX = "date:"

Latency = Union[float, tuple[float, float]]

# Stat keys that fault_stats() always reports, even when zero (status_<N> keys are added per status).
STAT_KEYS = ("reset", "accept_then_fail", "413", "outage", "latency", "ingest_ok")


def _check_rate(name: str, value: object) -> float:
    """A probability: a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


def _check_seconds(name: str, value: object) -> float:
    """A finite, non-negative number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _check_retry_after(value: object) -> str | None:
    """A Retry-After header value: delta-seconds, an HTTP date (any text, on purpose) or `date:N`."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or any(ch in value for ch in "\r\n\0"):
        raise ValueError(f"retry_after must be a non-empty single-line string, got {value!r}")
    if value.startswith(_DATE_PREFIX):
        _check_seconds("the N of retry_after 'date:N'", _parse_number(value[len(_DATE_PREFIX) :]))
    return value


def _parse_number(text: str) -> float | None:
    """Parse a decimal number, or return None."""
    try:
        return float(text)
    except ValueError:
        return None


@dataclass
class Faults:
    """What the local server should do wrong, per request on the affected `paths`. The defaults inject nothing.

    Order of evaluation for an affected request: `latency`, then an active outage, then `max_ingest_bytes`, then
    `reset_rate`, then `status_rates`; a request that survives all of them is processed, and a 2xx answer may then
    be replaced by `accept_then_fail_mode` with probability `accept_then_fail_rate` (the data stays stored).
    """

    status_rates: dict[int, float] = field(default_factory=dict)
    """Probability per status (400-599) that a request is answered with it instead of being processed."""
    retry_after: str | None = None
    """Retry-After value on injected 429/503 answers: `"1"`, an HTTP date, or `"date:N"` (N seconds from then)."""
    latency: Latency = 0.0
    """Seconds of delay before answering, or a `(min, max)` range for a uniform random delay."""
    reset_rate: float = 0.0
    """Probability of closing the connection with a TCP reset, after reading the body, before processing it."""
    accept_then_fail_rate: float = 0.0
    """Probability that a processed request (2xx) is answered with a failure anyway: the unknown-outcome case."""
    accept_then_fail_mode: str = "503"
    """How an accepted-then-failed request is answered: `"503"` or `"reset"`."""
    max_ingest_bytes: int | None = None
    """`/api/ingest/` bodies larger than this on the wire (compressed size when gzipped) get 413 unprocessed."""
    outage_seconds: float = 0.0
    """An outage from when these faults take effect (set_faults(), or start() for the constructor's faults):
    every affected request fails and nothing is stored."""
    outage_mode: str = "reset"
    """How requests fail during an outage: `"reset"` or `"503"`."""
    paths: tuple[str, ...] = DEFAULT_FAULT_PATHS
    """Exact request paths the faults apply to (`max_ingest_bytes` applies to `/api/ingest/` regardless)."""
    seed: int | None = None
    """Seed of the server's random generator (re-seeded each time these faults are set), for reproducible runs."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raise ValueError naming the first bad one. Normalises containers and numbers."""
        if not isinstance(self.status_rates, dict):
            raise ValueError("status_rates must be a dict of {status: rate}")
        rates: dict[int, float] = {}
        for status, rate in self.status_rates.items():
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                raise ValueError(f"an injected status must be an integer from 400 to 599, got {status!r}")
            rates[status] = _check_rate(f"the rate of status {status}", rate)
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"the status rates add up to more than 1 ({sum(rates.values()):g})")
        self.status_rates = rates
        self.retry_after = _check_retry_after(self.retry_after)
        if isinstance(self.latency, (tuple, list)):
            if len(self.latency) != 2:
                raise ValueError("latency must be seconds or a (min, max) pair")
            low = _check_seconds("latency min", self.latency[0])
            high = _check_seconds("latency max", self.latency[1])
            if low > high:
                raise ValueError(f"latency min {low:g} is greater than max {high:g}")
            self.latency = (low, high)
        else:
            self.latency = _check_seconds("latency", self.latency)
        self.reset_rate = _check_rate("reset_rate", self.reset_rate)
        self.accept_then_fail_rate = _check_rate("accept_then_fail_rate", self.accept_then_fail_rate)
        if self.accept_then_fail_mode not in FAILURE_MODES:
            raise ValueError(f"accept_then_fail_mode must be '503' or 'reset', got {self.accept_then_fail_mode!r}")
        if self.max_ingest_bytes is not None and (
            isinstance(self.max_ingest_bytes, bool)
            or not isinstance(self.max_ingest_bytes, int)
            or self.max_ingest_bytes < 0
        ):
            raise ValueError(f"max_ingest_bytes must be an integer >= 0 or None, got {self.max_ingest_bytes!r}")
        self.outage_seconds = _check_seconds("outage_seconds", self.outage_seconds)
        if self.outage_mode not in FAILURE_MODES:
            raise ValueError(f"outage_mode must be '503' or 'reset', got {self.outage_mode!r}")
        if isinstance(self.paths, str):
            raise ValueError("paths must be a sequence of paths, not one string")
        paths = tuple(self.paths)
        if any(not isinstance(path, str) or not path.startswith("/") for path in paths):
            raise ValueError("every fault path must be a string starting with '/'")
        self.paths = paths
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")

    @property
    def active(self) -> bool:
        """Tell whether these faults inject anything at all."""
        return bool(
            any(self.status_rates.values())
            or self.latency != 0.0
            or self.reset_rate
            or self.accept_then_fail_rate
            or self.max_ingest_bytes is not None
            or self.outage_seconds
        )

    def describe(self) -> str:
        """A one-line human summary, e.g. for the `serve` banner."""
        parts = [f"{status}={rate:g}" for status, rate in sorted(self.status_rates.items()) if rate]
        if self.retry_after is not None:
            parts.append(f"retry-after={self.retry_after}")
        if isinstance(self.latency, tuple):
            parts.append(f"latency={self.latency[0]:g}-{self.latency[1]:g}s")
        elif self.latency:
            parts.append(f"latency={self.latency:g}s")
        if self.reset_rate:
            parts.append(f"reset={self.reset_rate:g}")
        if self.accept_then_fail_rate:
            parts.append(f"accept-then-fail={self.accept_then_fail_rate:g} ({self.accept_then_fail_mode})")
        if self.max_ingest_bytes is not None:
            parts.append(f"max-ingest-bytes={self.max_ingest_bytes}")
        if self.outage_seconds:
            parts.append(f"outage={self.outage_seconds:g}s ({self.outage_mode})")
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        if not parts:
            return "none"
        return ", ".join(parts) + f" on {' '.join(self.paths)}"


def retry_after_value(setting: str, now: float | None = None) -> str:
    """Render a Retry-After setting; `date:N` becomes the HTTP date N seconds after `now` (default: now)."""
    if setting.startswith(_DATE_PREFIX):
        delay = float(setting[len(_DATE_PREFIX) :])
        return formatdate((time.time() if now is None else now) + delay, usegmt=True)
    return setting


@dataclass(frozen=True)
class FaultPlan:
    """What to do with one request, decided when it arrives. `status`/`reset` replace processing entirely."""

    path: str
    latency: float = 0.0
    outage: str | None = None  # "reset" or "503" while an outage is on
    max_ingest_bytes: int | None = None
    reset: bool = False
    status: int | None = None
    accept_then_fail: str | None = None  # "503" or "reset" when the processed answer is to be replaced
    retry_after: str | None = None  # the Retry-After setting for 429/503 answers, rendered when answering

    def headers_for(self, status: int) -> dict[str, str]:
        """Extra headers of an injected answer with this status (Retry-After on 429/503 when configured)."""
        if self.retry_after is not None and status in RETRY_AFTER_STATUSES:
            return {"Retry-After": retry_after_value(self.retry_after)}
        return {}


class FaultInjector:
    """The server's fault state: the current Faults, a seeded random generator, an outage deadline and counters."""

    def __init__(self, faults: Faults | None = None) -> None:
        self._lock = threading.Lock()
        self._faults = Faults()
        self._idle = True
        self._random = random.Random()
        self._outage_until = 0.0
        self._outage_mode = "reset"
        self._stats: Counter[str] = Counter()
        self.set(faults)

    def set(self, faults: Faults | None) -> None:
        """Replace the faults (None turns everything off, including an outage in progress)."""
        config = Faults() if faults is None else replace(faults)  # replace() copies and re-validates
        with self._lock:
            self._faults = config
            self._idle = not config.active  # only an outage() can then affect a request
            self._random = random.Random(config.seed)
            if config.outage_seconds > 0:
                self._outage_until = time.monotonic() + config.outage_seconds
                self._outage_mode = config.outage_mode
            else:
                self._outage_until = 0.0

    @property
    def faults(self) -> Faults:
        """A copy of the current faults."""
        with self._lock:
            return replace(self._faults)

    def restart_outage(self) -> None:
        """Restart the configured `outage_seconds` outage from now (used when the server starts listening)."""
        with self._lock:
            if self._faults.outage_seconds > 0:
                self._outage_until = time.monotonic() + self._faults.outage_seconds
                self._outage_mode = self._faults.outage_mode

    def outage(self, seconds: float, mode: str = "reset") -> None:
        """Start an outage now, lasting `seconds` (0 ends one in progress)."""
        seconds = _check_seconds("outage seconds", seconds)
        if mode not in FAILURE_MODES:
            raise ValueError(f"outage mode must be '503' or 'reset', got {mode!r}")
        with self._lock:
            self._outage_until = time.monotonic() + seconds if seconds > 0 else 0.0
            self._outage_mode = mode

    def outage_remaining(self) -> float:
        """Seconds left in the current outage (0 when there is none)."""
        with self._lock:
            return max(0.0, self._outage_until - time.monotonic())

    def count(self, key: str) -> None:
        """Add one to a counter."""
        with self._lock:
            self._stats[key] += 1

    def stats(self) -> dict[str, int]:
        """Counts of what was injected, plus `ingest_ok` (ingest requests processed and answered normally)."""
        with self._lock:
            result = dict.fromkeys(STAT_KEYS, 0)
            result.update({f"status_{status}": 0 for status in self._faults.status_rates})
            result.update(self._stats)
            return result

    def plan(self, path: str) -> FaultPlan | None:
        """Decide the fate of one request on `path`; None when nothing can happen to it.

        Every affected request draws exactly four random numbers, so a seeded run that sends the same requests
        in the same order meets the same faults. With faults that inject nothing (and no outage) it draws none:
        the numbers could not change anything, and setting new faults re-seeds the generator anyway.
        """
        with self._lock:
            faults = self._faults
            limit = faults.max_ingest_bytes if path == INGEST_PATH else None
            if path not in faults.paths:
                return None if limit is None else FaultPlan(path, max_ingest_bytes=limit)
            if self._idle and time.monotonic() >= self._outage_until:
                return None  # nothing to inject (limit is None too); the draws would change nothing either
            draw_latency, draw_reset, draw_status, draw_accept = (self._random.random() for _ in range(4))
            outage = self._outage_mode if time.monotonic() < self._outage_until else None
        if isinstance(faults.latency, tuple):
            low, high = faults.latency
            latency = low + (high - low) * draw_latency
        else:
            latency = faults.latency
        status = None
        threshold = 0.0
        for code, rate in sorted(faults.status_rates.items()):
            threshold += rate
            if draw_status < threshold:
                status = code
                break
        accept = faults.accept_then_fail_mode if draw_accept < faults.accept_then_fail_rate else None
        return FaultPlan(
            path,
            latency=latency,
            outage=outage,
            max_ingest_bytes=limit,
            reset=draw_reset < faults.reset_rate,
            status=status,
            accept_then_fail=accept,
            retry_after=faults.retry_after,
        )


# -- command-line value parsers (argparse `type=` callables with clear messages) -----------------------------


def arg_rate(text: str) -> float:
    """Parse a probability in [0, 1]."""
    value = _parse_number(text)
    if value is None or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"rate must be a number between 0 and 1, got {text!r}")
    return value


def arg_status_rate(text: str) -> tuple[int, float]:
    """Parse `STATUS=RATE`, e.g. `503=0.1`."""
    status_text, sep, rate_text = text.partition("=")
    status_text = status_text.strip()
    if not sep or not status_text.isdigit() or not 400 <= int(status_text) <= 599:
        raise argparse.ArgumentTypeError(f"expected STATUS=RATE with STATUS from 400 to 599, got {text!r}")
    rate = _parse_number(rate_text)
    if rate is None or not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"the rate in {text!r} must be a number between 0 and 1")
    return int(status_text), rate


def arg_seconds(text: str) -> float:
    """Parse a finite, non-negative number of seconds."""
    value = _parse_number(text)
    if value is None or not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def arg_latency(text: str) -> Latency:
    """Parse `SECONDS` or `MIN,MAX`."""
    if "," not in text:
        return arg_seconds(text)
    low_text, _, high_text = text.partition(",")
    low, high = arg_seconds(low_text), arg_seconds(high_text)
    if low > high:
        raise argparse.ArgumentTypeError(f"latency MIN,MAX needs MIN <= MAX, got {text!r}")
    return (low, high)


def arg_retry_after(text: str) -> str:
    """Parse a Retry-After setting: delta-seconds, an HTTP date, or `date:N`."""
    try:
        checked = _check_retry_after(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    assert checked is not None
    return checked


def arg_byte_count(text: str) -> int:
    """Parse a non-negative integer number of bytes."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of bytes >= 0, got {text!r}")
    return int(text)


def arg_path(text: str) -> str:
    """Parse a request path that faults apply to."""
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"a fault path must start with '/', got {text!r}")
    return text
