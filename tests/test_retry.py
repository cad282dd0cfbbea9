"""cloudinv.core.retry: the one retry loop (backoff, give-up, which failures are retried)."""

from __future__ import annotations

import pytest

from cloudinv.core.retry import backoff_delays, retry, retry_sync
from cloudinv.sinks.dynamodb_client import retry_with_backoff


class Flaky:
    """Fails ``failures`` times with ``exc``, then returns ``"ok"``."""

    def __init__(self, failures: int, exc: Exception) -> None:
        self.failures = failures
        self.exc = exc
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"

    async def call(self) -> str:
        return self()


def test_waits_grow_to_the_cap() -> None:
    delays = backoff_delays(0.5, 3.0)
    assert [next(delays) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = backoff_delays(1.0, 4.0, jitter=True)
    firsts = [next(jittered) for _ in range(4)]
    assert all(0 <= d <= cap for d, cap in zip(firsts, [1.0, 2.0, 4.0, 4.0], strict=True))


async def test_retries_until_it_succeeds_and_reports_each_wait() -> None:
    flaky = Flaky(3, OSError("down"))
    seen: list[tuple[str, int, float]] = []
    got = await retry(
        flaky.call,
        attempts=None,
        first_delay_s=0.001,
        max_delay_s=0.004,
        on_retry=lambda exc, attempt, delay: seen.append((str(exc), attempt, delay)),
    )
    assert got == "ok" and flaky.calls == 4
    assert seen == [("down", 1, 0.001), ("down", 2, 0.002), ("down", 3, 0.004)]


async def test_gives_up_with_the_last_failure() -> None:
    flaky = Flaky(5, OSError("still down"))
    with pytest.raises(OSError, match="still down"):
        await retry(flaky.call, attempts=3, first_delay_s=0.001, max_delay_s=0.001)
    assert flaky.calls == 3


async def test_a_failure_not_worth_retrying_is_raised_at_once() -> None:
    flaky = Flaky(5, ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        await retry(
            flaky.call,
            attempts=None,
            first_delay_s=0.001,
            max_delay_s=0.001,
            retry_if=lambda exc: isinstance(exc, OSError),
        )
    assert flaky.calls == 1


def test_the_thread_variant_behaves_the_same() -> None:
    flaky = Flaky(2, OSError("locked"))
    assert retry_sync(flaky, attempts=3, first_delay_s=0.001, max_delay_s=0.001) == "ok"
    flaky = Flaky(5, OSError("locked"))
    with pytest.raises(OSError):
        retry_sync(flaky, attempts=2, first_delay_s=0.001, max_delay_s=0.001)
    assert flaky.calls == 2


async def test_the_dynamodb_stores_retry_names_what_kept_failing() -> None:
    """sinks.dynamodb_client.retry_with_backoff: ``retry_on`` failures are retried, the last
    one becomes the store's own error (``gave_up``); any other failure is raised at once."""

    class Moved(Exception):
        pass

    flaky = Flaky(5, Moved("moved"))
    retries: list[int] = []
    with pytest.raises(RuntimeError, match="kept moving: moved"):
        await retry_with_backoff(
            flaky.call,
            attempts=3,
            retry_on=Moved,
            on_retry=lambda exc, attempt, delay: retries.append(attempt),
            gave_up=lambda exc: RuntimeError(f"kept moving: {exc}"),
        )
    assert flaky.calls == 3 and retries == [1, 2]

    flaky = Flaky(2, Moved("moved"))
    assert await retry_with_backoff(flaky.call, attempts=3, retry_on=Moved) == "ok"

    flaky = Flaky(1, ValueError("bad"))
    with pytest.raises(ValueError, match="bad"):
        await retry_with_backoff(
            flaky.call, attempts=3, retry_on=Moved, gave_up=lambda exc: RuntimeError("no")
        )
    assert flaky.calls == 1
