"""Never read past a batch the broker has not made readable yet.

Kafka makes a partition's messages readable in offset order: a fetch never returns offset N+1
while N is still being written. Tansu, the embedded broker, does not keep that promise when
two producers write to one partition at once (the CloudTrail tailer and a backfill, the
reactor and a scan): a fetch can return the batch at offsets 3564-3569 while the batch at
3558-3563, already assigned its offsets and acknowledged to its producer, is not readable
yet. aiokafka then moves its position to 3570 and never asks for 3558-3563 again, and Faust
marks the hole as done. The worker commits past six events it never read; the sources that
wait for that commit (an SQS message, a backfilled file) let go of them: they are lost. Seen
once in the recovery test's loaded runs; a tail of eight producers writing 48,000 messages
into one Tansu topic missed 6 to 18 of them in each of three runs (``tests/test_kafka_holes.py``).

:func:`install` makes every aiokafka consumer of the process stop a fetched partition's
records at such a hole: what comes before it is delivered, the position stays at the hole,
and the next fetch asks for it again. On a Kafka cluster a hole in a topic that is not
compacted cannot happen (control and aborted batches are still returned, and step over their
offsets as before). Compacted topics (Faust's ``-changelog`` topics and the compacted cloudinv
topics, :data:`~cloudinv.core.kafka.COMPACTED_TOPICS`) have real holes and are read as they
come. A hole that is still there after :data:`PATIENCE_S` is read past, with a warning, so a
broker that never fills it cannot stop a worker for good.

This replaces aiokafka's private ``PartitionRecords`` class in ``aiokafka.consumer.fetcher``:
aiokafka is pinned exactly, and ``tests/test_dependency_canaries.py`` fails when an upgrade
changes what this relies on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiokafka.consumer import fetcher as aiokafka_fetcher

from cloudinv.core.topics import Topic

__all__ = [
    "ORIGINAL_PARTITION_RECORDS",
    "PATIENCE_S",
    "GuardedPartitionRecords",
    "HoleStats",
    "install",
    "is_compacted",
    "stats",
]

log = logging.getLogger(__name__)

PATIENCE_S = 10.0
"""How long a hole may stay before it is read past (it filled within milliseconds on Tansu)."""

_COMPACTED_SUFFIXES: tuple[str, ...] = (Topic.ACTIVITY.value,)
"""The cloudinv topics created compacted (kept equal to COMPACTED_TOPICS by a test)."""


class HoleStats:
    """What the guard saw in this process."""

    def __init__(self) -> None:
        self.held = 0
        """Fetches whose records stopped at a hole (and were asked for again)."""
        self.read_past = 0
        """Holes still there after :data:`PATIENCE_S`, read past."""


stats = HoleStats()

_since: dict[tuple[str, int], tuple[int, float]] = {}
"""(topic, partition) → (the offset missing, when the hole was first seen)."""


def is_compacted(topic: str) -> bool:
    """Whether ``topic`` may have real holes: a Faust changelog or a compacted cloudinv topic
    (any prefix)."""
    if topic.endswith("-changelog"):
        return True
    return any(topic == name or topic.endswith("." + name) for name in _COMPACTED_SUFFIXES)


def _may_read_past(topic: str, partition: int, missing: int, next_offset: int) -> bool:
    key = (topic, partition)
    now = time.monotonic()
    seen = _since.get(key)
    if seen is None or seen[0] != missing:
        _since[key] = (missing, now)
        stats.held += 1
        return False
    if now - seen[1] < PATIENCE_S:
        stats.held += 1
        return False
    del _since[key]
    stats.read_past += 1
    log.warning(
        "kafka: offsets %d to %d of %s[%d] did not become readable in %.0f s; reading past "
        "them (their messages, if any, are not delivered to this consumer)",
        missing,
        next_offset - 1,
        topic,
        partition,
        PATIENCE_S,
    )
    return True


class _UpToAHole:
    """A fetched partition's record batches, ending before the first batch that does not start
    where the one before it ended."""

    __slots__ = ("_batches", "_owner", "_peeked")

    def __init__(self, batches: Any, owner: GuardedPartitionRecords) -> None:
        self._batches = batches
        self._owner = owner
        self._peeked: Any = None

    def has_next(self) -> bool:
        if self._peeked is None:
            if not self._batches.has_next():
                return False
            self._peeked = self._batches.next_batch()
            if self._peeked is None:
                return False
        base = self._peeked.base_offset
        expected: int = self._owner.next_fetch_offset
        if base > expected:
            tp = self._owner._tp
            if not _may_read_past(tp.topic, tp.partition, expected, base):
                return False
        else:
            _since.pop((self._owner._tp.topic, self._owner._tp.partition), None)
        return True

    def next_batch(self) -> Any:
        batch, self._peeked = self._peeked, None
        return batch


class GuardedPartitionRecords(aiokafka_fetcher.PartitionRecords):  # type: ignore[misc]
    """aiokafka's ``PartitionRecords`` whose records stop at a hole (see the module)."""

    def __init__(self, tp: Any, records: Any, *args: Any, **kwargs: Any) -> None:
        if not is_compacted(tp.topic):
            records = _UpToAHole(records, self)
        super().__init__(tp, records, *args, **kwargs)


ORIGINAL_PARTITION_RECORDS = aiokafka_fetcher.PartitionRecords
"""aiokafka's class, which :func:`install` replaces."""


def install() -> None:
    """Guard every aiokafka consumer of this process (idempotent; call before they fetch)."""
    if aiokafka_fetcher.PartitionRecords is ORIGINAL_PARTITION_RECORDS:
        aiokafka_fetcher.PartitionRecords = GuardedPartitionRecords
