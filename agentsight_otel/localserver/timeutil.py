"""ISO-8601 parsing and formatting shared by validation, storage and the transcript projection."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

# Python 3.9's fromisoformat rejects "Z" and fractions other than 3/6 digits, so parse by hand.
_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?$"
)


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
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc)


def format_timestamp(value: datetime) -> str:
    """Format a datetime as the SDK does (UTC, microseconds, `+00:00`); such strings sort as text."""
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def utc_now() -> str:
    """Return the current time in the canonical format."""
    return format_timestamp(datetime.now(timezone.utc))
