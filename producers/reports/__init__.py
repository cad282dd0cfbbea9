"""Reports built from scans: the snapshot inventory and the monthly S3 metrics.

Each report module collects with the scan engine (plus the few calls the registry cannot
declare) and builds its report with a pure function over what was collected, so the API can
serve the same report from stored snapshots. What a report could not collect is listed in
its ``gaps``, one :class:`ReportGap` per scope, never left out silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from cloudinv.core.models import ScanManifest

UNSUPPORTED_OPERATION_CODES = frozenset(
    {
        "NotImplemented",
        "NotImplementedException",
        "UnknownOperationException",
        "InvalidAction",
        "UnsupportedOperation",
        "UnsupportedOperationException",
        # A bare HTTP status as the code: the endpoint has no route for the operation
        # (moto answers 404 for AWS Backup's recovery point listings).
        "404",
    }
)
"""Error codes meaning "this endpoint does not offer the operation" (an emulator, or a
partition without the API), as opposed to a denial or a failure."""


class ReportGap(BaseModel):
    """One scope (account, region, resource type) a report could not fully collect."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    region: str
    resource_type: str
    status: str
    """``failed`` (nothing collected) or ``partial`` (some resources left out)."""
    operation: str | None
    code: str
    message: str
    unsupported: bool
    """True when the endpoint does not offer the operation at all (see
    :data:`UNSUPPORTED_OPERATION_CODES`)."""


def gaps_from_manifests(manifests: Iterable[ScanManifest]) -> list[ReportGap]:
    """One gap per manifest that is not complete, naming its first error."""
    gaps: list[ReportGap] = []
    for manifest in manifests:
        if manifest.status == "complete":
            continue
        error = manifest.errors[0] if manifest.errors else None
        code = error.code if error else "Unknown"
        gaps.append(
            ReportGap(
                account_id=manifest.account_id,
                region=manifest.region,
                resource_type=manifest.resource_type,
                status=manifest.status,
                operation=error.operation if error else None,
                code=code,
                message=" ".join((error.message if error else "no error recorded").split()),
                unsupported=code in UNSUPPORTED_OPERATION_CODES,
            )
        )
    return gaps


def format_cell(value: Any) -> str:
    """One value as report text (CSV and console alike): blank for unknown, true/false,
    ISO 8601 UTC times to the second, numbers without trailing noise, lists comma-separated."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        second = value.astimezone(UTC).replace(microsecond=0)
        return second.isoformat().replace("+00:00", "Z")
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.3f}".rstrip("0")
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)
