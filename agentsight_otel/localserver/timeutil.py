"""ISO-8601 parsing and formatting shared by validation, storage and the transcript projection."""

from __future__ import annotations

import re
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Any

# Python 3.9's fromisoformat rejects "Z" and fractions other than 3/6 digits, so parse by hand.
_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?$"
)

# Exactly what format_timestamp writes (and the SDKs send): fixed width, so such strings sort as text in time order.
_CANONICAL = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}\+00:00"
_CANONICAL_LINES_RE = re.compile(f"(?:{_CANONICAL}\n)*{_CANONICAL}")


def parse_timestamp(value: object) -> datetime | None:
    """Parse an ISO-8601 date-time string into an aware UTC datetime, or return None if it is not one."""
    if not isinstance(value, str):
        return None
    if len(value) == 32 and value.endswith("+00:00"):  # what the SDKs send: the fast, exact C parser
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    match = _ISO_RE.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        tz = timezone.utc
        if sign:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-offset if sign == "-" else offset)
        parsed = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micros, tzinfo=tz)
        # in UTC, 0001-01-01T00:00+01:00 falls before year 1 and 9999-12-31T23:59-01:00 after year 9999
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


def format_timestamp(value: datetime) -> str:
    """Format a datetime as the SDK does (UTC, microseconds, `+00:00`); such strings sort as text."""
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def utc_now() -> str:
    """Return the current time in the canonical format."""
    return format_timestamp(datetime.now(timezone.utc))


def all_canonical(stamps: list[Any]) -> bool:
    """Tell whether every stamp (at least one) is a real date-time written exactly as format_timestamp writes it.

    Ingest meets a few timestamps per item, so this runs C loops over the whole list (one regex over the joined
    text, then datetime's parser) instead of calling parse_timestamp per stamp. Stamps that pass are valid for
    parse_timestamp, are their own canonical form, and their text order is their time order.
    """
    try:
        text = "\n".join(stamps)
    except TypeError:  # None or something else that is not a string
        return False
    if _CANONICAL_LINES_RE.fullmatch(text) is None:
        return False
    try:
        deque(map(datetime.fromisoformat, stamps), maxlen=0)  # the pattern lets February 30th through
    except ValueError:
        return False
    return True
