"""Relationship endpoints: what a resource is related to, and its neighbourhood, as of a time.

``GET /v1/resources/{key}/related`` lists the resources ``key`` names (``out``: its subnet,
security groups, role) and those that name it (``in``: a subnet's instances), filtered by
relationship (as read from ``key``: ``contains`` for a subnet's instances) and by the related
resource's type. ``GET /v1/resources/{key}/graph`` walks up to three hops in both directions
for a blast radius, capped at ``limit`` nodes (``truncated`` says more were reachable).

Both answer as of ``at`` (default now): an edge is valid while the resource naming it has a
version naming it (see :mod:`cloudinv.sinks.relationships`). A related resource with no
version valid then is given with ``exists`` false.

Account-scoped tokens: the resource asked about must be in one of the token's accounts (else
404, as ``/v1/resources/{key}``); related resources of other accounts are left out of both
answers, and a neighbourhood walk does not pass through them.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from cloudinv.api.endpoints import NotFound, Query, ServiceUnavailable, endpoint
from cloudinv.api.routes_common import (
    EndTime,
    ResourceTypeName,
    account_view,
    inventory_store,
)
from cloudinv.core.models import UtcDatetime
from cloudinv.sinks.relationships import MAX_HOPS
from cloudinv.sinks.store import (
    Direction,
    Graph,
    InventoryStore,
    RelatedResource,
    RelationshipReads,
)

TAGS = ["inventory"]
KEY_HELP = "The resource key (its ARN), URL-encoded"
MAX_GRAPH_NODES = 500

RelationshipName = Literal[
    "is contained in",
    "contains",
    "is attached to",
    "has attached",
    "is associated with",
    "uses",
    "is used by",
]
"""The names of ``cloudinv.catalog.spec.RELATIONSHIP_INVERSES`` (a test keeps them equal)."""


class RelatedQuery(Query):
    at: EndTime | None = Field(
        default=None, description="the relationships valid at this time (default now)"
    )
    direction: Direction = Field(
        default="both",
        description="out: what this resource names; in: what names it; both (default)",
    )
    relationship: RelationshipName | None = Field(
        default=None, description="only this relationship, as read from this resource"
    )
    type: ResourceTypeName | None = Field(
        default=None, description="only related resources of this type"
    )


class RelatedAnswer(BaseModel):
    key: str
    at: UtcDatetime | None = Field(default=None, description="None: now")
    related: list[RelatedResource]


class GraphQuery(Query):
    at: EndTime | None = Field(
        default=None, description="the relationships valid at this time (default now)"
    )
    hops: int = Field(default=1, ge=1, le=MAX_HOPS, description="how many edges away")
    limit: int = Field(default=100, ge=1, le=MAX_GRAPH_NODES, description="at most this many nodes")


async def _relationship_store(request: web.Request, key: str) -> RelationshipReads:
    """The store, once ``key`` is known to it in an account the caller may read (else 404)."""
    store: InventoryStore = inventory_store(request)
    if not isinstance(store, RelationshipReads):
        raise ServiceUnavailable("the configured inventory store keeps no relationships")
    latest = (await store.latest([key])).get(key)
    if latest is None or not account_view(request).allows(latest.account_id):
        raise NotFound(f"no resource {key!r}")
    return store


@endpoint(
    "GET",
    "/v1/resources/{key:.+}/related",
    summary="The resources one resource names and is named by, as of a time",
    query=RelatedQuery,
    response=RelatedAnswer,
    tags=TAGS,
    path_params={"key": KEY_HELP},
)
async def resource_related(request: web.Request, query: RelatedQuery) -> RelatedAnswer:
    key = request.match_info["key"]
    store = await _relationship_store(request, key)
    related = await store.related(
        key,
        query.at,
        query.direction,
        query.relationship,
        query.type,
        accounts=account_view(request).accounts,
    )
    return RelatedAnswer(key=key, at=query.at, related=related)


@endpoint(
    "GET",
    "/v1/resources/{key:.+}/graph",
    summary="The resources within a few relationships of one resource (blast radius)",
    query=GraphQuery,
    response=Graph,
    tags=TAGS,
    path_params={"key": KEY_HELP},
)
async def resource_graph(request: web.Request, query: GraphQuery) -> Graph:
    key = request.match_info["key"]
    store = await _relationship_store(request, key)
    return await store.neighbourhood(
        key, query.at, query.hops, query.limit, accounts=account_view(request).accounts
    )
