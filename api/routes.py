"""The /v1 endpoints. Importing this module registers them (see :mod:`cloudinv.api.endpoints`).

Order matters where paths overlap: the ``/history`` and ``/diff`` routes of a resource (in
``routes_inventory``) and its ``/related`` and ``/graph`` routes (``routes_relationships``,
imported first) come before the resource itself, whose key pattern would take them, and
``/v1/changes/stream`` is a fixed path that no pattern shadows.
"""

# First: the resource route of routes_inventory, /v1/resources/{key}, takes any suffix.
from cloudinv.api import routes_relationships  # noqa: F401

# isort: split
from cloudinv.api import (  # noqa: F401  (each module registers its endpoints on import)
    routes_alerts,
    routes_changes,
    routes_events,
    routes_feed,
    routes_inventory,
    routes_meta,
    routes_reports,
)
