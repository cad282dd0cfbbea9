"""What counts as a change: configuration normalization, RFC 6902 JSON Patch, changed paths.

Pure functions, no I/O. The change detector (:mod:`cloudinv.streams.changes`) normalizes every
configuration before hashing and diffing it, so that two polls of an unchanged resource give
the same document whatever order AWS listed things in and whatever counters ticked meanwhile.

Normalization rules, applied by :func:`normalize`:

1. **Volatile paths are dropped.** A type's
   :attr:`~cloudinv.catalog.spec.ResourceSpec.volatile_fields` (declared next to the type in
   ``cloudinv/catalog/resources``) are removed before comparing. A path
   is dotted field names; a segment ending in ``[]`` applies the rest of the path to every item
   of that list (``deployments[].runningCount``). A path that does not exist is ignored.
2. **Lists of objects with an identity become order-independent**: they are sorted by their
   identity, so a reorder is not a change and an added or removed item is one operation.
   The identity of a list's items is, in this order:

   - the per-type rule :attr:`~cloudinv.catalog.spec.ResourceSpec.list_ids` ``[field]`` (a
     tuple of item fields) when the type declares one;
   - the whole (normalized) item for lists named in :data:`WHOLE_ITEM_IDENTITY_LISTS`
     (security group permissions: protocol + ports + ranges together are the rule);
   - the first field of :data:`IDENTITY_FIELDS` that every item has, with distinct values
     (``Key`` for tags, ``GroupId``, ``RuleId``, ``CidrIp`` ...).

   Lists of objects with none of these keep their order: order may mean something there
   (CloudFront cache behaviours, container command lines).
3. **Lists of scalars that are sets are sorted**: a list whose field name ends in ``Ids``,
   ``Arns`` or ``ARNs`` or is one of :data:`SET_FIELDS` (``SecurityGroups`` as ELB returns
   it, ``AvailabilityZones`` ...). Other lists of scalars keep their order.

Rules are looked up by the name of the field holding the list, wherever it is in the
document: ``Tags`` is a tag list at the top level and inside a launch template alike.

:func:`json_patch` produces RFC 6902 operations from one normalized document to another
(``add``, ``remove`` and ``replace`` only); applying them to the old document gives the new
one exactly. Paths are JSON Pointers into the normalized documents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cloudinv.catalog.registry import default_registry
from cloudinv.catalog.spec import ResourceSpec
from cloudinv.core.models import JsonPatchOp, canonical_json

__all__ = [
    "IDENTITY_FIELDS",
    "SET_FIELDS",
    "WHOLE_ITEM_IDENTITY_LISTS",
    "NormalizationRules",
    "changed_paths",
    "json_patch",
    "normalize",
    "normalized_hash",
    "rules_for_type",
    "rules_of",
]

IDENTITY_FIELDS: tuple[str, ...] = (
    # Tags, in the spellings AWS services use.
    "Key",
    "key",
    "TagKey",
    # Explicit ids first: more specific than names.
    "SecurityGroupRuleId",
    "RuleId",
    "GroupId",
    "AllocationId",
    "AssociationId",
    "AttachmentId",
    "NetworkInterfaceId",
    "InstanceId",
    "VolumeId",
    "SubnetId",
    "VpcId",
    "RouteTableAssociationId",
    "PrefixListId",
    "CidrIp",
    "CidrIpv6",
    "Arn",
    "ARN",
    "arn",
    "Id",
    "ID",
    "id",
    "DeviceName",
    "AttributeName",
    "IndexName",
    "ParameterName",
    "OptionName",
    "Name",
    "name",
)
"""Item fields that identify an item of a list of objects, most specific first."""

WHOLE_ITEM_IDENTITY_LISTS: frozenset[str] = frozenset(
    {
        # A security group permission is identified by protocol, ports and ranges together.
        "IpPermissions",
        "IpPermissionsEgress",
    }
)
"""Lists whose items are identified by their whole content."""

SET_FIELDS: frozenset[str] = frozenset(
    {
        "SecurityGroups",
        "Subnets",
        "AvailabilityZones",
        "LoadBalancerNames",
        "TargetGroupARNs",
        "Aliases",
        "Groups",
    }
)
"""Lists of scalars whose order means nothing, besides the ``*Ids``/``*Arns`` naming rule."""

_SET_SUFFIXES = ("Ids", "Arns", "ARNs")
_SCALARS = (str, int, float, bool, type(None))
_CONTAINERS = (dict, list)


@dataclass(frozen=True)
class NormalizationRules:
    """How to normalize one resource type's configuration (see the module docstring)."""

    volatile_paths: tuple[str, ...] = ()
    list_ids: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """List field name → the item fields that together identify an item."""
    ordered_lists: frozenset[str] = frozenset()
    """List field names whose order is meaningful even if their items have ids."""

    def __hash__(self) -> int:
        return hash((self.volatile_paths, tuple(sorted(self.list_ids.items())), self.ordered_lists))


DEFAULT_RULES = NormalizationRules()


def rules_of(spec: ResourceSpec) -> NormalizationRules:
    """The normalization rules a type's declaration gives."""
    return NormalizationRules(
        volatile_paths=spec.volatile_fields,
        list_ids=dict(spec.list_ids),
        ordered_lists=spec.ordered_lists,
    )


@lru_cache(maxsize=1024)
def rules_for_type(resource_type: str) -> NormalizationRules:
    """The rules of a CloudFormation type, read from its declaration in the default registry.

    A type that is not registered (or a registry that cannot be loaded) gets the generic
    rules: nothing volatile, identities found by field name.
    """
    try:
        spec = default_registry().get(resource_type)
    except Exception:  # an unknown type is normal: the generic rules apply
        return DEFAULT_RULES
    return rules_of(spec)


# ---------------------------------------------------------------------------------------------
# Normalization


def normalize(configuration: Mapping[str, Any], rules: NormalizationRules = DEFAULT_RULES) -> Any:
    """The comparable form of a configuration: volatile paths dropped, set-like lists sorted.

    Returns a new document; the input is not modified.
    """
    document: Any = configuration
    for path in rules.volatile_paths:
        document = _drop_path(document, _split_path(path))
    return _canonical(document, None, rules)


def normalized_hash(normalized: Any) -> str:
    """SHA-256 of the canonical JSON of an already normalized document."""
    return hashlib.sha256(canonical_json(normalized)).hexdigest()


@lru_cache(maxsize=4096)
def _split_path(path: str) -> tuple[tuple[str, bool], ...]:
    """``a[].b`` → ``(("a", True), ("b", False))``: name and "for each list item"."""
    segments = []
    for part in path.split("."):
        if not part:
            raise ValueError(f"volatile path {path!r}: empty segment")
        if part.endswith("[]"):
            segments.append((part[:-2], True))
        else:
            segments.append((part, False))
    return tuple(segments)


def _drop_path(value: Any, segments: tuple[tuple[str, bool], ...]) -> Any:
    """A copy of ``value`` without ``segments`` (copying only the dicts on the way)."""
    if not segments or not isinstance(value, dict):
        return value
    (name, each), rest = segments[0], segments[1:]
    if name not in value:
        return value
    copy = dict(value)
    if not rest:
        # "a" or "a[]" at the end of a path: the whole field is volatile.
        del copy[name]
        return copy
    child = copy[name]
    if each:
        if isinstance(child, list):
            copy[name] = [_drop_path(item, rest) for item in child]
    else:
        copy[name] = _drop_path(child, rest)
    return copy


def _canonical(value: Any, field_name: str | None, rules: NormalizationRules) -> Any:
    # Scalars are returned as they are without a call: most leaves are scalars. (A tuple,
    # not ``dict | list``: isinstance with a union type is slower.) A dict is copied whole
    # (in C) and only its containers replaced: most of its values are scalars, and a
    # comprehension inserting every one of them cost a third of this function.
    if isinstance(value, dict):
        out = dict(value)
        for k, v in value.items():
            if isinstance(v, _CONTAINERS):
                out[k] = _canonical(v, k, rules)
        return out
    if isinstance(value, list):
        items = [_canonical(v, None, rules) if isinstance(v, _CONTAINERS) else v for v in value]
        if field_name is None or field_name in rules.ordered_lists or len(items) < 2:
            return items
        return _order_list(items, field_name, rules)
    return value


def _order_list(items: list[Any], field_name: str, rules: NormalizationRules) -> list[Any]:
    if all(isinstance(item, dict) for item in items):
        explicit = rules.list_ids.get(field_name)
        if explicit is not None:
            return sorted(items, key=lambda item: canonical_json([item.get(f) for f in explicit]))
        if field_name in WHOLE_ITEM_IDENTITY_LISTS:
            return sorted(items, key=canonical_json)
        identity = _identity_field(items)
        if identity is not None:
            return sorted(items, key=lambda item: canonical_json(item[identity]))
        return items
    if _is_set_field(field_name) and all(isinstance(item, _SCALARS) for item in items):
        return sorted(items, key=canonical_json)
    return items


def _identity_field(items: list[dict[str, Any]]) -> str | None:
    common = set(items[0])
    for item in items[1:]:
        common &= item.keys()
        if not common:
            return None
    for candidate in IDENTITY_FIELDS:
        if candidate in common:
            values = [item[candidate] for item in items]
            if all(type(v) is str for v in values):
                # Strings are distinct as JSON exactly when they are distinct as strings.
                distinct = len(set(values))
            else:
                distinct = len({canonical_json(v) for v in values})
            if distinct == len(items):
                return candidate
    return None


def _is_set_field(field_name: str) -> bool:
    return field_name in SET_FIELDS or field_name.endswith(_SET_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# JSON Patch


def json_patch(old: Any, new: Any) -> list[JsonPatchOp]:
    """RFC 6902 operations that turn ``old`` into ``new`` (both JSON documents).

    ``None`` stands for "no document" and is diffed as ``{}``: a creation is a list of
    ``add`` operations, a deletion a list of ``remove`` operations.
    """
    ops: list[JsonPatchOp] = []
    _diff({} if old is None else old, {} if new is None else new, "", ops)
    return ops


def changed_paths(patch: Iterable[JsonPatchOp]) -> list[str]:
    """The distinct JSON Pointers a patch touches, sorted."""
    return sorted({op.path for op in patch})


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _same(a: Any, b: Any) -> bool:
    """JSON equality: unlike ``==``, ``true`` is not ``1`` and ``1`` is not ``1.0``."""
    if a is b:
        return True
    if type(a) is not type(b) or a != b:
        return False
    if isinstance(a, _CONTAINERS):
        # Equal by Python's rules; the canonical bytes also tell true from 1 and 1 from 1.0.
        return canonical_json(a) == canonical_json(b)
    return True


def _differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The keys of both objects whose values are not :func:`_same`, sorted.

    The values equal by Python's rules that are containers are checked together, in one
    canonical encoding of each side (a configuration's object holds a dozen of them, and
    encoding each on its own cost more than the rest of the diff); only if that differs
    are they checked one by one.
    """
    differing: list[str] = []
    equal_old: dict[str, Any] = {}
    equal_new: dict[str, Any] = {}
    for key in old.keys() & new.keys():
        a, b = old[key], new[key]
        if a is b:
            continue
        if type(a) is not type(b) or a != b:
            differing.append(key)
        elif isinstance(a, _CONTAINERS):
            equal_old[key] = a
            equal_new[key] = b
    if equal_old and canonical_json(equal_old) != canonical_json(equal_new):
        differing += [k for k in equal_old if not _same(equal_old[k], equal_new[k])]
    differing.sort()
    return differing


def _diff(old: Any, new: Any, path: str, ops: list[JsonPatchOp]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        _diff_objects(old, new, path, ops)
    elif isinstance(old, list) and isinstance(new, list):
        _diff_lists(old, new, path, ops)
    elif not _same(old, new):
        ops.append(JsonPatchOp(op="replace", path=path, value=new))


def _diff_objects(
    old: dict[str, Any], new: dict[str, Any], path: str, ops: list[JsonPatchOp]
) -> None:
    for key in sorted(old.keys() - new.keys()):
        ops.append(JsonPatchOp(op="remove", path=f"{path}/{_escape(key)}"))
    for key in _differing_keys(old, new):
        _diff(old[key], new[key], f"{path}/{_escape(key)}", ops)
    for key in sorted(new.keys() - old.keys()):
        ops.append(JsonPatchOp(op="add", path=f"{path}/{_escape(key)}", value=new[key]))


def _diff_lists(old: list[Any], new: list[Any], path: str, ops: list[JsonPatchOp]) -> None:
    # Common prefix and suffix stay; the differing middle is diffed pairwise, then the
    # surplus is removed (always at the same index, since each removal shifts the rest)
    # or appended after the paired items.
    n_old, n_new = len(old), len(new)
    prefix = 0
    limit = min(n_old, n_new)
    while prefix < limit and _same(old[prefix], new[prefix]):
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and _same(old[n_old - 1 - suffix], new[n_new - 1 - suffix]):
        suffix += 1
    old_mid = old[prefix : n_old - suffix]
    new_mid = new[prefix : n_new - suffix]
    paired = min(len(old_mid), len(new_mid))
    for i in range(paired):
        _diff(old_mid[i], new_mid[i], f"{path}/{prefix + i}", ops)
    at = prefix + paired
    for _ in range(len(old_mid) - paired):
        ops.append(JsonPatchOp(op="remove", path=f"{path}/{at}"))
    for i in range(paired, len(new_mid)):
        ops.append(JsonPatchOp(op="add", path=f"{path}/{prefix + i}", value=new_mid[i]))
