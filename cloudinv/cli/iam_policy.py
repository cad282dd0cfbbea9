"""``cloudinv iam-policy``: the least-privilege IAM policy cloudinv needs, generated.

``--role reader`` (the default) prints the read-only policy for the accounts cloudinv
inventories; ``--role pipeline`` the policy of cloudinv's own principal, scoped to the
resources the configuration names; ``--template member-role`` (or ``--stackset``) the
CloudFormation template of the member-account role, for a StackSet. Notes on what was left
out of a policy go to stderr, so stdout stays a valid document.
"""

from __future__ import annotations

import argparse
import sys

from cloudinv.core.settings import load_settings
from cloudinv.producers.iam_policy import (
    MANAGED_POLICY_MAX_CHARS,
    READER_ROLE_NAME,
    OutputFormat,
    PipelineResources,
    member_role_template,
    pipeline_policy,
    policy_size,
    reader_policies,
    reader_policy,
    render,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "iam-policy",
        help="print the least-privilege IAM policy (or member-role template) cloudinv needs",
        description="Print an IAM policy generated from the API calls cloudinv makes: "
        "'reader' for the inventoried accounts, 'pipeline' for cloudinv's own account. "
        "With --template member-role, print a CloudFormation template (for a StackSet) "
        "creating the reader role in each member account.",
    )
    parser.add_argument(
        "--role",
        choices=("reader", "pipeline"),
        default="reader",
        help="reader: read-only access in inventoried accounts (default); pipeline: "
        "cloudinv's own account (assume roles, CloudTrail queue and bucket, sinks)",
    )
    parser.add_argument(
        "--template",
        choices=("member-role",),
        default=None,
        help="print the CloudFormation template of the member-account reader role instead",
    )
    parser.add_argument(
        "--stackset",
        dest="template",
        action="store_const",
        const="member-role",
        help="same as --template member-role",
    )
    parser.add_argument(
        "--format",
        dest="output",
        choices=("json", "yaml"),
        default=None,
        help="output format (default: json for a policy, yaml for a template)",
    )
    parser.add_argument(
        "--trusted-principal",
        metavar="ARN",
        help="template: the pipeline principal the role trusts (default of its parameter)",
    )
    parser.add_argument(
        "--role-name",
        default=READER_ROLE_NAME,
        help=f"template: name of the member role (default {READER_ROLE_NAME})",
    )
    parser.add_argument(
        "--partition", default="aws", help="reader policy: ARN partition (default aws)"
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="reader policy: print it as a list of managed policies of at most 6,144 "
        "characters each (IAM's limit), split by service",
    )
    parser.add_argument(
        "--trail-queue",
        metavar="URL_OR_ARN",
        help="pipeline: the CloudTrail tailer's SQS queue (receive and delete)",
    )
    parser.add_argument(
        "--trail-bucket", metavar="NAME", help="pipeline: the bucket CloudTrail writes to"
    )
    parser.add_argument(
        "--trail-key-prefix",
        default="",
        metavar="PREFIX",
        help="pipeline: the trail's S3 key prefix, if it has one (logs are under PREFIX/AWSLogs/)",
    )
    parser.add_argument(
        "--account-id",
        metavar="ID",
        help="pipeline: cloudinv's own account, to pin DynamoDB table ARNs to it",
    )
    parser.set_defaults(handler=print_policy)


def print_policy(args: argparse.Namespace) -> int:
    if args.template == "member-role":
        output: OutputFormat = args.output or "yaml"
        template = member_role_template(
            trusted_principal=args.trusted_principal, role_name=args.role_name
        )
        sys.stdout.write(render(template, output))
        return 0
    output = args.output or "json"
    if args.role == "reader":
        if args.split:
            sys.stdout.write(render(reader_policies(partition=args.partition), output))
            return 0
        policy = reader_policy(partition=args.partition)
        if policy_size(policy) > MANAGED_POLICY_MAX_CHARS:
            print(
                f"cloudinv: note: this policy is {policy_size(policy)} characters, over IAM's "
                f"{MANAGED_POLICY_MAX_CHARS} for one managed policy: use --split for it in "
                "parts, or --template member-role (which attaches the parts)",
                file=sys.stderr,
            )
        sys.stdout.write(render(policy, output))
        return 0
    resources = PipelineResources.from_settings(
        load_settings(args.config),
        trail_bucket=args.trail_bucket,
        trail_queue=args.trail_queue,
        trail_key_prefix=args.trail_key_prefix,
        account_id=args.account_id,
    )
    for note in resources.notes:
        print(f"cloudinv: note: {note}", file=sys.stderr)
    sys.stdout.write(render(pipeline_policy(resources), output))
    return 0
