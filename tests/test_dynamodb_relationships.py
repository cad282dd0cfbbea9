"""Relationships on the DynamoDB store (moto's server): the tests of
``tests/test_relationships.py`` run unchanged with this module's ``store`` fixture, plus a change
whose edge writes do not fit one transaction."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from cloudinv.core.models import ResourceSnapshot
from cloudinv.sinks.dynamodb_store import DynamoStore
from cloudinv.streams.changes import ChangeDetector
from tests.test_relationships import (
    test_deleting_a_resource_closes_its_edges_and_leaves_others_pointing as test_deleting_a_resource_closes_its_edges_and_leaves_others_pointing,  # noqa: E501
)
from tests.test_relationships import (
    test_edges_move_with_the_changes_that_cause_them as test_edges_move_with_the_changes_that_cause_them,  # noqa: E501
)


@pytest.fixture
async def store(moto_endpoint: str) -> AsyncIterator[DynamoStore]:
    prefix = f"r{random.randrange(16**8):08x}"
    async with DynamoStore(
        prefix, region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1
    ) as s:
        yield s
    assert "Scan" not in s.stats.calls, s.stats.calls


async def test_edges_beyond_one_transaction_spill_into_the_next(store: DynamoStore) -> None:
    """A target group with 150 instances: its edges take two transactions, all stored, and
    all closed again when it is deleted."""
    account, region = "123456789012", "eu-west-1"
    key = f"arn:aws:elasticloadbalancing:{region}:{account}:targetgroup/big/1"
    detector = ChangeDetector()

    def snapshot(at: datetime, targets: int) -> ResourceSnapshot:
        return ResourceSnapshot.build(
            account_id=account,
            region=region,
            resource_type="AWS::ElasticLoadBalancingV2::TargetGroup",
            resource_id="big",
            arn=key,
            configuration={
                "TargetGroupName": "big",
                "TargetType": "instance",
                "Targets": [{"Target": {"Id": f"i-{n:04d}"}} for n in range(targets)],
            },
            scan_id="s",
            captured_at=at,
        )

    created = detector.observe(snapshot(datetime(2026, 11, 1, tzinfo=UTC), 150))
    assert created is not None and len(created.relationships_added) == 150
    assert await store.put_changes([created]) == 1
    related = await store.related(key, direction="out")
    assert len(related) == 150 and not any(r.exists for r in related)
    fewer = detector.observe(snapshot(datetime(2026, 11, 2, tzinfo=UTC), 40))
    assert fewer is not None and len(fewer.relationships_removed) == 110
    await store.put_changes([fewer])
    assert len(await store.related(key, direction="out")) == 40
    assert len(await store.related(key, at=datetime(2026, 11, 1, 12, tzinfo=UTC))) == 150
    one = f"arn:aws:ec2:{region}:{account}:instance/i-0001"
    assert [r.key for r in await store.related(one, direction="in")] == [key]
