"""``cloudinv sql "SELECT ..."``: SQL over the local Parquet warehouse (DuckDB).

The tables and views have the names ``cloudinv athena ddl`` gives them in Athena
(``snapshots``, ``changes``, ``snapshots_ec2_instance``, ``snapshots_current``...), so a
query tried here runs there. Output: a table (default), ``--format csv`` or ``--format json``
(an array of objects). The warehouse is ``<storage.data_dir>/warehouse`` unless
``--warehouse DIR`` is given.
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from cloudinv.core.settings import load_settings


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
    parser.add_argument("--warehouse", type=Path, help="warehouse directory")
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


def run_sql(args: argparse.Namespace) -> int:
    from cloudinv.sinks.warehouse_query import run_query

    root = args.warehouse
    if root is None:
        root = load_settings(args.config).data_dir / "warehouse"
    result = run_query(root, args.query)
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
