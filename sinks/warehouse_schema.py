"""The warehouse's column types: botocore's output shapes turned into Arrow and Athena types.

A resource's configuration is its list item with every detail call merged in (see
:class:`cloudinv.catalog.spec.ResourceSpec`), so its shape is the list operation's output shape at
the declaration's ``result_path`` plus, per :class:`~cloudinv.catalog.spec.DetailCall`, the detail
operation's output (at its ``result_path``) under ``merge_key`` or merged at the top level.
:func:`configuration_type` builds that as one Arrow struct:

============================  ==========================  ======================
botocore shape                Arrow                       Athena (Hive DDL)
============================  ==========================  ======================
structure                     struct                      struct<...>
list                          list                        array<...>
map                           map<string, ...>            map<string,...>
string, blob, enum            string                      string
integer, long                 int64                       bigint
boolean                       bool                        boolean
float, double                 float64                     double
timestamp                     timestamp[ms, UTC]          timestamp
============================  ==========================  ======================

A shape that contains itself (recursive types) or lies deeper than :data:`MAX_DEPTH` is
typed ``string`` and holds that part of the configuration as JSON text. Struct members whose
names differ only in case (Athena folds case) keep the first and drop the others; every
value is also in the row's ``configuration_json``, so nothing is lost.

:func:`coerce` fits a configuration (plain JSON data) to such a type: a value that does not
fit (an emulator's odd field, a number as text) becomes the nearest fit or ``None``, and is
counted, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import botocore.session
import orjson
import pyarrow as pa

from cloudinv.catalog.registry import Registry, default_registry
from cloudinv.catalog.spec import ResourceSpec

__all__ = [
    "MAX_DEPTH",
    "CoerceStats",
    "athena_type",
    "coerce",
    "configuration_members",
    "configuration_type",
    "shape_type",
    "spec_configuration_type",
    "walk_shape",
]

MAX_DEPTH = 12
"""Struct/list/map nesting kept typed; deeper parts are JSON text."""

TIMESTAMP = pa.timestamp("ms", tz="UTC")

_SCALARS: Mapping[str, pa.DataType] = {
    "string": pa.string(),
    "blob": pa.string(),
    "character": pa.string(),
    "integer": pa.int64(),
    "long": pa.int64(),
    "short": pa.int64(),
    "byte": pa.int64(),
    "boolean": pa.bool_(),
    "float": pa.float64(),
    "double": pa.float64(),
    "bigdecimal": pa.float64(),
    "timestamp": TIMESTAMP,
}


@cache
def _service_model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


def walk_shape(shape: Any, path: str) -> Any:
    """The shape at a declaration's path (dotted names, ``[]`` or ``[N]`` into lists)."""
    current = shape
    for segment in path.split("."):
        name, bracket, _ = segment.partition("[")
        current = current.members[name]
        if bracket:
            current = current.member
    return current


def configuration_members(spec: ResourceSpec) -> dict[str, Any]:
    """Member name → botocore shape of a configuration of ``spec``'s type."""
    model = _service_model(spec.service)
    item = walk_shape(model.operation_model(spec.list_operation).output_shape, spec.result_path)
    members: dict[str, Any] = (
        {spec.item_key: item} if spec.item_key is not None else dict(item.members)
    )
    for stage in sorted({d.stage for d in spec.details}):
        for detail in (d for d in spec.details if d.stage == stage):
            result = model.operation_model(detail.operation).output_shape
            if detail.result_path is not None:
                result = walk_shape(result, detail.result_path)
            if detail.merge_key is not None:
                members[detail.merge_key] = result
            elif result is not None and result.type_name == "structure":
                members.update((k, v) for k, v in result.members.items() if k != "ResponseMetadata")
    return members


def shape_type(shape: Any, depth: int = 0, seen: frozenset[str] = frozenset()) -> pa.DataType:
    """The Arrow type of one botocore shape (see the module docstring)."""
    kind = shape.type_name
    if kind in _SCALARS:
        return _SCALARS[kind]
    if depth >= MAX_DEPTH or shape.name in seen:
        return pa.string()
    inner = seen | {shape.name}
    if kind == "structure":
        return _struct({k: v for k, v in shape.members.items()}, depth + 1, inner)
    if kind == "list":
        return pa.list_(shape_type(shape.member, depth + 1, inner))
    if kind == "map":
        return pa.map_(pa.string(), shape_type(shape.value, depth + 1, inner))
    return pa.string()


def _struct(members: Mapping[str, Any], depth: int, seen: frozenset[str]) -> pa.DataType:
    fields = []
    folded: set[str] = set()
    for name, member in members.items():
        if name.lower() in folded:
            continue
        folded.add(name.lower())
        fields.append(pa.field(name, shape_type(member, depth, seen)))
    if not fields:
        # Athena has no empty struct; an empty output shape is kept as JSON text.
        return pa.string()
    return pa.struct(fields)


def spec_configuration_type(spec: ResourceSpec) -> pa.DataType:
    """The typed ``configuration`` column of one declaration."""
    return _struct(configuration_members(spec), 1, frozenset())


@cache
def _registered_type(cfn_type: str) -> pa.DataType:
    return spec_configuration_type(default_registry().get(cfn_type))


def configuration_type(cfn_type: str, registry: Registry | None = None) -> pa.DataType | None:
    """The typed ``configuration`` column of a registered type; ``None`` if not registered."""
    if registry is not None:
        return spec_configuration_type(registry.get(cfn_type)) if cfn_type in registry else None
    if cfn_type not in default_registry():
        return None
    return _registered_type(cfn_type)


def athena_type(dtype: pa.DataType) -> str:
    """The Hive DDL spelling of an Arrow type this module produces."""
    if pa.types.is_struct(dtype):
        inner = ",".join(f"`{f.name}`:{athena_type(f.type)}" for f in dtype)
        return f"struct<{inner}>"
    if pa.types.is_map(dtype):
        return f"map<{athena_type(dtype.key_type)},{athena_type(dtype.item_type)}>"
    if pa.types.is_list(dtype):
        return f"array<{athena_type(dtype.value_type)}>"
    if pa.types.is_timestamp(dtype):
        return "timestamp"
    if pa.types.is_int64(dtype):
        return "bigint"
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_float64(dtype):
        return "double"
    if pa.types.is_string(dtype):
        return "string"
    raise ValueError(f"no Athena type for {dtype}")


@dataclass
class CoerceStats:
    """Values that did not fit their column (set to ``None`` or converted)."""

    mismatches: int = 0


def coerce(value: Any, dtype: pa.DataType, stats: CoerceStats) -> Any:
    """``value`` (plain JSON data) as a Python value Arrow accepts for ``dtype``."""
    if value is None:
        return None
    if pa.types.is_string(dtype):
        if isinstance(value, str):
            return value
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if pa.types.is_struct(dtype):
        if not isinstance(value, dict):
            stats.mismatches += 1
            return None
        return {f.name: coerce(value.get(f.name), f.type, stats) for f in dtype}
    if pa.types.is_map(dtype):
        if not isinstance(value, dict):
            stats.mismatches += 1
            return None
        item = dtype.item_type
        return [(str(k), coerce(v, item, stats)) for k, v in value.items()]
    if pa.types.is_list(dtype):
        if not isinstance(value, list):
            stats.mismatches += 1
            return None
        inner = dtype.value_type
        return [coerce(v, inner, stats) for v in value]
    if pa.types.is_timestamp(dtype):
        return _timestamp(value, stats)
    if pa.types.is_boolean(dtype):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        stats.mismatches += 1
        return None
    if pa.types.is_int64(dtype):
        if isinstance(value, bool):
            stats.mismatches += 1
            return None
        if isinstance(value, int) and -(2**63) <= value < 2**63:
            return value
        try:
            number = int(str(value))
        except ValueError:
            stats.mismatches += 1
            return None
        return number if -(2**63) <= number < 2**63 else None
    if pa.types.is_float64(dtype):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value))
        except ValueError:
            stats.mismatches += 1
            return None
    stats.mismatches += 1
    return None


def _timestamp(value: Any, stats: CoerceStats) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Epoch seconds (a few APIs, and emulators, send numbers).
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            stats.mismatches += 1
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            stats.mismatches += 1
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    stats.mismatches += 1
    return None
