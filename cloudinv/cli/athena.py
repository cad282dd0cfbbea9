"""``cloudinv athena ddl``: the Athena tables and views over the S3 Parquet warehouse.

Prints CREATE EXTERNAL TABLE statements (partition projection, so no crawler or MSCK REPAIR)
whose configuration columns are typed from botocore's output shapes, then the views (see
sinks/athena_ddl.py). Run each statement in Athena (one per query). The bucket and prefix
default to ``storage.s3_bucket`` and ``storage.s3_prefix``. Tables are created IF NOT
EXISTS: when an upgrade changes a type's columns, DROP that table first (its data stays).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

from cloudinv.core.errors import ConfigError
from cloudinv.core.settings import load_settings


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
    ddl.set_defaults(handler=run_ddl)


def run_ddl(args: argparse.Namespace) -> int:
    from cloudinv.sinks.athena_ddl import DEFAULT_SINCE, athena_ddl

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
    sys.stdout.write(text)
    return 0
