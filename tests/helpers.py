"""Small test helpers: waiting on a condition with a deadline instead of sleeping blindly."""

from __future__ import annotations

import time
from typing import Callable


def wait_until(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Return as soon as ``condition()`` is true; fail the test if it is not true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
