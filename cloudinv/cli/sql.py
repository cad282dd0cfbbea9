"""``cloudinv sql "SELECT ..."``: SQL over the Parquet warehouse, local or S3 (DuckDB).

The tables and views have the names ``cloudinv athena ddl`` gives them in Athena
(``snapshots``, ``changes``, ``snapshots_ec2_instance``, ``snapshots_current``...), so a
query tried here runs there. Output: a table (default), ``--format csv`` or ``--format json``
(an array of objects). The warehouse is ``--warehouse DIR`` or ``--warehouse
s3://bucket/prefix``; by default ``<storage.data_dir>/warehouse`` when ``storage.targets``
includes ``local``, else ``s3://<storage.s3_bucket>/<storage.s3_prefix>`` when it includes
``s3``. S3 is read with the credentials of the AWS SDK's chain and ``aws.endpoint_url`` (or
``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiobotocore.session import get_session

from cloudinv.core.settings import load_settings

if TYPE_CHECKING:
    from cloudinv.sinks.warehouse_query import WarehouseSource


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sql",
        help="run SQL over the local Parquet warehouse (same tables as Athena)",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("query", metavar="SQL", help="one SQL statement")
    parser.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="output format"
    )
    parser.add_argument(
        "--warehouse", metavar="DIR|s3://BUCKET/PREFIX", help="warehouse directory or S3 location"
    )
    parser.set_defaults(handler=run_sql)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(value, default=_plain).decode()
    return str(_plain(value))


async def _source(args: argparse.Namespace) -> WarehouseSource:
    # DuckDB and pyarrow load here, not for every command of the CLI.
    from cloudinv.sinks.warehouse_query import LocalWarehouse, S3Credentials, S3Warehouse

    settings = load_settings(args.config)
    storage = settings.storage
    location: str | None = args.warehouse
    if location is None:
        if "local" in storage.targets or "s3" not in storage.targets or not storage.s3_bucket:
            return LocalWarehouse(settings.data_dir / "warehouse")
        location = f"s3://{storage.s3_bucket}/{storage.s3_prefix.strip('/')}"
    if not location.startswith("s3://"):
        return LocalWarehouse(Path(location))
    session = get_session()
    found = await session.get_credentials()
    credentials = None
    if found is not None:
        frozen = await found.get_frozen_credentials()
        credentials = S3Credentials(frozen.access_key, frozen.secret_key, frozen.token)
    return S3Warehouse(
        location,
        credentials=credentials,
        region=storage.s3_region or session.get_config_variable("region"),
        endpoint_url=settings.aws.effective_endpoint(),
    )


async def run_sql(args: argparse.Namespace) -> int:
    from cloudinv.sinks.warehouse_query import run_query

    source = await _source(args)
    result = await asyncio.to_thread(run_query, source, args.query)
    if args.format == "json":
        rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
        sys.stdout.write(orjson.dumps(rows, default=_plain).decode() + "\n")
    elif args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([_cell(v) for v in row] for row in result.rows)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*result.columns, caption=f"{len(result.rows)} row(s)")
        for row in result.rows:
            table.add_row(*(_cell(v) for v in row))
        Console(width=max(120, Console().width)).print(table)
    return 0
