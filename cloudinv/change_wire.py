"""ChangeEvents to and from their wire bytes, fast: what the change stage sends and stores.

The same bytes as :func:`cloudinv.codec.encode` gives (``model_dump(mode="json",
by_alias=True)``), built with orjson straight from the model's attributes: a change carries
two whole configurations, and pydantic's serializer walking them cost as much as diffing
them (measured in ``bench/changes.py``). :func:`decode_change` parses with orjson and then
validates the parsed document, which pydantic does faster than parsing JSON itself and
still checks every field.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from cloudinv.models import ChangeEvent, JsonPatchOp

__all__ = ["decode_change", "encode_change", "patch_wire"]

_FIELDS = tuple(ChangeEvent.model_fields)
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})
_OP_MEMBERS = frozenset({"op", "path", "value", "from"})


def patch_wire(patch: list[JsonPatchOp]) -> list[dict[str, Any]]:
    """The RFC 6902 members of each operation, as :class:`JsonPatchOp` serializes them."""
    out: list[dict[str, Any]] = []
    for op in patch:
        kind = op.op
        if kind in ("add", "replace", "test"):
            out.append({"op": kind, "path": op.path, "value": op.value})
        elif kind in ("move", "copy"):
            out.append({"op": kind, "path": op.path, "from": op.from_})
        else:
            out.append({"op": kind, "path": op.path})
    return out


def encode_change(change: ChangeEvent) -> bytes:
    """``change`` as JSON bytes, equal to what pydantic's JSON serialization gives."""
    # In field order, as pydantic writes them.
    document = {name: getattr(change, name) for name in _FIELDS}
    document["patch"] = patch_wire(change.patch)
    attribution = change.attribution
    if attribution is not None:
        document["attribution"] = attribution.model_dump(mode="json")
    try:
        return orjson.dumps(document, option=_OPTIONS)
    except TypeError:
        # A configuration holding something orjson does not know (not from the wire):
        # pydantic's serializer knows more types.
        return change.model_dump_json(by_alias=True).encode()


def decode_change(data: bytes) -> ChangeEvent:
    """Bytes → ChangeEvent, checking every field (raises ``ValueError`` subclasses).

    The envelope goes through pydantic; the configurations and the patch, the bulk of a
    change, are checked here (validating each patch operation as a model cost more than
    the rest of the change's way through the stage).
    """
    document = orjson.loads(data)
    if not isinstance(document, dict):
        raise ValueError("expected a ChangeEvent object")
    bulk: dict[str, Any] = {}
    for name in ("prior_configuration", "configuration"):
        value = document.pop(name, None)
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"ChangeEvent.{name}: expected an object or null")
        bulk[name] = value
    bulk["patch"] = _patch_ops(document.pop("patch", []))
    envelope = ChangeEvent.model_validate(document)
    return envelope.model_copy(update=bulk)


def _patch_ops(items: Any) -> list[JsonPatchOp]:
    if not isinstance(items, list):
        raise ValueError("ChangeEvent.patch: expected a list")
    ops: list[JsonPatchOp] = []
    for n, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or item.get("op") not in _OPS
            or not isinstance(item.get("path"), str)
            or not item.keys() <= _OP_MEMBERS
        ):
            # Anything unusual gets pydantic's own error message.
            try:
                ops.append(JsonPatchOp.model_validate(item))
            except ValidationError as exc:
                raise ValueError(f"ChangeEvent.patch[{n}]: {exc}") from None
            continue
        source = item.get("from")
        if source is not None and not isinstance(source, str):
            raise ValueError(f"ChangeEvent.patch[{n}].from: expected a string")
        ops.append(
            JsonPatchOp.model_construct(
                op=item["op"], path=item["path"], value=item.get("value"), from_=source
            )
        )
    return ops
