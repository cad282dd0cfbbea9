"""cloudinv.core.bounded: cleanups and command exits that end on time, whatever the awaited
does. The stubborn tasks here stand in for a client whose cleanup swallows cancellations (as
aiokafka's consumer joining a group on a broker that is gone did, tests/test_reactor.py).
Sync tests: bounded.run makes its own loop, as the command line does."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cloudinv.core import bounded


async def _stubborn(started: asyncio.Event) -> None:
    started.set()
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue  # swallows every cancellation


def test_a_task_that_ignores_cancellation_does_not_hold_the_exit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio.run would wait for it for ever after main returned (the test's timeout)."""

    async def main() -> int:
        started = asyncio.Event()
        asyncio.get_running_loop().create_task(_stubborn(started), name="stubborn client")
        await started.wait()
        return 7

    with caplog.at_level(logging.WARNING, logger="cloudinv.core.bounded"):
        assert bounded.run(main(), exit_grace_s=0.2) == 7
    assert "1 task(s) did not end" in caplog.text and "stubborn client" in caplog.text


def test_what_finish_within_abandoned_does_not_hold_the_exit_either() -> None:
    async def main() -> bool:
        started = asyncio.Event()
        abandoned = await bounded.finish_within(_stubborn(started), 0.1)
        return abandoned is None

    assert bounded.run(main(), exit_grace_s=0.2) is True


def test_tasks_that_end_when_cancelled_run_their_cleanup() -> None:
    cleaned: list[str] = []

    async def polite() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append("polite")

    async def main() -> None:
        asyncio.get_running_loop().create_task(polite())
        await asyncio.sleep(0)

    bounded.run(main())
    assert cleaned == ["polite"]


def test_ctrl_c_cancels_the_command_and_raises_keyboard_interrupt() -> None:
    """As asyncio.run: the command's own cleanup runs (its ``finally``), then the interrupt.
    The process starts with Python's own SIGINT handler, as the command line does (an earlier
    test in this process may have left another one)."""
    cleaned: list[str] = []

    async def main() -> None:
        asyncio.get_running_loop().call_later(0.05, signal.raise_signal, signal.SIGINT)
        try:
            await asyncio.sleep(60)  # a bound on a hang: the interrupt ends it long before
        finally:
            cleaned.append("main")

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            bounded.run(main())
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert cleaned == ["main"]


# -- the default executor's threads -----------------------------------------------------------


def _never_released(never: threading.Event) -> None:
    never.wait()


def test_a_thread_stuck_in_a_blocking_call_does_not_hold_the_exit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio.run (shutdown_default_executor) would wait for the thread for ever."""
    never = threading.Event()
    started = threading.Event()

    def stuck() -> None:
        started.set()
        _never_released(never)

    async def main() -> int:
        asyncio.get_running_loop().create_task(asyncio.to_thread(stuck), name="stuck call")
        await asyncio.to_thread(started.wait)
        return 7

    try:
        with caplog.at_level(logging.WARNING, logger="cloudinv.core.bounded"):
            assert bounded.run(main(), exit_grace_s=0.2) == 7
    finally:
        never.set()  # lets the abandoned thread end with the test
    assert "1 thread(s) did not finish their call" in caplog.text
    assert "tests.test_bounded." in caplog.text and "<locals>.stuck" in caplog.text, caplog.text


def test_calls_that_finish_are_waited_for_and_results_and_errors_come_back() -> None:
    finished: list[int] = []
    go = threading.Event()

    def slow(n: int) -> int:
        go.wait()
        finished.append(n)
        return n * 2

    def fails() -> None:
        raise ValueError("from a thread")

    async def main() -> list[int]:
        doubled = await asyncio.gather(
            *(asyncio.to_thread(slow, n) for n in range(40)), _release(go)
        )
        with pytest.raises(ValueError, match="from a thread"):
            await asyncio.to_thread(fails)
        # Left running when the command ends: the exit waits for it (it is released now).
        asyncio.get_running_loop().run_in_executor(None, slow, 99)
        return [d for d in doubled if d is not None]

    assert bounded.run(main()) == [n * 2 for n in range(40)]
    assert sorted(finished) == [*range(40), 99]


async def _release(go: threading.Event) -> None:
    go.set()


def test_a_command_whose_thread_is_stuck_exits(tmp_path: Path) -> None:
    """The process ends too: the interpreter's exit joins every ThreadPoolExecutor thread
    without limit, not the daemon threads of bounded.run's executor."""
    script = (
        "import asyncio, logging, threading\n"
        "from cloudinv.core import bounded\n"
        "logging.basicConfig()\n"
        "async def main():\n"
        "    never = threading.Event()\n"
        "    asyncio.get_running_loop().run_in_executor(None, never.wait)\n"
        "    return 'done'\n"
        "print(bounded.run(main(), exit_grace_s=0.2))\n"
    )
    # The timeout only bounds a hang (the fault this guards against); it ends in well under
    # a second.
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert "1 thread(s) did not finish their call" in result.stderr
    assert "Event.wait" in result.stderr, result.stderr
