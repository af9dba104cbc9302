"""JSON helpers: fast encoding when orjson is installed, and documents that always fit AgentSight's limits.

AgentSight refuses a whole batch for one over-long field, so every text and JSON document is cut to
16,384 characters here, with explicit truncation markers rather than silent loss.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

_orjson: Any = None
if not os.environ.get("AGENTSIGHT_DISABLE_ORJSON"):  # lets the tests run the standard-library path too
    try:  # orjson is an optional speed-up (the ``speed`` extra); the standard library is the fallback
        import orjson as _orjson
    except ImportError:  # pragma: no cover - exercised by the no-orjson test run
        _orjson = None

MAX_TEXT = 16_384
TRUNCATED_SUFFIX = "...[truncated]"
_LEAF_BUDGETS = (16_320, 4_096, 1_024, 256, 256)
MARKER = "_agentsight_truncated"


def _std_dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_fallback).encode()


def _fallback(value: Any) -> Any:
    """Objects that will not serialise: try their own dict forms, then ``repr``."""
    for attr in ("model_dump", "to_dict", "_asdict"):
        method = getattr(value, attr, None)
        if callable(method):
            try:
                return method()
            except Exception:  # noqa: BLE001 - a broken to_dict falls through to repr
                pass
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return repr(value)


if _orjson is not None:
    _orjson_mod = _orjson

    def dumps(value: Any) -> bytes:
        """Compact UTF-8 JSON (orjson writes NaN and Infinity as null, which AgentSight can store)."""
        try:
            return _orjson_mod.dumps(value, default=_fallback)
        except TypeError:  # orjson rejects what the standard library accepts (e.g. int keys > 64 bit)
            return _std_dumps(value)

    def dumps_fast(value: Any) -> bytes:
        """:func:`dumps` without the standard-library fallback: raises TypeError for what orjson cannot write."""
        return _orjson_mod.dumps(value, default=_fallback)  # type: ignore[no-any-return]

    loads: Callable[[Any], Any] = _orjson_mod.loads

else:  # pragma: no cover
    dumps = _std_dumps
    dumps_fast = _std_dumps
    loads = json.loads

_Fragment: Any = getattr(_orjson, "Fragment", None)  # orjson >= 3.9.15


def encoded(value: Any) -> Any:
    """``value`` serialised once, to be embedded as it is in the documents :func:`dumps_fast` writes (the value
    itself without orjson). :func:`dumps` cannot embed it when it falls back to the standard library."""
    return value if _Fragment is None else _Fragment(dumps(value))


HAS_ORJSON = _orjson is not None


def dumps_str(value: Any) -> str:
    """:func:`dumps` as text."""
    return dumps(value).decode()


def clamp_text(text: str, limit: int = MAX_TEXT) -> str:
    """Cut text to ``limit`` characters, ending in ``...[truncated]`` when it was cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED_SUFFIX)] + TRUNCATED_SUFFIX


def _trim_leaves(value: Any, budget: int) -> Any:
    if isinstance(value, str):
        return clamp_text(value, budget)
    if isinstance(value, dict):
        return {k: _trim_leaves(v, budget) for k, v in value.items()}
    if isinstance(value, list):
        return [_trim_leaves(v, budget) for v in value]
    return value


def _drop_largest(value: Any, limit: int) -> Any:
    """Drop whole entries, largest first, until the document fits; say what was dropped."""
    if isinstance(value, dict):
        sizes = sorted(value, key=lambda k: len(dumps(value[k])), reverse=True)
        kept = dict(value)
        dropped: list[str] = []
        for name in sizes:
            if len(dumps_str(kept)) <= limit:
                break
            del kept[name]
            dropped.append(str(name))
            kept[MARKER] = {"dropped_count": len(dropped), "dropped_keys": dropped[:20]}
        return kept
    if isinstance(value, list):
        kept_list = list(value)
        order = sorted(range(len(kept_list)), key=lambda i: len(dumps(kept_list[i])), reverse=True)
        drop: set[int] = set()
        for i in order:
            candidate = [v for j, v in enumerate(kept_list) if j not in drop]
            if len(dumps_str(candidate + [{MARKER: f"{len(drop)} item(s) dropped"}])) <= limit:
                break
            drop.add(i)
        rest = [v for j, v in enumerate(kept_list) if j not in drop]
        return rest + [{MARKER: f"{len(drop)} item(s) dropped"}] if drop else rest
    return value


def safe_document(value: Any, limit: int = MAX_TEXT) -> str:
    """Serialise ``value`` as valid JSON of at most ``limit`` characters, trimming and marking what was cut."""
    text = dumps_str(value)
    if len(text) <= limit:
        return text
    original = len(text)
    value = loads(text)  # normalise to plain JSON types first
    for budget in _LEAF_BUDGETS:
        value = _trim_leaves(value, budget)
        text = dumps_str(value)
        if len(text) <= limit:
            return text
    text = dumps_str(_drop_largest(value, limit))
    if len(text) <= limit:
        return text
    return dumps_str({MARKER: f"{original} characters dropped"})


def parse_document(text: str | None) -> Any:
    """Parse a JSON document carried as an attribute; ``None`` when absent or not JSON."""
    if text is None:
        return None
    try:
        return loads(text)
    except ValueError:
        return None
