"""Cleanup that ends on time, whatever the awaited does.

``asyncio.wait_for`` is not enough for stopping clients: after its timeout it cancels the
awaited and then waits, without limit, for it to end, and some clients' cleanup swallows a
cancellation and goes on waiting (aiokafka's producer flushing to a broker that is gone, or
a consumer joining a group on one). :func:`finish_within` gives up instead: what was
abandoned is left to the process's exit, and every source cloudinv stops this way publishes
again what was not acknowledged end to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

__all__ = ["finish_within"]

_CANCEL_TRIES = 5
_CANCEL_WAIT_S = 0.1


async def finish_within(work: Awaitable[Any], timeout_s: float) -> asyncio.Future[Any] | None:
    """Await ``work`` for at most ``timeout_s`` seconds, then cancel it for at most half a
    second more. Returns the finished future (its result or exception for the caller to
    read), or ``None`` when it was abandoned."""
    future = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({future}, timeout=max(timeout_s, 0.0))
    for _ in range(_CANCEL_TRIES):
        if done:
            break
        future.cancel()
        done, _ = await asyncio.wait({future}, timeout=_CANCEL_WAIT_S)
    if not done:
        return None
    if not future.cancelled():
        future.exception()  # retrieved here: a caller that does not read it loses nothing
    return future
