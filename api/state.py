"""The API application's state: what the handlers read, under :class:`web.AppKey`.

Kept apart from :mod:`cloudinv.api.app` so that the route modules, which the app imports to
register its endpoints, can name the keys without importing the app.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from cloudinv.core.metrics import Metrics
from cloudinv.core.settings import Settings
from cloudinv.sinks.alerts_store import AlertsBackend
from cloudinv.sinks.cloudtrail_store import CloudTrailStore
from cloudinv.sinks.store import InventoryStore

__all__ = ["METRICS_KEY", "RUNTIME_KEY", "SETTINGS_KEY", "STARTED_KEY", "STORES_KEY", "Stores"]


@dataclass
class Stores:
    """What the API reads. ``inventory``: versions, changes, scans; ``events``: CloudTrail;
    ``alerts``: alerts, their notifications and baselines."""

    inventory: InventoryStore | None = None
    events: CloudTrailStore | None = None
    alerts: AlertsBackend | None = None


SETTINGS_KEY = web.AppKey("settings", Settings)
RUNTIME_KEY = web.AppKey("runtime", dict)
STARTED_KEY = web.AppKey("started", float)
METRICS_KEY = web.AppKey("metrics", Metrics)
STORES_KEY = web.AppKey("stores", Stores)
