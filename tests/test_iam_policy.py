"""The generated IAM policies: exactly what the code calls, and enough to run for real.

The first half checks the documents without AWS: the reader policy holds exactly the
operations the registered types call (walked from the registry here, independently of
``cloudinv.producers.iam_policy``), mapped to IAM actions with a hand-written oracle; the pipeline
policy is scoped to the configured resources; the member-role template parses and embeds the
reader policy; the CloudTrail setup plan is valid botocore input and works against moto.

The second half is the done-when of "Running it for real": a scan with only the generated
policy succeeds against a moto server that enforces IAM (its own subprocess, started with
``INITIAL_NO_AUTH_ACTION_COUNT``), and a policy missing one action fails that scope.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import botocore.session
import pytest
import yaml
from botocore import xform_name
from botocore.validate import ParamValidator

from cloudinv.catalog.derive import SchemaSource
from cloudinv.catalog.iam_actions import IAM_ACTION_NAMES, ApiCall, iam_permission
from cloudinv.catalog.registry import default_registry
from cloudinv.cli import main
from cloudinv.core.errors import ConfigError
from cloudinv.core.models import ScanManifest
from cloudinv.core.settings import AccountRole, AwsSettings, load_settings
from cloudinv.producers.cloudtrail_setup import cloudtrail_setup_plan
from cloudinv.producers.iam_policy import (
    MANAGED_POLICY_MAX_CHARS,
    CfnTag,
    PipelineResources,
    member_role_template,
    pipeline_policy,
    policy_actions,
    policy_size,
    reader_policies,
    reader_policy,
    render,
)

REGISTRY = default_registry()

# -- an independent oracle: IAM prefixes and action names from the Service Authorization
# -- Reference, written out by hand rather than derived from botocore's models -------------

KNOWN_IAM_PREFIXES = {
    "acm": "acm",
    "apigateway": "apigateway",
    "apigatewayv2": "apigateway",
    "application-autoscaling": "application-autoscaling",
    "athena": "athena",
    "autoscaling": "autoscaling",
    "backup": "backup",
    "cloudformation": "cloudformation",
    "cloudfront": "cloudfront",
    "cloudtrail": "cloudtrail",
    "cloudwatch": "cloudwatch",
    "codebuild": "codebuild",
    "codecommit": "codecommit",
    "codepipeline": "codepipeline",
    "cognito-idp": "cognito-idp",
    "config": "config",
    "dax": "dax",
    "docdb": "rds",
    "dynamodb": "dynamodb",
    "ec2": "ec2",
    "ecr": "ecr",
    "ecs": "ecs",
    "efs": "elasticfilesystem",
    "eks": "eks",
    "elasticache": "elasticache",
    "elasticbeanstalk": "elasticbeanstalk",
    "elb": "elasticloadbalancing",
    "elbv2": "elasticloadbalancing",
    "emr": "elasticmapreduce",
    "es": "es",
    "events": "events",
    "firehose": "firehose",
    "fsx": "fsx",
    "glacier": "glacier",
    "glue": "glue",
    "guardduty": "guardduty",
    "iam": "iam",
    "kafka": "kafka",
    "kinesis": "kinesis",
    "kms": "kms",
    "lambda": "lambda",
    "logs": "logs",
    "mq": "mq",
    "neptune": "rds",
    "opensearch": "es",
    "organizations": "organizations",
    "rds": "rds",
    "redshift": "redshift",
    "route53": "route53",
    "s3": "s3",
    "sagemaker": "sagemaker",
    "secretsmanager": "secretsmanager",
    "sns": "sns",
    "sqs": "sqs",
    "ssm": "ssm",
    "stepfunctions": "states",
    "storagegateway": "storagegateway",
    "sts": "sts",
    "wafv2": "wafv2",
}
"""botocore client name → IAM service prefix."""

KNOWN_ACTION_NAMES = {
    ("s3", "ListBuckets"): "s3:ListAllMyBuckets",
    ("s3", "GetBucketCors"): "s3:GetBucketCORS",
    ("s3", "GetBucketEncryption"): "s3:GetEncryptionConfiguration",
    ("s3", "GetBucketLifecycleConfiguration"): "s3:GetLifecycleConfiguration",
    ("s3", "GetBucketReplication"): "s3:GetReplicationConfiguration",
    ("s3", "GetPublicAccessBlock"): "s3:GetBucketPublicAccessBlock",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("apigateway", "GetRestApis"): "apigateway:GET",
    ("apigatewayv2", "GetApis"): "apigateway:GET",
}
"""Operations whose IAM action is not ``prefix:Operation``."""

ACTION_RE = re.compile(r"^([a-z0-9-]+):([A-Za-z0-9]+)$")


def registered_operations() -> set[tuple[str, str]]:
    """(client, operation) of every call a scan or report makes, read off the specs, plus
    the engine's own calls and the reports' (EFS recovery points, S3 metrics)."""
    operations = {
        ("sts", "GetCallerIdentity"),
        ("ec2", "DescribeRegions"),
        ("backup", "ListRecoveryPointsByResource"),
        ("cloudwatch", "GetMetricData"),
    }
    for spec in REGISTRY.all():
        operations.add((spec.service, spec.list_operation))
        operations.update((spec.service, detail.operation) for detail in spec.details)
        if spec.parent is not None:
            parent = REGISTRY.get(spec.parent.cfn_type)
            operations.add((parent.service, parent.list_operation))
    return operations


@cache
def schema_actions() -> dict[tuple[str, str], str]:
    """(client, operation) → IAM action, for derived types' calls, from the CloudFormation
    schemas' list and read handlers (an oracle independent of botocore's signing names)."""
    source = SchemaSource.from_cfn_lint()
    found: dict[tuple[str, str], str] = {}
    for spec in REGISTRY.all():
        if not spec.derived:
            continue
        handlers = source.schemas[spec.cfn_type]["handlers"]
        actions = handlers["list"]["permissions"] + handlers.get("read", {}).get("permissions", [])
        for operation in (spec.list_operation, *(d.operation for d in spec.details)):
            named = [a for a in actions if a.partition(":")[2] == operation]
            if named:
                found[(spec.service, operation)] = named[0]
    return found


def expected_action(service: str, operation: str) -> str:
    if service not in KNOWN_IAM_PREFIXES and (service, operation) in schema_actions():
        return schema_actions()[(service, operation)]
    assert service in KNOWN_IAM_PREFIXES, (
        f"a registered type calls {service}; add its IAM prefix (Service Authorization "
        "Reference) to KNOWN_IAM_PREFIXES"
    )
    return KNOWN_ACTION_NAMES.get(
        (service, operation), f"{KNOWN_IAM_PREFIXES[service]}:{operation}"
    )


# -- the reader policy --------------------------------------------------------------------------


def test_reader_policy_grants_exactly_the_registered_calls() -> None:
    policy = reader_policy()
    actions = policy_actions(policy)
    expected = {expected_action(s, op) for s, op in registered_operations()}
    assert set(actions) == expected
    assert len(actions) == len(set(actions)), "an action is granted twice"


def test_reader_policy_actions_are_exact_sorted_and_known() -> None:
    policy = reader_policy()
    prefixes = set(KNOWN_IAM_PREFIXES.values()) | {
        action.split(":")[0] for action in schema_actions().values()
    }
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert statement["Action"] == sorted(set(statement["Action"]))
        for action in statement["Action"]:
            match = ACTION_RE.match(action)
            assert match, f"{action} is not service:Operation (no wildcards)"
            assert match[1] in prefixes, f"{action}: unknown IAM prefix"
    main, *scoped = policy["Statement"]
    assert main["Resource"] == "*"
    # API Gateway's verb action is the one scoped by resource: read-only paths only.
    assert scoped == [
        {
            "Sid": "CloudinvReadApigatewayGet",
            "Effect": "Allow",
            "Action": ["apigateway:GET"],
            "Resource": ["arn:aws:apigateway:*::/apis", "arn:aws:apigateway:*::/restapis"],
        }
    ]
    # Whole, it is over IAM's limits (10,240 inline, 6,144 managed): reader_policies splits it.
    assert policy_size(policy) > MANAGED_POLICY_MAX_CHARS


@pytest.mark.parametrize(
    ("service", "operation", "action", "resource"),
    [
        # S3's IAM names predate its API names.
        ("s3", "ListBuckets", "s3:ListAllMyBuckets", None),
        ("s3", "GetBucketEncryption", "s3:GetEncryptionConfiguration", None),
        ("s3", "GetPublicAccessBlock", "s3:GetBucketPublicAccessBlock", None),
        ("s3", "HeadBucket", "s3:ListBucket", None),
        ("s3", "GetBucketPolicy", "s3:GetBucketPolicy", None),
        # Prefix from the signing name, not the endpoint prefix ("api.ecr").
        ("ecr", "DescribeRepositories", "ecr:DescribeRepositories", None),
        ("elbv2", "DescribeLoadBalancers", "elasticloadbalancing:DescribeLoadBalancers", None),
        ("efs", "DescribeFileSystems", "elasticfilesystem:DescribeFileSystems", None),
        # CloudWatch signs as "monitoring".
        ("cloudwatch", "DescribeAlarms", "cloudwatch:DescribeAlarms", None),
        # The wire name is ListDistributions2020_05_31: the API version is dropped.
        ("cloudfront", "ListDistributions", "cloudfront:ListDistributions", None),
        ("lambda", "ListFunctions", "lambda:ListFunctions", None),
        ("sqs", "DeleteMessageBatch", "sqs:DeleteMessage", None),
        # API Gateway: HTTP verb on the request path (v2 paths lose their /v2).
        ("apigateway", "GetRestApis", "apigateway:GET", "arn:aws:apigateway:*::/restapis"),
        ("apigateway", "GetStages", "apigateway:GET", "arn:aws:apigateway:*::/restapis/*/stages"),
        ("apigatewayv2", "GetApis", "apigateway:GET", "arn:aws:apigateway:*::/apis"),
    ],
)
def test_operation_to_action(
    service: str, operation: str, action: str, resource: str | None
) -> None:
    permission = iam_permission(ApiCall(service, operation))
    assert (permission.action, permission.resource) == (action, resource)


def test_exceptions_table_names_real_operations() -> None:
    for call in IAM_ACTION_NAMES:
        iam_permission(call)  # raises ValueError for an operation botocore does not know
    with pytest.raises(ValueError, match="GetBucketColour"):
        iam_permission(ApiCall("s3", "GetBucketColour"))


# -- the pipeline policy ------------------------------------------------------------------------


def _statements(policy: dict[str, Any]) -> dict[str, tuple[list[str], Any]]:
    return {s["Sid"]: (s["Action"], s["Resource"]) for s in policy["Statement"]}


def test_pipeline_policy_is_scoped_to_the_configured_resources(tmp_path: Path) -> None:
    config = tmp_path / "cloudinv.toml"
    config.write_text(
        "[aws]\n"
        'accounts = [{role_arn = "arn:aws:iam::111111111111:role/inv"},'
        ' {role_arn = "arn:aws:iam::222222222222:role/inv"}]\n'
        "[storage]\n"
        'targets = ["s3", "dynamodb"]\n'
        's3_bucket = "warehouse"\n'
        's3_prefix = "inv/"\n'
        'dynamodb_table_prefix = "cinv"\n'
    )
    resources = PipelineResources.from_settings(
        load_settings(config),
        trail_bucket="trail-logs",
        trail_queue="https://sqs.eu-west-1.amazonaws.com/333333333333/trail",
        trail_key_prefix="org/",
        account_id="333333333333",
    )
    assert resources.notes == ()
    assert _statements(pipeline_policy(resources)) == {
        "IdentifyCaller": (["sts:GetCallerIdentity"], "*"),
        "AssumeMemberRoles": (
            ["sts:AssumeRole"],
            ["arn:aws:iam::111111111111:role/inv", "arn:aws:iam::222222222222:role/inv"],
        ),
        "ReceiveCloudTrailNotifications": (
            ["sqs:DeleteMessage", "sqs:ReceiveMessage"],
            "arn:aws:sqs:eu-west-1:333333333333:trail",
        ),
        "ReadCloudTrailLogs": (["s3:GetObject"], "arn:aws:s3:::trail-logs/org/AWSLogs/*"),
        "ListCloudTrailLogs": (["s3:ListBucket"], "arn:aws:s3:::trail-logs"),
        "WriteWarehouse": (
            ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:PutObject"],
            "arn:aws:s3:::warehouse/inv/*",
        ),
        "ListWarehouse": (["s3:ListBucket"], "arn:aws:s3:::warehouse"),
        "WriteDynamoDBTables": (
            [
                "dynamodb:BatchWriteItem",
                "dynamodb:CreateTable",
                "dynamodb:DescribeTable",
                "dynamodb:DescribeTimeToLive",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:Query",
                "dynamodb:UpdateItem",
                "dynamodb:UpdateTimeToLive",
            ],
            "arn:aws:dynamodb:*:333333333333:table/cinv*",
        ),
    }


def test_pipeline_policy_leaves_out_what_is_not_configured(tmp_path: Path) -> None:
    config = tmp_path / "cloudinv.toml"
    config.write_text('[aws]\norganization_role_name = "OrgReader"\n')
    resources = PipelineResources.from_settings(load_settings(config))
    statements = _statements(pipeline_policy(resources))
    assert statements == {
        "IdentifyCaller": (["sts:GetCallerIdentity"], "*"),
        "AssumeMemberRoles": (["sts:AssumeRole"], "arn:aws:iam::*:role/OrgReader"),
        "ListOrganizationAccounts": (["organizations:ListAccounts"], "*"),
    }
    notes = " ".join(resources.notes)
    assert "--trail-queue" in notes and "--trail-bucket" in notes
    assert "s3_bucket" in notes and "dynamodb" in notes


def test_pipeline_policy_refuses_an_unscoped_warehouse(tmp_path: Path) -> None:
    config = tmp_path / "cloudinv.toml"
    config.write_text('[storage]\ntargets = ["s3"]\n')
    with pytest.raises(ConfigError, match="s3_bucket"):
        PipelineResources.from_settings(load_settings(config))
    with pytest.raises(ConfigError, match="queue"):
        PipelineResources.from_settings(load_settings(None), trail_queue="my-queue")


# -- the member-role template -------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus CloudFormation's short-form tags, read as their long form."""


def _construct_cfn_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_cfn_tag)


def test_member_role_template_parses_and_embeds_the_reader_policy() -> None:
    template = member_role_template(trusted_principal="arn:aws:iam::123456789012:role/cloudinv")
    text = render(template, "yaml")
    assert "!Ref TrustedPrincipalArn" in text and "!If" in text and "!Sub" in text
    parsed = yaml.load(text, Loader=CfnLoader)
    assert parsed == json.loads(render(template, "json"))

    role = parsed["Resources"]["ReaderRole"]
    assert role["Type"] == "AWS::IAM::Role"
    attached = [ref["Ref"] for ref in role["Properties"]["ManagedPolicyArns"]]
    assert 1 < len(attached) <= 10  # IAM attaches at most 10 managed policies by default
    documents = [parsed["Resources"][name]["Properties"]["PolicyDocument"] for name in attached]
    assert all(parsed["Resources"][name]["Type"] == "AWS::IAM::ManagedPolicy" for name in attached)
    embedded = [action for document in documents for action in policy_actions(document)]
    assert sorted(embedded) == sorted(policy_actions(reader_policy()))
    assert sorted(embedded) == sorted({expected_action(s, op) for s, op in registered_operations()})
    apigateway = documents[-1]["Statement"][-1]["Resource"]
    assert apigateway[0] == {"Fn::Sub": "arn:${AWS::Partition}:apigateway:*::/apis"}

    [trust] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"AWS": {"Ref": "TrustedPrincipalArn"}}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"] == {
        "Fn::If": [
            "HasExternalId",
            {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}},
            {"Ref": "AWS::NoValue"},
        ]
    }
    assert parsed["Conditions"]["HasExternalId"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ExternalId"}, ""]}]
    }
    parameters = parsed["Parameters"]
    assert parameters["TrustedPrincipalArn"]["Default"] == "arn:aws:iam::123456789012:role/cloudinv"
    assert parameters["ExternalId"]["NoEcho"] is True
    assert parsed["Outputs"]["RoleArn"]["Value"] == {"Fn::GetAtt": ["ReaderRole", "Arn"]}


@pytest.mark.parametrize(
    "value",
    [
        "yes",
        "No",
        "null",
        "2012-10-17",
        "*",
        "",
        "a: b",
        "- x",
        "#x",
        "arn:aws:s3:::bucket/*",
        "sts:ExternalId",
        "ends:",
        "a:b",
        "line\nbreak",
        'quote"d',
        "tab\there",
        "ünïcode",
        "1.5",
        "!Ref x",
        "&anchor",
        12,
        True,
        None,
        [],
        {},
        [[1, 2], {"a": [3]}],
    ],
)
def test_yaml_scalars_round_trip(value: Any) -> None:
    document = {"key": value, "list": [value, {"nested": value}]}
    assert yaml.safe_load(render(document, "yaml")) == document
    tagged = {"key": CfnTag("Sub", value)} if isinstance(value, str) else None
    if tagged is not None:
        assert yaml.load(render(tagged, "yaml"), Loader=CfnLoader) == {"key": {"Fn::Sub": value}}


def test_reader_policy_splits_into_managed_policies_within_iam_limits() -> None:
    parts = reader_policies()
    assert len(parts) > 1
    for part in parts:
        assert policy_size(part) <= MANAGED_POLICY_MAX_CHARS
        for statement in part["Statement"]:
            assert all("*" not in action for action in statement["Action"])
    actions = [action for part in parts for action in policy_actions(part)]
    assert sorted(actions) == sorted(policy_actions(reader_policy()))
    assert len(actions) == len(set(actions))
    # A service's actions stay together, so a part can be read as "these services".
    services = [{a.split(":")[0] for a in policy_actions(part)} for part in parts]
    for one, other in itertools.combinations(services, 2):
        assert one.isdisjoint(other - {"apigateway"})


# -- the command ----------------------------------------------------------------------------------


def test_command_prints_each_document(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["iam-policy"]) == 0
    assert json.loads(capsys.readouterr().out) == reader_policy()

    assert main(["iam-policy", "--format", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == reader_policy()

    assert main(["iam-policy", "--stackset"]) == 0
    stackset = yaml.load(capsys.readouterr().out, Loader=CfnLoader)
    assert main(["iam-policy", "--template", "member-role", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == stackset

    config = tmp_path / "cloudinv.toml"
    config.write_text('[storage]\ntargets = ["s3"]\ns3_bucket = "wh"\n')
    assert main(["--config", str(config), "iam-policy", "--role", "pipeline"]) == 0
    out = capsys.readouterr()
    assert _statements(json.loads(out.out))["WriteWarehouse"] == (
        ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:PutObject"],
        "arn:aws:s3:::wh/cloudinv/*",
    )
    assert "note: pass --trail-queue" in out.err


# -- the CloudTrail setup plan ------------------------------------------------------------------


def test_cloudtrail_setup_plan_is_valid_botocore_input() -> None:
    plan = cloudtrail_setup_plan("trail-logs", "cloudinv-trail", "123456789012", "eu-west-1")
    assert [(a.service, a.operation) for a in plan] == [
        ("sqs", "CreateQueue"),
        ("sqs", "SetQueueAttributes"),
        ("s3", "PutBucketNotificationConfiguration"),
        ("events", "PutRule"),
        ("events", "PutTargets"),
    ]
    session = botocore.session.get_session()
    for action in plan:
        model = session.get_service_model(action.service).operation_model(action.operation)
        report = ParamValidator().validate(dict(action.params), model.input_shape)
        assert not report.has_errors(), report.generate_report()
        assert action.describe().startswith(f"# {action.description}\n")

    policy = json.loads(plan[1].params["Attributes"]["Policy"])
    s3_statement, events_statement = policy["Statement"]
    queue_arn = "arn:aws:sqs:eu-west-1:123456789012:cloudinv-trail"
    assert s3_statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert s3_statement["Resource"] == queue_arn
    assert s3_statement["Condition"] == {
        "ArnLike": {"aws:SourceArn": "arn:aws:s3:::trail-logs"},
        "StringEquals": {"aws:SourceAccount": "123456789012"},
    }
    assert events_statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert events_statement["Condition"] == {
        "ArnEquals": {
            "aws:SourceArn": "arn:aws:events:eu-west-1:123456789012:rule/cloudinv-trail-api-calls"
        }
    }
    [notification] = plan[2].params["NotificationConfiguration"]["QueueConfigurations"]
    assert notification["QueueArn"] == queue_arn
    assert notification["Events"] == ["s3:ObjectCreated:*"]
    assert notification["Filter"]["Key"]["FilterRules"] == [
        {"Name": "prefix", "Value": "AWSLogs/"},
        {"Name": "suffix", "Value": ".json.gz"},
    ]
    assert json.loads(plan[3].params["EventPattern"]) == {
        "detail-type": ["AWS API Call via CloudTrail"]
    }
    assert plan[4].params["Targets"] == [{"Id": "cloudinv-tailer-queue", "Arn": queue_arn}]


def test_cloudtrail_setup_plan_names_every_bad_input() -> None:
    with pytest.raises(ValueError) as caught:
        cloudtrail_setup_plan("Bad_Bucket", "q.fifo", "12345", "mars")
    message = str(caught.value)
    for word in ("Bad_Bucket", "q.fifo", "12345", "mars"):
        assert word in message


def test_cloudtrail_setup_plan_delivers_logs_and_events(moto_endpoint: str) -> None:
    """Run the plan against moto: a log file and an API-call event both reach the queue."""
    import boto3
    from botocore.config import Config

    unique = uuid.uuid4().hex[:10]
    bucket, queue = f"trail-{unique}", f"cloudinv-trail-{unique}"

    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=moto_endpoint,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    s3 = client("s3")
    s3.create_bucket(Bucket=bucket)
    account = client("sts").get_caller_identity()["Account"]
    for action in cloudtrail_setup_plan(bucket, queue, account, "us-east-1"):
        getattr(client(action.service), xform_name(action.operation))(**action.params)

    log_key = f"AWSLogs/{account}/CloudTrail/us-east-1/2026/01/02/{account}_CloudTrail_x.json.gz"
    for key in (log_key, f"other/{account}.json.gz", f"AWSLogs/{account}/notes.txt"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
    client("events").put_events(
        Entries=[
            {
                "Source": "cloudinv.test",
                "DetailType": "AWS API Call via CloudTrail",
                "Detail": json.dumps({"eventName": "RunInstances"}),
            },
            {"Source": "cloudinv.test", "DetailType": "Something else", "Detail": "{}"},
        ]
    )

    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    bodies: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(bodies) < 3:
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        bodies += [json.loads(m["Body"]) for m in response.get("Messages", [])]
    # Keys in S3 notifications are URL-encoded.
    created = [unquote_plus(r["s3"]["object"]["key"]) for b in bodies for r in b.get("Records", [])]
    events = [b["detail-type"] for b in bodies if "detail-type" in b]
    assert created == [log_key]
    assert events == ["AWS API Call via CloudTrail"]
    assert any(b.get("Event") == "s3:TestEvent" for b in bodies)


# -- done when: a scan with only the generated policy succeeds under IAM enforcement ------------

# What moto 5.2 enforces (moto/core/authorization.py, moto/iam/access_control.py, and
# getmoto/moto#9581): with INITIAL_NO_AUTH_ACTION_COUNT=N, every request after the first N
# is checked for a valid signature and an Allow for "<SigV4 service>:<operation>" in the
# caller's identity policies (no Resource matching except for S3, SQS, IAM roles and STS
# AssumeRole, no Conditions). Measured here with the generated policy:
# - enforced and IAM-accurate (scanned below): EC2, IAM, RDS, ELB, ELBv2, Auto Scaling,
#   CloudFormation, ElastiCache, Redshift, SNS, SQS, DynamoDB, KMS, CloudWatch Logs, SSM,
#   Secrets Manager, ECS, ECR, ACM, Athena, CloudTrail, Application Auto Scaling;
# - enforced with an action name IAM does not use, so a correct policy is denied:
#   CloudWatch (moto checks monitoring:*, the signing name; IAM is cloudwatch:*) and S3
#   (moto checks s3:ListBucket for GetBucketEncryption, GetBucketReplication,
#   GetBucketOwnershipControls and GetPublicAccessBlock);
# - rejected whatever the policy, even Action "*": the REST-protocol services (Lambda, EFS,
#   Backup, API Gateway: SignatureDoesNotMatch; Route 53, CloudFront: an unparseable 403);
# - not implemented: Storage Gateway ListGateways, EC2 DescribePlacementGroups and
#   DescribeReservedInstances;
# - sts:GetCallerIdentity is always allowed, as on AWS.
ENFORCED_TYPES = (
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::Instance",
    "AWS::EC2::Volume",
    "AWS::EC2::RouteTable",
    "AWS::EC2::NetworkAcl",
    "AWS::EC2::InternetGateway",
    "AWS::IAM::User",
    "AWS::IAM::Role",
    "AWS::IAM::ManagedPolicy",
    "AWS::RDS::DBInstance",
    "AWS::ElasticLoadBalancingV2::LoadBalancer",
    "AWS::ElasticLoadBalancingV2::TargetGroup",
    "AWS::ElasticLoadBalancing::LoadBalancer",
    "AWS::AutoScaling::AutoScalingGroup",
    "AWS::CloudFormation::Stack",
    "AWS::ElastiCache::CacheCluster",
    "AWS::Redshift::Cluster",
    "AWS::SNS::Topic",
    "AWS::SQS::Queue",
    "AWS::DynamoDB::Table",
    "AWS::KMS::Key",
    "AWS::KMS::Alias",
    "AWS::Logs::LogGroup",
    "AWS::SSM::Parameter",
    "AWS::SecretsManager::Secret",
    "AWS::ECS::Cluster",
    "AWS::ECS::Service",
    "AWS::ECR::Repository",
    "AWS::CertificateManager::Certificate",
    "AWS::Athena::WorkGroup",
    "AWS::CloudTrail::Trail",
    "AWS::ApplicationAutoScaling::ScalableTarget",
)
SEEDED_TYPES = (
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::SecurityGroup",
    "AWS::IAM::User",
    "AWS::ElasticLoadBalancingV2::TargetGroup",
    "AWS::SNS::Topic",
    "AWS::SQS::Queue",
    "AWS::DynamoDB::Table",
    "AWS::KMS::Key",
    "AWS::Logs::LogGroup",
    "AWS::SSM::Parameter",
    "AWS::SecretsManager::Secret",
    "AWS::ECS::Cluster",
    "AWS::ECR::Repository",
)
"""Types with a resource created before enforcement starts, so their detail calls run."""

REGION = "us-east-1"
MEMBER_ACCOUNT = "210987654321"
READER_ROLE = f"arn:aws:iam::{MEMBER_ACCOUNT}:role/cloudinv-reader"
DENIALS = {
    # A list action: the scope fails.
    "no-list": ("ec2:DescribeVpcs", "AWS::EC2::VPC", "failed", "DescribeVpcs"),
    # A detail action: the resource is left out and the scope is partial.
    "no-detail": ("sns:GetTopicAttributes", "AWS::SNS::Topic", "partial", "GetTopicAttributes"),
}
SETUP_REQUESTS = 29
"""Requests the setup makes; moto authenticates every request after these."""


@dataclass(frozen=True)
class EnforcingMoto:
    endpoint: str
    keys: dict[str, tuple[str, str]]
    """User name → (access key id, secret)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _without(policy: dict[str, Any], action: str) -> dict[str, Any]:
    statements = [
        {**s, "Action": [a for a in s["Action"] if a != action]} for s in policy["Statement"]
    ]
    assert sum(len(s["Action"]) for s in statements) == len(policy_actions(policy)) - 1
    return {**policy, "Statement": statements}


def _seed(endpoint: str) -> dict[str, tuple[str, str]]:
    """Users with generated policies, and resources; exactly SETUP_REQUESTS requests."""
    import boto3

    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    requests = 0

    def count(**_: Any) -> None:
        nonlocal requests
        requests += 1

    session.events.register("before-send", count)

    def client(service: str, boto3_session: Any = session) -> Any:
        return boto3_session.client(service, endpoint_url=endpoint)

    iam = client("iam")
    keys: dict[str, tuple[str, str]] = {}

    def user(name: str, policy: dict[str, Any]) -> None:
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="cloudinv", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        keys[name] = (key["AccessKeyId"], key["SecretAccessKey"])

    policy = reader_policy()
    user("reader", policy)
    for name, (action, *_) in DENIALS.items():
        user(name, _without(policy, action))
    user("pipeline", pipeline_policy(PipelineResources()))

    # A member account whose reader role holds the generated policy, as the StackSet makes it.
    credentials = client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{MEMBER_ACCOUNT}:role/seed", RoleSessionName="seed"
    )["Credentials"]
    member = boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )
    member.events.register("before-send", count)
    member_iam = client("iam", member)
    member_iam.create_role(
        RoleName="cloudinv-reader",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::123456789012:user/pipeline"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    member_iam.put_role_policy(
        RoleName="cloudinv-reader",
        PolicyName="cloudinv-read-only",
        PolicyDocument=json.dumps(policy),
    )
    client("sqs", member).create_queue(QueueName="member-queue")

    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24")
    ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)
    client("elbv2").create_target_group(Name="web", Protocol="HTTP", Port=80, VpcId=vpc)
    client("sns").create_topic(Name="alerts")
    client("sqs").create_queue(QueueName="jobs")
    client("dynamodb").create_table(
        TableName="orders",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client("kms").create_key(Description="data")
    client("logs").create_log_group(logGroupName="/app/web")
    client("ssm").put_parameter(Name="/app/url", Value="https://example.com", Type="String")
    client("secretsmanager").create_secret(Name="app/db", SecretString="x")
    client("ecs").create_cluster(clusterName="apps")
    client("ecr").create_repository(repositoryName="web")
    assert requests == SETUP_REQUESTS, (
        f"the setup made {requests} requests: set SETUP_REQUESTS to it, so moto starts "
        "enforcing IAM right after the setup"
    )
    return keys


@pytest.fixture(scope="module")
def enforcing_moto() -> Iterator[EnforcingMoto]:
    """A moto server of its own that authenticates every request after the setup's."""
    port = _free_port()
    env = {
        **os.environ,
        "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS),
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "moto server did not start in 30 s"
                time.sleep(0.05)
        endpoint = f"http://127.0.0.1:{port}"
        yield EnforcingMoto(endpoint, _seed(endpoint))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _access(moto: EnforcingMoto, user: str) -> Any:
    from aiobotocore.session import get_session

    from cloudinv.producers.credentials import AwsAccess

    session = get_session()
    session.set_credentials(*moto.keys[user])
    return AwsAccess(endpoint_url=moto.endpoint, base_session=session, max_attempts=2)


async def _scan(
    moto: EnforcingMoto,
    user: str,
    types: tuple[str, ...],
    accounts: list[AccountRole] | None = None,
) -> dict[str, ScanManifest]:
    from cloudinv.producers.engine import scan

    settings = AwsSettings(regions=[REGION], endpoint_url=moto.endpoint, accounts=accounts or [])
    manifests: dict[str, ScanManifest] = {}
    async for item in scan(settings, types=types, access=_access(moto, user)):
        if isinstance(item, ScanManifest):
            manifests[item.resource_type] = item
    assert set(manifests) == set(types)
    return manifests


def _failures(manifests: dict[str, ScanManifest]) -> dict[str, Any]:
    return {
        t: (m.status, [(e.code, e.operation, e.message[:200]) for e in m.errors])
        for t, m in manifests.items()
        if m.status != "complete" or m.errors
    }


async def test_scan_with_only_the_generated_policy_succeeds(enforcing_moto: EnforcingMoto) -> None:
    manifests = await _scan(enforcing_moto, "reader", ENFORCED_TYPES)
    assert _failures(manifests) == {}
    assert [t for t in SEEDED_TYPES if not manifests[t].keys] == []
    # ec2:DescribeRegions, for aws.regions = "all".
    access = _access(enforcing_moto, "reader")
    [target] = await access.discover_accounts(AwsSettings(regions="all"))
    assert REGION in await access.regions_for(target, "all")


@pytest.mark.parametrize("denial", sorted(DENIALS))
async def test_a_policy_missing_one_action_fails_that_scope(
    enforcing_moto: EnforcingMoto, denial: str
) -> None:
    _, denied_type, status, operation = DENIALS[denial]
    manifests = await _scan(enforcing_moto, denial, ENFORCED_TYPES)
    failures = _failures(manifests)
    assert set(failures) == {denied_type}
    assert manifests[denied_type].status == status
    [error] = manifests[denied_type].errors
    assert (error.code, error.operation) == ("AccessDenied", operation)
    assert f"{denial} is not authorized to perform" in error.message


async def test_pipeline_assumes_the_member_role_and_scans_with_its_policy(
    enforcing_moto: EnforcingMoto,
) -> None:
    """The deployment's shape: the pipeline policy assumes the reader role in a member
    account, whose inline policy is the generated one; the pipeline itself reads nothing."""
    import boto3
    from botocore.exceptions import ClientError

    types = ("AWS::SQS::Queue", "AWS::EC2::VPC", "AWS::IAM::Role", "AWS::DynamoDB::Table")
    manifests = await _scan(enforcing_moto, "pipeline", types, [AccountRole(role_arn=READER_ROLE)])
    assert _failures(manifests) == {}
    assert {m.account_id for m in manifests.values()} == {MEMBER_ACCOUNT}
    assert manifests["AWS::SQS::Queue"].keys == [
        f"arn:aws:sqs:{REGION}:{MEMBER_ACCOUNT}:member-queue"
    ]
    key, secret = enforcing_moto.keys["pipeline"]
    ec2 = boto3.client(
        "ec2",
        endpoint_url=enforcing_moto.endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )
    with pytest.raises(ClientError, match="AccessDenied"):
        await asyncio.to_thread(ec2.describe_vpcs)
