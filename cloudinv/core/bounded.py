"""Cleanup that ends on time, whatever the awaited does.

``asyncio.wait_for`` is not enough for stopping clients: after its timeout it cancels the
awaited and then waits, without limit, for it to end, and some clients' cleanup swallows a
cancellation and goes on waiting (aiokafka's producer flushing to a broker that is gone, or
a consumer joining a group on one). :func:`finish_within` gives up instead: what was
abandoned is left to the process's exit, and every source cloudinv stops this way publishes
again what was not acknowledged end to end. :func:`run` is ``asyncio.run`` for the command
line, whose own exit does the same with the tasks still running when a command is done, and
with the threads of its default executor (``asyncio.to_thread``, ``run_in_executor(None,
...)``): a thread stuck in a blocking call is abandoned after a grace and logged, and as
:class:`ExitFreeExecutor`'s threads are daemons it holds neither :func:`run` nor the
interpreter's exit (which joins every ``ThreadPoolExecutor`` thread without limit).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any, ParamSpec, TypeVar

__all__ = ["ExitFreeExecutor", "finish_within", "run"]

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

EXIT_GRACE_S = 5.0
"""How long the tasks still running when a command is done get to end once cancelled, and
then how long the default executor's threads get to finish their calls."""

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


_Call = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class ExitFreeExecutor(ThreadPoolExecutor):
    """A thread pool as ``ThreadPoolExecutor`` (threads started as calls come, up to
    ``max_workers``, idle ones reused), whose threads are daemons: one stuck in a blocking
    call does not hold the interpreter's exit. :meth:`stop_within` is ``shutdown`` with a
    time limit, which ``ThreadPoolExecutor`` (and ``loop.shutdown_default_executor`` in
    Python 3.11) lacks; it names the calls it abandoned.

    It subclasses ``ThreadPoolExecutor`` only because ``loop.set_default_executor`` takes
    nothing else in Python 3.11; every method it has is its own, none of the base's
    internals are used."""

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "run") -> None:
        super().__init__(max_workers, thread_name_prefix)  # its default size, no thread yet
        self._size = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._prefix = thread_name_prefix
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._daemons: list[threading.Thread] = []
        self._running: dict[str, str] = {}  # thread name -> the call it runs
        self._stopping = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._stopping:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._calls.put((future, fn, args, kwargs))
            if not self._idle.acquire(timeout=0) and len(self._daemons) < self._size:
                thread = threading.Thread(
                    target=self._work, name=f"{self._prefix}_{len(self._daemons)}", daemon=True
                )
                thread.start()
                self._daemons.append(thread)
        return future

    def _work(self) -> None:
        name = threading.current_thread().name
        while (call := self._calls.get()) is not None:
            future, fn, args, kwargs = call
            del call
            if future.set_running_or_notify_cancel():
                self._running[name] = _describe(fn)
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # the caller reads it, as with ThreadPoolExecutor
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                finally:
                    del self._running[name], future, fn, args, kwargs
            self._idle.release()
        self._calls.put(None)  # the next thread stops too

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if cancel_futures:
                while True:
                    try:
                        call = self._calls.get_nowait()
                    except queue.Empty:
                        break
                    if call is not None:
                        call[0].cancel()
            if not self._stopping:
                self._stopping = True
                self._calls.put(None)
        if wait:
            for thread in list(self._daemons):
                thread.join()

    def stop_within(self, timeout_s: float) -> list[str]:
        """Shut down, waiting at most ``timeout_s`` for the calls queued or running to end;
        returns the calls still running then (``thread: function``), which are abandoned."""
        self.shutdown(wait=False)
        deadline = time.monotonic() + max(timeout_s, 0.0)
        for thread in list(self._daemons):
            thread.join(max(deadline - time.monotonic(), 0.0))
        return sorted(
            f"{thread.name}: {self._running.get(thread.name, 'queued calls')}"
            for thread in self._daemons
            if thread.is_alive()
        )


def _describe(fn: Callable[..., Any]) -> str:
    """The function a call runs, through ``asyncio.to_thread``'s wrapping (a partial of
    ``Context.run``) and other partials."""
    while isinstance(fn, functools.partial):
        inner = fn.func
        runs_in_context = isinstance(getattr(inner, "__self__", None), contextvars.Context)
        fn = fn.args[0] if runs_in_context and fn.args else inner
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}.{name}" if module else name


def run(main: Coroutine[Any, Any, T], *, exit_grace_s: float = EXIT_GRACE_S) -> T:
    """Run ``main`` on a new event loop, as ``asyncio.run`` does (the first Ctrl-C cancels it
    and raises ``KeyboardInterrupt``, a second one at once), except at the end: the tasks
    still running are cancelled and get ``exit_grace_s`` to end, and those that do not are
    abandoned with the loop and logged. ``asyncio.run`` waits for them without limit, which
    undid :func:`finish_within`: the task it abandoned held the process's exit. The same
    for the default executor's threads: they get ``exit_grace_s`` to finish their calls,
    and a call still running then is abandoned and logged (:class:`ExitFreeExecutor`)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    executor = ExitFreeExecutor(thread_name_prefix="asyncio")
    loop.set_default_executor(executor)
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
            _stop_executor(executor, exit_grace_s)
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


def _stop_executor(executor: ExitFreeExecutor, grace_s: float) -> None:
    abandoned = executor.stop_within(grace_s)
    if abandoned:
        log.warning(
            "%d thread(s) did not finish their call within %.0fs of the command's end and "
            "were abandoned: %s",
            len(abandoned),
            grace_s,
            ", ".join(abandoned),
        )
