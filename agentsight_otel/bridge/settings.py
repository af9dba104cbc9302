"""The bridge's own settings: argument > environment (``AGENTSIGHT_BRIDGE_*``) > default.

Where the spans go (key, endpoint, spool, timeouts) is the exporter's business and is configured as for any
``AgentSightSpanExporter`` (``AGENTSIGHT_API_KEY``, ``AGENTSIGHT_API_ENDPOINT``, ``AGENTSIGHT_SPOOL_DIR``, ...).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4319  # not 4317/4318, which a collector on the same host uses itself
DEFAULT_GRPC_PORT = 4320  # the gRPC port the docs and configs use (the receiver is off unless a port is given)
DEFAULT_PATH = "/v1/traces"
MIB = 1024 * 1024

ENV_PREFIX = "AGENTSIGHT_BRIDGE_"


@dataclass(frozen=True)
class BridgeSettings:
    """How the bridge listens and protects itself. Tokens are kept out of ``repr``."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0 picks a free port
    grpc_port: int | None = None  # None: no gRPC receiver; 0 picks a free port
    path: str = DEFAULT_PATH
    tokens: tuple[str, ...] = field(default=(), repr=False)
    auth_header: str | None = None  # a header that may carry the token instead of Authorization: Bearer
    max_body_bytes: int = 32 * MIB  # on the wire (compressed)
    max_decompressed_bytes: int = 64 * MIB
    max_queued_spans: int = 50_000
    max_batch_spans: int = 10_000
    # Export lanes, one worker each; used only with an AgentSightSpanExporter (safe to call from several threads).
    export_workers: int = 2
    request_timeout: float = 30.0  # to receive one request's headers and body
    idle_timeout: float = 120.0  # a keep-alive connection with no request
    ack_timeout: float = 25.0  # how long a request waits for its spans' export before being told to retry
    retry_after: int = 2  # seconds, on 503 answers
    drain_timeout: float = 30.0  # at shutdown, to export what was accepted
    max_connections: int = 128
    grpc_workers: int = 16

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"path must start with '/', got {self.path!r}")
        for name in ("port", "grpc_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{name} must be between 0 and 65535, got {port}")
        for name in (
            "max_body_bytes",
            "max_decompressed_bytes",
            "max_queued_spans",
            "max_batch_spans",
            "export_workers",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("request_timeout", "idle_timeout", "ack_timeout", "drain_timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.retry_after < 0 or self.max_connections <= 0 or self.grpc_workers <= 0:
            raise ValueError("retry_after must be >= 0, max_connections and grpc_workers positive")
        if any(not t or any(c in t for c in "\r\n") for t in self.tokens):
            raise ValueError("a token must be a non-empty single line")

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")


_ENV_NAMES = {
    "host": "HOST",
    "port": "PORT",
    "grpc_port": "GRPC_PORT",
    "path": "PATH",
    "tokens": "TOKEN",
    "auth_header": "AUTH_HEADER",
    "max_body_bytes": "MAX_BODY_BYTES",
    "max_decompressed_bytes": "MAX_DECOMPRESSED_BYTES",
    "max_queued_spans": "MAX_QUEUED_SPANS",
    "max_batch_spans": "MAX_BATCH_SPANS",
    "export_workers": "EXPORT_WORKERS",
    "request_timeout": "REQUEST_TIMEOUT",
    "idle_timeout": "IDLE_TIMEOUT",
    "ack_timeout": "ACK_TIMEOUT",
    "retry_after": "RETRY_AFTER",
    "drain_timeout": "DRAIN_TIMEOUT",
    "max_connections": "MAX_CONNECTIONS",
}


def env_name(setting: str) -> str:
    """The environment variable of a setting, e.g. ``AGENTSIGHT_BRIDGE_TOKEN`` for ``tokens``."""
    return ENV_PREFIX + _ENV_NAMES[setting]


def _convert(name: str, raw: Any, kind: Any) -> Any:
    if name == "tokens":
        if isinstance(raw, str):
            return tuple(t.strip() for t in raw.split(",") if t.strip())
        return tuple(str(t) for t in raw)
    if raw is None:
        return None
    if name in ("max_body_bytes", "max_decompressed_bytes"):
        return parse_byte_count(raw)
    text = str(raw).strip()
    try:
        if "int" in str(kind):
            return int(text)
        if "float" in str(kind):
            return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    return text


def resolve_bridge_settings(**options: Any) -> BridgeSettings:
    """Settings from keyword arguments (``None`` = not given), then ``AGENTSIGHT_BRIDGE_*``, then defaults."""
    values: dict[str, Any] = {}
    known = {f.name: f.type for f in fields(BridgeSettings)}
    unknown = set(options) - set(known)
    if unknown:
        raise TypeError(f"unknown bridge setting(s): {', '.join(sorted(unknown))}")
    for name, kind in known.items():
        raw = options.get(name)
        if raw is None or (name == "tokens" and not raw):
            env = _ENV_NAMES.get(name)
            value = os.environ.get(ENV_PREFIX + env, "").strip() if env else ""
            raw = value or None
            if name == "tokens" and env and ENV_PREFIX + env in os.environ and not _convert(name, value, kind):
                # Set but empty (a secret that failed to arrive): that must not start an open bridge.
                raise ValueError(f"{ENV_PREFIX}{env} is set but holds no token; unset it to run without a token")
        if raw is None:
            continue
        try:
            values[name] = _convert(name, raw, kind)
        except ValueError as exc:
            env = _ENV_NAMES.get(name)
            source = f" ({ENV_PREFIX}{env})" if env else ""
            raise ValueError(f"{exc}{source}") from None
    return BridgeSettings(**values)


_BYTE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": MIB}
_BYTE_UNITS.update({"g": 1000**3, "gb": 1000**3, "gib": 1024 * MIB})


def parse_byte_count(text: str | int) -> int:
    """``1048576``, ``512KiB``, ``32MiB``, ``1GB`` -> a positive number of bytes."""
    raw = str(text).strip().lower().replace(" ", "")
    digits = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(digits) :]
    if unit not in _BYTE_UNITS or not digits:
        raise ValueError(f"not a byte count: {text!r} (e.g. 1048576, 512KiB, 32MiB)")
    try:
        number = float(digits)
    except ValueError:
        raise ValueError(f"not a byte count: {text!r}") from None
    count = int(number * _BYTE_UNITS[unit])
    if count <= 0:
        raise ValueError(f"a byte count must be positive, got {text!r}")
    return count
