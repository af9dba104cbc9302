"""HTTP to AgentSight: authentication, bounded retries with backoff and ``Retry-After``, gzip once advertised,
and error detail in DRF's shapes. The API key goes only into the ``Authorization`` header."""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import requests

from .config import Settings, redact_keys
from .jsondoc import dumps, loads
from .version import SDK_NAME, __version__

logger = logging.getLogger("agentsight_otel")

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
SUCCESS_STATUSES = frozenset({200, 201})
RETRY_AFTER_CAP_S = 30.0
GZIP_MIN_BYTES = 8 * 1024
GZIP_LEVEL = 1  # conversation JSON compresses ~10x even at level 1, at a fraction of level 6's CPU
PREFLIGHT_TIMEOUT_S = 5.0
PREFLIGHT_RETRY_S = 60.0
_KEY_MARK = re.compile(rb"ags_", re.IGNORECASE)  # a cheap first look before decoding a reply to redact it


def parse_retry_after(value: str | None, cap: float = RETRY_AFTER_CAP_S) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), clamped to ``[0, cap]``.

    Returns ``None`` when the header is absent or unparseable, so the normal backoff applies.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return min(max(seconds, 0.0), cap)


def error_detail(body: Any, text: str) -> str:
    """The human-readable reason in a DRF error body: ``detail``, ``error``, the field map, then the raw text."""
    if isinstance(body, dict):
        if body.get("detail"):
            return str(body["detail"])
        if body.get("error"):
            return str(body["error"])
        parts = [
            f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in body.items() if k != "truncated"
        ]
        if parts:
            return "; ".join(parts)
    if isinstance(body, list) and body:
        return "; ".join(map(str, body))
    return text[:500]


def _session_for(endpoint: str) -> requests.Session:
    """A session with the environment's proxy and CA settings read once, not on every request.

    requests re-reads the whole environment for each request (proxies, CA bundle, .netrc), which costs more than
    a small ingest itself; the same settings, resolved once for the one endpoint, are kept.
    """
    session = requests.Session()
    session.proxies.update(requests.utils.get_environ_proxies(endpoint))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False
    return session


@dataclass
class Reply:
    """What one request came to: a status and body, or no response at all (``status`` is ``None``)."""

    status: int | None
    body: Any = None
    text: str = ""
    error: str | None = None
    attempts: int = 0
    retry_after: float | None = None
    gzipped: bool = False

    @property
    def ok(self) -> bool:
        return self.status in SUCCESS_STATUSES

    def describe(self) -> str:
        if self.status is None:
            return f"AgentSight could not be reached: {self.error}"
        return f"HTTP {self.status}: {error_detail(self.body, self.text)}"


@dataclass
class ServerInfo:
    """What ``GET /api/me/`` taught us; empty when the backend predates that route."""

    capabilities: frozenset[str] = frozenset()
    environments: tuple[str, ...] = ()
    role: str | None = None
    reachable: bool = False
    notes: list[str] = field(default_factory=list)


class Transport:
    """One ``requests.Session`` to one AgentSight endpoint; safe to share between threads."""

    def __init__(self, settings: Settings, *, session: requests.Session | None = None, max_attempts: int = 3) -> None:
        if not settings.api_key:
            raise ValueError("a Transport needs an API key")
        self._settings = settings
        self._session = session or _session_for(settings.endpoint)
        self._session.headers.update(
            {
                "Authorization": f"Api-Key {settings.api_key}",
                "Accept": "application/json",
                "User-Agent": f"{SDK_NAME}/{__version__}",
            }
        )
        self._max_attempts = max(1, max_attempts)
        self._stop = threading.Event()
        self._info: ServerInfo | None = None
        self._info_lock = threading.Lock()
        self._preflight: threading.Thread | None = None
        self._next_preflight = 0.0
        self._reported: set[str] = set()

    def after_fork(self) -> None:
        """In a forked child: a fresh HTTP session and locks; the parent's connections are not shared."""
        headers = dict(self._session.headers)
        self._session = _session_for(self._settings.endpoint)
        self._session.headers.update(headers)
        self._stop = threading.Event()
        self._info_lock = threading.Lock()
        self._preflight = None

    def __repr__(self) -> str:
        return f"Transport(endpoint={self._settings.endpoint!r}, key={self._settings.key_hint})"

    @property
    def endpoint(self) -> str:
        return self._settings.endpoint

    def url(self, path: str) -> str:
        return self._settings.endpoint + "/" + path.lstrip("/")

    def close(self) -> None:
        """Interrupt any backoff wait and release connections; idempotent."""
        self._stop.set()
        self._session.close()

    # -- capability negotiation -------------------------------------------------------------------------

    def server_info(self) -> ServerInfo:
        """What ``GET /api/me/`` taught so far; never blocks.

        The first call starts the one preflight request on a background thread; until it answers, callers see
        an empty :class:`ServerInfo` (plain bodies, built-in environments).
        """
        with self._info_lock:
            due = time.monotonic() >= self._next_preflight
            if self._info is None and self._preflight is None and due:
                self._preflight = threading.Thread(target=self._run_preflight, name="agentsight-preflight", daemon=True)
                self._preflight.start()
            return self._info or ServerInfo()

    def wait_for_server_info(self, timeout: float) -> ServerInfo:
        """Start the preflight if needed and wait up to ``timeout`` seconds for it (for tools, not hot paths)."""
        self.server_info()
        thread = self._preflight
        if thread is not None:
            thread.join(timeout)
        return self.server_info()

    def _run_preflight(self) -> None:
        try:
            info = self._fetch_info()
        except Exception:  # noqa: BLE001 - a failed preflight only means no gzip
            logger.debug("AgentSight preflight failed", exc_info=True)
            info = ServerInfo()
        with self._info_lock:
            if info.reachable:
                self._info = info
            else:  # no answer at all: ask again later (not on every call) instead of giving up gzip for good
                self._preflight = None
                self._next_preflight = time.monotonic() + PREFLIGHT_RETRY_S

    def _fetch_info(self) -> ServerInfo:
        reply = self.request("GET", "/api/me/", timeout=min(PREFLIGHT_TIMEOUT_S, self._settings.timeout), attempts=1)
        if reply.status == 200 and isinstance(reply.body, dict):
            caps = reply.body.get("capabilities")
            capabilities = (
                frozenset(c.strip().lower() for c in caps if isinstance(c, str))
                if isinstance(caps, list)
                else frozenset()
            )
            envs = reply.body.get("environments")
            slugs = (
                tuple(e["slug"] for e in envs if isinstance(e, dict) and isinstance(e.get("slug"), str))
                if isinstance(envs, list)
                else ()
            )
            role = reply.body.get("role")
            info = ServerInfo(capabilities, slugs, role if isinstance(role, str) else None, True)
            if role == "read":
                self.report_once(
                    "key", f"the AgentSight API key ({self._settings.key_hint}) is read-only; ingest needs a write key"
                )
            return info
        if reply.status in (401, 403) and not self._stop.is_set():  # a closed transport's key was already replaced
            self.report_once(
                "key",
                f"AgentSight rejected the API key ({self._settings.key_hint}) with HTTP {reply.status}: "
                f"{error_detail(reply.body, reply.text)}; check AGENTSIGHT_API_KEY",
            )
        else:
            logger.debug("AgentSight /api/me/ unavailable (%s); sending plain JSON", reply.describe())
        return ServerInfo(reachable=reply.status is not None)

    def report_once(self, what: str, message: str) -> None:
        """Log an error the first time only: a dead key should be said clearly once, not on every batch."""
        with self._info_lock:
            if what in self._reported:
                return
            self._reported.add(what)
        logger.error("%s", message)

    # -- requests -----------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
        attempts: int | None = None,
        files: Any = None,
        data: Any = None,
    ) -> Reply:
        """Send with retries on 429/502/503/504 and connection errors, within ``deadline`` (monotonic seconds).

        Never raises for transport reasons; the :class:`Reply` says what happened.
        """
        timeout = timeout or self._settings.timeout
        deadline = deadline if deadline is not None else time.monotonic() + timeout * 2
        attempts = attempts or self._max_attempts
        reply = Reply(None, error="not attempted")
        for attempt in range(1, attempts + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                break
            reply = self._once(method, path, body, headers, params, min(timeout, remaining), files, data)
            reply.attempts = attempt
            if reply.ok or (reply.status is not None and reply.status not in RETRYABLE_STATUSES):
                return reply
            if attempt == attempts:
                break
            wait = self._backoff(attempt, reply)
            if time.monotonic() + wait >= deadline:
                break
            logger.debug("transient AgentSight failure (%s); retrying in %.2fs", reply.describe(), wait)
            if self._stop.wait(wait):
                break
        return reply

    def _backoff(self, attempt: int, reply: Reply) -> float:
        if reply.retry_after is not None:
            return reply.retry_after
        return 0.5 * (4 ** (attempt - 1)) * random.uniform(0.8, 1.2)

    def _once(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str] | None,
        params: dict[str, str] | None,
        timeout: float,
        files: Any,
        data: Any,
    ) -> Reply:
        try:
            response = self._session.request(
                method,
                self.url(path),
                data=body if body is not None else data,
                headers=headers,
                params=params,
                timeout=timeout,
                files=files,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return Reply(None, error=redact_keys(f"{type(exc).__name__}: {exc}"))
        content = response.content
        text = response.text if content else ""
        if _KEY_MARK.search(content):  # the server echoed a key: nothing it said may carry it further
            text = redact_keys(text)
            content = text.encode()
        try:
            parsed = loads(content) if content else None
        except ValueError:
            parsed = None
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return Reply(response.status_code, parsed, text, retry_after=retry_after)

    def post_json(self, path: str, document: Any, *, deadline: float | None = None) -> Reply:
        """POST a JSON document (uncompressed)."""
        return self.post_body(path, dumps(document), deadline=deadline)

    def post_body(self, path: str, body: bytes, *, deadline: float | None = None, allow_gzip: bool = False) -> Reply:
        """POST JSON bytes; gzip them when allowed, the server advertised ``gzip-ingest`` and they are big enough."""
        headers = {"Content-Type": "application/json"}
        if allow_gzip and len(body) > GZIP_MIN_BYTES and "gzip-ingest" in self.server_info().capabilities:
            body = zlib.compress(body, GZIP_LEVEL, wbits=31)  # a gzip stream in one pass (gzip.compress makes two)
            headers["Content-Encoding"] = "gzip"
        reply = self.request("POST", path, body=body, headers=headers, deadline=deadline)
        reply.gzipped = "Content-Encoding" in headers
        return reply

    def disable_gzip(self) -> None:
        """Stop compressing (the server refused a compressed body despite advertising it)."""
        with self._info_lock:
            if self._info is not None:
                info = self._info
                self._info = ServerInfo(
                    frozenset(info.capabilities - {"gzip-ingest"}), info.environments, info.role, info.reachable
                )
