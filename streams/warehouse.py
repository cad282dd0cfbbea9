"""The warehouse sink: changes and daily snapshots as Parquet, locally and in S3.

``warehouse_changes``
    Reads the changes topic in batches (``storage.warehouse_flush_s`` or :data:`BATCH`
    changes, whichever comes first) and writes each batch to every target of
    ``storage.targets`` (``local``: ``<data_dir>/warehouse``; ``s3``: ``storage.s3_bucket``
    under ``storage.s3_prefix``), one part per (type, day, Kafka partition), named by the
    partition and first offset it came from. Faust acknowledges a batch only once the loop
    body returns, i.e. after every file is written; a failed write is retried until it
    succeeds (a sink must not skip data) and, being named the same, replaces what a failed
    attempt or a replay wrote.

The daily snapshot (one full snapshot per type and account) is derived from the store, not
read from the snapshots topic: at start, every ``storage.warehouse_snapshot_interval_s``, and
a minute after changes came in (when sooner), the :class:`SnapshotExporter` lists each type's
current versions (one indexed query per page) and replaces today's partition; the first run
after midnight first writes yesterday's as of its last instant. Reading the snapshots topic
would process every snapshot of every scan a second time (the worker does not even run
``cloudinv.streams.inventory`` for that reason) to keep one per day, and could not say which
resources were gone; the store already holds exactly "what was current at T".

One worker exports, however many share the store: the one that owns partition 0 of the
changes topic (Kafka's group assignment gives it to exactly one; when it moves, the new owner
takes over within :data:`LEADER_POLL_S`). The same worker compacts the warehouse after each
export, at most every :data:`COMPACT_INTERVAL_S`: today's and yesterday's changes partitions
of every type, their settled parts merged into one file (:meth:`ParquetWarehouse.compact`),
so a day of a type is a few files however often the batches were flushed. Changes written by
other workers do not hasten its next export (they wait for its own changes or the interval).

See :mod:`cloudinv.sinks.parquet_warehouse` for the layout, schemas and idempotence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import faust
from mode import Service
from pydantic import ValidationError

from cloudinv.catalog.registry import default_registry
from cloudinv.core.errors import ConfigError
from cloudinv.core.models import ChangeEvent, utcnow
from cloudinv.core.settings import StorageSettings, load_settings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.sinks.factory import inventory_store
from cloudinv.sinks.parquet_warehouse import ParquetWarehouse, PartitionKey, targets_for
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import InventoryStore, VersionQuery, version_pages
from cloudinv.streams.app import StreamConfig
from cloudinv.streams.store_retry import until_stored

__all__ = ["SnapshotExporter", "WarehouseStage", "bind"]

log = logging.getLogger(__name__)

BATCH = 20_000
PAGE = 1000
CHANGED_MIN_GAP_S = 60.0
"""Least time between two snapshot exports triggered by changes (not by the interval)."""
LEADER_POLL_S = 5.0
"""How often a worker that does not export checks whether it has become the one."""
COMPACT_INTERVAL_S = 600.0
"""Least time between two compactions: each lists two days of every type (on S3, about 170
LIST requests with the built-in types: a few dollars a month at this interval)."""


@dataclass
class WarehouseStage:
    warehouse: ParquetWarehouse
    exporter: SnapshotExporter | None
    agent: Any = None
    changes: int = 0
    batches: int = 0
    undecodable: int = 0
    snapshot_runs: int = 0
    snapshot_errors: int = 0
    compacted_parts: int = 0
    types_seen: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when changes were written: the snapshot is refreshed sooner than the interval."""


class SnapshotExporter:
    """Writes the full snapshot of each type, as of an instant, from the store."""

    def __init__(
        self,
        store: InventoryStore,
        warehouse: ParquetWarehouse,
        types: Callable[[], Sequence[str]],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.warehouse = warehouse
        self.types = types
        self.clock = clock
        self.last_day: date | None = None

    async def export(self, day: date, at: datetime) -> int:
        """Replace ``day``'s snapshot partitions with the versions current at ``at``."""
        rows = 0
        for cfn_type in self.types():
            query = VersionQuery(at=at, resource_type=cfn_type, limit=PAGE)
            versions = [
                v async for page in version_pages(self.store.list_as_of, query) for v in page
            ]
            await self.warehouse.write_snapshot(cfn_type, day, versions, at)
            rows += len(versions)
        return rows

    async def compact(self) -> int:
        """Compact today's and yesterday's changes and relationships partitions of every
        type; parts merged."""
        today = self.clock().astimezone(UTC).date()
        merged = 0
        for day in (today - timedelta(days=1), today):
            for cfn_type in self.types():
                for dataset in ("changes", "relationships"):
                    partition = PartitionKey(dataset, cfn_type, day.isoformat())
                    merged += await self.warehouse.compact(partition)
        return merged

    async def run_once(self) -> int:
        """Today's snapshot as of now; after a day change, the previous day's final one too."""
        now = self.clock().astimezone(UTC)
        today = now.date()
        rows = 0
        if self.last_day is not None and self.last_day < today:
            end = datetime.combine(today, time(0), UTC) - timedelta(microseconds=1)
            rows += await self.export(self.last_day, end)
        rows += await self.export(today, now)
        self.last_day = today
        return rows


class WarehouseService(Service):  # type: ignore[misc,unused-ignore]
    """Starts the targets, runs the snapshot exporter on its interval, closes everything."""

    def __init__(
        self,
        stage: WarehouseStage,
        store: InventoryStore | None,
        interval_s: float,
        changed_min_gap_s: float = CHANGED_MIN_GAP_S,
        leads: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        self._stage = stage
        self._store = store
        self._interval_s = interval_s
        self._changed_min_gap_s = changed_min_gap_s
        self._leads = leads
        self._compacted_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await self._stage.warehouse.start()
        if self._store is not None and self._stage.exporter is not None:
            await self._store.open()
            self._task = asyncio.create_task(self._snapshots(self._stage.exporter))

    async def _snapshots(self, exporter: SnapshotExporter) -> None:
        while True:
            if self._leads is not None and not self._leads():
                # Another worker exports; check again soon in case that changes.
                await asyncio.sleep(LEADER_POLL_S)
                continue
            # Cleared before the export: changes written during it trigger the next one.
            self._stage.changed.clear()
            try:
                rows = await exporter.run_once()
                self._stage.snapshot_runs += 1
                log.info("warehouse: daily snapshot refreshed (%d resources)", rows)
            except Exception as exc:
                self._stage.snapshot_errors += 1
                log.warning("warehouse: snapshot export failed (retrying next interval): %s", exc)
            await self._compact(exporter)
            await self._next_run()

    async def _compact(self, exporter: SnapshotExporter) -> None:
        now = asyncio.get_running_loop().time()
        if self._compacted_at is not None and now - self._compacted_at < COMPACT_INTERVAL_S:
            return
        self._compacted_at = now
        try:
            merged = await exporter.compact()
            self._stage.compacted_parts += merged
            if merged:
                log.info("warehouse: compacted %d changes parts", merged)
        except Exception as exc:
            log.warning("warehouse: compaction failed (retrying next time): %s", exc)

    async def _next_run(self) -> None:
        """Wait out the interval, or less once changes came in: at least
        ``changed_min_gap_s`` (:data:`CHANGED_MIN_GAP_S`) after the last run, so the store
        sink has caught up and a busy estate does not rewrite the snapshot continuously."""
        changed = self._stage.changed
        loop = asyncio.get_running_loop()
        started = loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout=self._interval_s)
        gap = min(self._changed_min_gap_s, self._interval_s)
        elapsed = loop.time() - started
        if elapsed < gap:
            await asyncio.sleep(gap - elapsed)

    async def on_stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._store is not None:
            await self._store.close()
        await self._stage.warehouse.close()


def _storage_from_environment() -> tuple[StorageSettings, str | None]:

    try:
        settings = load_settings()
    except ConfigError as exc:
        log.error("warehouse: settings unreadable, using defaults (local only): %s", exc)
        return StorageSettings(), None
    return settings.storage, settings.aws.effective_endpoint()


def bind(
    app: faust.App,
    config: StreamConfig,
    *,
    storage: StorageSettings | None = None,
    warehouse: ParquetWarehouse | None = None,
    store: InventoryStore | None = None,
    endpoint_url: str | None = None,
    snapshots: bool = True,
    changed_min_gap_s: float = CHANGED_MIN_GAP_S,
) -> WarehouseStage | None:
    """Declare the warehouse sink on ``app``; ``None`` when no Parquet target is configured.

    Unset arguments come from the settings: targets from ``storage.targets`` (the local one
    under ``config.data_dir``), the store from ``config.data_dir``.
    """
    if storage is None:
        storage, endpoint = _storage_from_environment()
        endpoint_url = endpoint_url or endpoint
    if warehouse is None:
        targets = targets_for(
            storage.targets,
            data_dir=config.data_dir,
            s3_bucket=storage.s3_bucket,
            s3_prefix=storage.s3_prefix,
            s3_region=storage.s3_region,
            endpoint_url=endpoint_url,
        )
        if not targets:
            log.info("warehouse: no Parquet target in storage.targets, sink not started")
            return None
        warehouse = ParquetWarehouse(targets)
    if snapshots and store is None:
        if "dynamodb" in storage.targets:
            # The daily snapshot is read from the inventory store the worker writes.

            store = inventory_store(load_settings(), config.data_dir)
        else:
            store = SqliteStore.in_data_dir(config.data_dir)
    exporter = None
    stage = WarehouseStage(warehouse=warehouse, exporter=None)
    if snapshots and store is not None:

        def types() -> list[str]:
            return sorted(set(default_registry().types()) | stage.types_seen)

        exporter = SnapshotExporter(store, warehouse, types)
        stage.exporter = exporter
    changes_topic = topic_name(Topic.CHANGES, config.topic_prefix)

    def leads() -> bool:
        """This worker owns partition 0 of the changes topic (see the module docstring)."""
        try:
            assigned = app.consumer.assignment()
        except Exception:  # not started, or between assignments
            return False
        return any(tp.topic == changes_topic and tp.partition == 0 for tp in assigned)

    app.add_dependency(
        WarehouseService(
            stage,
            store if snapshots else None,
            storage.warehouse_snapshot_interval_s,
            changed_min_gap_s,
            leads=leads,
        )
    )

    changes_in = app.topic(
        changes_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=config.partitions,
        replicas=config.replication_factor,
    )

    async def warehouse_changes(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(BATCH, within=storage.warehouse_flush_s):
            changes: list[ChangeEvent] = []
            origins: list[tuple[int, int]] = []
            for event in events:
                try:
                    change = ChangeEvent.model_validate_json(event.value)
                except (ValidationError, ValueError) as exc:
                    stage.undecodable += 1
                    message = event.message
                    log.warning(
                        "warehouse: skipping undecodable message %s[%s]@%s: %s",
                        message.topic,
                        message.partition,
                        message.offset,
                        exc,
                    )
                    continue
                changes.append(change)
                origins.append((event.message.partition, event.message.offset))
                stage.types_seen.add(change.resource_type)
            await _write_until_done(warehouse, changes, origins)
            stage.changes += len(changes)
            stage.batches += 1
            if changes:
                stage.changed.set()

    stage.agent = app.agent(changes_in, name="warehouse_changes", concurrency=1)(warehouse_changes)
    return stage


async def _write_until_done(
    warehouse: ParquetWarehouse, changes: list[ChangeEvent], origins: list[tuple[int, int]]
) -> None:
    """Write the batch; on failure wait and write the same files again, until it succeeds."""
    warehouse.add_changes(changes, origins)
    await until_stored("warehouse: write", warehouse.flush)
