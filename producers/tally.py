"""Counts of one scan's results, for summaries, reports and benchmarks.

Feed every item of a scan to :meth:`ScanTally.add`; it keeps counts and the manifests that
did not complete, never the snapshots themselves.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from cloudinv.core.models import ResourceSnapshot, ScanManifest


@dataclass
class TypeTally:
    resources: int = 0
    complete: int = 0
    partial: int = 0
    failed: int = 0


@dataclass
class ScanTally:
    by_type: dict[str, TypeTally] = field(default_factory=dict)
    unfinished: list[ScanManifest] = field(default_factory=list)
    """Manifests whose status is partial or failed, in arrival order."""
    statuses: Counter[str] = field(default_factory=Counter)

    def add(self, item: ResourceSnapshot | ScanManifest) -> None:
        tally = self.by_type.setdefault(item.resource_type, TypeTally())
        if isinstance(item, ResourceSnapshot):
            tally.resources += 1
            return
        self.statuses[item.status] += 1
        if item.status == "complete":
            tally.complete += 1
        elif item.status == "partial":
            tally.partial += 1
            self.unfinished.append(item)
        else:
            tally.failed += 1
            self.unfinished.append(item)

    @property
    def resources(self) -> int:
        return sum(t.resources for t in self.by_type.values())

    @property
    def scopes(self) -> int:
        return sum(self.statuses.values())

    @property
    def all_complete(self) -> bool:
        return not self.unfinished
