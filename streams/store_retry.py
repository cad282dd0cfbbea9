"""Calling a store from a sink agent until it succeeds.

A sink must not skip data: when a store (or the warehouse) is busy or down, the agent waits
it out, with backoff, and the stream stops consuming meanwhile, so Kafka keeps what is not
stored yet. A :class:`~cloudinv.sinks.store.StoreError` is different: the store refuses what
was asked (closed, a file from a newer cloudinv), so it is raised at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from cloudinv.core.retry import retry
from cloudinv.sinks.store import StoreError

__all__ = ["RETRY_FIRST_DELAY_S", "RETRY_MAX_DELAY_S", "until_stored"]

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

RETRY_FIRST_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 30.0


def _worth_retrying(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and not isinstance(exc, StoreError)


async def until_stored(
    what: str, call: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``await call(*args, **kwargs)`` until it succeeds; ``what`` names it in the log."""

    def logged(exc: BaseException, attempt: int, delay: float) -> None:
        log.warning("%s failed (attempt %d, retrying in %.1fs): %s", what, attempt, delay, exc)

    return await retry(
        lambda: call(*args, **kwargs),
        attempts=None,
        first_delay_s=RETRY_FIRST_DELAY_S,
        max_delay_s=RETRY_MAX_DELAY_S,
        retry_if=_worth_retrying,
        on_retry=logged,
    )
