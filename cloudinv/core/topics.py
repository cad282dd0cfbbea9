"""Kafka topic names, defined once.

Every producer, agent and sink names its topics through :func:`topic_name`, so a deployment
can prefix them (``CLOUDINV_KAFKA__TOPIC_PREFIX``) without any other change.
"""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    """The logical streams of cloudinv. The value is the suffix after the prefix."""

    SNAPSHOTS = "snapshots"
    """ResourceSnapshot, keyed by resource key (ARN)."""
    SCANS = "scans"
    """ScanManifest, keyed by scope (account/region/type)."""
    CHANGES = "changes"
    """ChangeEvent, keyed by resource key."""
    CLOUDTRAIL = "cloudtrail"
    """CloudTrailEvent, keyed by principal."""
    ACTIVITY = "activity"
    """Per-principal and per-service activity aggregates."""
    ALERTS = "alerts"
    """Drift and rule alerts."""


DEFAULT_PREFIX = "cloudinv"


def topic_name(topic: Topic, prefix: str = DEFAULT_PREFIX) -> str:
    """The full Kafka topic name, e.g. ``cloudinv.snapshots``."""
    return f"{prefix}.{topic.value}" if prefix else topic.value


ALL_TOPICS: tuple[Topic, ...] = tuple(Topic)
