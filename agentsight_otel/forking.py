"""Renewing per-process state in a forked child (locks a parent thread may have held, queues that are the parent's)."""

from __future__ import annotations

import os
import weakref
from typing import Callable


def call_in_forked_child(method: Callable[[], object]) -> None:
    """Call this bound method in every child forked from now on, without keeping its object alive."""
    if not hasattr(os, "register_at_fork"):  # not on Windows, where processes are not forked
        return
    ref = weakref.WeakMethod(method)

    def in_child() -> None:
        alive = ref()
        if alive is not None:
            alive()

    os.register_at_fork(after_in_child=in_child)
