"""Settings, resolved in one place: argument > environment (``AGENTSIGHT_*``) > ``.env`` file > default.

Nothing here runs at import; :func:`resolve_settings` is called when an exporter or the tracker first
needs its settings.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidApiKeyException

DEFAULT_ENDPOINT = "https://api.agentsight.io"
DEFAULT_TIMEOUT_S = 15.0
API_KEY_PATTERN = re.compile(r"^ags_[a-f0-9]{32}_[a-f0-9]{6}$", re.IGNORECASE)
BUILTIN_ENVIRONMENTS = ("production", "development")
ENVIRONMENT_ALIASES = {"prod": "production", "dev": "development"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

ENV_API_KEY = "AGENTSIGHT_API_KEY"
ENV_ENDPOINT = "AGENTSIGHT_API_ENDPOINT"
ENV_ENVIRONMENT = "AGENTSIGHT_ENVIRONMENT"
ENV_LOG_LEVEL = "AGENTSIGHT_LOG_LEVEL"
ENV_TIMEOUT = "AGENTSIGHT_TIMEOUT"
ENV_SPOOL_DIR = "AGENTSIGHT_SPOOL_DIR"
ENV_SPOOL_MAX_BYTES = "AGENTSIGHT_SPOOL_MAX_BYTES"
ENV_MAX_REQUEST_BYTES = "AGENTSIGHT_MAX_REQUEST_BYTES"
ENV_EXIT_TIMEOUT = "AGENTSIGHT_EXIT_TIMEOUT"
ENV_TRACE_HOLD = "AGENTSIGHT_TRACE_HOLD_SECONDS"
ENV_CONVERSATION_ID = "AGENTSIGHT_CONVERSATION_ID"
DEFAULT_TRACE_HOLD_S = 10.0
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
DEFAULT_EXIT_TIMEOUT_S = 5.0
SPOOL_OFF = ("off", "none", "false", "0", "disabled")

logger = logging.getLogger("agentsight_otel")


class _Unset:
    """Marks an argument that was not passed, so that ``None`` can still mean something."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def mask_key(key: str | None) -> str:
    """A printable stand-in for a key: enough to tell keys apart, never enough to use one."""
    if not key:
        return "<none>"
    return f"ags_…{key[-4:]}" if len(key) > 8 else "<hidden>"


_KEY_IN_TEXT = re.compile(r"ags_[a-f0-9]{32}_[a-f0-9]{6}", re.IGNORECASE)


def redact_keys(text: str) -> str:
    """Text from elsewhere (a server's error body) with every AgentSight-shaped key in it masked.

    A misconfigured proxy or server may echo the request's ``Authorization`` header back; what it says ends up in
    logs, reports and the spool's dead letters, where the key must not.
    """
    if "ags_" not in text and "AGS_" not in text.upper():
        return text
    return _KEY_IN_TEXT.sub(lambda found: mask_key(found.group(0)), text)


def check_api_key(key: str | None) -> str | None:
    """Return the key if it has AgentSight's shape, ``None`` if blank; raise if it is malformed.

    Surrounding whitespace is stripped (a key pasted with a newline is still the key).
    """
    if key is None:
        return None
    if not isinstance(key, str):
        raise InvalidApiKeyException(f"API key must be a string, not {type(key).__name__}")
    key = key.strip()
    if not key:
        return None
    if not API_KEY_PATTERN.match(key):
        raise InvalidApiKeyException(
            "API key does not have the AgentSight shape ags_<32 hex>_<6 hex> "
            f"(got {len(key)} characters); copy it again from the AgentSight settings page"
        )
    return key


def normalize_environment(
    value: str | None, known: tuple[str, ...] | frozenset[str] = BUILTIN_ENVIRONMENTS
) -> str | None:
    """Lower-case and de-alias an environment slug; ``None`` when it is not a known slug."""
    if value is None:
        return None
    slug = str(value).strip().lower()
    slug = ENVIRONMENT_ALIASES.get(slug, slug)
    return slug if slug in known else None


def normalize_endpoint(endpoint: str) -> str:
    """Strip whitespace and trailing slashes, so that joining with ``/api/...`` never gives ``//``."""
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        # The value is not echoed: a key pasted into the wrong variable must not end up in a log.
        raise ValueError(f"endpoint must be an http:// or https:// URL ({ENV_ENDPOINT} or endpoint=)")
    return endpoint


@dataclass(frozen=True)
class Settings:
    """Resolved settings. The key is kept out of ``repr`` so that logging a Settings never leaks it."""

    api_key: str | None = field(default=None, repr=False)
    endpoint: str = DEFAULT_ENDPOINT
    environment: str | None = None
    log_level: str | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    spool_dir: str | None = None  # None: no spool (explicitly switched off)
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    exit_timeout: float = DEFAULT_EXIT_TIMEOUT_S
    trace_hold: float = DEFAULT_TRACE_HOLD_S

    @property
    def key_hint(self) -> str:
        return mask_key(self.api_key)


def _dotenv_values() -> Mapping[str, str | None]:
    """Values from the nearest ``.env`` file, without touching ``os.environ``."""
    try:
        from dotenv import dotenv_values, find_dotenv
    except ImportError:  # python-dotenv is a dependency, but a broken install must not break tracking
        return {}
    try:
        path = find_dotenv(usecwd=True)
        return dotenv_values(path) if path else {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # unreadable: settings come from the environment alone
        global _said_dotenv_unreadable
        if not _said_dotenv_unreadable:
            _said_dotenv_unreadable = True
            logger.warning("the .env file could not be read (%s); using the environment alone", type(exc).__name__)
        return {}


_said_dotenv_unreadable = False


def _lookup(name: str, dotenv: Mapping[str, str | None]) -> str | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        value = dotenv.get(name)
    return value if value is not None and value.strip() else None


def resolve_settings(
    *,
    api_key: Any = UNSET,
    endpoint: Any = UNSET,
    environment: Any = UNSET,
    log_level: Any = UNSET,
    timeout: Any = UNSET,
    spool_dir: Any = UNSET,
    spool_max_bytes: Any = UNSET,
    max_request_bytes: Any = UNSET,
    exit_timeout: Any = UNSET,
    trace_hold: Any = UNSET,
) -> Settings:
    """Build :class:`Settings` from arguments, then the environment, then ``.env``, then defaults.

    Raises :class:`InvalidApiKeyException` or :class:`ValueError` for malformed values, naming the source.
    """
    dotenv = _dotenv_values()

    def pick(arg: Any, env_name: str) -> Any:
        return arg if arg is not UNSET and arg is not None else _lookup(env_name, dotenv)

    key = check_api_key(pick(api_key, ENV_API_KEY))
    raw_endpoint = pick(endpoint, ENV_ENDPOINT) or DEFAULT_ENDPOINT
    raw_env = pick(environment, ENV_ENVIRONMENT)
    env = str(raw_env).strip().lower() if raw_env else None
    env = ENVIRONMENT_ALIASES.get(env, env) if env else None
    level = pick(log_level, ENV_LOG_LEVEL)
    if level is not None:
        level = str(level).strip().upper()
        if level not in LOG_LEVELS:
            logger.warning("unknown log level in AGENTSIGHT_LOG_LEVEL or log_level=; using INFO")
            level = "INFO"
    raw_spool = pick(spool_dir, ENV_SPOOL_DIR)
    if raw_spool is False or (isinstance(raw_spool, str) and raw_spool.strip().lower() in SPOOL_OFF):
        spool = None
    else:
        from .spool import default_spool_dir

        spool = str(raw_spool) if raw_spool else str(default_spool_dir())
    return Settings(
        api_key=key,
        endpoint=normalize_endpoint(str(raw_endpoint)),
        environment=env,
        log_level=level,
        timeout=_number(pick(timeout, ENV_TIMEOUT), "timeout", ENV_TIMEOUT, DEFAULT_TIMEOUT_S),
        spool_dir=spool,
        spool_max_bytes=int(
            _number(
                pick(spool_max_bytes, ENV_SPOOL_MAX_BYTES),
                "spool_max_bytes",
                ENV_SPOOL_MAX_BYTES,
                DEFAULT_SPOOL_MAX_BYTES,
            )
        ),
        max_request_bytes=int(
            _number(
                pick(max_request_bytes, ENV_MAX_REQUEST_BYTES),
                "max_request_bytes",
                ENV_MAX_REQUEST_BYTES,
                DEFAULT_MAX_REQUEST_BYTES,
            )
        ),
        exit_timeout=_number(
            pick(exit_timeout, ENV_EXIT_TIMEOUT), "exit_timeout", ENV_EXIT_TIMEOUT, DEFAULT_EXIT_TIMEOUT_S
        ),
        trace_hold=_number(pick(trace_hold, ENV_TRACE_HOLD), "trace_hold", ENV_TRACE_HOLD, DEFAULT_TRACE_HOLD_S),
    )


def _number(value: Any, name: str, env_name: str, default: float) -> float:
    """A positive number from an argument or an environment string, with an error naming both."""
    if value is None:
        return default
    # The value is not echoed: a key pasted into the wrong variable must not end up in a log.
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} ({env_name}) must be a number") from None
    if number <= 0 or number != number:
        raise ValueError(f"{name} ({env_name}) must be positive")
    return number


def configured_environment() -> str | None:
    """``AGENTSIGHT_ENVIRONMENT`` (or its ``.env`` entry), lower-cased and de-aliased; ``None`` when unset."""
    value = _lookup(ENV_ENVIRONMENT, _dotenv_values())
    if value is None:
        return None
    slug = value.strip().lower()
    return ENVIRONMENT_ALIASES.get(slug, slug)


def configured_conversation_id() -> str | None:
    """``AGENTSIGHT_CONVERSATION_ID`` (or its ``.env`` entry), stripped: the conversation tracked into when none
    was chosen (as in 0.0.x); ``None`` when unset."""
    value = _lookup(ENV_CONVERSATION_ID, _dotenv_values())
    return value.strip() if value is not None else None


def apply_log_level(level: str | None) -> None:
    """Set the package logger's level when one was configured; otherwise leave logging to the host app."""
    if level:
        logger.setLevel(level)
