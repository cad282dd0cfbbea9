"""The worker's app: every stage's agents bound to one Faust app, as ``cloudinv worker`` runs it."""

from __future__ import annotations

import faust

from cloudinv.core.collector import GC_THRESHOLDS, tune_gc
from cloudinv.sinks.factory import worker_stores
from cloudinv.streams import activity, alerts, changes, warehouse
from cloudinv.streams.app import StreamConfig, create_app

__all__ = ["GC_THRESHOLDS", "build_worker_app", "tune_gc"]


def build_worker_app(config: StreamConfig) -> faust.App:
    """The app with every stage's agents bound: what ``cloudinv worker`` runs.

    ``cloudinv.streams.inventory`` (per-type snapshot counts through a repartition) is not bound
    here: it reads every snapshot a second time and would cap the worker at its pace, and the store
    already answers counts (/v1/types).
    """

    app = create_app(config)
    # Versions, changes and scans, and CloudTrail events, go to the stores of storage.targets:
    # DynamoDB, or the local SQLite stores under config.data_dir.

    inventory_factory, events = worker_stores(config.data_dir)
    changes.bind(app, config, store_factory=inventory_factory)
    activity.bind(app, config, store=events)
    alerts.bind(app, config)  # rules, webhooks and SNS from the settings (env / cloudinv.toml)
    warehouse.bind(app, config)  # Parquet changes and daily snapshots, per storage.targets
    return app
