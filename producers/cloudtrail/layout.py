"""Where CloudTrail puts its files in a trail bucket, and how to list them.

``AWSLogs/[<org id>/]<account>/CloudTrail/<region>/YYYY/MM/DD/`` holds log files;
``.../CloudTrail-Digest/<region>/...`` holds the hourly digests. Shared by the backfill (log
files) and digest verification (digests).
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

__all__ = ["day_prefixes", "find_region_prefixes"]

_ACCOUNT = re.compile(r"^\d{12}$")
_ORG = re.compile(r"^o-[a-z0-9]{10,32}$")


def day_prefixes(region_prefix: str, start: date, end: date) -> list[str]:
    """``.../CloudTrail/<region>/YYYY/MM/DD/`` for each day, ``end`` included."""
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    days = (end - start).days + 1
    return [f"{region_prefix}{start + timedelta(d):%Y/%m/%d}/" for d in range(days)]


async def _common_prefixes(s3: Any, bucket: str, prefix: str) -> list[str]:
    out: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        out.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
    return out


async def find_region_prefixes(
    s3: Any, bucket: str, prefix: str = "", *, folder: str = "CloudTrail"
) -> list[str]:
    """Every ``.../<folder>/<region>/`` prefix under ``prefix`` (accounts, org trails):
    log files under ``CloudTrail``, digests under ``CloudTrail-Digest``."""
    base = prefix.strip("/")
    base = f"{base}/" if base else ""
    if re.search(rf"(^|/){re.escape(folder)}/[a-z0-9-]+/$", base):
        return [base]
    found: list[str] = []
    pending = [base]
    while pending:
        current = pending.pop()
        for child in await _common_prefixes(s3, bucket, current):
            segment = child[len(current) : -1]
            if current == f"{folder}/" or current.endswith(f"/{folder}/"):
                found.append(child)
            elif segment in ("AWSLogs", folder) or _ACCOUNT.match(segment) or _ORG.match(segment):
                pending.append(child)
    return sorted(found)
