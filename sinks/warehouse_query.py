"""SQL over the local Parquet warehouse with DuckDB, under the table names of the Athena DDL.

:func:`connect` opens an in-memory DuckDB database whose views read the warehouse directory
(``read_parquet`` with Hive partitioning, ``dt`` and ``resource_type`` as text as in Athena):
the cross-type ``snapshots`` and ``changes`` always (empty when no file exists yet), one
typed table per dataset and type that has files, and the views of
:func:`cloudinv.sinks.athena_ddl.view_defs`. A query written here runs unchanged in Athena.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from cloudinv.catalog.registry import Registry, default_registry
from cloudinv.core.errors import CloudinvError
from cloudinv.sinks.athena_ddl import TableDef, table_defs, view_defs
from cloudinv.sinks.parquet_warehouse import DATASETS

__all__ = ["QueryResult", "WarehouseQueryError", "connect", "run_query"]


class WarehouseQueryError(CloudinvError):
    """The warehouse is empty or missing, or the query failed."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _read(glob: Path) -> str:
    return (
        f"read_parquet({_quote(glob)}, hive_partitioning = true, union_by_name = true, "
        "hive_types = {'resource_type': 'VARCHAR', 'dt': 'VARCHAR'})"
    )


def _has_parts(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("dt=*/part-*.parquet"))


def connect(root: Path, registry: Registry | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the warehouse's tables and views over ``root``."""
    registry = registry or default_registry()
    present = {
        dataset: sorted(
            p.name.removeprefix("resource_type=")
            for p in (root / dataset).glob("resource_type=*")
            if _has_parts(p)
        )
        for dataset in DATASETS
    }
    if not any(present.values()):
        raise WarehouseQueryError(
            f"the warehouse at {root} has no Parquet files yet: run the worker with "
            "storage.targets including 'local' (cloudinv demo does), or pass --warehouse DIR"
        )
    con = duckdb.connect(":memory:")
    defs = table_defs(registry, types={t for found in present.values() for t in found})
    created: list[TableDef] = []
    for table in defs:
        columns = [f.name for f in table.columns]
        if table.resource_type is None:
            if present[table.dataset]:
                select = ", ".join(f'"{c}"' for c in [*columns, "resource_type", "dt"])
                glob = root / table.dataset / "resource_type=*" / "dt=*" / "part-*.parquet"
                con.execute(f"CREATE VIEW {table.name} AS SELECT {select} FROM {_read(glob)}")
            else:
                _empty_view(con, table)
            created.append(table)
        elif table.resource_type in present[table.dataset]:
            folder = root / table.dataset / f"resource_type={table.resource_type}"
            select = ", ".join(f'"{c}"' for c in [*columns, "dt"])
            glob = folder / "dt=*" / "part-*.parquet"
            con.execute(f"CREATE VIEW {table.name} AS SELECT {select} FROM {_read(glob)}")
            created.append(table)
    for name, select in view_defs(created):
        con.execute(f"CREATE VIEW {name} AS {select}")
    return con


def _empty_view(con: duckdb.DuckDBPyConnection, table: TableDef) -> None:
    schema = pa.schema(
        [*table.columns, pa.field("resource_type", pa.string()), pa.field("dt", pa.string())]
    )
    con.register(f"_empty_{table.name}", schema.empty_table())
    con.execute(f"CREATE VIEW {table.name} AS SELECT * FROM _empty_{table.name}")


def run_query(root: Path, sql: str, registry: Registry | None = None) -> QueryResult:
    """Run one query over the warehouse at ``root``."""
    if not sql.strip():
        raise WarehouseQueryError("expected a SQL query, got an empty string")
    con = connect(root, registry)
    try:
        try:
            cursor = con.execute(sql)
        except duckdb.Error as exc:
            tables = sorted(
                row[0]
                for row in con.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE NOT starts_with(table_name, '_empty_')"
                ).fetchall()
            )
            raise WarehouseQueryError(
                f"query failed: {exc}\n(tables and views here: {', '.join(tables)})"
            ) from None
        if cursor.description is None:
            return QueryResult([], [])
        columns = [d[0] for d in cursor.description]
        return QueryResult(columns, cursor.fetchall())
    finally:
        con.close()
