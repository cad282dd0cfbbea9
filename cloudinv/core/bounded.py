"""Cleanup that ends on time, whatever the awaited does.

``asyncio.wait_for`` is not enough for stopping clients: after its timeout it cancels the
awaited and then waits, without limit, for it to end, and some clients' cleanup swallows a
cancellation and goes on waiting (aiokafka's producer flushing to a broker that is gone, or
a consumer joining a group on one). :func:`finish_within` gives up instead: what was
abandoned is left to the process's exit, and every source cloudinv stops this way publishes
again what was not acknowledged end to end. :func:`run` is ``asyncio.run`` for the command
line, whose own exit does the same with the tasks still running when a command is done.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Coroutine
from types import FrameType
from typing import Any, TypeVar

__all__ = ["finish_within", "run"]

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_GRACE_S = 5.0
"""How long the tasks still running when a command is done get to end once cancelled."""

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


def run(main: Coroutine[Any, Any, T], *, exit_grace_s: float = EXIT_GRACE_S) -> T:
    """Run ``main`` on a new event loop, as ``asyncio.run`` does (the first Ctrl-C cancels it
    and raises ``KeyboardInterrupt``, a second one at once), except at the end: the tasks
    still running are cancelled and get ``exit_grace_s`` to end, and those that do not are
    abandoned with the loop and logged. ``asyncio.run`` waits for them without limit, which
    undid :func:`finish_within`: the task it abandoned held the process's exit."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(main)
    interrupted = False

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        if interrupted or task.done():
            raise KeyboardInterrupt
        interrupted = True
        task.cancel()
        loop.call_soon_threadsafe(lambda: None)  # wakes the loop's selector

    previous = None
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        try:
            _end_tasks(loop, exit_grace_s)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _end_tasks(loop: asyncio.AbstractEventLoop, grace_s: float) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not pending:
        return
    for t in pending:
        t.cancel()
    done, left = loop.run_until_complete(asyncio.wait(pending, timeout=grace_s))
    for t in done:
        if not t.cancelled() and t.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception in a task ended with the command",
                    "exception": t.exception(),
                    "task": t,
                }
            )
    if left:
        log.warning(
            "%d task(s) did not end within %.0fs of the command's end and were abandoned: %s",
            len(left),
            grace_s,
            ", ".join(sorted(t.get_name() for t in left)),
        )
