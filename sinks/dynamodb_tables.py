"""What the DynamoDB stores share: table declarations made real (create if missing, wait
until active, check the key and indexes, turn on expiry by a time-to-live attribute) and
opaque sort-key cursors."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

__all__ = ["CursorCodec", "TableSpec", "decode_cursor", "encode_cursor", "ensure_table"]

log = logging.getLogger(__name__)

Item = dict[str, Any]

ACTIVE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class TableSpec:
    """A table: attribute types of its keys, its (HASH, RANGE) key, its global secondary
    indexes (name -> (HASH, RANGE)), each projecting every attribute."""

    attributes: dict[str, str]
    key: tuple[str, str | None]
    indexes: dict[str, tuple[str, str]] = field(default_factory=dict)
    ttl_attribute: str | None = None
    """Items carrying this attribute (epoch seconds) are deleted by DynamoDB once that time
    has passed (time to live, turned on when cloudinv creates or opens the table)."""


async def ensure_table(
    client: Any,
    table: str,
    spec: TableSpec,
    *,
    create: bool = True,
    error: type[Exception] = RuntimeError,
) -> None:
    """Make ``table`` exist as ``spec`` says (on-demand billing), wait until it and its
    indexes are ACTIVE, and refuse a table with another key or missing indexes. With
    ``create``, time to live is turned on for ``spec.ttl_attribute``; without, a table
    lacking it is logged (its items would be kept forever). Problems are raised as
    ``error``."""
    try:
        described = (await client.describe_table(TableName=table))["Table"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise error(f"DynamoDB table {table}: {exc}") from exc
        if not create:
            raise error(f"DynamoDB table {table} does not exist") from None
        described = await _create(client, table, spec, error)
    deadline = time.monotonic() + ACTIVE_TIMEOUT_S
    while not _active(described):
        if time.monotonic() > deadline:
            raise error(f"DynamoDB table {table} did not become ACTIVE in 5 minutes")
        await asyncio.sleep(0.2)
        described = (await client.describe_table(TableName=table))["Table"]
    _check(table, spec, described, error)
    if spec.ttl_attribute is not None:
        await _ensure_ttl(client, table, spec.ttl_attribute, create=create, error=error)


async def _ensure_ttl(
    client: Any, table: str, attribute: str, *, create: bool, error: type[Exception]
) -> None:
    try:
        described = (await client.describe_time_to_live(TableName=table))["TimeToLiveDescription"]
    except ClientError as exc:
        raise error(f"DynamoDB table {table}: cannot read its time to live: {exc}") from exc
    status = described.get("TimeToLiveStatus")
    current = described.get("AttributeName")
    if status in ("ENABLED", "ENABLING") and current == attribute:
        return
    if status in ("ENABLED", "ENABLING") or not create:
        # Another attribute (someone else's choice), or tables cloudinv must not change.
        log.warning(
            "DynamoDB table %s: time to live is %s%s, not on %r: cloudinv's expiring items "
            "will be kept until deleted; enable it with `aws dynamodb update-time-to-live "
            "--table-name %s --time-to-live-specification Enabled=true,AttributeName=%s`",
            table,
            (status or "DISABLED").lower(),
            f" on {current!r}" if current else "",
            attribute,
            table,
            attribute,
        )
        return
    try:
        log.info("turning on time to live of DynamoDB table %s (attribute %s)", table, attribute)
        await client.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
        )
    except ClientError as exc:
        # Not fatal: the table works, its expiring items are only kept longer.
        log.warning(
            "DynamoDB table %s: cannot turn on time to live (%s): cloudinv's expiring items "
            "will be kept until deleted; grant dynamodb:UpdateTimeToLive or enable it on "
            "attribute %r yourself",
            table,
            exc,
            attribute,
        )


async def _create(client: Any, table: str, spec: TableSpec, error: type[Exception]) -> Item:
    def key_schema(hash_key: str, range_key: str | None) -> list[dict[str, str]]:
        schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
        if range_key is not None:
            schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
        return schema

    params: dict[str, Any] = {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": a, "AttributeType": t} for a, t in spec.attributes.items()
        ],
        "KeySchema": key_schema(*spec.key),
    }
    if spec.indexes:
        params["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index,
                "KeySchema": key_schema(h, r),
                "Projection": {"ProjectionType": "ALL"},
            }
            for index, (h, r) in spec.indexes.items()
        ]
    try:
        log.info("creating DynamoDB table %s", table)
        return dict((await client.create_table(**params))["TableDescription"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise error(f"cannot create DynamoDB table {table}: {exc}") from exc
        # Another process created it first.
        return dict((await client.describe_table(TableName=table))["Table"])


def _active(described: Item) -> bool:
    if described.get("TableStatus") != "ACTIVE":
        return False
    return all(
        i.get("IndexStatus", "ACTIVE") == "ACTIVE"
        for i in described.get("GlobalSecondaryIndexes", [])
    )


def _check(table: str, spec: TableSpec, described: Item, error: type[Exception]) -> None:
    key = {k["KeyType"]: k["AttributeName"] for k in described.get("KeySchema", [])}
    if (key.get("HASH"), key.get("RANGE")) != spec.key:
        raise error(
            f"DynamoDB table {table} has key {key}, expected HASH {spec.key[0]!r}"
            + (f" and RANGE {spec.key[1]!r}" if spec.key[1] else "")
            + ": is the table prefix shared with something else?"
        )
    present = {i["IndexName"] for i in described.get("GlobalSecondaryIndexes", []) or []}
    missing = sorted(set(spec.indexes) - present)
    if missing:
        raise error(f"DynamoDB table {table} lacks the global secondary indexes {missing}")


def encode_cursor(tag: str, sort_key: str) -> str:
    """An opaque cursor for the page after ``sort_key`` (``tag`` names its kind)."""
    return f"{tag}." + base64.urlsafe_b64encode(sort_key.encode()).decode().rstrip("=")


def decode_cursor(tag: str, cursor: str, shape: re.Pattern[str]) -> str | None:
    """The sort key of a cursor :func:`encode_cursor` made with ``tag``; ``None`` for any
    other string (the caller says what it expected)."""
    if not cursor.startswith(f"{tag}."):
        return None
    body = cursor[len(tag) + 1 :]
    try:
        value = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return value if shape.fullmatch(value) else None


@dataclass(frozen=True)
class CursorCodec:
    """The cursors of one kind of page: ``tag`` names the kind, ``shape`` is what a sort key
    of that page looks like; a cursor that is not one is raised as ``error`` with
    ``message`` (formatted with the cursor's repr)."""

    tag: str
    shape: re.Pattern[str]
    error: type[Exception]
    message: str = "cursor {!r} is not one this store returned"

    def encode(self, sort_key: str) -> str:
        return encode_cursor(self.tag, sort_key)

    def decode(self, cursor: str) -> str:
        value = decode_cursor(self.tag, cursor, self.shape)
        if value is None:
            raise self.error(self.message.format(cursor))
        return value
