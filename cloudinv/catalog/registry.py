"""The registry of resource types: every :class:`ResourceSpec` cloudinv knows, by CFN type.

``default_registry()`` holds the built-in declarations of ``cloudinv.catalog.resources``; a test or
an extension may build its own :class:`Registry` and pass its specs to the engine.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Iterator
from functools import cache

from cloudinv.catalog.generic import derived_catalog
from cloudinv.catalog.spec import ResourceSpec

RESOURCE_MODULES: tuple[str, ...] = (
    "cloudinv.catalog.resources.acm",
    "cloudinv.catalog.resources.apigateway",
    "cloudinv.catalog.resources.applicationautoscaling",
    "cloudinv.catalog.resources.athena",
    "cloudinv.catalog.resources.autoscaling",
    "cloudinv.catalog.resources.backup",
    "cloudinv.catalog.resources.cloudformation",
    "cloudinv.catalog.resources.cloudfront",
    "cloudinv.catalog.resources.cloudtrail",
    "cloudinv.catalog.resources.cloudwatch",
    "cloudinv.catalog.resources.dynamodb",
    "cloudinv.catalog.resources.ec2",
    "cloudinv.catalog.resources.ecr",
    "cloudinv.catalog.resources.ecs",
    "cloudinv.catalog.resources.efs",
    "cloudinv.catalog.resources.eks",
    "cloudinv.catalog.resources.elasticache",
    "cloudinv.catalog.resources.elb",
    "cloudinv.catalog.resources.events",
    "cloudinv.catalog.resources.iam",
    "cloudinv.catalog.resources.kinesis",
    "cloudinv.catalog.resources.kms",
    "cloudinv.catalog.resources.awslambda",
    "cloudinv.catalog.resources.logs",
    "cloudinv.catalog.resources.opensearch",
    "cloudinv.catalog.resources.rds",
    "cloudinv.catalog.resources.redshift",
    "cloudinv.catalog.resources.route53",
    "cloudinv.catalog.resources.s3",
    "cloudinv.catalog.resources.secretsmanager",
    "cloudinv.catalog.resources.sns",
    "cloudinv.catalog.resources.sqs",
    "cloudinv.catalog.resources.ssm",
    "cloudinv.catalog.resources.stepfunctions",
    "cloudinv.catalog.resources.storagegateway",
)
"""One module per AWS service, each exposing ``SPECS: tuple[ResourceSpec, ...]``."""


class UnknownResourceType(KeyError):
    """A CloudFormation type name that is not registered."""

    def __init__(self, cfn_type: str, close_matches: list[str]) -> None:
        super().__init__(cfn_type)
        self.cfn_type = cfn_type
        self.close_matches = close_matches

    def __str__(self) -> str:
        hint = f"; did you mean {', '.join(self.close_matches)}?" if self.close_matches else ""
        return f"unknown resource type {self.cfn_type!r}{hint}"


class Registry:
    """Resource specs by CloudFormation type name, in registration order."""

    def __init__(self, specs: Iterable[ResourceSpec] = ()) -> None:
        self._specs: dict[str, ResourceSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: ResourceSpec) -> ResourceSpec:
        if spec.cfn_type in self._specs:
            raise ValueError(f"{spec.cfn_type} is registered twice")
        if spec.parent is not None and spec.parent.cfn_type not in self._specs:
            raise ValueError(f"{spec.cfn_type}: register its parent {spec.parent.cfn_type} first")
        self._specs[spec.cfn_type] = spec
        return spec

    def get(self, cfn_type: str) -> ResourceSpec:
        """The spec of ``cfn_type`` (case-insensitive); raises UnknownResourceType with hints."""
        spec = self._specs.get(cfn_type)
        if spec is not None:
            return spec
        folded = {name.lower(): s for name, s in self._specs.items()}
        spec = folded.get(cfn_type.lower())
        if spec is not None:
            return spec
        raise UnknownResourceType(cfn_type, self.close_matches(cfn_type))

    def close_matches(self, cfn_type: str, limit: int = 5) -> list[str]:
        names = list(self._specs)
        by_lower = {n.lower(): n for n in names}
        found = difflib.get_close_matches(cfn_type.lower(), list(by_lower), n=limit, cutoff=0.6)
        if not found:
            # "Instance" or "ec2" alone: a substring of the type name is a fair guess.
            needle = cfn_type.lower()
            found = [n for n in by_lower if needle in n][:limit]
        return [by_lower[n] for n in found]

    def all(self) -> list[ResourceSpec]:
        return list(self._specs.values())

    def types(self) -> list[str]:
        return list(self._specs)

    def __contains__(self, cfn_type: object) -> bool:
        return cfn_type in self._specs

    def __iter__(self) -> Iterator[ResourceSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)


@cache
def curated_registry() -> Registry:
    """The hand-declared types of ``cloudinv.catalog.resources`` (imported once)."""
    registry = Registry()
    for module_name in RESOURCE_MODULES:
        module = importlib.import_module(module_name)
        for spec in module.SPECS:
            registry.register(spec)
    return registry


@cache
def default_registry() -> Registry:
    """Every built-in type: the curated ones, then the derived ones they do not declare.

    A curated declaration has priority over a derived one of the same type (it may add
    detail calls, event maps, volatile fields the derivation cannot know).
    """
    registry = Registry(curated_registry())
    for spec in derived_catalog().specs:
        if spec.cfn_type not in registry:
            registry.register(spec)
    return registry


def excluded_types() -> dict[str, str]:
    """CloudFormation types neither curated nor derived, with the reason each was left out."""
    curated = curated_registry()
    return {t: why for t, why in derived_catalog().excluded.items() if t not in curated}
