"""Retrying a call with exponential backoff: the one retry loop of cloudinv.

``retry`` awaits a coroutine function until it returns, a failure is not worth retrying
(``retry_if`` says no), or ``attempts`` runs out (``None``: never, for sinks that must not skip
data); the last failure is then raised as it is, for the caller to turn into its own error.
``retry_sync`` is the same for code already on a worker thread (a SQLite store's writer),
which waits on an event, never ``time.sleep``. Waits grow from ``first_delay_s`` by
``factor`` up to ``max_delay_s``; ``jitter`` draws each wait uniformly up to that bound
("full jitter"), for many clients retrying one shared service.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

__all__ = ["RetryHook", "backoff_delay", "backoff_delays", "retry", "retry_sync"]

T = TypeVar("T")

RetryHook = Callable[[BaseException, int, float], None]
"""Called before each wait with the failure, the attempt that failed (1-based) and the wait."""


def _always(exc: BaseException) -> bool:
    return isinstance(exc, Exception)


def backoff_delay(
    attempt: int,
    first_delay_s: float,
    max_delay_s: float,
    *,
    factor: float = 2.0,
    jitter: bool = False,
) -> float:
    """The wait after failed attempt ``attempt`` (0-based), for loops that retry with
    state of their own (unprocessed items, cancelled transactions)."""
    bound = min(max_delay_s, first_delay_s * factor**attempt)
    return random.uniform(0, bound) if jitter else bound


def backoff_delays(
    first_delay_s: float, max_delay_s: float, *, factor: float = 2.0, jitter: bool = False
) -> Iterator[float]:
    """The waits between attempts, endless."""
    attempt = 0
    while True:
        yield backoff_delay(attempt, first_delay_s, max_delay_s, factor=factor, jitter=jitter)
        attempt += 1


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int | None,
    first_delay_s: float,
    max_delay_s: float,
    factor: float = 2.0,
    jitter: bool = False,
    retry_if: Callable[[BaseException], bool] = _always,
    on_retry: RetryHook | None = None,
) -> T:
    """``await call()`` until it succeeds; see the module docstring."""
    delays = backoff_delays(first_delay_s, max_delay_s, factor=factor, jitter=jitter)
    attempt = 1
    while True:
        try:
            return await call()
        except Exception as exc:
            if not retry_if(exc) or (attempts is not None and attempt >= attempts):
                raise
            delay = next(delays)
            if on_retry is not None:
                on_retry(exc, attempt, delay)
        await asyncio.sleep(delay)
        attempt += 1


def retry_sync(
    call: Callable[[], T],
    *,
    attempts: int,
    first_delay_s: float,
    max_delay_s: float,
    factor: float = 2.0,
    retry_if: Callable[[BaseException], bool] = _always,
    on_retry: RetryHook | None = None,
) -> T:
    """:func:`retry` for a worker thread (never the event loop)."""
    delays = backoff_delays(first_delay_s, max_delay_s, factor=factor)
    pause = threading.Event()
    attempt = 1
    while True:
        try:
            return call()
        except Exception as exc:
            if not retry_if(exc) or attempt >= attempts:
                raise
            delay = next(delays)
            if on_retry is not None:
                on_retry(exc, attempt, delay)
        pause.wait(delay)
        attempt += 1
