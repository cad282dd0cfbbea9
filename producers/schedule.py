"""Scheduled collection: scan every registered type on its interval and publish the results.

What ``cloudinv up`` / ``cloudinv demo`` run in-process and ``cloudinv producers`` runs as a
role. Each type is due every ``scan_interval_s`` seconds, or its own interval from
``scan_type_intervals_s``; due types are scanned together, so one round makes one pass
over the accounts. A round that fails (Kafka down, accounts not discoverable) is logged,
counted and retried on the next tick; nothing is lost that was already acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cloudinv.catalog.registry import Registry, default_registry
from cloudinv.core.errors import CloudinvError
from cloudinv.core.logs import correlate
from cloudinv.core.models import ScanManifest
from cloudinv.core.settings import AwsSettings
from cloudinv.producers.credentials import AwsAccess
from cloudinv.producers.engine import ScanOptions, new_scan_id, scan, select_types
from cloudinv.producers.publisher import KafkaPublisher

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0
"""How long a round in progress may go on after a stop request (roles stop within 10 s)."""


@dataclass
class RoundSummary:
    scan_id: str
    types: int
    snapshots: int = 0
    scopes: int = 0
    failed_scopes: int = 0
    seconds: float = 0.0


@dataclass
class SchedulerStats:
    rounds: int = 0
    failed_rounds: int = 0
    interrupted_rounds: int = 0
    """Rounds cut short by a stop request (redone at the next start)."""
    snapshots: int = 0
    failed_scopes: int = 0
    last_error: str | None = None
    """Why the last round failed as a whole; None once a round completes."""
    last: RoundSummary | None = None
    history: list[RoundSummary] = field(default_factory=list)


class ScanScheduler:
    """Runs scan rounds on schedule and publishes every snapshot and manifest."""

    def __init__(
        self,
        aws: AwsSettings,
        publisher: KafkaPublisher,
        *,
        interval_s: float,
        type_intervals_s: Mapping[str, float] | None = None,
        access: AwsAccess | None = None,
        registry: Registry | None = None,
        types: list[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.aws = aws
        self.publisher = publisher
        self.registry = registry or default_registry()
        self.access = access or AwsAccess.from_settings(aws)
        self.interval_s = interval_s
        self.type_intervals_s = dict(type_intervals_s or {})
        for name in self.type_intervals_s:
            self.registry.get(name)  # unknown type names fail at start, with close matches
        self.types = (
            [self.registry.get(t).cfn_type for t in types]
            if types
            else [s.cfn_type for s in select_types(self.registry, aws)]
        )
        self._clock = clock
        self._next_due: dict[str, float] = {}
        self.stats = SchedulerStats()

    def leave_out(self, unserved: Mapping[str, str]) -> list[str]:
        """Stop scanning the types in ``unserved`` (type -> why: a simulated AWS that cannot
        serve them), with one log line; returns the types left out."""
        left_out = [t for t in self.types if t in unserved]
        if left_out:
            self.types = [t for t in self.types if t not in unserved]
            log.warning(
                "producers: %d type(s) left out, the AWS endpoint cannot serve them: %s",
                len(left_out),
                "; ".join(f"{t} ({unserved[t]})" for t in left_out),
            )
        return left_out

    def interval_for(self, cfn_type: str) -> float:
        return self.type_intervals_s.get(cfn_type, self.interval_s)

    def due_types(self) -> list[str]:
        now = self._clock()
        return [t for t in self.types if self._next_due.get(t, 0.0) <= now]

    async def run_round(self, types: list[str] | None = None) -> RoundSummary:
        """Scan ``types`` (default: every due type) once and publish everything."""
        types = types if types is not None else self.due_types()
        started = self._clock()
        summary = RoundSummary(scan_id=new_scan_id(), types=len(types))
        if not types:
            return summary
        options = ScanOptions(scan_id=summary.scan_id, max_concurrency=self.aws.max_concurrency)
        with correlate(summary.scan_id):
            await self._publish_scan(types, options, summary)
            self._after_round(types, started, summary)
        return summary

    async def _publish_scan(
        self, types: list[str], options: ScanOptions, summary: RoundSummary
    ) -> None:
        async for item in scan(
            self.aws, types=types, options=options, registry=self.registry, access=self.access
        ):
            await self.publisher.publish(item)
            if isinstance(item, ScanManifest):
                summary.scopes += 1
                if item.status != "complete":
                    summary.failed_scopes += 1
            else:
                summary.snapshots += 1
        await self.publisher.flush()

    def _after_round(self, types: list[str], started: float, summary: RoundSummary) -> None:
        for cfn_type in types:
            self._next_due[cfn_type] = started + self.interval_for(cfn_type)
        summary.seconds = self._clock() - started
        self.stats.rounds += 1
        self.stats.snapshots += summary.snapshots
        self.stats.failed_scopes += summary.failed_scopes
        self.stats.last = summary
        self.stats.history = [*self.stats.history[-9:], summary]
        log.info(
            "scan %s: %d types, %d scopes (%d failed), %d snapshots in %.1fs",
            summary.scan_id,
            summary.types,
            summary.scopes,
            summary.failed_scopes,
            summary.snapshots,
            summary.seconds,
        )

    async def run(
        self, stop: asyncio.Event, tick_s: float = 1.0, *, stop_grace_s: float = STOP_GRACE_S
    ) -> None:
        """Run rounds until ``stop`` is set. Errors fail a round, never the loop.

        A round in progress when ``stop`` is set gets ``stop_grace_s`` to finish, then is
        cancelled: a role must stop within a container's grace period (10 s), and a scan
        cut short is simply redone at the next start. Nothing of it is half-applied: the
        snapshots it published are idempotent, and a scope whose manifest was not
        published deletes nothing.
        """
        while not stop.is_set():
            round_task = asyncio.create_task(self.run_round(), name="scan-round")
            try:
                if not await _finished_or_stopped(round_task, stop, stop_grace_s):
                    self.stats.interrupted_rounds += 1
                    log.info(
                        "scan round interrupted by the stop request after %.0fs of grace; "
                        "it is redone at the next start",
                        stop_grace_s,
                    )
                    return
                round_task.result()
                self.stats.last_error = None
            except asyncio.CancelledError:
                raise
            except CloudinvError as exc:
                self.stats.failed_rounds += 1
                self.stats.last_error = str(exc)
                log.error("scan round failed: %s (retrying next round)", exc)
                await _wait(stop, min(self.interval_s, 30.0))
            except Exception as exc:
                self.stats.failed_rounds += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("scan round failed (retrying next round)")
                await _wait(stop, min(self.interval_s, 30.0))
            finally:
                if not round_task.done():
                    round_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await round_task
            await _wait(stop, tick_s)


async def _finished_or_stopped(
    task: asyncio.Task[RoundSummary], stop: asyncio.Event, grace_s: float
) -> bool:
    """Wait for ``task``; once ``stop`` is set, for ``grace_s`` more at most. Returns
    whether it finished (else it is still running; the caller cancels it)."""
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return True
    await asyncio.wait({task}, timeout=grace_s)
    return task.done()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
