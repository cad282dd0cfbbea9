"""One raw CloudTrail record → :class:`~cloudinv.core.models.CloudTrailEvent`.

A pure function, :func:`normalize_record`, with no I/O. It names the principal so roles,
root and AWS services are never lumped together (the replaced CloudTrail-Tracker filed them
all under ``no_user``), and it never lets credentials through: STS
``responseElements.credentials`` is dropped, and so is any key, at any depth of the request
parameters or response elements, whose name or value looks like a secret.

Required fields (``eventID``, ``eventTime``, ``eventSource``, ``eventName``, ``awsRegion``
and an account) are read strictly: a record without them raises
:class:`InvalidRecordError` naming the field, rather than being stored half-empty.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from cloudinv.core.models import CloudTrailEvent, Principal, principal_label
from cloudinv.core.wire import encode

__all__ = [
    "InvalidRecordError",
    "derived_arn",
    "encode_record",
    "infer_read_only",
    "is_secret_key",
    "normalize_record",
    "parse_principal",
    "partition_of",
    "scrub_secrets",
    "service_of",
    "unwrap_eventbridge",
]


class InvalidRecordError(ValueError):
    """A record is not a CloudTrail event cloudinv can store."""


# --- secrets -------------------------------------------------------------------------------

_SECRET_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secretaccesskey",
    "secretkey",
    "secretstring",
    "secretbinary",
    "secretvalue",
    "clientsecret",
    "sharedsecret",
    "sessiontoken",
    "securitytoken",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "authtoken",
    "bearertoken",
    "privatekey",
    "keymaterial",
    "authorization",
    "cookie",
    "apikeyvalue",
)
# Names ending in "token" that are paging or idempotency markers, not credentials.
_NOT_SECRET = frozenset(
    {
        "nexttoken",
        "clienttoken",
        "continuationtoken",
        "paginationtoken",
        "idempotencytoken",
        "startingtoken",
        "marker",
        "nextmarker",
    }
)
_PEM_PRIVATE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


@functools.lru_cache(maxsize=8192)
def is_secret_key(name: str) -> bool:
    """Whether a field of this name holds (or may hold) a credential (cached: a trail's
    field names repeat in every record)."""
    n = re.sub(r"[^a-z0-9]", "", name.lower())
    if n in _NOT_SECRET:
        return False
    if n.endswith(("credentials", "credential", "token", "secret", "tokencode")):
        return True
    return any(part in n for part in _SECRET_PARTS)


def _is_secret_value(value: Any) -> bool:
    return (
        isinstance(value, str) and "-----BEGIN" in value and _PEM_PRIVATE.search(value) is not None
    )


def scrub_secrets(value: Any) -> Any:
    """A copy of ``value`` without secret-looking keys or private keys, at any depth."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if is_secret_key(str(k)):
                continue
            if isinstance(v, str):
                if "-----BEGIN" in v and _PEM_PRIVATE.search(v) is not None:
                    continue
                out[k] = v
            elif isinstance(v, dict | list):
                out[k] = scrub_secrets(v)
            else:
                out[k] = v
        return out
    if isinstance(value, list):
        return [scrub_secrets(v) for v in value if not _is_secret_value(v)]
    return value


def _as_object(value: Any) -> dict[str, Any] | None:
    """Request parameters / response elements as a dict (a few services log scalars)."""
    if value is None:
        return None
    scrubbed = scrub_secrets(value)
    if isinstance(scrubbed, dict):
        return scrubbed
    return {"value": scrubbed}


# --- principal -----------------------------------------------------------------------------


def _arn_resource(arn: str | None) -> str | None:
    """The resource part of an ARN (after the fifth colon), e.g. ``assumed-role/R/S``."""
    if not arn:
        return None
    parts = arn.split(":", 5)
    return parts[5] if len(parts) == 6 else None


def _principal_name(kind: str | None, identity: dict[str, Any]) -> str | None:
    arn = identity.get("arn")
    resource = _arn_resource(arn)
    user_name = identity.get("userName")
    if kind == "AssumedRole":
        # arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION: the session names who acted.
        if resource and resource.startswith("assumed-role/") and resource.count("/") >= 2:
            return resource.split("/", 2)[2]
        principal_id = identity.get("principalId") or ""
        if ":" in principal_id:
            return str(principal_id.split(":", 1)[1])
        issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
        return issuer.get("userName") or None
    if kind == "Root":
        return str(user_name) if user_name else "root"
    if kind == "AWSService":
        return identity.get("invokedBy")
    if user_name:
        return str(user_name)
    if resource and "/" in resource:
        # user/path/NAME, federated-user/NAME
        return resource.rsplit("/", 1)[1]
    web_identity = (identity.get("sessionContext") or {}).get("webIdFederationData") or {}
    if web_identity.get("federatedProvider"):
        return str(web_identity["federatedProvider"])
    return identity.get("principalId")


def partition_of(region: str | None) -> str:
    """The ARN partition of a region: ``aws-cn`` for China, ``aws-us-gov`` for GovCloud."""
    if region and region.startswith("cn-"):
        return "aws-cn"
    if region and region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def derived_arn(identity: dict[str, Any], region: str | None = None) -> str | None:
    """The principal's ARN when the record leaves it out, built as AWS writes it elsewhere.

    Some records of an IAM user (``ConsoleLogin``, ``CheckMfa``, sign-in failures) carry the
    account and user name but no ``arn``; without one the same person would be counted under
    two labels. Root is ``arn:<p>:iam::<account>:root``; an IAM user
    ``arn:<p>:iam::<account>:user/<name>`` (the user's path is not in such records: a user with
    a path keeps the label of its records that have the ARN, which AWS writes for every API
    call); an assumed-role session ``arn:<p>:sts::<account>:assumed-role/<role>/<session>``
    from its session issuer and ``principalId``. ``None`` when the record does not say enough.
    """
    arn = identity.get("arn")
    if isinstance(arn, str) and arn:
        return arn
    kind = identity.get("type")
    account = identity.get("accountId")
    if not isinstance(account, str) or not account:
        return None
    partition = partition_of(region)
    if kind == "Root":
        return f"arn:{partition}:iam::{account}:root"
    if kind == "IAMUser":
        name = identity.get("userName")
        return f"arn:{partition}:iam::{account}:user/{name}" if name else None
    if kind == "AssumedRole":
        issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
        role = issuer.get("userName") or _arn_resource(issuer.get("arn") or "") or ""
        role = str(role).rsplit("/", 1)[-1]
        principal_id = str(identity.get("principalId") or "")
        session = principal_id.split(":", 1)[1] if ":" in principal_id else ""
        if role and session:
            return f"arn:{partition}:sts::{account}:assumed-role/{role}/{session}"
    return None


def parse_principal(identity: dict[str, Any] | None, region: str | None = None) -> Principal:
    """The principal of a record's ``userIdentity`` (an empty one when absent); its ARN is
    derived (:func:`derived_arn`) when the record leaves it out."""
    return Principal.model_validate(_principal_fields(identity, region))


_NO_PRINCIPAL: dict[str, Any] = dict.fromkeys(Principal.model_fields)


def _principal_fields(identity: dict[str, Any] | None, region: str | None) -> dict[str, Any]:
    """:class:`Principal`'s fields, in its order, as :func:`parse_principal` reads them."""
    if not identity:
        return dict(_NO_PRINCIPAL)
    kind = identity.get("type")
    return {
        "type": kind,
        "arn": derived_arn(identity, region),
        "name": _principal_name(kind, identity),
        "account_id": identity.get("accountId"),
        "access_key_id": identity.get("accessKeyId") or None,
        "invoked_by": identity.get("invokedBy"),
    }


# --- the rest ------------------------------------------------------------------------------

_READ_PREFIXES = (
    "Describe",
    "Get",
    "List",
    "Head",
    "Lookup",
    "Search",
    "BatchGet",
    "Query",
    "Scan",
    "Select",
    "Estimate",
    "Preview",
    "Simulate",
    "View",
)


def infer_read_only(event_name: str) -> bool:
    """Read-only by the API naming convention: used when a record has no ``readOnly``
    (records before eventVersion 1.06 often lack it)."""
    return event_name.startswith(_READ_PREFIXES)


def service_of(event_source: str) -> str:
    """``ec2.amazonaws.com`` → ``ec2``."""
    return event_source.split(".", 1)[0]


def _required(record: dict[str, Any], field: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidRecordError(f"CloudTrail record has no {field} (expected a string)")
    return value


def _resources(raw: Any) -> list[dict[str, Any]]:
    """:class:`EventResource` fields, in its order."""
    if not isinstance(raw, list):
        return []
    return [
        {
            "arn": item.get("ARN") or item.get("ARNPrefix"),
            "type": item.get("type"),
            "account_id": item.get("accountId"),
        }
        for item in raw
        if isinstance(item, dict)
    ]


def _read_only(record: dict[str, Any], event_name: str) -> bool:
    flag = record.get("readOnly")
    if isinstance(flag, bool):
        return flag
    if isinstance(flag, str) and flag.lower() in ("true", "false"):
        return flag.lower() == "true"
    return infer_read_only(event_name)


def normalize_record(record: dict[str, Any], source_file: str | None = None) -> CloudTrailEvent:
    """Normalize one CloudTrail record. Raises :class:`InvalidRecordError` (or pydantic's
    ``ValidationError``, also a ``ValueError``, for a field of the wrong type)."""
    return CloudTrailEvent.model_validate(_event_fields(record, source_file))


def encode_record(record: dict[str, Any], source_file: str | None = None) -> tuple[bytes, bytes]:
    """One record as the CloudTrail topic carries it: (principal label, the normalized event
    as :func:`cloudinv.core.wire.encode` writes it). Raises as :func:`normalize_record`.

    The bytes are those of ``encode(normalize_record(record, source_file))``; a record whose
    every field already has the type the model wants (nearly all: they come from JSON) is
    written without building the pydantic models, which cost more than the rest of a record's
    normalization (a tailer or a backfill does this for every event). Any other record goes
    through the models, which validate it (tests compare both paths byte for byte)."""
    fields = _event_fields(record, source_file)
    if _as_wire(fields):
        return principal_label(fields["principal"]).encode(), orjson.dumps(fields)
    event = CloudTrailEvent.model_validate(fields)
    return event.principal.label.encode(), encode(event)


def _event_fields(record: dict[str, Any], source_file: str | None) -> dict[str, Any]:
    """:class:`CloudTrailEvent`'s fields, in its order (nested models as dicts)."""
    if not isinstance(record, dict):
        raise InvalidRecordError(f"CloudTrail record is a {type(record).__name__}, not an object")
    event_id = _required(record, "eventID")
    event_name = _required(record, "eventName")
    event_source = _required(record, "eventSource")
    region = _required(record, "awsRegion")
    raw_time = _required(record, "eventTime")
    try:
        event_time = datetime.fromisoformat(raw_time)
    except ValueError:
        raise InvalidRecordError(
            f"CloudTrail record {event_id} has eventTime {raw_time!r} (expected ISO 8601)"
        ) from None
    identity = record.get("userIdentity")
    identity = identity if isinstance(identity, dict) else None
    account = record.get("recipientAccountId") or (identity or {}).get("accountId")
    if not account:
        raise InvalidRecordError(
            f"CloudTrail record {event_id} has no recipientAccountId or userIdentity.accountId"
        )
    response = record.get("responseElements")
    if isinstance(response, dict) and "credentials" in response:
        response = {k: v for k, v in response.items() if k != "credentials"}
    return {
        "event_id": event_id,
        "event_time": event_time,
        "event_source": event_source,
        "service": service_of(event_source),
        "event_name": event_name,
        "region": region,
        "account_id": str(account),
        "principal": _principal_fields(identity, region),
        "source_ip": record.get("sourceIPAddress"),
        "user_agent": record.get("userAgent"),
        "read_only": _read_only(record, event_name),
        "error_code": record.get("errorCode"),
        "error_message": record.get("errorMessage"),
        "event_type": record.get("eventType"),
        "resources": _resources(record.get("resources")),
        "request_parameters": _as_object(record.get("requestParameters")),
        "response_elements": _as_object(response),
        "additional_event_data": _as_object(record.get("additionalEventData")),
        "source_file": source_file,
    }


_OPTIONAL_STR = ("source_ip", "user_agent", "error_code", "error_message", "event_type")
_OBJECTS = ("request_parameters", "response_elements", "additional_event_data")


def _as_wire(fields: dict[str, Any]) -> bool:
    """Whether ``fields`` are already what the model would validate them to: then turn the
    event time into its wire form (as pydantic writes a UTC datetime) and say so. ``False``
    leaves ``fields`` as they were, for the models."""
    for name in _OPTIONAL_STR:
        value = fields[name]
        if value is not None and type(value) is not str:
            return False
    for value in fields["principal"].values():
        if value is not None and type(value) is not str:
            return False
    for resource in fields["resources"]:
        for value in resource.values():
            if value is not None and type(value) is not str:
                return False
    for name in _OBJECTS:
        value = fields[name]
        if value is not None and not all(type(key) is str for key in value):
            return False
    if fields["source_file"] is not None and type(fields["source_file"]) is not str:
        return False
    moment: datetime = fields["event_time"]
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.utcoffset():
        moment = moment.astimezone(UTC)
    if moment.year < 1000:
        return False
    fields["event_time"] = moment.isoformat()[:-6] + "Z"  # "+00:00" → "Z", as pydantic
    return True


def unwrap_eventbridge(envelope: dict[str, Any]) -> dict[str, Any] | None:
    """The CloudTrail record inside an EventBridge event (``detail``), or ``None`` if the
    envelope does not carry one."""
    detail = envelope.get("detail")
    if not isinstance(detail, dict) or "eventID" not in detail:
        return None
    if "awsRegion" not in detail and envelope.get("region"):
        detail = {**detail, "awsRegion": envelope["region"]}
    if "recipientAccountId" not in detail and envelope.get("account"):
        detail = {**detail, "recipientAccountId": envelope["account"]}
    return detail
