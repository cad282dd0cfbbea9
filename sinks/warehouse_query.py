"""SQL over the Parquet warehouse with DuckDB, under the table names of the Athena DDL.

:func:`connect` opens an in-memory DuckDB database whose views read the warehouse (Hive
partitioning, ``dt`` and ``resource_type`` as text as in Athena): the cross-type
``snapshots`` and ``changes`` always (empty when no file exists yet), one typed table per
dataset and type that has files, and the views of :func:`cloudinv.sinks.athena_ddl.view_defs`.
A query written here runs unchanged in Athena.

Where the warehouse is: a local directory (DuckDB's own ``read_parquet``), or the S3
warehouse (:class:`S3Warehouse`, ``s3://bucket/prefix``). DuckDB reads S3 through its
``httpfs`` extension, which it downloads on first use and which an offline machine cannot
have; so S3 is read through pyarrow's S3 filesystem (part of the pyarrow wheel) as Arrow
datasets DuckDB scans, with the credentials of the SDK's chain (environment, profile, role,
instance metadata: as every other AWS call of cloudinv) resolved by aiobotocore and the
endpoint of ``aws.endpoint_url`` / ``AWS_ENDPOINT_URL``. Filters on ``dt`` and
``resource_type`` prune partitions in both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from cloudinv.catalog.registry import Registry, default_registry
from cloudinv.core.errors import CloudinvError
from cloudinv.sinks.athena_ddl import TableDef, table_defs, view_defs
from cloudinv.sinks.parquet_warehouse import (
    CHANGE_COLUMNS,
    DATASETS,
    RELATIONSHIP_COLUMNS,
    SNAPSHOT_COLUMNS,
    changes_schema,
    snapshots_schema,
)

__all__ = [
    "LocalWarehouse",
    "QueryResult",
    "S3Credentials",
    "S3Warehouse",
    "WarehouseQueryError",
    "WarehouseSource",
    "connect",
    "run_query",
]


class WarehouseQueryError(CloudinvError):
    """The warehouse is empty or missing, or the query failed."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


class WarehouseSource(Protocol):
    """Where the warehouse's part files are, and how DuckDB reads a set of them."""

    name: str

    def present(self) -> dict[str, list[str]]:
        """The resource types with part files, per dataset."""
        ...

    def relation(
        self, con: duckdb.DuckDBPyConnection, dataset: str, resource_type: str | None
    ) -> str:
        """A FROM-clause item reading the parts of ``dataset`` (of one type, or all)."""
        ...


_HIVE = pa.schema([pa.field("resource_type", pa.string()), pa.field("dt", pa.string())])


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class LocalWarehouse:
    """A warehouse directory, read with DuckDB's ``read_parquet``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = str(root)

    def present(self) -> dict[str, list[str]]:
        return {
            dataset: sorted(
                p.name.removeprefix("resource_type=")
                for p in (self.root / dataset).glob("resource_type=*")
                if p.is_dir() and any(p.glob("dt=*/part-*.parquet"))
            )
            for dataset in DATASETS
        }

    def relation(
        self, con: duckdb.DuckDBPyConnection, dataset: str, resource_type: str | None
    ) -> str:
        folder = f"resource_type={resource_type}" if resource_type else "resource_type=*"
        glob = self.root / dataset / folder / "dt=*" / "part-*.parquet"
        return (
            f"read_parquet({_quote(str(glob))}, hive_partitioning = true, union_by_name = true, "
            "hive_types = {'resource_type': 'VARCHAR', 'dt': 'VARCHAR'})"
        )


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


class S3Warehouse:
    """The S3 warehouse (``s3://bucket/prefix``), read as Arrow datasets over pyarrow's S3
    filesystem (see the module docstring)."""

    def __init__(
        self,
        uri: str,
        *,
        credentials: S3Credentials | None,
        region: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc:
            raise WarehouseQueryError(f"{uri!r} is not an S3 location: expected s3://bucket/prefix")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.name = f"s3://{self.bucket}/{self.prefix}"
        options: dict[str, Any] = {}
        if credentials is not None:
            options.update(
                access_key=credentials.access_key,
                secret_key=credentials.secret_key,
                session_token=credentials.token,
            )
        if region:
            options["region"] = region
        if endpoint_url:
            endpoint = urlsplit(endpoint_url)
            options.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme or "https")
        self.fs = pafs.S3FileSystem(**options)
        self._files: dict[str, list[str]] | None = None
        self._registered = 0

    def _base(self, dataset: str) -> str:
        return "/".join(p for p in (self.bucket, self.prefix, dataset) if p)

    def _list(self) -> dict[str, list[str]]:
        """Every part file, per dataset: one recursive listing each."""
        if self._files is None:
            self._files = {}
            for dataset in DATASETS:
                selector = pafs.FileSelector(
                    self._base(dataset), recursive=True, allow_not_found=True
                )
                try:
                    infos = self.fs.get_file_info(selector)
                except OSError as exc:
                    raise WarehouseQueryError(f"cannot list {self.name}: {exc}") from None
                self._files[dataset] = sorted(
                    i.path
                    for i in infos
                    if i.type == pafs.FileType.File
                    and i.base_name.startswith("part-")
                    and i.base_name.endswith(".parquet")
                )
        return self._files

    def present(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for dataset, files in self._list().items():
            types = set()
            for path in files:
                folder = path[len(self._base(dataset)) + 1 :].split("/", 1)[0]
                types.add(folder.removeprefix("resource_type="))
            out[dataset] = sorted(types)
        return out

    def relation(
        self, con: duckdb.DuckDBPyConnection, dataset: str, resource_type: str | None
    ) -> str:
        base = self._base(dataset)
        files = self._list()[dataset]
        if resource_type is not None:
            files = [f for f in files if f.startswith(f"{base}/resource_type={resource_type}/")]
        fields = _schema_of(dataset, resource_type)
        data = ds.dataset(
            files,
            schema=pa.schema([*fields, *_HIVE]),
            format="parquet",
            filesystem=self.fs,
            partitioning=ds.partitioning(_HIVE, flavor="hive"),
            partition_base_dir=base,
        )
        self._registered += 1
        name = f"_s3_{dataset}_{self._registered}"
        con.register(name, data)
        return name


def _schema_of(dataset: str, resource_type: str | None) -> Sequence[pa.Field]:
    """The columns the view reads: the common ones, or a registered type's typed ones."""
    if dataset == "relationships":
        return RELATIONSHIP_COLUMNS
    if resource_type is None:
        return SNAPSHOT_COLUMNS if dataset == "snapshots" else CHANGE_COLUMNS
    schema = (
        snapshots_schema(resource_type) if dataset == "snapshots" else changes_schema(resource_type)
    )
    return list(schema)


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CATALOG_WORDS = frozenset({"information_schema", "show", "duckdb_tables", "duckdb_views"})
"""Words of queries about the catalog itself: every table and view is made for them."""


def connect(
    source: WarehouseSource | Path,
    registry: Registry | None = None,
    *,
    for_query: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the warehouse's tables and views over ``source``.

    With ``for_query``, only the tables and views that query names (and those they read)
    are made: making one reads the footers of its files, so a query over one table does not
    pay for the hundreds of others."""
    registry = registry or default_registry()
    if isinstance(source, Path):
        source = LocalWarehouse(source)
    present = source.present()
    if not any(present.values()):
        raise WarehouseQueryError(
            f"the warehouse at {source.name} has no Parquet files yet: run the worker with "
            "storage.targets including 'local' or 's3' (cloudinv demo writes 'local'), or "
            "pass --warehouse DIR or s3://bucket/prefix"
        )
    defs = table_defs(registry, types={t for found in present.values() for t in found})
    tables = [t for t in defs if t.resource_type is None or t.resource_type in present[t.dataset]]
    views = view_defs(tables)
    wanted = _names_read(for_query, views) if for_query is not None else None
    if wanted is not None and wanted & _CATALOG_WORDS:
        wanted = None
    con = duckdb.connect(":memory:")
    for table in tables:
        if wanted is not None and table.name not in wanted:
            continue
        columns = [f.name for f in table.columns]
        if table.resource_type is None:
            if present[table.dataset]:
                select = ", ".join(f'"{c}"' for c in [*columns, "resource_type", "dt"])
                relation = source.relation(con, table.dataset, None)
                con.execute(f"CREATE VIEW {table.name} AS SELECT {select} FROM {relation}")
            else:
                _empty_view(con, table)
        else:
            select = ", ".join(f'"{c}"' for c in [*columns, "dt"])
            relation = source.relation(con, table.dataset, table.resource_type)
            con.execute(f"CREATE VIEW {table.name} AS SELECT {select} FROM {relation}")
    for name, select in views:
        if wanted is None or name in wanted:
            con.execute(f"CREATE VIEW {name} AS {select}")
    return con


def _names_read(sql: str, views: Sequence[tuple[str, str]]) -> set[str]:
    """Every word of ``sql`` (lower case), and of the views it names, transitively: a
    superset of the tables and views the query reads."""
    selects = dict(views)
    names = {w.lower() for w in _WORD.findall(sql)}
    todo = [n for n in names if n in selects]
    while todo:
        for word in _WORD.findall(selects[todo.pop()]):
            word = word.lower()
            if word not in names:
                names.add(word)
                if word in selects:
                    todo.append(word)
    return names


def table_names(source: WarehouseSource | Path, registry: Registry | None = None) -> list[str]:
    """The tables and views :func:`connect` can make over ``source``."""
    registry = registry or default_registry()
    if isinstance(source, Path):
        source = LocalWarehouse(source)
    present = source.present()
    defs = table_defs(registry, types={t for found in present.values() for t in found})
    tables = [t for t in defs if t.resource_type is None or t.resource_type in present[t.dataset]]
    return sorted([t.name for t in tables] + [name for name, _ in view_defs(tables)])


def _empty_view(con: duckdb.DuckDBPyConnection, table: TableDef) -> None:
    schema = pa.schema(
        [*table.columns, pa.field("resource_type", pa.string()), pa.field("dt", pa.string())]
    )
    con.register(f"_empty_{table.name}", schema.empty_table())
    con.execute(f"CREATE VIEW {table.name} AS SELECT * FROM _empty_{table.name}")


def run_query(
    source: WarehouseSource | Path, sql: str, registry: Registry | None = None
) -> QueryResult:
    """Run one query over the warehouse at ``source`` (a directory or a source)."""
    if not sql.strip():
        raise WarehouseQueryError("expected a SQL query, got an empty string")
    con = connect(source, registry, for_query=sql)
    try:
        try:
            cursor = con.execute(sql)
        except duckdb.Error as exc:
            tables = table_names(source, registry)
            raise WarehouseQueryError(
                f"query failed: {exc}\n(tables and views here: {', '.join(tables)})"
            ) from None
        if cursor.description is None:
            return QueryResult([], [])
        columns = [d[0] for d in cursor.description]
        return QueryResult(columns, cursor.fetchall())
    finally:
        con.close()
