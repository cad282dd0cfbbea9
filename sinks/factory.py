"""Which inventory store the settings ask for: DynamoDB when ``storage.targets`` contains
``dynamodb``, else the local SQLite store under the data directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sinks.store import InventoryStore

if TYPE_CHECKING:
    from cloudinv.settings import Settings

__all__ = ["inventory_store", "inventory_store_factory"]


def inventory_store(settings: Settings, data_dir: Path | None = None) -> InventoryStore:
    """A new, unopened store; ``data_dir`` overrides the settings' for the local store."""
    if "dynamodb" in settings.storage.targets:
        from sinks.dynamodb_store import DynamoStore

        return DynamoStore.from_settings(settings)
    from sinks.sqlite_store import SqliteStore

    return SqliteStore.in_data_dir(data_dir if data_dir is not None else settings.data_dir)


def inventory_store_factory(
    data_dir: Path, settings: Settings | None = None
) -> Callable[[], InventoryStore]:
    """For the worker, which is configured by a StreamConfig: the settings are read from the
    environment and ``cloudinv.toml`` now (so a bad file fails at start), the store made
    when the worker starts."""
    if settings is None:
        from cloudinv.settings import load_settings

        settings = load_settings()
    chosen = settings

    def factory() -> InventoryStore:
        return inventory_store(chosen, data_dir)

    return factory
