"""Every derived type whose create call moto implements: seeded, scanned, found.

The create call of each derived type is the schema's ``create`` handler action that maps to a
botocore operation of the type's service (``glue:CreateJob`` → ``CreateJob``); its request is
generated from the operation's input shape (required members only, values that fit each
shape's enum, length and range). Types whose create moto does not implement, or rejects
(generated values do not fit every service's rules), are not seeded; the rest must each be
collected by the engine with the right type, key and account/region. The number verified
this way is pinned from below (``VERIFIED_AT_LEAST``) and quoted in the README.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.model import ListShape, MapShape, OperationModel, Shape, StructureShape

from cloudinv.catalog.derive import SchemaSource, ServiceIndex
from cloudinv.catalog.registry import default_registry
from cloudinv.catalog.spec import ResourceSpec
from cloudinv.core.models import GLOBAL_REGION, ResourceSnapshot
from cloudinv.core.settings import AccountRole, AwsSettings
from cloudinv.producers.credentials import AwsAccess
from cloudinv.producers.engine import ScanOptions, scan_types
from cloudinv.simulator.coverage import implements

ACCOUNT = "210987654321"
REGION = "us-east-1"
VERIFIED_AT_LEAST = 90
"""Derived types seeded in moto and collected right (README quotes the current count)."""

MOTO_GAPS = {
    "AWS::DataBrew::Ruleset": "moto's ListRulesets leaves out ResourceArn, which AWS returns",
    "AWS::Logs::ResourcePolicy": "moto's DescribeResourcePolicies leaves out policyName",
    "AWS::DataBrew::Recipe": "ListRecipes lists published recipes only (as on AWS); "
    "a created recipe is a draft",
}
"""Types moto can create but not list as AWS does; each is left out of the check, with why."""

REGISTRY = default_registry()
DERIVED = [spec for spec in REGISTRY if spec.derived]
_BOTO = botocore.session.get_session()
_counter = itertools.count(1)


# -- request values from shapes --------------------------------------------------------------


def _string_value(name: str, shape: Shape) -> str:
    enum = shape.metadata.get("enum")
    if enum:
        return str(enum[0])
    lowered = name.lower()
    if lowered.endswith("arn") or lowered.endswith("arns") or lowered == "role":
        value = f"arn:aws:iam::{ACCOUNT}:role/cinv-role"
    elif "url" in lowered or "uri" in lowered:
        value = "https://example.com/cinv"
    elif "email" in lowered:
        value = "cinv@example.com"
    elif "cidr" in lowered:
        value = "10.0.0.0/16"
    else:
        value = f"cinv{next(_counter)}"
    low = int(shape.metadata.get("min", 0))
    high = int(shape.metadata.get("max", 10_000))
    if len(value) < low:
        value += "x" * (low - len(value))
    return value[:high]


def shape_value(name: str, shape: Shape, depth: int = 0) -> Any:
    """A value fitting ``shape``: required members only, lists of one, small numbers."""
    kind = shape.type_name
    if kind == "string":
        return _string_value(name, shape)
    if kind in ("integer", "long"):
        low = int(shape.metadata.get("min", 1))
        return max(low, 1)
    if kind in ("float", "double"):
        return 1.0
    if kind == "boolean":
        return False
    if kind == "timestamp":
        return datetime.now(UTC)
    if kind == "blob":
        return b"cinv"
    if depth > 6:
        raise ValueError(f"{name}: too deep to generate")
    if isinstance(shape, ListShape):
        return [shape_value(name.rstrip("s"), shape.member, depth + 1)]
    if isinstance(shape, MapShape):
        return {}
    if isinstance(shape, StructureShape):
        return {
            member: shape_value(member, shape.members[member], depth + 1)
            for member in shape.required_members
        }
    raise ValueError(f"{name}: no value for a {kind}")


def request_for(op: OperationModel) -> dict[str, Any]:
    if op.input_shape is None:
        return {}
    return shape_value(op.name, op.input_shape)  # type: ignore[no-any-return]


# -- the create call of each derived type ------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    spec: ResourceSpec
    operation: str
    request: dict[str, Any]
    response: dict[str, Any]


def create_operations() -> dict[str, OperationModel]:
    """cfn_type → the create operation its schema's create handler names."""
    source = SchemaSource.from_cfn_lint()
    index = ServiceIndex.build(_BOTO, {spec.service for spec in DERIVED})
    found: dict[str, OperationModel] = {}
    for spec in DERIVED:
        handler = (source.schemas[spec.cfn_type].get("handlers") or {}).get("create") or {}
        resource = spec.cfn_type.rsplit("::", 1)[1].lower()
        candidates = []
        for order, action in enumerate(handler.get("permissions", [])):
            name = action.partition(":")[2]
            if not name.startswith(("Create", "Put", "Register", "Run")) or "Tag" in name:
                continue
            operation = index.operation(action)
            if operation is not None and operation[0] == spec.service:
                # CreateModelPackage, not CreateModel, makes a SageMaker model package.
                made = name.lower().removeprefix("create")
                candidates.append(
                    (made != resource, not resource.endswith(made), order, operation[1])
                )
        if candidates:
            found[spec.cfn_type] = min(candidates, key=lambda c: c[:3])[3]
    return found


def _strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(_strings(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_strings(v) for v in value)) if value else set()
    return set()


def seed(endpoint: str) -> tuple[list[Seeded], dict[str, str]]:
    """Create one resource of every derived type moto can create; and why the others not."""
    sts = boto3.client("sts", endpoint_url=endpoint, region_name=REGION)
    credentials = sts.assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/cloudinv-reader", RoleSessionName="seed"
    )["Credentials"]
    session = boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )
    config = Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=20)
    clients: dict[str, Any] = {}
    seeded: list[Seeded] = []
    skipped: dict[str, str] = {}
    for cfn_type, op in sorted(create_operations().items()):
        spec = REGISTRY.get(cfn_type)
        calls = [op.name, spec.list_operation, *(d.operation for d in spec.details)]
        missing = [c for c in calls if not implements(spec.service, c)]
        if missing:
            skipped[cfn_type] = f"moto does not implement {spec.service} {', '.join(missing)}"
            continue
        if cfn_type in MOTO_GAPS:
            skipped[cfn_type] = MOTO_GAPS[cfn_type]
            continue
        try:
            request = request_for(op)
            client = clients.get(spec.service)
            if client is None:
                client = clients[spec.service] = session.client(
                    spec.service, endpoint_url=endpoint, config=config
                )
            response = getattr(client, botocore.xform_name(op.name))(**request)
        except Exception as exc:  # moto lacks the call or rejects generated values
            skipped[cfn_type] = f"{op.name}: {type(exc).__name__}: {str(exc)[:120]}"
            continue
        response.pop("ResponseMetadata", None)
        seeded.append(Seeded(spec, op.name, request, response))
    return seeded, skipped


_ARN_RE = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{12}:.+")


def found_by_create(seeded: Seeded, snapshots: list[ResourceSnapshot]) -> ResourceSnapshot | None:
    """The snapshot whose key or id is a value the create call sent or returned."""
    returned = _strings(seeded.response)
    arns = {value for value in returned if _ARN_RE.match(value)}
    for snapshot in snapshots:
        if snapshot.arn in arns:
            return snapshot
    values = returned | _strings(seeded.request)
    for snapshot in snapshots:
        if snapshot.resource_id in values or snapshot.arn in values:
            return snapshot
    for snapshot in snapshots:
        # A returned id that the ARN ends with (Transfer's ServerId s-123 in .../server/s-123).
        if any(len(v) > 3 and snapshot.arn.endswith(("/" + v, ":" + v)) for v in values):
            return snapshot
    return None


@pytest.fixture(scope="module")
def seeded_estate(moto_endpoint: str) -> tuple[list[Seeded], dict[str, str]]:
    return seed(moto_endpoint)


async def test_every_derived_type_moto_creates_is_collected(
    moto_endpoint: str, seeded_estate: tuple[list[Seeded], dict[str, str]]
) -> None:
    seeded, skipped = seeded_estate
    assert seeded, f"nothing could be seeded: {list(skipped.items())[:5]}"
    aws = AwsSettings(
        accounts=[AccountRole(role_arn=f"arn:aws:iam::{ACCOUNT}:role/cloudinv-reader")],
        regions=[REGION],
        endpoint_url=moto_endpoint,
    )
    access = AwsAccess.from_settings(aws)
    targets = await access.discover_accounts(aws)
    specs = [s.spec for s in seeded]
    by_type: dict[str, list[ResourceSnapshot]] = defaultdict(list)
    manifests = {}
    items = scan_types(access, targets, [REGION], specs, options=ScanOptions(max_concurrency=16))
    async for item in items:
        if isinstance(item, ResourceSnapshot):
            by_type[item.resource_type].append(item)
        else:
            manifests[item.resource_type] = item

    wrong: dict[str, str] = {}
    for entry in seeded:
        cfn_type = entry.spec.cfn_type
        manifest = manifests[cfn_type]
        if manifest.status != "complete":
            wrong[cfn_type] = f"{manifest.status}: {manifest.errors[:1]}"
            continue
        snapshot = found_by_create(entry, by_type[cfn_type])
        if snapshot is None:
            wrong[cfn_type] = (
                f"not found among {[s.arn for s in by_type[cfn_type]][:3]} "
                f"after {entry.operation} returned {str(entry.response)[:200]}"
            )
            continue
        region = GLOBAL_REGION if entry.spec.global_service else REGION
        assert (snapshot.account_id, snapshot.region) == (ACCOUNT, region), cfn_type
        assert snapshot.arn.startswith("arn:aws"), (cfn_type, snapshot.arn)
        assert snapshot.key == snapshot.arn
    print(f"derived types verified in moto: {len(seeded) - len(wrong)} of {len(DERIVED)}")
    assert not wrong, "\n".join(f"{t}: {why}" for t, why in sorted(wrong.items()))
    assert len(seeded) >= VERIFIED_AT_LEAST


def test_request_generator_fits_shapes() -> None:
    op = _BOTO.get_service_model("logs").operation_model("CreateLogGroup")
    request = request_for(op)
    assert set(request) == set(op.input_shape.required_members)
    assert isinstance(request["logGroupName"], str)
    enum_op = _BOTO.get_service_model("glue").operation_model("CreateJob")
    job = request_for(enum_op)
    assert {"Name", "Role", "Command"} <= set(job)
