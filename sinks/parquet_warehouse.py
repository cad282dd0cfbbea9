"""The Parquet warehouse: daily snapshots and changes as Hive-partitioned Parquet files.

Layout (the same in every target, snappy-compressed Parquet)::

    <root>/snapshots/resource_type=<AWS::Svc::Type>/dt=YYYY-MM-DD/part-snapshot.parquet
    <root>/changes/resource_type=<AWS::Svc::Type>/dt=YYYY-MM-DD/part-<stem>.parquet
    <root>/relationships/resource_type=<AWS::Svc::Type>/dt=YYYY-MM-DD/part-<stem>.parquet

Targets: :class:`LocalTarget` (a directory, ``<data_dir>/warehouse`` by default: the embedded
default, queried by ``cloudinv sql``) and :class:`S3Target` (``s3://<bucket>/<prefix>/``,
queried by Athena with the tables of ``cloudinv athena ddl``). ``resource_type`` and ``dt``
are partition columns: they are in the path, not in the files.

Columns of ``snapshots`` (one full snapshot per day and type, every account in one file,
``part-snapshot.parquet``, split in ``part-snapshot-<n>.parquet`` above ``max_rows_per_file``:
every resource current at ``snapshot_at``; rewritten while the day lasts, so the last write of
a day is its end-of-day state; one file is replaced atomically, so a reader sees the old
snapshot or the new one):

=====================  ==================  =================================================
column                 type                meaning
=====================  ==================  =================================================
key                    string              the resource key (its ARN)
resource_id            string
account_id             string
region                 string              or ``global``
name                   string              may be null
config_hash            string              hash of the normalized configuration
change_id              string              the change that opened this version
valid_from             timestamp (UTC)     start of this version
snapshot_at            timestamp (UTC)     the instant the snapshot describes
configuration_json     string              the configuration as JSON (every field)
configuration          struct<...>         typed from botocore's shapes (registered types)
=====================  ==================  =================================================

Columns of ``changes`` (one row per :class:`~cloudinv.core.models.ChangeEvent`; ``dt`` is the
day of ``captured_at``):

=========================  ==================  =============================================
column                     type                meaning
=========================  ==================  =============================================
change_id                  string              deterministic: unique per change
key                        string
resource_id                string
account_id                 string
region                     string
change_type                string              created, modified or deleted
name                       string
before_hash, after_hash    string              null before a creation / after a deletion
changed_paths              array<string>       JSON pointers of what changed
patch_json                 string              the RFC 6902 patch, as JSON
captured_at, detected_at   timestamp (UTC)
scan_id                    string
attribution                struct<event_id, event_name, event_time, principal_arn,
                                  principal_name, source_ip, match>   the CloudTrail cause, if
                                  known; ``match`` how sure (declared, referenced, inherited)
attribution_rank           bigint              how well it explains the change, higher is
                                                 better (:func:`~cloudinv.sinks.versioning.
                                                 rank_score`); null without attribution
prior_configuration_json   string
configuration_json         string
prior_configuration        struct<...>         typed, as ``configuration`` of snapshots
configuration              struct<...>
=========================  ==================  =============================================

Columns of ``relationships`` (one row per relationship a change added or removed, from its
``relationships_added`` / ``relationships_removed``; ``resource_type`` is the source's type,
``dt`` the day of ``captured_at``; written with the changes part of the same rows, under the
same name, and compacted as it is). The view ``relationship_intervals`` turns them into one
row per edge lifetime, ``valid_from`` to ``valid_to`` (null while it holds):

=========================  ==================  =============================================
column                     type                meaning
=========================  ==================  =============================================
change_id                  string              the change that added or removed it
source_key                 string              the resource naming the other
account_id, region         string              the source's
relationship               string              e.g. ``is contained in``
target_key, target_type    string              the resource named
action                     string              ``added`` or ``removed``
captured_at                timestamp (UTC)     when (the change's capture time)
=========================  ==================  =============================================

The typed struct columns exist only in files of registered types (see
:mod:`cloudinv.sinks.warehouse_schema`); the ``*_json`` columns are in every file, so the cross-type
tables (``snapshots``, ``changes``) read the same columns from every partition.

Idempotence. Part names are deterministic: a snapshot part is named by its position and
replaced whole (a partition's parts no longer produced are deleted); a changes part by its
origin, the Kafka partition and first offset it was read from (``part-p3-o<offset>``), or,
without one, a hash of its change ids. A batch written again after a crash or a retried
upload replaces the same object instead of adding a second, and a replay cut into batches
differently deletes the parts it supersedes (see :meth:`ParquetWarehouse.flush`), so once a
replay has caught up every change is in one part. Readers may still see a change twice for
the moment between two such writes (``changes_latest_per_day`` keeps one per ``change_id``
and day). Writes are atomic per file (rename locally, one PUT or completed multipart upload on
S3). Parquet encoding runs on a worker thread, never on the event loop.

Compaction. Every flush of every Kafka partition adds a changes part, so a day of a busy type
gathers hundreds of small files, and every reader (Athena, DuckDB) pays a request and a footer
read for each. :meth:`ParquetWarehouse.compact` merges a changes partition's settled parts
(written more than ``settled_s`` ago: long committed, so no replay rewrites them) into one
file (more above ``max_rows_per_file``), ``part-c<digest>[-<n>].parquet``, named by the
parts it replaces, keeping one row per ``change_id`` and ordered by ``captured_at``. The
merged file is put in place whole (rename, one PUT) before the parts it replaces are deleted:
a reader never misses a change; in the instant between the two it may see one twice, as
during a replay (``changes_latest_per_day`` keeps one). Compacting the same parts twice (two
workers at once) writes the same name with the same content.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import io
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from cloudinv.core.errors import ConfigError
from cloudinv.core.models import ChangeEvent, canonical_json
from cloudinv.core.retry import retry
from cloudinv.sinks.store import ResourceVersion
from cloudinv.sinks.versioning import rank_score
from cloudinv.sinks.warehouse_schema import TIMESTAMP, CoerceStats, coerce, configuration_type

__all__ = [
    "CHANGE_COLUMNS",
    "DATASETS",
    "RELATIONSHIP_COLUMNS",
    "SNAPSHOT_COLUMNS",
    "LocalTarget",
    "ParquetWarehouse",
    "PartitionKey",
    "S3Target",
    "StoredPart",
    "WarehouseError",
    "WarehouseStats",
    "WarehouseTarget",
    "changes_schema",
    "changes_table",
    "parquet_bytes",
    "part_path",
    "relationships_table",
    "snapshots_schema",
    "snapshots_table",
    "targets_for",
]

log = logging.getLogger(__name__)

DATASETS = ("snapshots", "changes", "relationships")

ATTRIBUTION = pa.struct(
    [
        pa.field("event_id", pa.string()),
        pa.field("event_name", pa.string()),
        pa.field("event_time", TIMESTAMP),
        pa.field("principal_arn", pa.string()),
        pa.field("principal_name", pa.string()),
        pa.field("source_ip", pa.string()),
        pa.field("match", pa.string()),
    ]
)

SNAPSHOT_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("key", pa.string(), nullable=False),
    pa.field("resource_id", pa.string(), nullable=False),
    pa.field("account_id", pa.string(), nullable=False),
    pa.field("region", pa.string(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("config_hash", pa.string(), nullable=False),
    pa.field("change_id", pa.string(), nullable=False),
    pa.field("valid_from", TIMESTAMP, nullable=False),
    pa.field("snapshot_at", TIMESTAMP, nullable=False),
    pa.field("configuration_json", pa.string(), nullable=False),
)
"""The columns every snapshots file has (``configuration`` follows for registered types)."""

CHANGE_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("change_id", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("resource_id", pa.string(), nullable=False),
    pa.field("account_id", pa.string(), nullable=False),
    pa.field("region", pa.string(), nullable=False),
    pa.field("change_type", pa.string(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("before_hash", pa.string()),
    pa.field("after_hash", pa.string()),
    pa.field("changed_paths", pa.list_(pa.string())),
    pa.field("patch_json", pa.string()),
    pa.field("captured_at", TIMESTAMP, nullable=False),
    pa.field("detected_at", TIMESTAMP, nullable=False),
    pa.field("scan_id", pa.string()),
    pa.field("attribution", ATTRIBUTION),
    pa.field("attribution_rank", pa.int64()),
    pa.field("prior_configuration_json", pa.string()),
    pa.field("configuration_json", pa.string()),
)
"""The columns every changes file has (typed configurations follow for registered types)."""

RELATIONSHIP_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("change_id", pa.string(), nullable=False),
    pa.field("source_key", pa.string(), nullable=False),
    pa.field("account_id", pa.string(), nullable=False),
    pa.field("region", pa.string(), nullable=False),
    pa.field("relationship", pa.string(), nullable=False),
    pa.field("target_key", pa.string(), nullable=False),
    pa.field("target_type", pa.string(), nullable=False),
    pa.field("action", pa.string(), nullable=False),
    pa.field("captured_at", TIMESTAMP, nullable=False),
)
"""The columns of every relationships file."""
_RELATIONSHIP_ROW = ("change_id", "relationship", "target_key", "action")
"""What identifies a relationships row (compaction keeps one of each)."""

SNAPSHOT_STEM = "snapshot"
COMPACTED_PREFIX = "c"
SETTLED_S = 60.0
"""Age after which a changes part is compacted: its batch was committed long before."""

_SAFE_STEM = re.compile(r"^[A-Za-z0-9._=-]+$")
_PART_NAME = re.compile(r"^part-[A-Za-z0-9._=-]+\.parquet$")


class WarehouseError(Exception):
    """A warehouse write failed after its retries."""


@dataclass(frozen=True, order=True)
class PartitionKey:
    """One Hive partition of one dataset."""

    dataset: str
    resource_type: str
    dt: str

    def directory(self) -> str:
        return f"{self.dataset}/resource_type={self.resource_type}/dt={self.dt}"


def part_path(partition: PartitionKey, stem: str) -> str:
    """The relative path of a part file (``stem``: letters, digits, ``._=-``)."""
    if not _SAFE_STEM.match(stem):
        raise ValueError(f"part stem {stem!r} must be letters, digits and ._=-")
    return f"{partition.directory()}/part-{stem}.parquet"


# ---------------------------------------------------------------------------------------------
# Encoding (pure, CPU: run on a worker thread)


def snapshots_schema(resource_type: str) -> pa.Schema:
    typed = configuration_type(resource_type)
    fields = list(SNAPSHOT_COLUMNS)
    if typed is not None:
        fields.append(pa.field("configuration", typed))
    return pa.schema(fields)


def changes_schema(resource_type: str) -> pa.Schema:
    typed = configuration_type(resource_type)
    fields = list(CHANGE_COLUMNS)
    if typed is not None:
        fields += [pa.field("prior_configuration", typed), pa.field("configuration", typed)]
    return pa.schema(fields)


def _json(value: Any) -> str | None:
    return None if value is None else canonical_json(value).decode()


def snapshots_table(
    resource_type: str,
    versions: Sequence[ResourceVersion],
    snapshot_at: datetime,
    stats: CoerceStats | None = None,
) -> pa.Table:
    """One snapshots file's rows (versions of ``resource_type``)."""
    stats = stats or CoerceStats()
    schema = snapshots_schema(resource_type)
    typed = schema.field("configuration").type if "configuration" in schema.names else None
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for v in versions:
        if v.resource_type != resource_type:
            raise ValueError(f"{v.key} is a {v.resource_type}, not a {resource_type}")
        columns["key"].append(v.key)
        columns["resource_id"].append(v.resource_id)
        columns["account_id"].append(v.account_id)
        columns["region"].append(v.region)
        columns["name"].append(v.name)
        columns["config_hash"].append(v.config_hash)
        columns["change_id"].append(v.change_id)
        columns["valid_from"].append(v.valid_from)
        columns["snapshot_at"].append(snapshot_at)
        columns["configuration_json"].append(canonical_json(v.configuration).decode())
        if typed is not None:
            columns["configuration"].append(coerce(v.configuration, typed, stats))
    return pa.table(columns, schema=schema)


def changes_table(
    resource_type: str, changes: Sequence[ChangeEvent], stats: CoerceStats | None = None
) -> pa.Table:
    """One changes file's rows (changes of ``resource_type``)."""
    stats = stats or CoerceStats()
    schema = changes_schema(resource_type)
    typed = schema.field("configuration").type if "configuration" in schema.names else None
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for c in changes:
        if c.resource_type != resource_type:
            raise ValueError(f"change {c.change_id} is of a {c.resource_type}")
        columns["change_id"].append(c.change_id)
        columns["key"].append(c.key)
        columns["resource_id"].append(c.resource_id)
        columns["account_id"].append(c.account_id)
        columns["region"].append(c.region)
        columns["change_type"].append(c.change_type)
        columns["name"].append(c.name)
        columns["before_hash"].append(c.before_hash)
        columns["after_hash"].append(c.after_hash)
        columns["changed_paths"].append(list(c.changed_paths))
        columns["patch_json"].append(
            orjson.dumps([op.model_dump(mode="json") for op in c.patch]).decode()
        )
        columns["captured_at"].append(c.captured_at)
        columns["detected_at"].append(c.detected_at)
        columns["scan_id"].append(c.scan_id)
        a = c.attribution
        columns["attribution"].append(
            None
            if a is None
            else {
                "event_id": a.event_id,
                "event_name": a.event_name,
                "event_time": a.event_time,
                "principal_arn": a.principal_arn,
                "principal_name": a.principal_name,
                "source_ip": a.source_ip,
                "match": a.match,
            }
        )
        columns["attribution_rank"].append(None if a is None else rank_score(c, a))
        columns["prior_configuration_json"].append(_json(c.prior_configuration))
        columns["configuration_json"].append(_json(c.configuration))
        if typed is not None:
            columns["prior_configuration"].append(coerce(c.prior_configuration, typed, stats))
            columns["configuration"].append(coerce(c.configuration, typed, stats))
    return pa.table(columns, schema=schema)


def relationships_table(resource_type: str, changes: Sequence[ChangeEvent]) -> pa.Table:
    """One relationships file's rows: the edges ``changes`` (of ``resource_type``) added and
    removed."""
    schema = pa.schema(RELATIONSHIP_COLUMNS)
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for c in changes:
        if c.resource_type != resource_type:
            raise ValueError(f"change {c.change_id} is of a {c.resource_type}")
        for action, edges in (
            ("added", c.relationships_added),
            ("removed", c.relationships_removed),
        ):
            for edge in edges:
                columns["change_id"].append(c.change_id)
                columns["source_key"].append(c.key)
                columns["account_id"].append(c.account_id)
                columns["region"].append(c.region)
                columns["relationship"].append(edge.relationship)
                columns["target_key"].append(edge.target_key)
                columns["target_type"].append(edge.target_type)
                columns["action"].append(action)
                columns["captured_at"].append(c.captured_at)
    return pa.table(columns, schema=schema)


def parquet_bytes(table: pa.Table) -> bytes:
    """The table as one snappy-compressed Parquet file."""
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression="snappy",
        coerce_timestamps="ms",
        allow_truncated_timestamps=True,
    )
    return sink.getvalue()


def change_day(change: ChangeEvent) -> str:
    return change.captured_at.astimezone(UTC).date().isoformat()


# ---------------------------------------------------------------------------------------------
# Targets


class WarehouseTarget(Protocol):
    """Where part files go; paths are relative to the warehouse root."""

    name: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def put(self, path: str, data: bytes) -> None: ...
    async def get(self, path: str) -> bytes: ...
    async def list(self, directory: str) -> list[str]: ...
    async def list_parts(self, directory: str) -> builtins.list[StoredPart]: ...
    async def delete(self, paths: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class StoredPart:
    """A part file in a target: its path and when it was last written (epoch seconds)."""

    path: str
    modified: float


class LocalTarget:
    """A local directory; each file is written to a temporary name and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"local:{root}"

    async def start(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    async def put(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, path, data)

    def _put(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def list(self, directory: str) -> list[str]:
        def run() -> list[str]:
            folder = self.root / directory
            if not folder.is_dir():
                return []
            return sorted(
                f"{directory}/{p.name}" for p in folder.iterdir() if _PART_NAME.match(p.name)
            )

        return await asyncio.to_thread(run)

    async def get(self, path: str) -> bytes:
        return await asyncio.to_thread((self.root / path).read_bytes)

    async def list_parts(self, directory: str) -> builtins.list[StoredPart]:
        def run() -> builtins.list[StoredPart]:
            folder = self.root / directory
            if not folder.is_dir():
                return []
            found = []
            for p in folder.iterdir():
                if _PART_NAME.match(p.name):
                    with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                        found.append(StoredPart(f"{directory}/{p.name}", p.stat().st_mtime))
            return sorted(found, key=lambda part: part.path)

        return await asyncio.to_thread(run)

    async def delete(self, paths: Sequence[str]) -> None:
        def run() -> None:
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    (self.root / path).unlink()

        await asyncio.to_thread(run)


class S3Target:
    """``s3://bucket/prefix/``: one PUT per file, a multipart upload above the threshold."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        multipart_threshold: int = 16 * 1024 * 1024,
        part_size: int = 8 * 1024 * 1024,
    ) -> None:
        if part_size < 5 * 1024 * 1024:
            raise ValueError("S3 multipart parts must be at least 5 MiB")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region
        self.endpoint_url = endpoint_url
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.name = f"s3://{bucket}/{self.prefix}"
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    def object_key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    async def start(self) -> None:
        if self._client is not None:
            return
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        stack = contextlib.AsyncExitStack()
        config = AioConfig(retries={"mode": "standard", "max_attempts": 3})
        self._client = await stack.enter_async_context(
            get_session().create_client(
                "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=config
            )
        )
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _s3(self) -> Any:
        if self._client is None:
            await self.start()
        return self._client

    async def put(self, path: str, data: bytes) -> None:
        s3 = await self._s3()
        key = self.object_key(path)
        if len(data) < self.multipart_threshold:
            await s3.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType="application/vnd.apache.parquet"
            )
            return
        upload = await s3.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType="application/vnd.apache.parquet"
        )
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(data), self.part_size), 1):
                chunk = data[start : start + self.part_size]
                done = await s3.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"PartNumber": number, "ETag": done["ETag"]})
            await s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    async def list(self, directory: str) -> list[str]:
        return [part.path for part in await self.list_parts(directory)]

    async def list_parts(self, directory: str) -> builtins.list[StoredPart]:
        s3 = await self._s3()
        prefix = self.object_key(directory) + "/"
        found: builtins.list[StoredPart] = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(prefix) :]
                if _PART_NAME.match(name):
                    modified = item["LastModified"].timestamp()
                    found.append(StoredPart(f"{directory}/{name}", modified))
        return sorted(found, key=lambda part: part.path)

    async def get(self, path: str) -> bytes:
        s3 = await self._s3()
        response = await s3.get_object(Bucket=self.bucket, Key=self.object_key(path))
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def delete(self, paths: Sequence[str]) -> None:
        s3 = await self._s3()
        for start in range(0, len(paths), 1000):
            chunk = paths[start : start + 1000]
            await s3.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self.object_key(p)} for p in chunk], "Quiet": True},
            )


# ---------------------------------------------------------------------------------------------
# The writer


@dataclass
class WarehouseStats:
    files_written: int = 0
    files_deleted: int = 0
    bytes_written: int = 0
    change_rows: int = 0
    relationship_rows: int = 0
    snapshot_rows: int = 0
    compactions: int = 0
    """Partitions compacted (per target)."""
    files_compacted: int = 0
    """Parts merged into compacted files and deleted."""
    compaction_skips: int = 0
    """Partitions whose parts could not be merged (schemas that do not unify): logged."""
    retries: int = 0
    coerce: CoerceStats = field(default_factory=CoerceStats)


@dataclass
class _ChangeBuffer:
    changes: list[ChangeEvent] = field(default_factory=list)
    kafka_partition: int | None = None
    offsets: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _EncodedPart:
    path: str
    data: bytes
    offsets: tuple[int, int] | None
    """First and last Kafka offset of its rows, for parts named by origin."""
    dataset: str = "changes"


_ORIGIN_NAME = re.compile(r"^part-p(?P<partition>\d+)-o(?P<offset>\d+)\.parquet$")


class ParquetWarehouse:
    """Writes snapshots and changes to every target, batched, retried and idempotent.

    Changes are buffered per (resource type, day, origin) with :meth:`add_changes` and
    written by :meth:`flush`; a partition that reaches ``max_rows_per_file`` is split into
    several files. A failed upload is retried ``attempts`` times with doubling delays, then
    :class:`WarehouseError` is raised with the buffer kept, so a later flush writes the same
    files again.
    """

    def __init__(
        self,
        targets: Sequence[WarehouseTarget],
        *,
        max_rows_per_file: int = 50_000,
        attempts: int = 5,
        first_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
    ) -> None:
        if not targets:
            raise ValueError("a warehouse needs at least one target")
        self.targets = list(targets)
        self.max_rows_per_file = max_rows_per_file
        self.attempts = attempts
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.stats = WarehouseStats()
        self._buffers: dict[tuple[PartitionKey, int | None], _ChangeBuffer] = {}

    async def start(self) -> None:
        for target in self.targets:
            await target.start()

    async def close(self) -> None:
        for target in self.targets:
            await target.close()

    # -- changes ---------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return sum(len(b.changes) for b in self._buffers.values())

    def add_changes(
        self, changes: Iterable[ChangeEvent], origins: Sequence[tuple[int, int]] | None = None
    ) -> None:
        """Buffer changes; ``origins`` (Kafka partition, offset) per change names the files."""
        for n, change in enumerate(changes):
            partition = PartitionKey("changes", change.resource_type, change_day(change))
            kafka_partition = None if origins is None else origins[n][0]
            buffer = self._buffers.get((partition, kafka_partition))
            if buffer is None:
                buffer = self._buffers[(partition, kafka_partition)] = _ChangeBuffer(
                    kafka_partition=kafka_partition
                )
            buffer.changes.append(change)
            if origins is not None:
                buffer.offsets.append(origins[n][1])

    async def flush(self) -> int:
        """Write every buffered partition; returns the files written (per target once).

        A part named by origin covers Kafka offsets [first, last] of one partition. A replay
        starts at a committed offset, before which nothing is rewritten, and reads again
        every offset after it; so an existing part of the same Kafka partition whose first
        offset lies in (first, last] holds only changes being written again, possibly cut
        differently, and is deleted once the new part is in place. The replay's later
        batches write whatever else it held.
        """
        written = 0
        for buffer_key in sorted(self._buffers, key=lambda k: (k[0], -1 if k[1] is None else k[1])):
            partition, kafka_partition = buffer_key
            buffer = self._buffers[buffer_key]
            parts = await asyncio.to_thread(self._encode_changes, partition, buffer)
            for part in parts:
                await self._put_everywhere(part.path, part.data)
                written += 1
            if kafka_partition is not None:
                for dataset in ("changes", "relationships"):
                    await self._drop_superseded(
                        replace(partition, dataset=dataset),
                        kafka_partition,
                        [p for p in parts if p.dataset == dataset],
                    )
            self.stats.change_rows += len(buffer.changes)
            self.stats.relationship_rows += sum(
                len(c.relationships_added) + len(c.relationships_removed) for c in buffer.changes
            )
            del self._buffers[buffer_key]
        return written

    async def _drop_superseded(
        self, partition: PartitionKey, kafka_partition: int, parts: Sequence[_EncodedPart]
    ) -> None:
        ranges = [p.offsets for p in parts if p.offsets is not None]
        fresh = {p.path for p in parts}
        directory = partition.directory()
        for target in self.targets:
            existing = await self._retry(f"list {directory}", target.list, directory)
            stale = []
            for path in existing:
                match = _ORIGIN_NAME.match(path.rsplit("/", 1)[-1])
                if match is None or int(match["partition"]) != kafka_partition:
                    continue
                offset = int(match["offset"])
                if path not in fresh and any(a < offset <= b for a, b in ranges):
                    stale.append(path)
            if stale:
                await self._retry(f"delete replayed parts on {target.name}", target.delete, stale)
                self.stats.files_deleted += len(stale)

    def _encode_changes(self, partition: PartitionKey, buffer: _ChangeBuffer) -> list[_EncodedPart]:
        parts = []
        size = self.max_rows_per_file
        for start in range(0, len(buffer.changes), size):
            chunk = buffer.changes[start : start + size]
            offsets: tuple[int, int] | None = None
            if buffer.kafka_partition is not None:
                window = buffer.offsets[start : start + size]
                offsets = (min(window), max(window))
                stem = f"p{buffer.kafka_partition}-o{offsets[0]:020d}"
            else:
                ids = "\n".join(sorted(c.change_id for c in chunk))
                stem = hashlib.sha256(ids.encode()).hexdigest()[:32]
            table = changes_table(partition.resource_type, chunk, self.stats.coerce)
            parts.append(_EncodedPart(part_path(partition, stem), parquet_bytes(table), offsets))
            edges = relationships_table(partition.resource_type, chunk)
            if edges.num_rows:
                # Beside its changes, under the same name: replaced and superseded with them.
                parts.append(
                    _EncodedPart(
                        part_path(replace(partition, dataset="relationships"), stem),
                        parquet_bytes(edges),
                        offsets,
                        "relationships",
                    )
                )
        return parts

    async def write_changes(
        self, changes: Sequence[ChangeEvent], origins: Sequence[tuple[int, int]] | None = None
    ) -> int:
        self.add_changes(changes, origins)
        return await self.flush()

    # -- snapshots -------------------------------------------------------------------------

    async def write_snapshot(
        self,
        resource_type: str,
        day: date,
        versions: Sequence[ResourceVersion],
        snapshot_at: datetime,
    ) -> int:
        """Replace the day's snapshot of one type: one file for every account (split above
        ``max_rows_per_file``), stale parts (of an earlier layout or a bigger day) deleted.
        A type with no resources that day has no file (its earlier parts are deleted): most
        registered types are empty in an estate, and a file each would be read by every query."""
        partition = PartitionKey("snapshots", resource_type, day.isoformat())
        rows = sorted(versions, key=lambda v: (v.account_id, v.key))
        size = self.max_rows_per_file

        def encode() -> list[tuple[str, bytes]]:
            return [
                (
                    part_path(partition, SNAPSHOT_STEM if n == 0 else f"{SNAPSHOT_STEM}-{n}"),
                    parquet_bytes(
                        snapshots_table(
                            resource_type,
                            rows[start : start + size],
                            snapshot_at,
                            self.stats.coerce,
                        )
                    ),
                )
                for n, start in enumerate(range(0, len(rows), size))
            ]

        files = await asyncio.to_thread(encode)
        keep = {path for path, _ in files}
        for path, data in files:
            await self._put_everywhere(path, data)
        for target in self.targets:
            existing = await self._retry(
                f"list {partition.directory()}", target.list, partition.directory()
            )
            stale = [p for p in existing if p not in keep]
            if stale:
                await self._retry(f"delete stale parts on {target.name}", target.delete, stale)
                self.stats.files_deleted += len(stale)
        self.stats.snapshot_rows += len(versions)
        return len(files)

    # -- compaction ------------------------------------------------------------------------

    async def compact(
        self, partition: PartitionKey, *, now: float | None = None, settled_s: float = SETTLED_S
    ) -> int:
        """Merge the settled parts of one changes partition into few files, in every target.

        Returns the parts merged (and deleted), over all targets. See the module docstring."""
        if partition.dataset not in ("changes", "relationships"):
            raise ValueError(
                f"only changes and relationships partitions are compacted: {partition}"
            )
        moment = time.time() if now is None else now
        merged = 0
        for target in self.targets:
            directory = partition.directory()
            found = await self._retry(f"list {directory}", target.list_parts, directory)
            settled = sorted(p.path for p in found if moment - p.modified >= settled_s)
            if len(settled) < 2:
                continue
            blobs = [await self._retry(f"read {p}", target.get, p) for p in settled]
            try:
                files = await asyncio.to_thread(self._merge, partition, settled, blobs)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                self.stats.compaction_skips += 1
                log.warning("warehouse: cannot compact %s on %s: %s", directory, target.name, exc)
                continue
            for path, data in files:
                await self._retry(f"write {path} to {target.name}", target.put, path, data)
                self.stats.files_written += 1
                self.stats.bytes_written += len(data)
            fresh = {path for path, _ in files}
            replaced = [p for p in settled if p not in fresh]
            if replaced:
                await self._retry(
                    f"delete compacted parts on {target.name}", target.delete, replaced
                )
            self.stats.compactions += 1
            self.stats.files_compacted += len(replaced)
            self.stats.files_deleted += len(replaced)
            merged += len(replaced)
        return merged

    def _merge(
        self, partition: PartitionKey, paths: Sequence[str], blobs: Sequence[bytes]
    ) -> list[tuple[str, bytes]]:
        tables = [pq.read_table(io.BytesIO(blob)) for blob in blobs]
        table = pa.concat_tables(tables, promote_options="default")
        if partition.dataset == "relationships":
            table = _unique_relationship_rows(table)
            return self._compacted_files(partition, paths, table)
        # One row per change, oldest first. A change is there twice after a replay, or when
        # its attribution arrived after it was published (the same change_id again, with
        # `attribution` set), or was replaced by a better one (published again only when it
        # ranks higher): keep the last attributed copy. The parts are in path order, which is
        # publishing order within a Kafka partition (a change's copies share one), and the
        # sort is stable.
        table = table.sort_by([("captured_at", "ascending"), ("change_id", "ascending")])
        ids = table.column("change_id").to_pylist()
        attributed = table.column("attribution").is_valid().to_pylist()
        chosen: dict[str, int] = {}
        for n, change_id in enumerate(ids):
            if change_id not in chosen or attributed[n] or not attributed[chosen[change_id]]:
                chosen[change_id] = n
        if len(chosen) < len(ids):
            table = table.take(pa.array(sorted(chosen.values()), pa.int64()))
        return self._compacted_files(partition, paths, table)

    def _compacted_files(
        self, partition: PartitionKey, paths: Sequence[str], table: pa.Table
    ) -> list[tuple[str, bytes]]:
        digest = hashlib.sha256("\n".join(sorted(paths)).encode()).hexdigest()[:32]
        stem = f"{COMPACTED_PREFIX}{digest}"
        size = self.max_rows_per_file
        return [
            (
                part_path(partition, stem if n == 0 else f"{stem}-{n}"),
                parquet_bytes(table.slice(start, size)),
            )
            for n, start in enumerate(range(0, max(1, table.num_rows), size))
        ]

    # -- shared ----------------------------------------------------------------------------

    async def _put_everywhere(self, path: str, data: bytes) -> None:
        for target in self.targets:
            await self._retry(f"write {path} to {target.name}", target.put, path, data)
            self.stats.files_written += 1
            self.stats.bytes_written += len(data)

    async def _retry(self, what: str, call: Any, *args: Any) -> Any:
        def logged(exc: BaseException, attempt: int, delay: float) -> None:
            self.stats.retries += 1
            log.warning("%s failed (attempt %d, retrying in %.1fs): %s", what, attempt, delay, exc)

        try:
            return await retry(
                lambda: call(*args),
                attempts=self.attempts,
                first_delay_s=self.first_delay_s,
                max_delay_s=self.max_delay_s,
                on_retry=logged,
            )
        except Exception as exc:
            raise WarehouseError(f"{what} failed after {self.attempts} attempts: {exc}") from exc


def _unique_relationship_rows(table: pa.Table) -> pa.Table:
    """One row per (change, relationship, target, action), oldest first (a change published
    again with its attribution wrote its rows twice)."""
    table = table.sort_by([("captured_at", "ascending"), ("change_id", "ascending")])
    seen: set[tuple[Any, ...]] = set()
    keep: list[int] = []
    for n, row in enumerate(
        zip(*(table.column(c).to_pylist() for c in _RELATIONSHIP_ROW), strict=True)
    ):
        if row not in seen:
            seen.add(row)
            keep.append(n)
    if len(keep) < table.num_rows:
        table = table.take(pa.array(keep, pa.int64()))
    return table


def targets_for(
    targets: Sequence[str],
    *,
    data_dir: Path,
    s3_bucket: str | None,
    s3_prefix: str,
    s3_region: str | None = None,
    endpoint_url: str | None = None,
) -> list[WarehouseTarget]:
    """The warehouse targets of the storage settings' ``targets`` list."""
    found: list[WarehouseTarget] = []
    if "local" in targets:
        found.append(LocalTarget(data_dir / "warehouse"))
    if "s3" in targets:
        if not s3_bucket:
            raise ConfigError(
                "storage.targets includes 's3' but storage.s3_bucket is not set "
                "(set it in cloudinv.toml or CLOUDINV_STORAGE__S3_BUCKET)"
            )
        found.append(S3Target(s3_bucket, s3_prefix, region=s3_region, endpoint_url=endpoint_url))
    return found
