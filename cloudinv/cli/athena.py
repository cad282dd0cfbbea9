"""``cloudinv athena ddl``: the Athena tables and views over the S3 Parquet warehouse.

Prints CREATE EXTERNAL TABLE statements (partition projection, so no crawler or MSCK REPAIR)
whose configuration columns are typed from botocore's output shapes, then the views, or with
``--apply`` runs them in Athena one by one (StartQueryExecution), waiting for each and
reporting every failure (exit 1 if any). The bucket and prefix default to
``storage.s3_bucket`` and ``storage.s3_prefix``. Tables are created IF NOT EXISTS: when an
upgrade changes a type's columns, DROP that table first (its data stays), then apply again.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

from aiobotocore.session import get_session

from cloudinv.core import bounded
from cloudinv.core.errors import ConfigError
from cloudinv.core.settings import load_settings
from cloudinv.sinks.athena_apply import StatementResult, apply_statements, split_statements
from cloudinv.sinks.athena_ddl import DEFAULT_SINCE, athena_ddl


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "athena",
        help="Athena DDL for the S3 Parquet warehouse",
        description="Athena over the S3 Parquet warehouse.",
    )
    commands = parser.add_subparsers(dest="athena_command", metavar="COMMAND", required=True)
    ddl = commands.add_parser(
        "ddl",
        help="print CREATE EXTERNAL TABLE and CREATE VIEW statements",
        description=(__doc__ or "").replace("``", "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ddl.add_argument("--bucket", help="S3 bucket of the warehouse (default storage.s3_bucket)")
    ddl.add_argument("--prefix", help="key prefix in the bucket (default storage.s3_prefix)")
    ddl.add_argument("--database", help="create and qualify the tables in this Athena database")
    ddl.add_argument(
        "--since",
        type=date.fromisoformat,
        default=None,
        help="first day of the dt partition projection, YYYY-MM-DD (default 2024-01-01)",
    )
    ddl.add_argument(
        "--resource-type-projection",
        choices=("enum", "injected"),
        default="enum",
        help="enum: every registered type (default); injected: queries must name the type",
    )
    apply = ddl.add_argument_group("running the statements in Athena")
    apply.add_argument(
        "--apply", action="store_true", help="run each statement in Athena instead of printing"
    )
    apply.add_argument("--workgroup", help="Athena workgroup (default: the account's primary)")
    apply.add_argument(
        "--output-location",
        metavar="S3_URI",
        help="s3://bucket/prefix/ for query results (needed unless the workgroup sets one)",
    )
    apply.add_argument("--region", help="Athena's region (default: the AWS configuration's)")
    ddl.set_defaults(handler=run_ddl)


def run_ddl(args: argparse.Namespace) -> int:
    # Imported when the command runs: every command's parser is built at start-up, and the
    # warehouse schema (pyarrow, botocore models) would slow `cloudinv --help` down.

    settings = load_settings(args.config)
    bucket = args.bucket or settings.storage.s3_bucket
    if not bucket:
        raise ConfigError("no bucket: pass --bucket or set storage.s3_bucket")
    prefix = settings.storage.s3_prefix if args.prefix is None else args.prefix
    try:
        text = athena_ddl(
            bucket,
            prefix,
            database=args.database,
            since=args.since or DEFAULT_SINCE,
            projection=args.resource_type_projection,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not args.apply:
        sys.stdout.write(text)
        return 0
    if args.output_location and not args.output_location.startswith("s3://"):
        raise ConfigError(f"--output-location {args.output_location}: expected s3://bucket/prefix/")
    region = args.region or get_session().get_config_variable("region")
    if not region:
        raise ConfigError("no region for Athena: pass --region or set AWS_DEFAULT_REGION")
    statements = split_statements(text)
    done = 0

    def report(result: StatementResult) -> None:
        nonlocal done
        done += 1
        mark = "ok " if result.ok else "FAILED"
        line = f"[{done}/{len(statements)}] {mark} {result.title}"
        print(line if result.ok else f"{line}: {result.state}: {result.reason}", flush=True)

    results = bounded.run(
        apply_statements(
            statements,
            region=region,
            workgroup=args.workgroup,
            output_location=args.output_location,
            endpoint_url=settings.aws.effective_endpoint(),
            on_result=report,
        )
    )
    failed = [r for r in results if not r.ok]
    print(
        f"{len(results) - len(failed)} of {len(results)} statement(s) applied"
        + (f", {len(failed)} failed" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0
