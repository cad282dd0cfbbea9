"""One meta-test over the whole registry: every declaration checked against botocore's models.

No network: botocore's loader reads the service models shipped with it. A new resource type
is checked here with no extra work.
"""

from __future__ import annotations

import re
from typing import Any

import botocore.session
import pytest
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape

from cloudinv.catalog.registry import Registry, UnknownResourceType, default_registry
from cloudinv.catalog.relationships import target_key
from cloudinv.catalog.spec import (
    CFN_TYPE_RE,
    DetailCall,
    Relationship,
    ResourceSpec,
    compile_expression,
    search,
)

REGISTRY = default_registry()
_SESSION = botocore.session.get_session()
_SEGMENT_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<index>\[\]|\[\d+\])?$")
_MULTISELECT_RE = re.compile(r"^\[(?P<path>[A-Za-z_][A-Za-z0-9_.]*)\]$")
_FUNCTION_RE = re.compile(r"^[a-z_]+\((?P<path>[A-Za-z_][A-Za-z0-9_.]*)\s*[,)]")

# A configuration is a list item's members plus what detail calls merged in: name -> shape.
Members = dict[str, Shape]


def service_model(service: str) -> ServiceModel:
    return _SESSION.get_service_model(service)


def walk(members: Members | Shape, path: str) -> Shape:
    """The shape at ``path`` (dotted names, ``[]`` or ``[N]`` into lists, names into maps)."""
    current: Members | Shape = members
    for segment in path.split("."):
        match = _SEGMENT_RE.match(segment)
        assert match, f"path {path!r}: bad segment {segment!r}"
        name = match["name"]
        if isinstance(current, dict):
            assert name in current, f"path {path!r}: no {name!r} in {sorted(current)}"
            shape = current[name]
        elif isinstance(current, StructureShape):
            assert name in current.members, (
                f"path {path!r}: no {name!r} in {current.name} ({sorted(current.members)})"
            )
            shape = current.members[name]
        elif isinstance(current, MapShape):
            shape = current.value
        else:
            raise AssertionError(f"path {path!r}: {segment!r} is inside a {current.type_name}")
        if match["index"]:
            assert isinstance(shape, ListShape), f"path {path!r}: {name} is not a list"
            shape = shape.member
        current = shape
    assert isinstance(current, Shape)
    return current


def members_of(shape: Shape) -> Members:
    assert isinstance(shape, StructureShape), f"{shape.name} is not a structure"
    return dict(shape.members)


def item_members(spec: ResourceSpec) -> Members:
    op = service_model(spec.service).operation_model(spec.list_operation)
    item = walk(op.output_shape, spec.result_path)
    if spec.item_key is not None:
        assert item.type_name == "string", f"{spec.cfn_type}: item_key needs string items"
        return {spec.item_key: item}
    return members_of(item)


def check_request(spec: ResourceSpec, op: OperationModel, supplied: set[str], what: str) -> Members:
    """Every supplied parameter exists and every required one is supplied."""
    input_members: Members = dict(op.input_shape.members) if op.input_shape else {}
    unknown = supplied - set(input_members)
    assert not unknown, f"{spec.cfn_type} {what}: unknown parameters {unknown}"
    required = set(op.input_shape.required_members) if op.input_shape else set()
    missing = required - supplied
    assert not missing, f"{spec.cfn_type} {what}: required parameters not supplied {missing}"
    return input_members


def check_param_expression(spec: ResourceSpec, members: Members, expression: str) -> None:
    """A parameter is a field path, ``[path]`` (a one-item list) or ``fn(path, ...)``."""
    compile_expression(expression)
    wrapped = _MULTISELECT_RE.match(expression) or _FUNCTION_RE.match(expression)
    walk(members, wrapped["path"] if wrapped else expression)


def merge_detail(spec: ResourceSpec, detail: DetailCall, members: Members) -> Members:
    model = service_model(spec.service)
    assert detail.operation in model.operation_names, (
        f"{spec.cfn_type}: no operation {detail.operation} in {spec.service}"
    )
    op = model.operation_model(detail.operation)
    supplied = set(detail.params) | set(detail.static_params) | set(detail.inherit_list_params)
    check_request(spec, op, supplied, detail.operation)
    for name in detail.inherit_list_params:
        assert name in spec.list_params or (spec.parent and name in spec.parent.params), (
            f"{spec.cfn_type} {detail.operation}: inherits {name}, which the list call lacks"
        )
    for expression in detail.params.values():
        check_param_expression(spec, members, expression)
    result: Shape = op.output_shape
    if detail.result_path is not None:
        result = walk(result, detail.result_path)
    merged = dict(members)
    if detail.merge_key is not None:
        merged[detail.merge_key] = result
    else:
        merged.update(members_of(result))
    return merged


def configuration_members(spec: ResourceSpec) -> Members:
    members = item_members(spec)
    for stage in sorted({d.stage for d in spec.details}):
        before = dict(members)
        for detail in (d for d in spec.details if d.stage == stage):
            # Calls of one stage see only what earlier stages merged.
            for expression in detail.params.values():
                check_param_expression(spec, before, expression)
            members.update(merge_detail(spec, detail, before))
    return members


@pytest.mark.parametrize("spec", REGISTRY.all(), ids=lambda s: s.cfn_type)
def test_declaration_matches_botocore_models(spec: ResourceSpec) -> None:
    assert CFN_TYPE_RE.match(spec.cfn_type)
    model = service_model(spec.service)
    assert spec.list_operation in model.operation_names, (
        f"{spec.cfn_type}: no operation {spec.list_operation} in {spec.service}"
    )
    list_op = model.operation_model(spec.list_operation)
    supplied = set(spec.list_params) | (set(spec.parent.params) if spec.parent else set())
    variants = spec.list_param_variants or ({},)
    for variant in variants:
        check_request(spec, list_op, supplied | set(variant), spec.list_operation)
    if spec.item_filter is not None:
        compile_expression(spec.item_filter)

    members = configuration_members(spec)
    assert walk(members, spec.id_field).type_name == "string", f"{spec.cfn_type}: id"
    if spec.arn_field is not None:
        assert walk(members, spec.arn_field).type_name == "string", f"{spec.cfn_type}: arn"
    for name in spec.arn_template_fields:
        assert walk(members, name).type_name == "string", f"{spec.cfn_type}: arn {{{name}}}"
    if spec.name_field is not None:
        assert walk(members, spec.name_field).type_name == "string", f"{spec.cfn_type}: name"
    if spec.name_tag is not None:
        assert spec.tags_field is not None, f"{spec.cfn_type}: name_tag without tags_field"
    if spec.tags_field is not None:
        check_tags_shape(spec, walk(members, spec.tags_field))
    for path in spec.volatile_fields:
        walk(members, path)
    if spec.state_field is not None:
        assert walk(members, spec.state_field).type_name == "string", f"{spec.cfn_type}: state"
    for path in spec.state_moves:
        walk(members, path)
    for event_name, expression in spec.event_resource_ids.items():
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", event_name), f"{spec.cfn_type}: {event_name}"
        compile_expression(expression)
    for relationship in spec.relationships:
        check_relationship(spec, members, relationship)
    if spec.parent is not None:
        parent = REGISTRY.get(spec.parent.cfn_type)
        assert parent.service == spec.service
        parent_members = item_members(parent)
        for expression in spec.parent.params.values():
            check_param_expression(spec, parent_members, expression)


def check_relationship(spec: ResourceSpec, members: Members, relationship: Relationship) -> None:
    """The path ends at strings in the output shape, the target is registered, and a value
    of the declared kind resolves to a key (an ARN template that an id or name can fill)."""
    what = f"{spec.cfn_type} {relationship.name} {relationship.path}"
    assert walk(members, relationship.path).type_name == "string", f"{what}: not strings"
    assert relationship.target_type in REGISTRY, f"{what}: {relationship.target_type} unknown"
    if relationship.when is not None:
        compile_expression(relationship.when)
    if relationship.by != "arn":
        region = "" if spec.global_service else "us-east-1"
        key = target_key(
            REGISTRY.get(relationship.target_type),
            "sample-1",
            relationship.by,
            account_id="123456789012",
            region=region,
            partition="aws",
        )
        assert key is not None and "sample-1" in key, f"{what}: cannot build the target's key"


def test_relationships_declared_for_the_connected_types() -> None:
    declared = {
        spec.cfn_type: {(r.target_type, r.name) for r in spec.relationships}
        for spec in REGISTRY.all()
    }
    assert {
        ("AWS::EC2::Subnet", "is contained in"),
        ("AWS::EC2::VPC", "is contained in"),
        ("AWS::EC2::SecurityGroup", "is associated with"),
        ("AWS::EC2::Volume", "is attached to"),
        ("AWS::EC2::NetworkInterface", "contains"),
        ("AWS::IAM::InstanceProfile", "is associated with"),
    } <= declared["AWS::EC2::Instance"]
    assert ("AWS::EC2::Instance", "is attached to") in declared["AWS::EC2::Volume"]
    assert ("AWS::EC2::Instance", "is associated with") in declared[
        "AWS::ElasticLoadBalancingV2::TargetGroup"
    ]
    assert ("AWS::IAM::Role", "uses") in declared["AWS::Lambda::Function"]


def test_relationship_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        Relationship(name="touches", path="VpcId", target_type="AWS::EC2::VPC")
    with pytest.raises(ValueError, match="dotted names"):
        Relationship(name="uses", path="Vpc[?x]", target_type="AWS::EC2::VPC")
    with pytest.raises(ValueError, match="type name"):
        Relationship(name="uses", path="VpcId", target_type="EC2::VPC")


def check_tags_shape(spec: ResourceSpec, shape: Shape) -> None:
    if spec.tag_format == "dict":
        assert isinstance(shape, MapShape), f"{spec.cfn_type}: dict tags need a map"
        return
    assert isinstance(shape, ListShape), f"{spec.cfn_type}: tags are not a list"
    tag = members_of(shape.member)
    lowered = {name.lower() for name in tag}
    assert lowered & {"key", "tagkey"} and lowered & {"value", "tagvalue"}, (
        f"{spec.cfn_type}: tag items lack Key/Value: {sorted(tag)}"
    )


def test_registry_covers_the_demo_estate_and_more() -> None:
    must_have = {
        "AWS::EC2::Instance",
        "AWS::EC2::SecurityGroup",
        "AWS::EC2::Volume",
        "AWS::EC2::Snapshot",
        "AWS::EC2::VPC",
        "AWS::EC2::Subnet",
        "AWS::EC2::NetworkInterface",
        "AWS::EC2::InternetGateway",
        "AWS::EC2::RouteTable",
        "AWS::EC2::NetworkAcl",
        "AWS::EC2::EIP",
        "AWS::S3::Bucket",
        "AWS::IAM::User",
        "AWS::IAM::Role",
        "AWS::IAM::Group",
        "AWS::IAM::ManagedPolicy",
        "AWS::RDS::DBInstance",
        "AWS::RDS::DBCluster",
        "AWS::RDS::DBSnapshot",
        "AWS::RDS::DBClusterSnapshot",
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        "AWS::ElasticLoadBalancing::LoadBalancer",
    }
    assert must_have <= set(REGISTRY.types())
    assert len(REGISTRY) >= 60


def test_event_maps_declared_for_the_types_cloudtrail_drives() -> None:
    for cfn_type in ("AWS::EC2::Instance", "AWS::EC2::SecurityGroup", "AWS::S3::Bucket"):
        assert REGISTRY.get(cfn_type).event_resource_ids, cfn_type


def test_event_map_finds_ids_in_a_real_record_shape() -> None:
    record: dict[str, Any] = {
        "eventName": "RunInstances",
        "responseElements": {"instancesSet": {"items": [{"instanceId": "i-1"}]}},
    }
    spec = REGISTRY.get("AWS::EC2::Instance")
    assert search(spec.event_resource_ids["RunInstances"], record) == ["i-1"]


def test_strip_prefix_is_available_to_declarations() -> None:
    assert search("strip_prefix(Id, '/hostedzone/')", {"Id": "/hostedzone/Z1"}) == "Z1"


def test_unknown_type_names_close_matches() -> None:
    with pytest.raises(UnknownResourceType) as caught:
        REGISTRY.get("AWS::EC2::Instanse")
    assert "AWS::EC2::Instance" in str(caught.value)
    assert REGISTRY.get("aws::ec2::instance").cfn_type == "AWS::EC2::Instance"


def test_registry_rejects_duplicates_and_orphans() -> None:
    spec = REGISTRY.get("AWS::ECS::Service")
    with pytest.raises(ValueError, match="parent"):
        Registry([spec])
    with pytest.raises(ValueError, match="twice"):
        Registry([REGISTRY.get("AWS::EC2::VPC"), REGISTRY.get("AWS::EC2::VPC")])


def test_spec_rejects_bad_declarations() -> None:
    with pytest.raises(ValueError, match="type name"):
        ResourceSpec(
            cfn_type="EC2::Thing",
            service="ec2",
            list_operation="DescribeVpcs",
            result_path="Vpcs[]",
            id_field="VpcId",
            arn_field="VpcId",
        )
    with pytest.raises(ValueError, match="arn_field, arn_template"):
        ResourceSpec(
            cfn_type="AWS::EC2::Thing",
            service="ec2",
            list_operation="DescribeVpcs",
            result_path="Vpcs[]",
            id_field="VpcId",
        )
