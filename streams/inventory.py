"""Inventory counts: how many snapshots of each resource type the pipeline has seen.

The first agent of the pipeline and the smallest useful one: it proves that snapshots flow
from the producers through the broker into a table (``snapshots_by_type``), which the
worker's status reports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import faust

from cloudinv.core.models import ResourceSnapshot
from cloudinv.core.topics import Topic
from cloudinv.streams.app import StreamConfig, topic


@dataclass
class InventoryStage:
    snapshots_by_type: Any
    """faust Table[str, int]: resource type → snapshots seen."""
    agent: Any


def bind(app: faust.App, config: StreamConfig) -> InventoryStage:
    snapshots = topic(app, config, Topic.SNAPSHOTS)
    table = app.Table("snapshots_by_type", default=int, partitions=config.partitions)

    async def count_snapshots(stream: faust.StreamT[ResourceSnapshot]) -> AsyncIterator[str]:
        # Re-keyed by type so each type's count lives on one partition.
        async for snapshot in stream.group_by(_by_type, name="snapshots_by_type"):
            table[snapshot.resource_type] += 1
            yield snapshot.resource_type

    agent = app.agent(snapshots, name="count_snapshots")(count_snapshots)
    return InventoryStage(snapshots_by_type=table, agent=agent)


def _by_type(snapshot: ResourceSnapshot) -> str:
    return snapshot.resource_type
