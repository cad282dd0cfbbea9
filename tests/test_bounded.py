"""cloudinv.core.bounded: cleanups and command exits that end on time, whatever the awaited
does. The stubborn tasks here stand in for a client whose cleanup swallows cancellations (as
aiokafka's consumer joining a group on a broker that is gone did, tests/test_reactor.py).
Sync tests: bounded.run makes its own loop, as the command line does."""

from __future__ import annotations

import asyncio
import logging
import signal

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
