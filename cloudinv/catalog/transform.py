"""Pure functions from one resource's configuration to its snapshot envelope.

Given the configuration a scan assembled (list item plus detail results) and the spec that
declares the type, read the id, ARN, name and tags. Required fields raise
:class:`MalformedResource`, so a resource never reaches a topic with a made-up key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudinv.catalog.spec import ResourceSpec, search

_TAG_KEY_NAMES = ("Key", "key", "TagKey")
_TAG_VALUE_NAMES = ("Value", "value", "TagValue")


class MalformedResource(ValueError):
    """A configuration lacks a field its spec requires (id, ARN)."""


@dataclass(frozen=True, kw_only=True)
class ResourceIdentity:
    resource_id: str
    arn: str
    name: str | None
    tags: dict[str, str]


def resource_identity(
    spec: ResourceSpec,
    configuration: Mapping[str, Any],
    *,
    partition: str,
    region: str,
    account_id: str,
) -> ResourceIdentity:
    """Id, ARN, name and tags of one resource. ``region`` is empty for global types."""
    raw_id = search(spec.id_field, configuration)
    if not isinstance(raw_id, str) or not raw_id:
        raise MalformedResource(f"{spec.cfn_type}: no {spec.id_field} in the configuration")
    resource_id = raw_id.removeprefix(spec.id_strip_prefix)
    tags = read_tags(spec, configuration)
    return ResourceIdentity(
        resource_id=resource_id,
        arn=resource_arn(
            spec,
            configuration,
            resource_id=resource_id,
            partition=partition,
            region=region,
            account_id=account_id,
        ),
        name=resource_name(spec, configuration, tags),
        tags=tags,
    )


def resource_arn(
    spec: ResourceSpec,
    configuration: Mapping[str, Any],
    *,
    resource_id: str,
    partition: str,
    region: str,
    account_id: str,
) -> str:
    if spec.arn_field is not None:
        arn = search(spec.arn_field, configuration)
        if isinstance(arn, str) and arn.startswith("arn:"):
            return arn
        if spec.arn_template is None:
            raise MalformedResource(f"{spec.cfn_type} {resource_id}: no {spec.arn_field}")
    assert spec.arn_template is not None
    fields: dict[str, Any] = {
        name: value for name, value in configuration.items() if isinstance(value, str)
    }
    fields.update(
        partition=partition,
        region=region,
        account=account_id,
        id=resource_id,
        id_relative=resource_id.removeprefix("/"),
    )
    try:
        return spec.arn_template.format_map(fields)
    except KeyError as exc:
        raise MalformedResource(
            f"{spec.cfn_type} {resource_id}: arn_template needs {exc.args[0]}"
        ) from None


_LOCATION_ALIASES = {"": "us-east-1", "EU": "eu-west-1"}
"""S3 location constraints that are not region names (GetBucketLocation's legacy answers)."""


def resource_region(spec: ResourceSpec, configuration: Mapping[str, Any], scope_region: str) -> str:
    """The region a resource is recorded in: its own (``region_field``) or its scope's."""
    if spec.region_field is None:
        return scope_region
    value = search(spec.region_field, configuration)
    if value is not None and not isinstance(value, str):
        raise MalformedResource(f"{spec.cfn_type}: {spec.region_field} is not a region name")
    return _LOCATION_ALIASES.get(value or "", value or "")


def resource_name(
    spec: ResourceSpec, configuration: Mapping[str, Any], tags: Mapping[str, str]
) -> str | None:
    if spec.name_field is not None:
        name = search(spec.name_field, configuration)
        if isinstance(name, str) and name:
            return name
    if spec.name_tag is not None:
        return tags.get(spec.name_tag) or None
    return None


def read_tags(spec: ResourceSpec, configuration: Mapping[str, Any]) -> dict[str, str]:
    """Tags as a plain dict, from either Key/Value lists or maps; none means ``{}``."""
    if spec.tags_field is None:
        return {}
    raw = search(spec.tags_field, configuration)
    if not raw:
        return {}
    if isinstance(raw, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in raw.items()}
    tags: dict[str, str] = {}
    if isinstance(raw, list):
        for entry in raw:
            if not isinstance(entry, Mapping):
                continue
            key = next((entry[k] for k in _TAG_KEY_NAMES if k in entry), None)
            value = next((entry[k] for k in _TAG_VALUE_NAMES if k in entry), "")
            if key is not None:
                tags[str(key)] = "" if value is None else str(value)
    return tags
