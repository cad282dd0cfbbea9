"""Normalizing CloudTrail records: the 142 real fixture records, and STS-shaped records that
carry credentials which must never be stored."""

from __future__ import annotations

import copy
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloudinv.core.codec import decode, encode
from cloudinv.core.models import CloudTrailEvent
from cloudinv.producers.cloudtrail.normalize import (
    InvalidRecordError,
    is_secret_key,
    normalize_record,
    scrub_secrets,
    unwrap_eventbridge,
)

FIXTURE = Path(__file__).resolve().parent / "data/cloudtrail/sample-cloudtrail-event.json"


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = orjson.loads(FIXTURE.read_bytes())["Records"]
    assert len(data) == 142
    return data


@pytest.fixture(scope="module")
def events(records: list[dict[str, Any]]) -> list[CloudTrailEvent]:
    return [normalize_record(r, source_file="s3://b/k.json.gz") for r in records]


def test_every_fixture_record_normalizes_with_its_fields(
    records: list[dict[str, Any]], events: list[CloudTrailEvent]
) -> None:
    assert len({e.event_id for e in events}) == 142
    for raw, ev in zip(records, events, strict=True):
        assert ev.event_id == raw["eventID"]
        assert ev.event_time == datetime.strptime(raw["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=UTC
        )
        assert ev.event_source == raw["eventSource"]
        assert ev.service == raw["eventSource"].removesuffix(".amazonaws.com")
        assert ev.event_name == raw["eventName"]
        assert ev.region == raw["awsRegion"]
        assert ev.account_id == raw["recipientAccountId"]
        assert ev.source_ip == raw["sourceIPAddress"]
        assert ev.user_agent == raw["userAgent"]
        assert ev.error_code == raw.get("errorCode")
        assert ev.error_message == raw.get("errorMessage")
        assert ev.event_type == "AwsApiCall"
        assert ev.source_file == "s3://b/k.json.gz"
        assert ev.principal.type == raw["userIdentity"]["type"]
        assert ev.principal.arn == raw["userIdentity"].get("arn")
        assert ev.principal.access_key_id == raw["userIdentity"].get("accessKeyId")
        assert [r.arn for r in ev.resources] == [r["ARN"] for r in raw.get("resources", [])]
        # None of the fixture records carries readOnly: it is inferred from the name.
        assert ev.read_only == raw["eventName"].startswith(("Describe", "List", "Get"))
        # Round trip through the wire codec.
        assert decode(CloudTrailEvent, encode(ev)) == ev


def test_request_parameters_are_kept(
    records: list[dict[str, Any]], events: list[CloudTrailEvent]
) -> None:
    for raw, ev in zip(records, events, strict=True):
        assert ev.request_parameters == raw["requestParameters"]


def test_principals_are_never_lumped_together(
    records: list[dict[str, Any]], events: list[CloudTrailEvent]
) -> None:
    by_type = Counter(e.principal.type for e in events)
    assert by_type == Counter(r["userIdentity"]["type"] for r in records)
    for raw, ev in zip(records, events, strict=True):
        identity = raw["userIdentity"]
        kind = identity["type"]
        label = ev.principal.label
        assert label not in ("unknown", "no_user")
        if kind == "Root":
            assert label == f"root:{identity['accountId']}"
        elif kind == "AWSService":
            assert label == identity["invokedBy"]
            assert ev.principal.name == identity["invokedBy"]
        elif kind == "AssumedRole":
            assert label == identity["arn"]
            assert ev.principal.name == identity["arn"].rsplit("/", 1)[1]
        elif kind == "IAMUser":
            assert label == identity["arn"]
            assert ev.principal.name == identity["userName"]
    # Two role sessions of one role stay two principals.
    sessions = {e.principal.label for e in events if e.principal.type == "AssumedRole"}
    assert len(sessions) == len(
        {r["userIdentity"]["arn"] for r in records if "Assumed" in r["userIdentity"]["type"]}
    )
    assert len(sessions) >= 2


def test_fixture_sts_credentials_are_dropped(
    records: list[dict[str, Any]], events: list[CloudTrailEvent]
) -> None:
    assume = [
        (r, e) for r, e in zip(records, events, strict=True) if r["eventName"] == "AssumeRole"
    ]
    assert len(assume) == 9
    for raw, ev in assume:
        assert "credentials" in raw["responseElements"]
        secret_key_id = raw["responseElements"]["credentials"]["accessKeyId"]
        wire = encode(ev)
        assert b"sessionToken" not in wire
        assert b"credentials" not in wire
        assert secret_key_id.encode() not in wire
        assert ev.response_elements is not None
        assert "credentials" not in ev.response_elements
        if "assumedRoleUser" in raw["responseElements"]:
            assert (
                ev.response_elements["assumedRoleUser"]
                == raw["responseElements"]["assumedRoleUser"]
            )


def _sts_record(
    name: str, response: dict[str, Any], request: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLE",
            "arn": "arn:aws:iam::123456789012:user/alice",
            "accountId": "123456789012",
            "accessKeyId": "AKIAEXAMPLE",
            "userName": "alice",
        },
        "eventTime": "2024-03-01T10:00:00Z",
        "eventSource": "sts.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15",
        "requestParameters": request,
        "responseElements": response,
        "requestID": "req-1",
        "eventID": f"evt-{name}",
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": "123456789012",
    }


CREDS = {
    "accessKeyId": "ASIAXXXXSECRETPAIRID",
    "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "sessionToken": "IQoJb3JpZ2luX2VjEXAMPLETOKEN",
    "expiration": "Mar 1, 2024, 10:00:00 PM",
}


@pytest.mark.parametrize(
    ("name", "request_params", "response"),
    [
        ("GetSessionToken", {"durationSeconds": 3600}, {"credentials": CREDS}),
        (
            "AssumeRole",
            {"roleArn": "arn:aws:iam::123456789012:role/Admin", "roleSessionName": "s1"},
            {
                "credentials": CREDS,
                "assumedRoleUser": {
                    "assumedRoleId": "AROAEXAMPLE:s1",
                    "arn": "arn:aws:sts::123456789012:assumed-role/Admin/s1",
                },
            },
        ),
        (
            "GetFederationToken",
            {"name": "bob", "policy": "{}"},
            {
                "credentials": CREDS,
                "federatedUser": {"arn": "arn:aws:sts::123456789012:federated-user/bob"},
            },
        ),
        (
            "AssumeRoleWithWebIdentity",
            {
                "roleArn": "arn:aws:iam::123456789012:role/Web",
                "webIdentityToken": "eyJhbGciOiJSUzI1NiJ9.x.y",
            },
            {"credentials": CREDS, "provider": "accounts.google.com"},
        ),
    ],
)
def test_sts_shaped_records_never_carry_credentials(
    name: str, request_params: dict[str, Any], response: dict[str, Any]
) -> None:
    raw = _sts_record(name, copy.deepcopy(response), copy.deepcopy(request_params))
    ev = normalize_record(raw)
    wire = encode(ev)
    for secret in CREDS.values():
        if secret.startswith("Mar"):
            continue
        assert secret.encode() not in wire, secret
    assert b"eyJhbGciOiJSUzI1NiJ9" not in wire
    assert ev.response_elements is not None
    assert "credentials" not in ev.response_elements
    # What is not a secret stays.
    kept = {k: v for k, v in response.items() if k != "credentials"}
    assert ev.response_elements == kept
    assert ev.read_only is True  # the record's own flag wins over inference


def test_secrets_are_dropped_at_any_depth() -> None:
    raw = _sts_record(
        "CreateThing",
        {
            "result": {
                "nested": [
                    {"SecretAccessKey": "abc", "AccessKeyId": "AKIA1"},
                    {"client_secret": "x", "name": "ok"},
                    "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
                ],
                "roleCredentials": {"accessKeyId": "a", "secretAccessKey": "b"},
                "keyMaterial": "-----BEGIN RSA PRIVATE KEY-----",
            }
        },
        {
            "masterUserPassword": "hunter2",
            "config": {"db": {"Password": "p", "host": "h"}, "apiToken": "t"},
            "nextToken": "page-2",
            "clientToken": "idem-1",
            "secretId": "arn:aws:secretsmanager:us-east-1:123456789012:secret:app",
            "tokenCode": "123456",
        },
    )
    ev = normalize_record(raw)
    assert ev.request_parameters == {
        "config": {"db": {"host": "h"}},
        "nextToken": "page-2",
        "clientToken": "idem-1",
        "secretId": "arn:aws:secretsmanager:us-east-1:123456789012:secret:app",
    }
    assert ev.response_elements == {
        "result": {"nested": [{"AccessKeyId": "AKIA1"}, {"name": "ok"}]},
    }


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("sessionToken", True),
        ("SecretAccessKey", True),
        ("password", True),
        ("credentials", True),
        ("access_token", True),
        ("nextToken", False),
        ("accessKeyId", False),
        ("secretId", False),
        ("instanceType", False),
    ],
)
def test_is_secret_key(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_scrub_leaves_plain_values() -> None:
    value = {"a": [1, {"b": None}], "c": "text"}
    assert scrub_secrets(value) == value


def test_account_falls_back_to_the_identity(records: list[dict[str, Any]]) -> None:
    raw = dict(records[0])
    del raw["recipientAccountId"]
    assert normalize_record(raw).account_id == raw["userIdentity"]["accountId"]


@pytest.mark.parametrize("field", ["eventID", "eventTime", "eventSource", "eventName", "awsRegion"])
def test_missing_required_field_names_it(records: list[dict[str, Any]], field: str) -> None:
    raw = dict(records[0])
    del raw[field]
    with pytest.raises(InvalidRecordError, match=field):
        normalize_record(raw)


def test_bad_event_time_is_rejected(records: list[dict[str, Any]]) -> None:
    raw = {**records[0], "eventTime": "yesterday"}
    with pytest.raises(InvalidRecordError, match="eventTime"):
        normalize_record(raw)


def test_root_is_its_own_principal_and_service_by_invoked_by(records: list[dict[str, Any]]) -> None:
    root = next(r for r in records if r["userIdentity"]["type"] == "Root")
    ev = normalize_record(root)
    assert ev.principal.label == "root:111100000000"
    svc = next(r for r in records if r["userIdentity"]["type"] == "AWSService")
    ev2 = normalize_record(svc)
    assert ev2.principal.invoked_by == "elasticmapreduce.amazonaws.com"
    assert ev2.principal.account_id is None
    assert ev2.account_id == svc["recipientAccountId"]


def test_assumed_role_without_arn_uses_principal_id_session() -> None:
    raw = _sts_record("DescribeInstances", {})
    raw["userIdentity"] = {
        "type": "AssumedRole",
        "principalId": "AROAEXAMPLE:deploy-bot",
        "accountId": "123456789012",
        "sessionContext": {"sessionIssuer": {"type": "Role", "userName": "Deployer"}},
    }
    assert normalize_record(raw).principal.name == "deploy-bot"


def test_eventbridge_envelope_unwraps_to_the_record(records: list[dict[str, Any]]) -> None:
    detail = {k: v for k, v in records[3].items() if k not in ("awsRegion",)}
    envelope = {
        "version": "0",
        "id": "eb-1",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2",
        "account": "111100000000",
        "time": "2017-06-01T21:51:28Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": detail,
    }
    record = unwrap_eventbridge(envelope)
    assert record is not None
    ev = normalize_record(record)
    assert ev.event_id == records[3]["eventID"]
    assert ev.region == "eu-west-1"
    assert unwrap_eventbridge({"detail": {"state": "running"}}) is None


def _odd_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fixture records changed in every way the wire fast path must notice (or not mind)."""
    base = records[0]
    root = next(r for r in records if r["userIdentity"]["type"] == "Root")
    odd: list[dict[str, Any]] = []

    def changed(record: dict[str, Any], **fields: Any) -> None:
        copied = copy.deepcopy(record)
        copied.update(fields)
        odd.append(copied)

    changed(base, eventTime="2024-05-01T10:11:12")  # naive: taken as UTC
    changed(base, eventTime="2024-05-01T10:11:12.5Z")
    changed(base, eventTime="2024-05-01T10:11:12.123456+02:00")
    changed(base, eventTime="2024-05-01T23:30:00-05:30")
    changed(base, eventTime="2024-05-01")
    changed(base, eventTime="0999-01-01T00:00:00Z")
    changed(base, sourceIPAddress=12345)  # the model says no
    changed(base, userAgent=None, errorCode="AccessDenied", errorMessage="no", readOnly="true")
    changed(base, eventType=["AwsApiCall"])
    changed(base, userIdentity={**base["userIdentity"], "principalId": 7, "arn": None})
    changed(base, userIdentity={**base["userIdentity"], "invokedBy": {"x": 1}})
    changed(base, userIdentity=None, recipientAccountId=123456789012)
    changed(base, resources=[{"ARN": 5, "type": "AWS::S3::Bucket"}, "not an object"])
    changed(base, resources=[{"ARNPrefix": "arn:aws:s3:::b/", "accountId": "1"}])
    changed(base, requestParameters="scalar", responseElements=[1, {"password": "p"}])
    changed(
        base,
        requestParameters={"a": {"clientSecret": "s", "b": [{"c": 1.5, "d": None, "e": True}]}},
        additionalEventData={"MFAUsed": "Yes", "pem": "-----BEGIN RSA PRIVATE KEY-----x"},
    )
    changed(root, recipientAccountId=None)
    changed(base, eventID="é-✓-\u2028", eventName='Get\\Thing"')
    return odd


def test_the_wire_fast_path_writes_what_the_models_write(records: list[dict[str, Any]]) -> None:
    """encode_record skips the pydantic models for records of plain JSON types: its bytes
    must be those of encode(normalize_record(...)) for every record, and a record the models
    reject must be rejected alike."""
    from cloudinv.core.wire import encode as wire_encode
    from cloudinv.producers.cloudtrail.normalize import encode_record

    compared = rejected = 0
    for record in [*records, *_odd_records(records)]:
        for source in ("s3://b/k.json.gz", None):
            try:
                event = normalize_record(copy.deepcopy(record), source_file=source)
            except ValueError as exc:
                with pytest.raises(ValueError) as fast:
                    encode_record(copy.deepcopy(record), source)
                assert type(fast.value) is type(exc)
                rejected += 1
                continue
            expected = (event.principal.label.encode(), wire_encode(event))
            assert encode_record(copy.deepcopy(record), source) == expected, record
            compared += 1
    assert compared >= 2 * (142 + 14) and rejected >= 2 * 3
    # ... and the fast path is the one real records take.
    from cloudinv.producers.cloudtrail.normalize import _as_wire, _event_fields

    assert all(_as_wire(_event_fields(r, "s3://b/k.json.gz")) for r in records)
