"""Message models: what travels on every cloudinv topic and what the API returns.

Each model is a frozen pydantic v2 model. Timestamps are timezone-aware UTC; a naive
timestamp on input is taken as UTC rather than rejected, since CloudTrail and several AWS
APIs emit them that way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    model_serializer,
    model_validator,
)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""A datetime normalized to UTC."""

AccountId = Annotated[str, Field(pattern=r"^\d{12}$", description="12-digit AWS account id")]
ResourceType = Annotated[
    str,
    Field(
        pattern=r"^AWS::[A-Za-z0-9]+::[A-Za-z0-9]+$",
        description="CloudFormation type name, e.g. AWS::EC2::Instance",
    ),
]

GLOBAL_REGION = "global"
"""Region recorded for resources of global services (IAM, Route 53, CloudFront, S3 names)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, UTC datetimes, no whitespace."""
    return orjson.dumps(
        value,
        option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC,
        default=_json_default,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    # Decimal (DynamoDB), Path, and anything else botocore hands back.
    return str(value)


def config_hash(configuration: Any) -> str:
    """SHA-256 over the canonical JSON of a configuration, hex encoded."""
    return hashlib.sha256(canonical_json(configuration)).hexdigest()


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_timedelta="float")


class ResourceSnapshot(_Message):
    """One resource as one scan saw it: the raw API configuration plus its envelope."""

    account_id: AccountId
    region: str = Field(description="AWS region, or 'global' for global services")
    resource_type: ResourceType
    resource_id: str = Field(min_length=1)
    arn: str = Field(min_length=1, description="The resource key: unique across accounts")
    name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    configuration: dict[str, Any] = Field(default_factory=dict)
    captured_at: UtcDatetime
    scan_id: str
    config_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    attribution: Attribution | None = Field(
        default=None,
        description="Set when a CloudTrail event triggered this re-describe: who caused it",
    )
    origin: Literal["describe", "event"] = Field(
        default="describe",
        description="'event': built from the response of the CloudTrail event that created "
        "the resource, because it was gone before a describe could see it",
    )

    @property
    def key(self) -> str:
        return self.arn

    @classmethod
    def build(
        cls,
        *,
        account_id: str,
        region: str,
        resource_type: str,
        resource_id: str,
        arn: str,
        configuration: dict[str, Any],
        scan_id: str,
        name: str | None = None,
        tags: dict[str, str] | None = None,
        captured_at: datetime | None = None,
        attribution: Attribution | None = None,
    ) -> ResourceSnapshot:
        """Build a snapshot, computing its config hash from configuration and tags."""
        tags = tags or {}
        # Round-trip through canonical JSON so the stored configuration is exactly what the
        # hash covers (datetimes as strings, no Decimals or bytes).
        plain = orjson.loads(canonical_json(configuration))
        return cls(
            account_id=account_id,
            region=region,
            resource_type=resource_type,
            resource_id=resource_id,
            arn=arn,
            name=name,
            tags=tags,
            configuration=plain,
            captured_at=captured_at or utcnow(),
            scan_id=scan_id,
            config_hash=config_hash({"configuration": plain, "tags": tags}),
            attribution=attribution,
        )


class ScanError(_Message):
    """Why one scope of a scan failed (or partly failed)."""

    code: str = Field(description="AWS error code or exception class, e.g. AccessDenied")
    message: str
    operation: str | None = None


ScanStatus = Literal["complete", "partial", "failed"]


class ScanManifest(_Message):
    """The end of one scan of one (account, region, resource type).

    Only a ``complete`` manifest may be used to infer deletions: ``keys`` then lists every
    resource the scan saw. A ``partial`` or ``failed`` one never deletes anything.
    """

    scan_id: str
    account_id: AccountId
    region: str
    resource_type: ResourceType
    status: ScanStatus
    started_at: UtcDatetime
    finished_at: UtcDatetime
    keys: list[str] = Field(default_factory=list)
    errors: list[ScanError] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data: Any) -> Any:
        # count and duration_s are serialized for readers, derived again on input.
        if isinstance(data, dict) and ("count" in data or "duration_s" in data):
            data = {k: v for k, v in data.items() if k not in ("count", "duration_s")}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def count(self) -> int:
        return len(self.keys)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def scope(self) -> str:
        return f"{self.account_id}/{self.region}/{self.resource_type}"

    @property
    def can_delete(self) -> bool:
        return self.status == "complete" and not self.errors


class JsonPatchOp(_Message):
    """One RFC 6902 operation."""

    op: Literal["add", "remove", "replace", "move", "copy", "test"]
    path: str
    value: Any = None
    from_: str | None = Field(default=None, alias="from")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_serializer(mode="plain")
    def _rfc6902(self) -> dict[str, Any]:
        # Only the members RFC 6902 defines for each op: "value" for add/replace/test (where
        # null is a real value), "from" for move/copy.
        out: dict[str, Any] = {"op": self.op, "path": self.path}
        if self.op in ("add", "replace", "test"):
            out["value"] = self.value
        if self.op in ("move", "copy"):
            out["from"] = self.from_
        return out


AttributionMatch = Literal["declared", "referenced", "inherited"]
"""How an attribution was found (:class:`Attribution` ``match``)."""


class Attribution(_Message):
    """The CloudTrail event that caused a change, when one is known."""

    event_id: str
    event_name: str
    event_time: UtcDatetime
    principal_arn: str | None = None
    principal_name: str | None = None
    source_ip: str | None = None
    match: AttributionMatch | None = Field(
        default=None,
        description="How sure the attribution is: 'declared', the event acts on this resource "
        "(its type's own operation, or the call created it); 'referenced', the event only "
        "names it as a parameter of an operation on another resource, and nothing better was "
        "found; 'inherited', a later state transition of the same resource (an instance "
        "reaching 'terminated' minutes after TerminateInstances, or gone from the listings) "
        "that carries the previous change's event. None on older messages",
    )


ChangeType = Literal["created", "modified", "deleted"]


class Edge(_Message):
    """One relationship from a resource to another, as the resource's configuration names it
    (declared per type: ``cloudinv.catalog.relationships``)."""

    relationship: str = Field(description="e.g. 'is contained in', 'is associated with'")
    target_key: str = Field(description="The related resource's key (its ARN)")
    target_type: ResourceType


class ChangeEvent(_Message):
    """A resource was created, modified or deleted.

    Carries both the prior and the new configuration (as Cloud Asset Inventory feeds carry
    ``asset`` and ``priorAsset``) so a consumer needs no second lookup.
    """

    change_id: str = Field(description="Deterministic: key + before hash + after hash")
    key: str
    resource_type: ResourceType
    resource_id: str
    account_id: AccountId
    region: str
    change_type: ChangeType
    name: str | None = None
    prior_configuration: dict[str, Any] | None = None
    configuration: dict[str, Any] | None = None
    before_hash: str | None = None
    after_hash: str | None = None
    patch: list[JsonPatchOp] = Field(default_factory=list)
    changed_paths: list[str] = Field(default_factory=list)
    captured_at: UtcDatetime
    detected_at: UtcDatetime
    scan_id: str | None = None
    attribution: Attribution | None = None
    prior_seen_at: UtcDatetime | None = Field(
        default=None,
        description="When the state this change left was last observed (None: never seen "
        "before); a write event after it, up to observed_at, may have caused the change",
    )
    origin: Literal["describe", "event"] = Field(
        default="describe",
        description="Where the new configuration comes from: an API describe, or the CloudTrail "
        "event that created a resource gone before any describe saw it",
    )
    observed_at: UtcDatetime | None = Field(
        default=None,
        description="When the new state was observed, if later than captured_at (a deletion "
        "found by a scan: the end of the scan that no longer listed the resource)",
    )
    relationships_added: list[Edge] = Field(
        default_factory=list,
        description="Relationships to other resources this change made (sorted)",
    )
    relationships_removed: list[Edge] = Field(
        default_factory=list,
        description="Relationships to other resources this change ended (a deletion ends all)",
    )


class Principal(_Message):
    """Who made a CloudTrail call."""

    type: str | None = Field(default=None, description="Root, IAMUser, AssumedRole, AWSService…")
    arn: str | None = None
    name: str | None = Field(default=None, description="User name, or role session for roles")
    account_id: str | None = None
    access_key_id: str | None = None
    invoked_by: str | None = None

    @property
    def label(self) -> str:
        """A stable, human name for grouping: never lumps roles and root together."""
        return principal_label(self.__dict__)


def principal_label(principal: Mapping[str, Any]) -> str:
    """:attr:`Principal.label` of a principal's fields (a producer that writes the wire form
    without building the model labels its events with it)."""
    if principal.get("type") == "Root":
        return f"root:{principal.get('account_id') or '?'}"
    return str(
        principal.get("arn") or principal.get("name") or principal.get("invoked_by") or "unknown"
    )


class EventResource(_Message):
    arn: str | None = None
    type: str | None = None
    account_id: str | None = None


class CloudTrailEvent(_Message):
    """One CloudTrail record, normalized. Never carries credentials."""

    event_id: str
    event_time: UtcDatetime
    event_source: str = Field(description="e.g. ec2.amazonaws.com")
    service: str = Field(description="e.g. ec2")
    event_name: str
    region: str
    account_id: str
    principal: Principal
    source_ip: str | None = None
    user_agent: str | None = None
    read_only: bool | None = None
    error_code: str | None = None
    error_message: str | None = None
    event_type: str | None = None
    resources: list[EventResource] = Field(default_factory=list)
    request_parameters: dict[str, Any] | None = None
    response_elements: dict[str, Any] | None = None
    additional_event_data: dict[str, Any] | None = Field(
        default=None, description="e.g. MFAUsed and LoginTo of a ConsoleLogin"
    )
    source_file: str | None = Field(default=None, description="S3 URI or path it was read from")
