"""Opening a SQLite file that other processes may be opening at the same moment.

Several processes share one data directory (two ``cloudinv worker`` copies, the API, the
CLI). Switching a new file to WAL mode takes an exclusive lock, and SQLite can answer
"database is locked" right away there instead of waiting its busy timeout; measured in
tests/test_scaleout.py, where two workers start together. Opening is retried a few times
on that error only; anything else is raised at once.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["open_retrying"]

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 40
DELAY_S = 0.25


def open_retrying(open_: Callable[[], T], what: str) -> T:
    """Run ``open_`` (on a store's own thread, never the event loop), retrying while the
    file is locked by another process's open; about 10 s in all."""
    pause = threading.Event()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return open_()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == ATTEMPTS:
                raise
            if attempt == 1:
                log.info("%s is being opened by another process; waiting", what)
            pause.wait(DELAY_S)  # a store thread: nothing else waits on it
    raise AssertionError("unreachable")
