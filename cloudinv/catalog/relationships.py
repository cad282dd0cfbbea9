"""Relationships between resources: which of a resource's fields name which other resources.

A type declares its relationships next to its spec (``ResourceSpec.relationships``, each a
:class:`Relationship`: a configuration path, the target type, whether the path holds ids,
ARNs or names, and a name in AWS Config's wording such as ``is contained in``). Derived types
get the ones their shapes make unambiguous (:mod:`cloudinv.catalog.derive`).

:func:`edges_of` reads a configuration's relationships as :class:`~cloudinv.core.models.Edge`
objects whose ``target_key`` is the key the stores use for the target: its ARN. An ARN in
the configuration is taken as it is; an id or a name becomes the target type's ARN built from
its ``arn_template`` (:func:`cloudinv.catalog.transform.resource_arn`, as a scan builds it),
in the same account and region as the resource that names it; a global target type (IAM) in
the account with no region. A value that cannot be resolved (the target's ARN needs fields
an id alone does not give) yields no edge. :func:`edge_delta` is what a change adds and
removes; the change detector puts it on the change, and the stores version the edges with
the resource (``cloudinv.sinks.versioning``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from cloudinv.catalog.registry import Registry, default_registry
from cloudinv.catalog.spec import (
    RELATIONSHIP_INVERSES,
    Relationship,
    RelationshipBy,
    ResourceSpec,
    search,
    strings_in,
)
from cloudinv.catalog.transform import MalformedResource, resource_arn
from cloudinv.core.models import GLOBAL_REGION, Edge

__all__ = [
    "RELATIONSHIP_INVERSES",
    "Edge",
    "Relationship",
    "edge_delta",
    "edges_of",
    "edges_of_resource",
    "inverse",
    "partition_of_key",
    "relationship_fields",
    "sorted_edges",
    "target_key",
    "touches_relationships",
]


def inverse(name: str) -> str:
    """How a relationship reads from its target's side (``contains`` for ``is contained in``);
    an unknown name is returned as it is."""
    return RELATIONSHIP_INVERSES.get(name, name)


def partition_of_key(key: str) -> str:
    """The ARN partition of a resource key (``aws``, ``aws-cn``, ``aws-us-gov``)."""
    parts = key.split(":", 2)
    return parts[1] if len(parts) > 2 and parts[0] == "arn" and parts[1] else "aws"


def target_key(
    target: ResourceSpec,
    value: str,
    by: RelationshipBy,
    *,
    account_id: str,
    region: str,
    partition: str,
) -> str | None:
    """The key of the ``target`` resource that ``value`` names, or ``None`` if it cannot be
    built (not an ARN where one is needed; an ARN template needing more than the id)."""
    if value.startswith("arn:"):
        return value
    if by == "arn" or target.arn_template is None:
        return None
    if target.global_service:
        target_region = ""
    elif region in ("", GLOBAL_REGION):
        return None  # a global resource naming a regional one by id: which region is unknown
    else:
        target_region = region
    configuration: dict[str, Any] = {}
    resource_id = value.removeprefix(target.id_strip_prefix)
    if by == "name":
        if target.name_field is None or "." in target.name_field:
            return None
        if "{id" in target.arn_template and target.id_field != target.name_field:
            return None  # its ARN holds the id, which the name does not give
        configuration[target.name_field] = value
    try:
        return resource_arn(
            target,
            configuration,
            resource_id=resource_id,
            partition=partition,
            region=target_region,
            account_id=account_id,
        )
    except MalformedResource:
        return None


def edges_of(
    spec: ResourceSpec,
    key: str,
    account_id: str,
    region: str,
    partition: str,
    configuration: Mapping[str, Any] | None,
    *,
    registry: Registry | None = None,
) -> frozenset[Edge]:
    """The relationships ``configuration`` (of the resource ``key``) declares, resolved to
    the keys of their targets. A resource is never related to itself."""
    if not spec.relationships or not configuration:
        return frozenset()
    registry = registry or default_registry()
    edges: set[Edge] = set()
    for relationship in spec.relationships:
        if relationship.when is not None and not search(relationship.when, configuration):
            continue
        if relationship.target_type not in registry:
            continue  # a registry without the target type (tests, extensions)
        target = registry.get(relationship.target_type)
        for value in strings_in(search(relationship.path, configuration)):
            found = target_key(
                target,
                value,
                relationship.by,
                account_id=account_id,
                region=region,
                partition=partition,
            )
            if found is not None and found != key:
                edges.add(
                    Edge.model_construct(
                        relationship=relationship.name,
                        target_key=found,
                        target_type=target.cfn_type,
                    )
                )
    return frozenset(edges)


def edges_of_resource(
    resource_type: str,
    key: str,
    account_id: str,
    region: str,
    configuration: Mapping[str, Any] | None,
    *,
    registry: Registry | None = None,
) -> frozenset[Edge]:
    """:func:`edges_of` for a stored or changed resource, by its type name (an unregistered
    type has no relationships); the partition is read from its key."""
    registry = registry or default_registry()
    if resource_type not in registry:
        return frozenset()
    spec = registry.get(resource_type)
    return edges_of(
        spec,
        key,
        account_id,
        region,
        partition_of_key(key),
        configuration,
        registry=registry,
    )


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@lru_cache(maxsize=4096)
def relationship_fields(resource_type: str) -> frozenset[str]:
    """The top-level configuration fields the relationships of ``resource_type`` read (the
    first name of each path, and every name in a ``when`` condition: a superset). A change
    that touches none of them leaves the resource's edges as they were."""
    registry = default_registry()
    if resource_type not in registry:
        return frozenset()
    fields: set[str] = set()
    for relationship in registry.get(resource_type).relationships:
        fields.add(relationship.path.split(".", 1)[0].removesuffix("[]"))
        if relationship.when is not None:
            fields.update(_NAME.findall(relationship.when))
    return frozenset(fields)


def touches_relationships(resource_type: str, pointers: Iterable[str]) -> bool:
    """True if a change whose JSON Patch operations have the paths ``pointers`` (JSON
    Pointers) may move the edges of ``resource_type`` (checked before computing them: the
    edges of two configurations cost a JMESPath search per relationship)."""
    fields = relationship_fields(resource_type)
    if not fields:
        return False
    for pointer in pointers:
        top = pointer.split("/", 2)[1] if pointer.startswith("/") else ""
        if not top or top.replace("~1", "/").replace("~0", "~") in fields:
            return True
    return False


def sorted_edges(edges: Iterable[Edge]) -> list[Edge]:
    """Edges in a stable order: by relationship, then target key."""
    return sorted(edges, key=lambda e: (e.relationship, e.target_key, e.target_type))


def edge_delta(before: frozenset[Edge], after: frozenset[Edge]) -> tuple[list[Edge], list[Edge]]:
    """``(added, removed)`` going from ``before`` to ``after``, each sorted."""
    return sorted_edges(after - before), sorted_edges(before - after)
