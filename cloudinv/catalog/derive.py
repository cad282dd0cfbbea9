"""Derive resource type declarations from CloudFormation's registry schemas and botocore's models.

Run offline, once per upgrade of ``cfn-lint`` or botocore (``python -m cloudinv.catalog.derive
--write``); the result is the committed data file ``derived_types.json`` that
:mod:`cloudinv.catalog.generic` loads at start-up, so nothing here runs in the product.

For each CloudFormation type of ``us-east-1`` (the schemas ``cfn-lint`` ships), the schema's
``list`` handler names the IAM actions the list needs (``glue:ListJobs``), its ``read``
handler those a describe needs, and ``primaryIdentifier`` the property that identifies one
resource. With botocore's service models that gives:

- the service and list operation: a list action whose botocore operation needs no input and
  returns one list of items;
- the identifier: the item member that is the primary identifier (same name, any case, or
  the type's name prefixed: ``Id`` of ``AWS::Glue::Job`` is ``JobId``);
- the ARN: an ``Arn`` member of the item (or of the describe result), else the ARN format
  of the IAM resource the read action applies to (cfn-lint's ``Policies.json``) when that
  format ends in the identifier alone;
- a describe/get call per item when the list call returns only identifiers;
- tags and name where the configuration has them; global services from botocore's endpoint
  data (a service with one partition endpoint).

A type that cannot be resolved this way (its list needs a parent's id, its identifier is
composite or not in the response, its ARN cannot be read or built) is left out, with the
reason, under ``excluded``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape

from cloudinv.catalog.generic import spec_from_declaration
from cloudinv.catalog.iam_actions import HTTP_VERB_SERVICES, action_name, iam_prefix
from cloudinv.catalog.registry import Registry, curated_registry
from cloudinv.catalog.relationships import target_key
from cloudinv.catalog.spec import RelationshipBy, ResourceSpec

DATA_FILE = Path(__file__).with_name("derived_types.json")
SCHEMA_REGION = "us-east-1"

_PAGINATION_MEMBERS = frozenset(
    {"nexttoken", "marker", "nextmarker", "paginationtoken", "nextpagetoken", "maxresults"}
)
_TAG_MEMBERS = ("Tags", "tags", "TagList", "TagSet", "tagList", "TagsList")
_READ_PREFIXES = ("Describe", "Get", "List")
_DETAIL_SKIP_WORDS = ("Tag", "Policy", "Policies", "Permission", "Metric", "Statistics")
_FEW_MEMBERS = 3
"""A list item with at most this many members (an id, an ARN, a name) is only a reference:
the read handler's describe call completes it."""


class Unresolved(Exception):
    """A type the derivation leaves out; the message says why."""


@dataclass
class ServiceIndex:
    """botocore's services by IAM prefix, their models, and which are global."""

    session: Any
    by_prefix: dict[str, list[str]] = field(default_factory=dict)
    models: dict[str, ServiceModel] = field(default_factory=dict)
    global_services: frozenset[str] = frozenset()

    @classmethod
    def build(cls, session: Any, services: Iterable[str] | None = None) -> ServiceIndex:
        """The index of ``services`` (default: every service botocore knows)."""
        index = cls(session=session)
        for service in services if services is not None else session.get_available_services():
            if service in HTTP_VERB_SERVICES:
                continue  # authorized by HTTP verb, not action: no action maps to an operation
            model = session.get_service_model(service)
            index.models[service] = model
            index.by_prefix.setdefault(iam_prefix(service), []).append(service)
        index.global_services = _global_services(session, index.models)
        return index

    def operation(self, action: str) -> tuple[str, OperationModel] | None:
        """The botocore (service, operation) behind an IAM action like ``glue:ListJobs``."""
        prefix, _, name = action.partition(":")
        for service in self.by_prefix.get(prefix, ()):
            model = self.models[service]
            for op_name in model.operation_names:
                prefixed = op_name == name or op_name.startswith(name)
                if prefixed and action_name(service, op_name) == name:
                    return service, model.operation_model(op_name)
        return None


def _global_services(session: Any, models: Mapping[str, ServiceModel]) -> frozenset[str]:
    """Services whose ``aws`` partition data has one partition endpoint and no regions."""
    endpoints = session.get_data("endpoints")
    aws = next(p for p in endpoints["partitions"] if p["partition"] == "aws")
    found = set()
    for service, model in models.items():
        data = aws["services"].get(model.endpoint_prefix)
        if data and data.get("isRegionalized") is False and data.get("partitionEndpoint"):
            found.add(service)
    return frozenset(found)


@dataclass(frozen=True)
class SchemaSource:
    """The CloudFormation schemas of one region and the IAM ARN formats, from cfn-lint."""

    schemas: Mapping[str, Mapping[str, Any]]
    arn_formats: Mapping[str, Any]
    version: str

    @classmethod
    def from_cfn_lint(cls) -> SchemaSource:
        root = resources.files("cfnlint") / "data"
        providers = json.loads((root / "schemas/providers" / f"{SCHEMA_REGION}.json").read_text())
        schemas = {
            name: json.loads((root / "schemas/resources" / f"{digest}.json").read_text())
            for name, digest in providers.items()
        }
        policies = json.loads((root / "AdditionalSpecs/Policies.json").read_text())
        return cls(schemas=schemas, arn_formats=policies, version=metadata.version("cfn-lint"))


# -- one type ---------------------------------------------------------------------------------


def _lower(name: str) -> str:
    return name.lower().replace("_", "")


def _find_member(members: Mapping[str, Shape], *names: str) -> str | None:
    by_lower = {_lower(m): m for m in members}
    for name in names:
        found = by_lower.get(_lower(name))
        if found is not None:
            return found
    return None


def _string(members: Mapping[str, Shape], name: str | None) -> str | None:
    if name is None or name not in members:
        return None
    return name if members[name].type_name == "string" else None


def _items(op: OperationModel, resource: str) -> tuple[str, Shape]:
    """The result path of the one list the operation returns, and its item shape."""
    output = op.output_shape
    if output is None:
        raise Unresolved(f"{op.name} returns nothing")
    lists = [
        (name, shape)
        for name, shape in output.members.items()
        if isinstance(shape, ListShape) and _lower(name) not in _PAGINATION_MEMBERS
    ]
    if len(lists) > 1:
        named = [(n, s) for n, s in lists if _lower(resource) in _lower(n)]
        lists = named if len(named) == 1 else lists
    if len(lists) != 1:
        raise Unresolved(
            f"{op.name} returns {len(lists)} lists ({', '.join(n for n, _ in lists)}): "
            "which one holds the resources is not clear"
        )
    name, shape = lists[0]
    assert isinstance(shape, ListShape)
    return f"{name}[]", shape.member


_PAGE_SIZE_MEMBERS = frozenset({"maxresults", "limit", "maxitems"})


def _required_inputs(op: OperationModel) -> list[str]:
    """Required request members, besides a page size (Cognito's ListUserPools requires one)."""
    if op.input_shape is None:
        return []
    return [m for m in op.input_shape.required_members if _lower(m) not in _PAGE_SIZE_MEMBERS]


def _page_size_params(op: OperationModel) -> dict[str, int]:
    """Values for required page-size members: the largest page the model allows."""
    if op.input_shape is None:
        return {}
    return {
        name: int(op.input_shape.members[name].metadata.get("max", 50))
        for name in op.input_shape.required_members
        if _lower(name) in _PAGE_SIZE_MEMBERS
    }


def _list_operation(
    index: ServiceIndex, cfn_type: str, permissions: Iterable[str]
) -> tuple[str, OperationModel]:
    resource = cfn_type.rsplit("::", 1)[1]
    candidates: list[tuple[int, int, str, OperationModel]] = []
    needing_input: list[str] = []
    for order, action in enumerate(permissions):
        name = action.partition(":")[2]
        if not name.startswith(_READ_PREFIXES) or "Tag" in name:
            continue
        found = index.operation(action)
        if found is None:
            continue
        service, op = found
        if _required_inputs(op):
            needing_input.append(op.name)
            continue
        related = 0 if _lower(resource) in _lower(op.name) else 1
        candidates.append((related, order, service, op))
    if not candidates:
        if needing_input:
            raise Unresolved(
                f"its list call {needing_input[0]} needs a parent's id "
                f"({', '.join(_required_inputs_of(index, cfn_type, needing_input[0]))})"
            )
        raise Unresolved("no list permission maps to a botocore operation")
    candidates.sort(key=lambda c: (c[0], c[1]))
    _, _, service, op = candidates[0]
    return service, op


def _required_inputs_of(index: ServiceIndex, cfn_type: str, op_name: str) -> list[str]:
    for model in index.models.values():
        if op_name in model.operation_names:
            return _required_inputs(model.operation_model(op_name))
    return []


def _identifier(schema: Mapping[str, Any]) -> str:
    ids = schema.get("primaryIdentifier") or []
    if len(ids) != 1:
        raise Unresolved(f"composite primary identifier ({', '.join(ids) or 'none'})")
    return str(ids[0]).rsplit("/", 1)[1]


def _id_member(members: Mapping[str, Shape], identifier: str, resource: str) -> str | None:
    names = [identifier, resource + identifier]
    if identifier.startswith(resource):
        names.append(identifier.removeprefix(resource))
    if identifier == "Arn":
        names += [resource + "Arn", "ARN"]
    return _string(members, _find_member(members, *names))


def _arn_member(members: Mapping[str, Shape], resource: str) -> str | None:
    """The member holding this resource's own ARN: ``Arn``, or ``<name>Arn`` where the name
    ends the type's (``GroupArn`` of a ``ProtectionGroup``); never another resource's ARN
    (a payment key alias's ``KeyArn``)."""
    named = _string(members, _find_member(members, "Arn", resource + "Arn"))
    if named is not None:
        return named
    own = [
        name
        for name in members
        if _lower(name).endswith("arn")
        and len(name) > 3
        and _lower(resource).endswith(_lower(name)[:-3])
        and members[name].type_name == "string"
    ]
    return own[0] if len(own) == 1 else None


def _arn_template(
    source: SchemaSource, read_actions: Iterable[str], global_service: bool, resource: str
) -> str | None:
    """``arn:{partition}:svc:{region}:{account}:thing/{id}`` from the IAM ARN format of the
    IAM resource the read action applies to, when that resource is this type's (its name
    ends the type's name: ``policy`` for ``AWS::FMS::Policy``)."""
    for action in read_actions:
        prefix, _, name = action.partition(":")
        service = source.arn_formats.get(prefix) or {}
        resource_names = (service.get("Actions", {}).get(name.lower()) or {}).get("Resources", [])
        if len(resource_names) != 1 or not _lower(resource).endswith(
            _lower(resource_names[0]).replace("-", "")
        ):
            continue
        formats = (service.get("Resources", {}).get(resource_names[0]) or {}).get("ARNFormats", [])
        if len(formats) != 1 or not formats[0].endswith(".*") or formats[0].count(".*") != 1:
            continue
        template = str(formats[0]).removesuffix(".*")
        if "${" in template.replace("${Partition}", "").replace("${Region}", "").replace(
            "${Account}", ""
        ):
            continue
        if global_service and "${Region}" in template:
            continue
        return (
            template.replace("${Partition}", "{partition}")
            .replace("${Region}", "{region}")
            .replace("${Account}", "{account}")
            + "{id}"
        )
    return None


def _detail_call(
    index: ServiceIndex,
    service: str,
    read_permissions: Iterable[str],
    members: Mapping[str, Shape],
    list_op: str,
) -> tuple[dict[str, Any], dict[str, Shape]] | None:
    """A describe/get of one item whose only required input is a field of the item."""
    for action in read_permissions:
        name = action.partition(":")[2]
        if not name.startswith(("Describe", "Get")) or any(w in name for w in _DETAIL_SKIP_WORDS):
            continue
        found = index.operation(action)
        if found is None or found[0] != service or found[1].name == list_op:
            continue
        op = found[1]
        required = _required_inputs(op)
        if len(required) != 1 or op.output_shape is None:
            continue
        source = _find_member(members, required[0])
        if source is None or members[source].type_name != "string":
            continue
        call: dict[str, Any] = {"operation": op.name, "params": {required[0]: source}}
        output = dict(op.output_shape.members)
        structures = [n for n, s in output.items() if isinstance(s, StructureShape)]
        if len(output) == 1 and structures:
            call["result_path"] = structures[0]
            result = output[structures[0]]
            assert isinstance(result, StructureShape)
            return call, dict(result.members)
        return call, output
    return None


def _tags(members: Mapping[str, Shape]) -> tuple[str, str] | None:
    for name in _TAG_MEMBERS:
        shape = members.get(name)
        if isinstance(shape, MapShape):
            return name, "dict"
        if isinstance(shape, ListShape) and isinstance(shape.member, StructureShape):
            lowered = {m.lower() for m in shape.member.members}
            if lowered & {"key", "tagkey"} and lowered & {"value", "tagvalue"}:
                return name, "key_value_list"
    return None


def derive_type(
    cfn_type: str, schema: Mapping[str, Any], index: ServiceIndex, source: SchemaSource
) -> dict[str, Any]:
    """The declaration of one type as ResourceSpec keyword arguments; raises Unresolved."""
    return _derive_type(cfn_type, schema, index, source)[0]


def _derive_type(
    cfn_type: str, schema: Mapping[str, Any], index: ServiceIndex, source: SchemaSource
) -> tuple[dict[str, Any], dict[str, Shape]]:
    """The declaration and the shapes of its configuration's members."""
    handlers = schema.get("handlers") or {}
    if "list" not in handlers:
        raise Unresolved("the schema has no list handler")
    if (handlers["list"].get("handlerSchema") or {}).get("required"):
        required = handlers["list"]["handlerSchema"]["required"]
        raise Unresolved(f"listed per parent ({', '.join(required)})")
    resource = cfn_type.rsplit("::", 1)[1]
    identifier = _identifier(schema)
    service, list_op = _list_operation(index, cfn_type, handlers["list"].get("permissions", []))
    result_path, item = _items(list_op, resource)
    declaration: dict[str, Any] = {
        "cfn_type": cfn_type,
        "service": service,
        "list_operation": list_op.name,
        "result_path": result_path,
    }
    if _page_size_params(list_op):
        declaration["list_params"] = _page_size_params(list_op)
    if isinstance(item, StructureShape):
        members: dict[str, Shape] = dict(item.members)
    elif item.type_name == "string":
        declaration["item_key"] = identifier
        members = {identifier: item}
    else:
        raise Unresolved(f"{list_op.name} lists {item.type_name} items")
    read_permissions = (handlers.get("read") or {}).get("permissions", [])
    if len(members) <= _FEW_MEMBERS:
        detail = _detail_call(index, service, read_permissions, members, list_op.name)
        if detail is not None:
            call, merged = detail
            declaration["details"] = [call]
            members = {**merged, **members}
    id_field = _id_member(members, identifier, resource)
    if id_field is None:
        raise Unresolved(f"identifier {identifier} is not in the {list_op.name} response")
    declaration["id_field"] = id_field
    global_service = service in index.global_services
    if id_field.lower().endswith("arn"):
        # The identifier is the ARN: nothing to build.
        arn_field: str | None = id_field
        template = None
    else:
        arn_field = _arn_member(members, resource)
        template = _arn_template(source, read_permissions, global_service, resource)
    if arn_field is None and template is None:
        raise Unresolved("no ARN in the response and no single-id ARN format for its read action")
    if arn_field is not None:
        declaration["arn_field"] = arn_field
    if template is not None:
        declaration["arn_template"] = template
    name_field = _string(members, _find_member(members, "Name", resource + "Name"))
    if name_field is not None:
        declaration["name_field"] = name_field
    tags = _tags(members)
    if tags is not None:
        declaration["tags_field"], declaration["tag_format"] = tags
    if global_service:
        declaration["global_service"] = True
    return declaration, members


# -- the whole catalog ------------------------------------------------------------------------

_TYPE_NAME_RE = re.compile(r"^AWS::[A-Za-z0-9]+::[A-Za-z0-9]+$")


def _list_call(declaration: Mapping[str, Any]) -> tuple[str, str]:
    return declaration["service"], declaration["list_operation"]


def _without_shared_lists(
    types: list[dict[str, Any]],
    curated_lists: Mapping[tuple[str, str], str],
    excluded: dict[str, str],
) -> list[dict[str, Any]]:
    """Types whose list call no other type shares: when two types list through one call
    (Network Manager's attachments of every kind), which item is of which type is not in
    the response, and one resource would be recorded as several."""
    users: dict[tuple[str, str], list[str]] = {}
    for declaration in types:
        users.setdefault(_list_call(declaration), []).append(declaration["cfn_type"])
    kept = []
    for declaration in types:
        call = _list_call(declaration)
        others = [t for t in users[call] if t != declaration["cfn_type"]]
        if call in curated_lists:
            others.append(curated_lists[call])
        if others:
            excluded[declaration["cfn_type"]] = (
                f"its list call {call[1]} also lists {', '.join(sorted(others))}: "
                "the response does not say which item is of which type"
            )
        else:
            kept.append(declaration)
    return kept


# -- relationships of derived types -----------------------------------------------------------

_KMS_KEY_FIELDS = ("kmskeyid", "kmskeyids", "kmskeyarn", "kmskeyarns")
"""How configurations name a KMS key (an id, an alias or an ARN: only ARNs are resolved)."""
_RELATIONSHIP_DEPTH = 3
_CONTAINERS = frozenset({"AWS::EC2::VPC", "AWS::EC2::Subnet"})
_USED = frozenset({"AWS::IAM::Role", "AWS::KMS::Key"})


class RelationshipTargets:
    """Which field names name which registered type, for relationships of derived types.

    A field names type ``AWS::S::R`` when it is called ``RId`` / ``RIds`` (the type's id
    is an id, and its ARN can be built from it) or ``RArn`` / ``RArns`` (any case); KMS keys
    also as ``KmsKeyId`` / ``KmsKeyArn`` (by ARN). The name must say which type: among every
    CloudFormation type (registered or not) called ``R``, the one of the source's own service,
    else the only one, else EC2's (the ids AWS APIs give bare, as ``InstanceId`` or
    ``VolumeId``); otherwise (``PolicyId``: IAM, IoT, FMS, Organizations...) the field is
    ambiguous and left out. The type chosen must be registered.
    """

    def __init__(self, specs: Iterable[ResourceSpec], all_types: Iterable[str]) -> None:
        self._specs = {spec.cfn_type: spec for spec in specs}
        self._types_named: dict[str, list[str]] = {}
        for cfn_type in sorted({*all_types, *self._specs}):
            self._types_named.setdefault(cfn_type.rsplit("::", 1)[1].lower(), []).append(cfn_type)

    def target(
        self, field_name: str, source_type: str
    ) -> tuple[ResourceSpec, RelationshipBy] | None:
        lowered = field_name.lower()
        by: RelationshipBy
        if lowered in _KMS_KEY_FIELDS:
            resource, by = "key", "arn"
            candidates = ["AWS::KMS::Key"]
        else:
            for suffix in ("ids", "id", "arns", "arn"):
                if lowered.endswith(suffix) and len(lowered) > len(suffix):
                    resource = lowered.removesuffix(suffix)
                    by = "id" if suffix.startswith("id") else "arn"
                    break
            else:
                return None
            candidates = self._types_named.get(resource, [])
        namespace = _namespace(source_type)
        chosen: str | None = None
        for pick in (
            [t for t in candidates if _namespace(t) == namespace],
            candidates,
            [t for t in candidates if _namespace(t) == "EC2"],
        ):
            if len(pick) == 1:
                chosen = pick[0]
                break
        spec = None if chosen is None else self._specs.get(chosen)
        if spec is None:
            return None
        if by == "id" and not (
            spec.id_field.lower().endswith("id")
            and target_key(spec, "x-1", "id", account_id="1", region="r", partition="aws")
            is not None
        ):
            return None
        return spec, by

    def relationships_of(self, cfn_type: str, members: Mapping[str, Shape]) -> list[dict[str, str]]:
        """The relationship declarations (as the data file holds them) of one derived type."""
        found: list[dict[str, str]] = []
        for path, name, shape in _string_fields(members, "", _RELATIONSHIP_DEPTH):
            if shape.type_name == "list":
                path += "[]"
            target = self.target(name, cfn_type)
            if target is None or target[0].cfn_type == cfn_type:
                continue
            spec, by = target
            relationship = (
                "is contained in"
                if spec.cfn_type in _CONTAINERS
                else "uses"
                if spec.cfn_type in _USED
                else "is associated with"
            )
            declaration = {"name": relationship, "path": path, "target_type": spec.cfn_type}
            if by != "id":
                declaration["by"] = by
            found.append(declaration)
        return found


def _namespace(cfn_type: str) -> str:
    return cfn_type.split("::")[1]


def _string_fields(
    members: Mapping[str, Shape], prefix: str, depth: int
) -> Iterable[tuple[str, str, Shape]]:
    """(path, member name, shape) of every string or list-of-strings member, through
    structures and lists of structures, ``depth`` levels deep."""
    for name, shape in sorted(members.items()):
        path = f"{prefix}{name}"
        if shape.type_name == "string" or (
            isinstance(shape, ListShape) and shape.member.type_name == "string"
        ):
            yield path, name, shape
        elif depth > 1 and isinstance(shape, StructureShape):
            yield from _string_fields(shape.members, path + ".", depth - 1)
        elif (
            depth > 1 and isinstance(shape, ListShape) and isinstance(shape.member, StructureShape)
        ):
            yield from _string_fields(shape.member.members, path + "[].", depth - 1)


def derive_catalog(source: SchemaSource, session: Any, curated: Registry) -> dict[str, Any]:
    """Every type's declaration or exclusion reason, as the data file holds them."""
    index = ServiceIndex.build(session)
    curated_types = frozenset(curated.types())
    curated_lists = {(s.service, s.list_operation): s.cfn_type for s in curated}
    types: list[dict[str, Any]] = []
    shapes: dict[str, dict[str, Shape]] = {}
    excluded: dict[str, str] = {}
    for cfn_type in sorted(source.schemas):
        if not _TYPE_NAME_RE.match(cfn_type) or cfn_type in curated_types:
            continue
        try:
            declaration, shapes[cfn_type] = _derive_type(
                cfn_type, source.schemas[cfn_type], index, source
            )
            types.append(declaration)
        except Unresolved as why:
            excluded[cfn_type] = str(why)
    types = _without_shared_lists(types, curated_lists, excluded)
    targets = RelationshipTargets(
        [*curated, *(spec_from_declaration(d) for d in types)], source.schemas
    )
    for declaration in types:
        relationships = targets.relationships_of(
            declaration["cfn_type"], shapes[declaration["cfn_type"]]
        )
        if relationships:
            declaration["relationships"] = relationships
    return {
        "generated_from": {
            "cfn-lint": source.version,
            "botocore": metadata.version("botocore"),
            "schema_region": SCHEMA_REGION,
        },
        "types": types,
        "excluded": excluded,
    }


def render(catalog: Mapping[str, Any]) -> str:
    return json.dumps(catalog, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cloudinv.catalog.derive",
        description="Derive resource types from cfn-lint's schemas and botocore's models.",
    )
    parser.add_argument("--write", action="store_true", help=f"write {DATA_FILE.name}")
    args = parser.parse_args(argv)
    catalog = derive_catalog(
        SchemaSource.from_cfn_lint(), botocore.session.get_session(), curated_registry()
    )
    text = render(catalog)
    if args.write:
        DATA_FILE.write_text(text)
    else:
        sys.stdout.write(text)
    print(f"{len(catalog['types'])} derived, {len(catalog['excluded'])} excluded", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
