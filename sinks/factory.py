"""Which stores the settings ask for (inventory, CloudTrail events, alerts): DynamoDB when
``storage.targets`` contains ``dynamodb``, else the local SQLite stores under the data
directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cloudinv.core.settings import load_settings
from cloudinv.sinks.alerts_store import AlertsBackend, AlertsStore
from cloudinv.sinks.cloudtrail_store import CloudTrailStore
from cloudinv.sinks.dynamodb_alerts_store import DynamoAlertsStore
from cloudinv.sinks.dynamodb_events_store import DynamoEventsStore
from cloudinv.sinks.dynamodb_store import DynamoStore
from cloudinv.sinks.events_store import EventsStore, events_store_path
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import InventoryStore

if TYPE_CHECKING:
    from cloudinv.core.settings import Settings

__all__ = [
    "alerts_store",
    "events_store",
    "inventory_store",
    "inventory_store_factory",
    "worker_stores",
]


def inventory_store(settings: Settings, data_dir: Path | None = None) -> InventoryStore:
    """A new, unopened store; ``data_dir`` overrides the settings' for the local store."""
    if "dynamodb" in settings.storage.targets:
        return DynamoStore.from_settings(settings)

    return SqliteStore.in_data_dir(data_dir if data_dir is not None else settings.data_dir)


def events_store(
    settings: Settings, data_dir: Path | None = None, *, readonly: bool = False
) -> CloudTrailStore:
    """The CloudTrail events store the settings ask for (same rule as the inventory's)."""
    if "dynamodb" in settings.storage.targets:
        storage = settings.storage
        return DynamoEventsStore(
            storage.dynamodb_table_prefix,
            region=storage.dynamodb_region,
            endpoint_url=storage.dynamodb_endpoint_url or settings.aws.effective_endpoint(),
            write_concurrency=storage.dynamodb_write_concurrency,
        )

    directory = data_dir if data_dir is not None else settings.data_dir
    return EventsStore(events_store_path(directory), readonly=readonly)


def alerts_store(settings: Settings, data_dir: Path | None = None) -> AlertsBackend:
    """The alerts store (alerts, notifications, outbox, baselines), by the same rule: with
    ``dynamodb`` in ``storage.targets`` every worker and API of the deployment shares it."""
    if "dynamodb" in settings.storage.targets:
        storage = settings.storage
        return DynamoAlertsStore(
            storage.dynamodb_table_prefix,
            region=storage.dynamodb_region,
            endpoint_url=storage.dynamodb_endpoint_url or settings.aws.effective_endpoint(),
            write_concurrency=storage.dynamodb_write_concurrency,
        )
    return AlertsStore.in_data_dir(data_dir if data_dir is not None else settings.data_dir)


def inventory_store_factory(
    data_dir: Path, settings: Settings | None = None
) -> Callable[[], InventoryStore]:
    """For the worker, which is configured by a StreamConfig: the settings are read from the
    environment and ``cloudinv.toml`` now (so a bad file fails at start), the store made
    when the worker starts."""
    if settings is None:
        settings = load_settings()
    chosen = settings

    def factory() -> InventoryStore:
        return inventory_store(chosen, data_dir)

    return factory


def worker_stores(
    data_dir: Path, settings: Settings | None = None
) -> tuple[Callable[[], InventoryStore], CloudTrailStore]:
    """The worker's inventory store factory and CloudTrail events store, from the settings
    (read from the environment and ``cloudinv.toml`` when not given)."""
    if settings is None:
        settings = load_settings()
    return inventory_store_factory(data_dir, settings), events_store(settings, data_dir)
