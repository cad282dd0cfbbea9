"""Checking a rule's JMESPath against the shape of what it will be evaluated over.

A condition that names a field the resource never has (``State.Name`` where the
configuration holds ``State`` as a string, ``IpPermission`` for ``IpPermissions``) is valid
JMESPath and evaluates to ``null`` on every resource: the rule silently never fires, or
(negated) always does. A resource type's configuration has a known shape — its list item
with every detail call merged in, from botocore's output shapes
(:func:`cloudinv.sinks.warehouse_schema.configuration_members`) — so every field a rule's
expression reaches is checked against it, with the nearest real names as a suggestion.

What cannot be known is not guessed: the values of maps, the result of functions
(``from_json`` of a policy document), literals and everything below them are accepted as
they are.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
from pydantic import BaseModel

from cloudinv.catalog.registry import default_registry
from cloudinv.core.models import CloudTrailEvent
from cloudinv.sinks.warehouse_schema import configuration_members

__all__ = [
    "CHANGE_FIELDS",
    "PathProblem",
    "check_change_expression",
    "check_configuration_expression",
    "check_event_expression",
]


class _Unknown:
    """A value whose shape is not known: anything below it is accepted."""


UNKNOWN = _Unknown()


@dataclass(frozen=True)
class _Struct:
    """A structure given as member name -> shape (a botocore shape, a _Struct or UNKNOWN)."""

    members: Mapping[str, Any]
    what: str


CHANGE_FIELDS = (
    "change_id",
    "change_type",
    "key",
    "resource_type",
    "resource_id",
    "account_id",
    "region",
    "name",
    "configuration",
    "prior_configuration",
    "patch",
    "changed_paths",
    "captured_at",
    "detected_at",
    "scan_id",
    "attribution",
    "before_hash",
    "after_hash",
)
"""The fields of the document a change rule's condition is evaluated over."""


class PathProblem(ValueError):
    """A field the expression reaches that the data never has."""


def _kind(shape: Any) -> str:
    if shape is UNKNOWN:
        return "unknown"
    if isinstance(shape, _Struct):
        return "structure"
    return str(shape.type_name)


def _members(shape: Any) -> Mapping[str, Any]:
    """Member name -> shape of a _Struct or a botocore structure shape (both have .members)."""
    members: Mapping[str, Any] = shape.members
    return members


def _field(shape: Any, name: str, where: str) -> Any:
    kind = _kind(shape)
    if kind == "unknown" or kind == "map":
        return UNKNOWN
    if kind == "structure":
        members = _members(shape)
        if name in members:
            return members[name]
        lowered = {m.lower(): m for m in members}
        close = (
            [lowered[name.lower()]]
            if name.lower() in lowered
            else difflib.get_close_matches(name, list(members), n=3, cutoff=0.6)
        )
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        if not where and name == "configuration" and isinstance(shape, _Struct):
            hint = (
                "; a state rule's condition (and open_while) is evaluated over the "
                "configuration itself: drop 'configuration.'"
            )
        raise PathProblem(f"{where}{name}: no such field in {_what(shape)}{hint}")
    if kind == "list":
        raise PathProblem(
            f"{where}{name}: {where.rstrip('.') or 'the value'} is a list; use "
            f"{where.rstrip('.')}[].{name} (each item) or [N].{name}"
        )
    raise PathProblem(
        f"{where}{name}: {where.rstrip('.') or 'the value'} is a {kind}, not an object"
    )


def _what(shape: Any) -> str:
    if isinstance(shape, _Struct):
        return shape.what
    return f"{shape.name} ({shape.type_name})"


def _item(shape: Any) -> Any:
    kind = _kind(shape)
    if kind == "list":
        return shape.member
    if kind == "map":
        return UNKNOWN
    return UNKNOWN


def _walk(node: Mapping[str, Any], shape: Any, where: str) -> tuple[Any, str]:
    """The shape of what ``node`` yields when applied to ``shape``, and its path (for
    messages); raises PathProblem on a field the shape does not have."""
    kind = node["type"]
    children = node.get("children", [])
    if shape is UNKNOWN and kind in {"field", "subexpression", "index_expression"}:
        return UNKNOWN, where
    if kind == "field":
        name = node["value"]
        return _field(shape, name, where), f"{where}{name}."
    if kind == "subexpression":
        left, at = _walk(children[0], shape, where)
        return _walk(children[1], left, at)
    if kind == "index_expression":
        left, at = _walk(children[0], shape, where)
        return _item(left), at.rstrip(".") + "[]."
    if kind in {"index", "slice", "literal", "expref", "raw_string"}:
        # An index applies to the list the parent gave (handled there); an expref's
        # element type depends on the function: not checked.
        return (shape if kind in {"index", "slice"} else UNKNOWN), where
    if kind == "projection":
        left, at = _walk(children[0], shape, where)
        item = _item(left) if _kind(left) != "unknown" else UNKNOWN
        _walk(children[1], item, at.rstrip(".") + "[].")
        return UNKNOWN, where
    if kind == "value_projection":
        _walk(children[0], shape, where)
        return UNKNOWN, where
    if kind == "filter_projection":
        left, at = _walk(children[0], shape, where)
        item = _item(left) if _kind(left) != "unknown" else UNKNOWN
        inner = at.rstrip(".") + "[]."
        _walk(children[2], item, inner)
        _walk(children[1], item, inner)
        return UNKNOWN, where
    if kind == "flatten":
        child, at = _walk(children[0], shape, where)
        if _kind(child) == "list" and _kind(child.member) == "list":
            return child.member, at
        return child, at
    if kind == "pipe":
        left, at = _walk(children[0], shape, where)
        return _walk(children[1], left, at)
    if kind == "current":
        return shape, where
    if kind == "function_expression":
        for child in children:
            _walk(child, shape, where)
        return UNKNOWN, where
    if kind == "key_val_pair":
        return _walk(children[0], shape, where)
    # comparator, and/or/not, multi_select_*, and anything newer: check the operands.
    for child in children:
        _walk(child, shape, where)
    return UNKNOWN, where


def _configuration_shape(resource_type: str) -> Any:
    """The configuration of ``resource_type`` as a structure, or UNKNOWN if botocore's
    models cannot say (a type whose shape cannot be resolved is not checked)."""
    try:
        spec = default_registry().get(resource_type)
        return _Struct(configuration_members(spec), f"the configuration of {resource_type}")
    except (KeyError, AttributeError, ValueError, LookupError):
        return UNKNOWN


def check_configuration_expression(expression: str, resource_type: str) -> None:
    """Raise PathProblem if ``expression`` reaches a field ``resource_type``'s configuration
    never has."""
    _walk(jmespath.compile(expression).parsed, _configuration_shape(resource_type), "")


def check_change_expression(expression: str, resource_type: str) -> None:
    """The same over a change document: its fields, with ``configuration`` and
    ``prior_configuration`` shaped as the type's configuration."""
    configuration = _configuration_shape(resource_type)
    members: dict[str, Any] = dict.fromkeys(CHANGE_FIELDS, UNKNOWN)
    members["configuration"] = configuration
    members["prior_configuration"] = configuration
    _walk(jmespath.compile(expression).parsed, _Struct(members, "change"), "")


def _model_struct(model: type[BaseModel], what: str) -> _Struct:
    members: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        nested = next(
            (
                a
                for a in (annotation, *getattr(annotation, "__args__", ()))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
        members[info.alias or name] = _model_struct(nested, name) if nested else UNKNOWN
    return _Struct(members, what)


def check_event_expression(expression: str) -> None:
    """The same over a CloudTrail event as cloudinv normalizes it (request parameters and
    response elements are free-form and not checked below their names)."""
    _walk(jmespath.compile(expression).parsed, _model_struct(CloudTrailEvent, "an event"), "")
