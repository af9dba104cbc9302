"""API key shape and generation for the local server (the real checksum algorithm is unknown)."""

from __future__ import annotations

import hashlib
import re
import secrets

API_KEY_PATTERN = re.compile(r"^ags_[a-f0-9]{32}_[a-f0-9]{6}$", re.IGNORECASE)


def generate_api_key() -> str:
    """Return a fresh random key of the AgentSight shape; the suffix is a local sha256-based checksum."""
    body = secrets.token_hex(16)
    checksum = hashlib.sha256(body.encode("ascii")).hexdigest()[:6]
    return f"ags_{body}_{checksum}"


def is_well_formed(key: str) -> bool:
    """Tell whether a key has the documented shape; fullmatch so a trailing newline cannot slip past `$`."""
    return API_KEY_PATTERN.fullmatch(key) is not None


def normalise_key(key: str) -> str:
    """Return the lookup form of a key: the shape is case-insensitive, so keys are compared lowercased."""
    return key.lower()
