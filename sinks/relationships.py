"""Relationship reads, the same for every store, on two primitives each store provides.

A store keeps edge rows (:class:`~cloudinv.sinks.versioning.EdgeRow`, written with its
versions) and answers :class:`EdgeSource`: the edges valid at a time from or to some keys, and
the resources valid at a time among some keys. :func:`related_of` and :func:`neighbourhood_of`
build :meth:`~cloudinv.sinks.store.RelationshipReads.related` and
:meth:`~cloudinv.sinks.store.RelationshipReads.neighbourhood` from them, so the two stores
differ only in how they read.

Semantics (the README's Relationships section says the same): an edge is valid while the
resource that names it has a version naming it. Deleting that resource closes its edges;
deleting the target does not (the source's configuration still names it), so an edge can
lead to a resource that does not exist at that time: it is given with ``exists`` False.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from cloudinv.catalog.relationships import inverse
from cloudinv.core.models import GLOBAL_REGION
from cloudinv.sinks.store import (
    Direction,
    Graph,
    GraphEdge,
    GraphNode,
    RelatedResource,
)

__all__ = [
    "MAX_HOPS",
    "EdgeReads",
    "EdgeSource",
    "NodeInfo",
    "StoredEdge",
    "arn_scope",
    "neighbourhood_of",
    "related_of",
]

MAX_HOPS = 3
"""How far a neighbourhood reaches: blast radius, not the whole estate."""


@dataclass(frozen=True, slots=True)
class StoredEdge:
    """An edge valid at the time asked, as declared (``source_key`` names ``target_key``)."""

    source_key: str
    source_type: str
    relationship: str
    target_key: str
    target_type: str


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a relationship answer says of a resource with a version valid at the time."""

    key: str
    type: str
    account_id: str
    region: str
    name: str | None


class EdgeSource(Protocol):
    """What a store provides for relationship reads (``at`` None: now)."""

    async def edges_at(
        self, keys: Sequence[str], at: datetime | None, direction: Literal["out", "in"]
    ) -> list[StoredEdge]:
        """Edges valid at ``at`` whose source (``out``) or target (``in``) is in ``keys``."""
        ...

    async def nodes_at(self, keys: Sequence[str], at: datetime | None) -> dict[str, NodeInfo]:
        """The resources among ``keys`` with a version valid at ``at``."""
        ...


def arn_scope(key: str) -> tuple[str | None, str | None]:
    """``(account, region)`` read from an ARN, for a resource that is not stored: an ARN
    without a region (IAM) is ``global``, one without an account (S3) has none."""
    parts = key.split(":", 5)
    if len(parts) < 6 or parts[0] != "arn":
        return None, None
    return (parts[4] or None), (parts[3] or GLOBAL_REGION)


def _allowed(account_id: str | None, accounts: Collection[str] | None) -> bool:
    return accounts is None or (account_id is not None and account_id in accounts)


def _related(
    direction: Literal["out", "in"], relationship: str, key: str, type_: str, node: NodeInfo | None
) -> RelatedResource:
    if node is not None:
        return RelatedResource(
            direction=direction,
            relationship=relationship,
            key=key,
            type=node.type,
            account_id=node.account_id,
            region=node.region,
            name=node.name,
            exists=True,
        )
    account_id, region = arn_scope(key)
    return RelatedResource(
        direction=direction,
        relationship=relationship,
        key=key,
        type=type_,
        account_id=account_id,
        region=region,
        exists=False,
    )


async def related_of(
    source: EdgeSource,
    key: str,
    at: datetime | None,
    direction: Direction = "both",
    relationship: str | None = None,
    target_type: str | None = None,
    *,
    accounts: Collection[str] | None = None,
) -> list[RelatedResource]:
    """:meth:`~cloudinv.sinks.store.RelationshipReads.related` over ``source``; ordered by
    direction (out first), relationship, type and key."""
    found: list[tuple[Literal["out", "in"], str, str, str]] = []
    if direction in ("out", "both"):
        for edge in await source.edges_at([key], at, "out"):
            found.append(("out", edge.relationship, edge.target_key, edge.target_type))
    if direction in ("in", "both"):
        for edge in await source.edges_at([key], at, "in"):
            found.append(("in", inverse(edge.relationship), edge.source_key, edge.source_type))
    if relationship is not None:
        found = [f for f in found if f[1] == relationship]
    nodes = await source.nodes_at(sorted({f[2] for f in found}), at) if found else {}
    answer = [_related(d, name, other, type_, nodes.get(other)) for d, name, other, type_ in found]
    answer = [
        r
        for r in answer
        if (target_type is None or r.type == target_type) and _allowed(r.account_id, accounts)
    ]
    answer.sort(key=lambda r: (r.direction != "out", r.relationship, r.type, r.key))
    return answer


async def neighbourhood_of(
    source: EdgeSource,
    key: str,
    at: datetime | None,
    hops: int = 1,
    limit: int = 100,
    *,
    accounts: Collection[str] | None = None,
) -> Graph:
    """:meth:`~cloudinv.sinks.store.RelationshipReads.neighbourhood` over ``source``: a
    breadth-first walk in both directions, nearest nodes first (by key within one hop)."""
    if not 1 <= hops <= MAX_HOPS:
        raise ValueError(f"hops must be 1 to {MAX_HOPS}, got {hops}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    root = (await source.nodes_at([key], at)).get(key)
    nodes: dict[str, GraphNode] = {key: _node(key, root, None, 0)}
    edges: set[tuple[str, str, str]] = set()
    frontier = [key]
    truncated = False
    for hop in range(1, hops + 1):
        seen = [
            *await source.edges_at(frontier, at, "out"),
            *await source.edges_at(frontier, at, "in"),
        ]
        types: dict[str, str] = {}
        for edge in seen:
            types.setdefault(edge.target_key, edge.target_type)
            types.setdefault(edge.source_key, edge.source_type)
        if hop == 1 and root is None and key in types:
            nodes[key] = _node(key, None, types[key], 0)  # not there at that time
        candidates = sorted(k for k in types if k not in nodes)
        info = await source.nodes_at(candidates, at) if candidates else {}
        added: list[str] = []
        for candidate in candidates:
            node = _node(candidate, info.get(candidate), types[candidate], hop)
            if not _allowed(node.account_id, accounts):
                continue
            if len(nodes) >= limit:
                truncated = True
                break
            nodes[candidate] = node
            added.append(candidate)
        edges.update(
            (e.source_key, e.relationship, e.target_key)
            for e in seen
            if e.source_key in nodes and e.target_key in nodes
        )
        frontier = added
        if not frontier:
            break
    if frontier:
        # Edges among the farthest nodes: their own out edges were not read by the walk.
        edges.update(
            (e.source_key, e.relationship, e.target_key)
            for e in await source.edges_at(frontier, at, "out")
            if e.target_key in nodes
        )
    return Graph(
        key=key,
        at=at,
        hops=hops,
        nodes=sorted(nodes.values(), key=lambda n: (n.hops, n.key)),
        edges=[GraphEdge(source=s, relationship=r, target=t) for s, r, t in sorted(edges)],
        truncated=truncated,
    )


def _node(key: str, info: NodeInfo | None, type_: str | None, hops: int) -> GraphNode:
    if info is not None:
        return GraphNode(
            key=key,
            type=info.type,
            account_id=info.account_id,
            region=info.region,
            name=info.name,
            exists=True,
            hops=hops,
        )
    account_id, region = arn_scope(key)
    return GraphNode(
        key=key,
        type=type_ or "unknown",
        account_id=account_id,
        region=region,
        exists=False,
        hops=hops,
    )


class EdgeReads(ABC):
    """:class:`~cloudinv.sinks.store.RelationshipReads` for a store that provides the two
    reads of :class:`EdgeSource`: both inventory stores inherit ``related`` and
    ``neighbourhood`` from here."""

    @abstractmethod
    async def edges_at(
        self, keys: Sequence[str], at: datetime | None, direction: Literal["out", "in"]
    ) -> list[StoredEdge]:
        """Edges valid at ``at`` whose source (``out``) or target (``in``) is in ``keys``."""

    @abstractmethod
    async def nodes_at(self, keys: Sequence[str], at: datetime | None) -> dict[str, NodeInfo]:
        """The resources among ``keys`` with a version valid at ``at``."""

    async def related(
        self,
        key: str,
        at: datetime | None = None,
        direction: Direction = "both",
        relationship: str | None = None,
        target_type: str | None = None,
        *,
        accounts: Sequence[str] | None = None,
    ) -> list[RelatedResource]:
        return await related_of(
            self, key, at, direction, relationship, target_type, accounts=accounts
        )

    async def neighbourhood(
        self,
        key: str,
        at: datetime | None = None,
        hops: int = 1,
        limit: int = 100,
        *,
        accounts: Sequence[str] | None = None,
    ) -> Graph:
        return await neighbourhood_of(self, key, at, hops, limit, accounts=accounts)
