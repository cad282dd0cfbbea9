"""The types the simulated AWS cannot serve are known from moto itself, and a scan told about
them skips them (one log line) instead of waiting out the SDK's retries on moto's HTTP 500s.

Real parts: moto's own modules (the coverage check reads them) and moto's server (the scan).
"""

from __future__ import annotations

import logging

import pytest

from cloudinv.catalog.registry import default_registry
from cloudinv.core.models import ScanManifest
from cloudinv.producers.engine import ScanOptions, scan_types, unserved_of
from cloudinv.simulator.coverage import unserved_types
from cloudinv.simulator.estate import ESTATE_TYPES
from tests.moto_helpers import MemberAccount

UNSERVED_CURATED = {
    # moto 5 has no handler for these actions, or a handler that only raises, or no service.
    "AWS::EC2::PlacementGroup": "DescribePlacementGroups",
    "AWS::EC2::ReservedInstances": "DescribeReservedInstances",
    "AWS::StorageGateway::Gateway": "storagegateway",
}


def test_unserved_types_are_read_from_moto() -> None:
    registry = default_registry()
    curated = [spec for spec in registry if not spec.derived]
    found = unserved_types(curated)
    assert set(found) == set(UNSERVED_CURATED), found
    for cfn_type, names in UNSERVED_CURATED.items():
        assert names in found[cfn_type]
    # What the demo scans, and S3 (whose moto handlers are not named by action), is served.
    assert not set(ESTATE_TYPES) & set(unserved_types(registry))
    assert "AWS::S3::Bucket" not in found


async def test_a_scan_skips_the_unserved_types_with_one_line(
    moto_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    member = MemberAccount.create(moto_endpoint, 7)
    aws = member.aws(["eu-west-1"])
    access = member.access(aws)
    registry = default_registry()
    specs = [registry.get(t) for t in ("AWS::EC2::VPC", *UNSERVED_CURATED)]
    options = ScanOptions(unserved=unserved_types(specs))
    assert unserved_of(specs, options) == options.unserved
    targets = await access.discover_accounts(aws)
    with caplog.at_level(logging.WARNING, logger="cloudinv.producers.engine"):
        manifests = [
            item
            async for item in scan_types(access, targets, aws.regions, specs, options=options)
            if isinstance(item, ScanManifest)
        ]
    # Only the served type is scanned, and completely; the others leave no manifest at all
    # (neither a failure nor a "complete" one that could hide resources).
    assert [(m.resource_type, m.status) for m in manifests] == [("AWS::EC2::VPC", "complete")]
    lines = [r.getMessage() for r in caplog.records if "cannot serve" in r.getMessage()]
    assert len(lines) == 1 and all(t in lines[0] for t in UNSERVED_CURATED)
