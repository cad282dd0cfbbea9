"""Resource type declarations: what the scan engine needs to know to collect one AWS type.

A :class:`ResourceSpec` says which call lists a type, where the items are in its response,
which per-item calls complete the configuration, and how to read an item's id, name, ARN and
tags. It is data: the engine (``cloudinv.producers.engine``) interprets it and the registry
meta-test (``tests/test_registry_meta.py``) checks every declaration against botocore's service
models.

Paths are JMESPath. A list ``result_path`` is kept to the simple form the meta-test can check
against the output shape: dotted names, each optionally followed by ``[]`` to flatten a list
(``Reservations[].Instances[]``). Field paths (``id_field``, ``arn_field``, ``name_field``,
``tags_field``) are dotted names read from the resource's configuration: the list item with
every detail call merged in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import jmespath
import jmespath.functions
from jmespath.parser import ParsedResult

CFN_TYPE_RE = re.compile(r"^AWS::[A-Za-z0-9]+::[A-Za-z0-9]+$")
_SIMPLE_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[\])?(\.[A-Za-z_][A-Za-z0-9_]*(\[\])?)*$")
_ARN_TEMPLATE_FIELD_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

ARN_TEMPLATE_FIELDS = frozenset({"partition", "region", "account", "id", "id_relative"})
"""Placeholders an ``arn_template`` may use besides top-level fields of the configuration.
``id_relative`` is the id without a leading ``/``: path-named resources (SSM parameters)
drop it in their ARNs."""

TagFormat = Literal["key_value_list", "dict"]
"""``key_value_list``: ``[{"Key": k, "Value": v}]`` (any capitalisation); ``dict``: ``{k: v}``."""


class _SpecFunctions(jmespath.functions.Functions):  # type: ignore[misc]
    """JMESPath functions declarations may use besides the standard ones."""

    @jmespath.functions.signature({"types": ["string"]}, {"types": ["string"]})  # type: ignore[untyped-decorator]
    def _func_strip_prefix(self, value: str, prefix: str) -> str:
        return value.removeprefix(prefix)


_OPTIONS = jmespath.Options(custom_functions=_SpecFunctions())


@lru_cache(maxsize=1024)
def compile_expression(expression: str) -> ParsedResult:
    """A compiled JMESPath expression (``strip_prefix(s, p)`` available); raises on bad syntax."""
    return jmespath.compile(expression)


def search(expression: str, data: Any) -> Any:
    """Evaluate a declaration's JMESPath ``expression`` over ``data``."""
    return compile_expression(expression).search(data, options=_OPTIONS)


def strings_in(value: Any) -> Iterator[str]:
    """Every non-empty string in a JMESPath result (nested lists flattened)."""
    if isinstance(value, str):
        if value:
            yield value
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def is_simple_path(path: str) -> bool:
    """True if ``path`` is dotted names with optional ``[]`` flattening (the checkable form)."""
    return bool(_SIMPLE_PATH_RE.match(path))


@dataclass(frozen=True, kw_only=True)
class DetailCall:
    """One per-item call whose result is merged into the resource's configuration.

    ``params`` maps each request parameter to a JMESPath read from the item (``"Name"``, or
    ``"[clusterArn]"`` for an API that takes a list). ``inherit_list_params`` copies
    parameters of the list call (a child type's parent id). The result (``result_path`` of
    the response, or the whole response without ``ResponseMetadata``) is stored under
    ``merge_key``; with no ``merge_key`` an object result is merged into the top level.
    An error whose code is in ``absent_codes`` means "not configured": the value is ``None``.
    When the operation can paginate, every page is read and list results are concatenated.
    Calls of one ``stage`` run concurrently; a later stage sees the configuration merged so
    far (DynamoDB's tags need the ARN that DescribeTable returns).
    """

    operation: str
    params: Mapping[str, str] = field(default_factory=dict)
    static_params: Mapping[str, Any] = field(default_factory=dict)
    inherit_list_params: tuple[str, ...] = ()
    result_path: str | None = None
    merge_key: str | None = None
    absent_codes: frozenset[str] = frozenset()
    stage: int = 0


@dataclass(frozen=True, kw_only=True)
class ParentRef:
    """A child type is listed once per item of its parent type (ECS services per cluster).

    ``params`` maps each list parameter of the child to a JMESPath read from the parent item.
    An error on the child list whose code is in ``absent_codes`` means the parent went away
    between the two calls: that parent contributes no children.
    """

    cfn_type: str
    params: Mapping[str, str]
    absent_codes: frozenset[str] = frozenset()


RELATIONSHIP_INVERSES: Mapping[str, str] = {
    "is contained in": "contains",
    "contains": "is contained in",
    "is attached to": "has attached",
    "has attached": "is attached to",
    "is associated with": "is associated with",
    "uses": "is used by",
    "is used by": "uses",
}
"""Relationship names (AWS Config's wording) and how each reads from the other end."""

RelationshipBy = Literal["id", "arn", "name"]


@dataclass(frozen=True, kw_only=True)
class Relationship:
    """Which configuration path of a type names which other type, and how they relate.

    ``path`` is a dotted path (with ``[]`` to flatten lists, the form the meta-test checks
    against botocore's output shape) whose value, flattened to a list of strings, names the
    targets: by ``id`` (the target type's ARN is built from its ``arn_template``), by ``arn``,
    or by ``name``. A value that is an ARN is taken as the target's key whatever ``by`` says.
    ``when``: a JMESPath over the configuration; the relationship holds only where it is true
    (a target group's targets are instances only when its ``TargetType`` is ``instance``).
    Resolution is :func:`cloudinv.catalog.relationships.edges_of`.
    """

    name: str
    path: str
    target_type: str
    by: RelationshipBy = "id"
    when: str | None = None

    def __post_init__(self) -> None:
        if self.name not in RELATIONSHIP_INVERSES:
            raise ValueError(
                f"relationship {self.name!r}: expected one of {sorted(RELATIONSHIP_INVERSES)}"
            )
        if not is_simple_path(self.path):
            raise ValueError(
                f"relationship {self.name!r}: path {self.path!r} must be dotted names with "
                "optional [] (e.g. SecurityGroups[].GroupId)"
            )
        if not CFN_TYPE_RE.match(self.target_type):
            raise ValueError(
                f"relationship {self.name!r}: target {self.target_type!r} is not a type name "
                "like AWS::EC2::Subnet"
            )
        if self.when is not None:
            compile_expression(self.when)

    @property
    def inverse(self) -> str:
        """The name read from the target's side (``contains`` for ``is contained in``)."""
        return RELATIONSHIP_INVERSES[self.name]


def in_vpc(path: str = "VpcId") -> Relationship:
    """The resource ``is contained in`` the VPC whose id is at ``path``."""
    return Relationship(name="is contained in", path=path, target_type="AWS::EC2::VPC")


def in_subnets(path: str = "SubnetId") -> Relationship:
    """The resource ``is contained in`` the subnets whose ids are at ``path``."""
    return Relationship(name="is contained in", path=path, target_type="AWS::EC2::Subnet")


def with_security_groups(path: str) -> Relationship:
    """The resource ``is associated with`` the security groups whose ids are at ``path``."""
    return Relationship(name="is associated with", path=path, target_type="AWS::EC2::SecurityGroup")


def uses_kms_key(path: str = "KmsKeyId") -> Relationship:
    """The resource ``uses`` the KMS key whose ARN is at ``path`` (its encryption key)."""
    return Relationship(name="uses", path=path, target_type="AWS::KMS::Key", by="arn")


def uses_role(path: str) -> Relationship:
    """The resource ``uses`` the IAM role whose ARN is at ``path``."""
    return Relationship(name="uses", path=path, target_type="AWS::IAM::Role", by="arn")


@dataclass(frozen=True, kw_only=True)
class ResourceSpec:
    """The declaration of one AWS resource type, named by its CloudFormation type."""

    cfn_type: str
    service: str
    """botocore client name, e.g. ``ec2``, ``elbv2``, ``s3``."""
    list_operation: str
    """API operation name as in the service model, e.g. ``DescribeInstances``."""
    result_path: str
    list_params: Mapping[str, Any] = field(default_factory=dict)
    list_param_variants: tuple[Mapping[str, Any], ...] = ()
    """The list call is repeated once per variant, each merged over ``list_params``
    (Application Auto Scaling lists one service namespace per call). A variant failing with
    one of ``ignore_error_codes`` is skipped; the others still count."""
    item_key: str | None = None
    """When the list call returns plain strings (ARNs, URLs), each becomes ``{item_key: s}``."""
    item_filter: str | None = None
    """JMESPath over the item; items where it is false are not resources (an SNS subscription
    still pending confirmation has no ARN yet)."""
    id_field: str
    id_strip_prefix: str = ""
    """Removed from the id when present (Route 53 returns ``/hostedzone/Z123``)."""
    name_field: str | None = None
    name_tag: str | None = None
    """Tag whose value is the name when ``name_field`` is absent or empty (EC2's ``Name``)."""
    arn_field: str | None = None
    arn_template: str | None = None
    """e.g. ``arn:{partition}:ec2:{region}:{account}:instance/{id}``; any other placeholder
    is a top-level field of the configuration. With both, the template is the fallback when
    the API leaves the ARN field out (older API versions, emulators)."""
    tags_field: str | None = None
    tag_format: TagFormat = "key_value_list"
    details: tuple[DetailCall, ...] = ()
    parent: ParentRef | None = None
    global_service: bool = False
    """Collected once per account and recorded in region ``global``."""
    ignore_error_codes: frozenset[str] = frozenset()
    """Codes meaning "this service or feature is not offered here": the scope is complete and
    empty. Never put access or throttling errors here."""
    volatile_fields: tuple[str, ...] = ()
    """Configuration paths that change on every poll without the resource changing (usage
    counters, last-seen times); the change detector leaves them out of its comparison."""
    list_ids: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """List field name → the item fields that together identify an item, where the generic
    rules of :mod:`cloudinv.catalog.diff` (``Key``, ``GroupId``, ``Id`` ...) do not find it:
    the list is then compared as a set keyed by them."""
    ordered_lists: frozenset[str] = frozenset()
    """List field names whose order means something even though their items have ids."""
    event_resource_ids: Mapping[str, str] = field(default_factory=dict)
    """CloudTrail event name → JMESPath over the raw CloudTrail record giving the id (or list
    of ids) of the resources of this type that the event touched."""
    region_field: str | None = None
    """For a global list of regional resources (S3's ListBuckets): the configuration field
    holding the resource's region (``None``/empty is ``us-east-1``, ``EU`` is ``eu-west-1``,
    as GetBucketLocation answers). Each resource is recorded in its own region."""
    relationships: tuple[Relationship, ...] = ()
    """The other resources this type's configuration names (subnet, security groups, role):
    each becomes an edge from this resource, versioned with it."""
    state_field: str | None = None
    """Dotted path of the resource's lifecycle state in its configuration (an EC2 instance's
    ``State.Name``, an RDS instance's ``DBInstanceStatus``): AWS moves it minutes after the
    write event that started the move (``pending`` → ``running`` after RunInstances), and the
    attribution join lets such a follow-on change carry that event
    (:mod:`cloudinv.sinks.versioning`)."""
    state_moves: tuple[str, ...] = ()
    """Other dotted configuration paths that move with the state (an instance's
    ``StateTransitionReason``, or its public address that goes away when it stops)."""
    derived: bool = False
    """Derived from the CloudFormation schemas (``cloudinv.catalog.generic``), not declared
    by hand in ``cloudinv.catalog.resources``."""

    def __post_init__(self) -> None:
        if not CFN_TYPE_RE.match(self.cfn_type):
            raise ValueError(f"{self.cfn_type!r}: expected a type name like AWS::EC2::Instance")
        if self.arn_field is None and self.arn_template is None:
            raise ValueError(f"{self.cfn_type}: declare arn_field, arn_template or both")
        if not is_simple_path(self.result_path):
            raise ValueError(
                f"{self.cfn_type}: result_path {self.result_path!r} must be dotted names "
                "with optional [] (e.g. Reservations[].Instances[])"
            )
        # Placeholders other than the fixed ones are configuration fields, checked by the
        # meta-test against the item shape; here only that the template is well formed.
        if self.arn_template is not None and not self.arn_template.startswith("arn:{partition}:"):
            raise ValueError(f"{self.cfn_type}: arn_template must start with arn:{{partition}}:")
        if self.state_moves and self.state_field is None:
            raise ValueError(f"{self.cfn_type}: state_moves needs a state_field")
        for path in (self.state_field, *self.state_moves):
            if path is not None and not is_simple_path(path):
                raise ValueError(f"{self.cfn_type}: state path {path!r} must be dotted names")

    @property
    def arn_template_fields(self) -> frozenset[str]:
        """Configuration fields used by ``arn_template`` (besides partition/region/...)."""
        if self.arn_template is None:
            return frozenset()
        return frozenset(_ARN_TEMPLATE_FIELD_RE.findall(self.arn_template)) - ARN_TEMPLATE_FIELDS
