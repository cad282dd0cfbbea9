"""Table and view definitions of the Parquet warehouse, for Athena and for DuckDB alike.

Tables (the names are the same in Athena and in ``cloudinv sql``):

``snapshots``, ``changes``
    Every resource type: the columns every file has (:data:`~cloudinv.sinks.parquet_warehouse.
    SNAPSHOT_COLUMNS`, :data:`~cloudinv.sinks.parquet_warehouse.CHANGE_COLUMNS`), partitioned by
    ``resource_type`` and ``dt``. Configurations are JSON text (``json_extract`` works in
    both engines).
``relationships``
    The relationships changes added and removed (:data:`~cloudinv.sinks.parquet_warehouse.
    RELATIONSHIP_COLUMNS`), partitioned by the source's ``resource_type`` and ``dt``.
``snapshots_<type>``, ``changes_<type>``
    One per registered type (``snapshots_ec2_instance`` for ``AWS::EC2::Instance``), reading
    only that type's partitions, with ``configuration`` (and ``prior_configuration`` for
    changes) typed from botocore's output shapes (:mod:`cloudinv.sinks.warehouse_schema`).
    Partitioned by ``dt``.

Views (their SQL is the same text in both engines):

``snapshots_current``
    The rows of each type's latest snapshot day: the inventory as last exported.
``snapshots_latest_per_day``
    One row per (type, day, key): the latest snapshot of the day.
``changes_latest_per_day``
    One row per (type, day, key): the day's last change (duplicates from replays collapse;
    of a change published again with its attribution, the attributed copy, and of two
    attributed copies the better ranked, ``attribution_rank`` then the event's time and id:
    the copy compaction keeps, as a change is published again only with a better
    attribution. The one exception: an inherited event replaced by another inherited one,
    which need not rank higher; compaction keeps the later, the view the better ranked).
``relationship_intervals``
    One row per edge lifetime: ``source_key`` ``relationship`` ``target_key`` from
    ``valid_from`` to ``valid_to`` (null while it holds), opened by ``opened_by``. The edges
    of a time T: ``valid_from <= T AND (valid_to IS NULL OR valid_to > T)``.
``snapshots_<type>_current``
    ``snapshots_current`` for one type, with the typed configuration.

Athena tables use partition projection: ``dt`` is a date range from ``since`` to NOW,
``resource_type`` an enum of the registered types (or ``injected``: every query must then
name it), so no ``MSCK REPAIR`` or crawler is needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

import pyarrow as pa

from cloudinv.catalog.registry import Registry, default_registry
from cloudinv.sinks.parquet_warehouse import (
    CHANGE_COLUMNS,
    RELATIONSHIP_COLUMNS,
    SNAPSHOT_COLUMNS,
    changes_schema,
    snapshots_schema,
)
from cloudinv.sinks.warehouse_schema import athena_type

__all__ = [
    "DEFAULT_SINCE",
    "TableDef",
    "athena_ddl",
    "table_defs",
    "table_name",
    "view_defs",
]

DEFAULT_SINCE = date(2024, 1, 1)
Projection = Literal["enum", "injected"]


def table_name(dataset: str, cfn_type: str | None = None) -> str:
    """``snapshots`` or, for one type, ``snapshots_ec2_instance``."""
    if cfn_type is None:
        return dataset
    _, service, resource = cfn_type.split("::")
    return f"{dataset}_{re.sub(r'[^a-z0-9]', '', service.lower())}_{resource.lower()}"


@dataclass(frozen=True)
class TableDef:
    """One warehouse table: its columns (Arrow types) and where its files are."""

    name: str
    dataset: str
    resource_type: str | None
    """``None`` for the cross-type table (partitioned by ``resource_type`` too)."""
    columns: tuple[pa.Field, ...]

    @property
    def partition_columns(self) -> tuple[str, ...]:
        return ("resource_type", "dt") if self.resource_type is None else ("dt",)


def table_defs(
    registry: Registry | None = None, types: Iterable[str] | None = None
) -> list[TableDef]:
    """The cross-type tables, then one table per dataset and registered type (of ``types``
    only, when given)."""
    registry = registry or default_registry()
    tables = [
        TableDef("snapshots", "snapshots", None, SNAPSHOT_COLUMNS),
        TableDef("changes", "changes", None, CHANGE_COLUMNS),
        TableDef("relationships", "relationships", None, RELATIONSHIP_COLUMNS),
    ]
    wanted = None if types is None else set(types)
    for cfn_type in registry.types():
        if wanted is not None and cfn_type not in wanted:
            continue
        for dataset, schema in (
            ("snapshots", snapshots_schema(cfn_type)),
            ("changes", changes_schema(cfn_type)),
        ):
            tables.append(TableDef(table_name(dataset, cfn_type), dataset, cfn_type, tuple(schema)))
    names = [t.name for t in tables]
    if len(names) != len(set(names)):
        raise ValueError("two resource types map to the same table name")
    return tables


def _columns(fields: Iterable[pa.Field], *extra: str) -> str:
    return ", ".join([*(f'"{f.name}"' for f in fields), *(f'"{e}"' for e in extra)])


def view_defs(tables: Sequence[TableDef], database: str | None = None) -> list[tuple[str, str]]:
    """(name, SELECT) of every view over ``tables``; the SQL runs in Athena and DuckDB.

    With ``database``, the views name their tables in it (an Athena view resolves names
    where it is queried from, not where it was created).
    """

    def ref(name: str) -> str:
        return f'"{database}"."{name}"' if database else name

    views: list[tuple[str, str]] = []
    snapshot_cols = _columns(SNAPSHOT_COLUMNS, "resource_type", "dt")
    change_cols = _columns(CHANGE_COLUMNS, "resource_type", "dt")
    views.append(
        (
            "snapshots_current",
            f"SELECT {snapshot_cols} FROM (SELECT s.*, max(s.dt) OVER "
            f"(PARTITION BY s.resource_type) AS latest_dt FROM {ref('snapshots')} s) t "
            "WHERE t.dt = t.latest_dt",
        )
    )
    views.append(
        (
            "snapshots_latest_per_day",
            f"SELECT {snapshot_cols} FROM (SELECT s.*, row_number() OVER (PARTITION BY "
            's.resource_type, s.dt, s."key" ORDER BY s.snapshot_at DESC) AS rn '
            f"FROM {ref('snapshots')} s) t WHERE t.rn = 1",
        )
    )
    views.append(
        (
            "changes_latest_per_day",
            f"SELECT {change_cols} FROM (SELECT c.*, row_number() OVER (PARTITION BY "
            'c.resource_type, c.dt, c."key" ORDER BY c.captured_at DESC, '
            "(c.attribution IS NULL) ASC, c.attribution_rank DESC NULLS LAST, "
            "c.attribution.event_time DESC, c.attribution.event_id DESC, c.detected_at DESC, "
            f"c.change_id DESC) AS rn FROM {ref('changes')} c) t WHERE t.rn = 1",
        )
    )
    if any(t.name == "relationships" for t in tables):
        # Each added edge runs to the next event of the same edge (its removal), if any.
        views.append(
            (
                "relationship_intervals",
                "SELECT resource_type AS source_type, source_key, account_id, region, "
                "relationship, target_key, target_type, captured_at AS valid_from, "
                "next_at AS valid_to, change_id AS opened_by FROM (SELECT r.*, "
                "lead(r.captured_at) OVER (PARTITION BY r.source_key, r.relationship, "
                "r.target_key ORDER BY r.captured_at, r.action) AS next_at FROM (SELECT "
                "DISTINCT resource_type, source_key, account_id, region, relationship, "
                "target_key, target_type, action, captured_at, change_id "
                f"FROM {ref('relationships')}) r) t WHERE t.action = 'added'",
            )
        )
    for table in tables:
        if table.resource_type is None or table.dataset != "snapshots":
            continue
        cols = _columns(table.columns, "dt")
        views.append(
            (
                f"{table.name}_current",
                f"SELECT {cols} FROM (SELECT s.*, max(s.dt) OVER () AS latest_dt "
                f"FROM {ref(table.name)} s) t WHERE t.dt = t.latest_dt",
            )
        )
    return views


def _location(bucket: str, prefix: str, table: TableDef) -> str:
    root = f"s3://{bucket}/{prefix.strip('/')}/" if prefix.strip("/") else f"s3://{bucket}/"
    if table.resource_type is None:
        return f"{root}{table.dataset}/"
    return f"{root}{table.dataset}/resource_type={table.resource_type}/"


def athena_ddl(
    bucket: str,
    prefix: str = "cloudinv",
    *,
    database: str | None = None,
    since: date = DEFAULT_SINCE,
    projection: Projection = "enum",
    registry: Registry | None = None,
) -> str:
    """Every CREATE EXTERNAL TABLE and CREATE VIEW statement, separated by blank lines."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise ValueError(f"{bucket!r} is not an S3 bucket name")
    registry = registry or default_registry()
    tables = table_defs(registry)

    def qualify(name: str) -> str:
        return f"`{database}`.`{name}`" if database else f"`{name}`"

    statements: list[str] = []
    if database:
        statements.append(f"CREATE DATABASE IF NOT EXISTS `{database}`;")
    for table in tables:
        location = _location(bucket, prefix, table)
        columns = ",\n".join(f"  `{f.name}` {athena_type(f.type)}" for f in table.columns)
        properties = [
            ("projection.enabled", "true"),
            ("projection.dt.type", "date"),
            ("projection.dt.format", "yyyy-MM-dd"),
            ("projection.dt.range", f"{since.isoformat()},NOW"),
            ("projection.dt.interval", "1"),
            ("projection.dt.interval.unit", "DAYS"),
        ]
        if table.resource_type is None:
            partitions = "`resource_type` string, `dt` string"
            if projection == "enum":
                values = ",".join(registry.types())
                properties += [
                    ("projection.resource_type.type", "enum"),
                    ("projection.resource_type.values", values),
                ]
            else:
                properties.append(("projection.resource_type.type", "injected"))
            template = f"{location}resource_type=${{resource_type}}/dt=${{dt}}/"
        else:
            partitions = "`dt` string"
            template = f"{location}dt=${{dt}}/"
        properties += [
            ("storage.location.template", template),
            ("parquet.compression", "SNAPPY"),
        ]
        props = ",\n".join(f"  '{k}'='{v}'" for k, v in properties)
        statements.append(
            f"CREATE EXTERNAL TABLE IF NOT EXISTS {qualify(table.name)} (\n{columns}\n)\n"
            f"PARTITIONED BY ({partitions})\nSTORED AS PARQUET\nLOCATION '{location}'\n"
            f"TBLPROPERTIES (\n{props}\n);"
        )
    for name, select in view_defs(tables, database):
        target = f'"{database}"."{name}"' if database else f'"{name}"'
        statements.append(f"CREATE OR REPLACE VIEW {target} AS\n{select};")
    return "\n\n".join(statements) + "\n"
