"""The worker's app: every stage's agents bound to one Faust app, as ``cloudinv worker`` runs it."""

from __future__ import annotations

import gc

import faust

from cloudinv.sinks.factory import worker_stores
from cloudinv.streams import activity, alerts, changes, warehouse
from cloudinv.streams.app import StreamConfig, create_app

__all__ = ["GC_THRESHOLDS", "build_worker_app", "tune_gc"]

GC_THRESHOLDS = (50_000, 20, 10)
"""Python's defaults are (700, 10, 10)."""


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


def tune_gc() -> None:
    """Garbage-collector tuning of a worker process, set once by ``cloudinv worker`` (and by
    the benchmarks that stand in for it) before the agents start.

    Every message allocates dozens to hundreds of short-lived objects (Faust's message and
    event, the parsed JSON, whole configurations through decode, normalize, diff, send and
    store), many alive at once in a batch. With the default thresholds they outlive young
    collections, fill the oldest generation, and the collector walks the whole long-lived
    heap (Faust, aiokafka, pydantic) over and over: full collections took a quarter of the
    worker's CPU on changed resources (gc.callbacks in bench/changes.py). Freezing what
    exists at start and a larger young generation let them die young (about 8% more
    CloudTrail events per CPU-second, bench/cloudtrail.py); cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
