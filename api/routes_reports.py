"""Reports over the store: ``GET /v1/reports/snapshots``.

The snapshot report (``producers.reports.snapshots``) is built from the current versions of
the snapshot types the collectors keep (EBS snapshots and their volumes, RDS DB and cluster
snapshots, EFS file systems), so the API answers without calling AWS. The S3 storage report
needs CloudWatch and is produced by ``cloudinv report s3-metrics``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from api.endpoints import Query, endpoint
from api.routes_common import account_view, inventory_store
from cloudinv.models import ResourceSnapshot, utcnow
from producers.reports.snapshots import SNAPSHOT_TYPES, SnapshotReport, build_snapshot_report

_PAGE = 1000


class SnapshotReportQuery(Query):
    account: str | None = Field(
        default=None, pattern=r"^\d{12}$", description="only this account (12 digits)"
    )


def _tags(configuration: dict[str, Any]) -> dict[str, str]:
    tags = configuration.get("Tags") or configuration.get("TagList") or []
    if isinstance(tags, list):
        return {
            str(t.get("Key")): str(t.get("Value", ""))
            for t in tags
            if isinstance(t, dict) and "Key" in t
        }
    return {}


@endpoint(
    "GET",
    "/v1/reports/snapshots",
    summary="Every EBS, RDS and EFS snapshot now kept, with a summary by service, source "
    "and age (counted from now)",
    query=SnapshotReportQuery,
    response=SnapshotReport,
    tags=["reports"],
)
async def snapshot_report(request: web.Request, query: SnapshotReportQuery) -> SnapshotReport:
    store = inventory_store(request)
    view = account_view(request, query.account)
    now = utcnow()
    snapshots: list[ResourceSnapshot] = []
    if not view.empty:
        for resource_type in SNAPSHOT_TYPES:
            after: str | None = None
            while True:
                page = await store.list_as_of(
                    at=now,
                    resource_type=resource_type,
                    account_id=view.single,
                    limit=_PAGE,
                    after_key=after,
                )
                for version in page:
                    if not view.allows(version.account_id):
                        continue
                    snapshots.append(
                        ResourceSnapshot.build(
                            account_id=version.account_id,
                            region=version.region,
                            resource_type=version.resource_type,
                            resource_id=version.resource_id,
                            arn=version.key,
                            name=version.name,
                            tags=_tags(version.configuration),
                            configuration=version.configuration,
                            scan_id="store",
                            captured_at=version.valid_from,
                        )
                    )
                if len(page) < _PAGE:
                    break
                after = page[-1].key
    return build_snapshot_report(snapshots, now)
