"""The /v1 endpoints. Importing this module registers them (see :mod:`cloudinv.api.endpoints`).

Order matters where paths overlap: within ``routes_inventory`` the ``/history`` and ``/diff``
routes of a resource come before the resource itself, whose key pattern would take them, and
``/v1/changes/stream`` is a fixed path that no pattern shadows.
"""

from cloudinv.api import (  # noqa: F401  (each module registers its endpoints on import)
    routes_alerts,
    routes_changes,
    routes_events,
    routes_feed,
    routes_inventory,
    routes_meta,
    routes_reports,
)
