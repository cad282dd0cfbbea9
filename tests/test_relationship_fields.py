"""Which changes may move a resource's edges: the detector computes the edges of both
configurations only for those (a JMESPath search per relationship, half the detector's
CPU on a change that only retags an instance)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloudinv.catalog.relationships import relationship_fields, touches_relationships
from cloudinv.core.models import ResourceSnapshot
from cloudinv.streams.changes import ChangeDetector

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = "arn:aws:ec2:us-east-1:123456789012:instance/i-1"


def test_fields_are_the_paths_first_names_and_the_conditions_names() -> None:
    instance = relationship_fields("AWS::EC2::Instance")
    assert {"SubnetId", "VpcId", "SecurityGroups", "NetworkInterfaces"} <= instance
    assert "Tags" not in instance and "State" not in instance
    target_group = relationship_fields("AWS::ElasticLoadBalancingV2::TargetGroup")
    assert {"Targets", "TargetType", "LoadBalancerArns"} <= target_group
    assert relationship_fields("AWS::Nope::Nothing") == frozenset()


def test_which_patches_touch_them() -> None:
    t = "AWS::EC2::Instance"
    assert touches_relationships(t, ["/SecurityGroups/0/GroupId"])
    assert touches_relationships(t, ["/Tags/0/Value", "/SubnetId"])
    assert touches_relationships(t, [""])  # the whole document replaced
    assert not touches_relationships(t, ["/Tags/0/Value", "/State/Name"])
    assert not touches_relationships("AWS::Nope::Nothing", ["/SubnetId"])


def _snap(minute: int, **config: object) -> ResourceSnapshot:
    return ResourceSnapshot.build(
        account_id="123456789012",
        region="us-east-1",
        resource_type="AWS::EC2::Instance",
        resource_id="i-1",
        arn=KEY,
        name="web",
        tags={},
        configuration={"InstanceId": "i-1", **config},
        scan_id="s",
        captured_at=T0 + timedelta(minutes=minute),
    )


def test_the_detector_moves_edges_only_when_their_fields_change() -> None:
    d = ChangeDetector()
    created = d.observe(_snap(0, SubnetId="subnet-1", Tags=[{"Key": "a", "Value": "1"}]))
    assert created is not None
    assert [e.target_type for e in created.relationships_added] == ["AWS::EC2::Subnet"]
    retagged = d.observe(_snap(1, SubnetId="subnet-1", Tags=[{"Key": "a", "Value": "2"}]))
    assert retagged is not None and retagged.change_type == "modified"
    assert retagged.relationships_added == [] and retagged.relationships_removed == []
    moved = d.observe(_snap(2, SubnetId="subnet-2", Tags=[{"Key": "a", "Value": "2"}]))
    assert moved is not None
    assert [e.target_key for e in moved.relationships_added] == [
        "arn:aws:ec2:us-east-1:123456789012:subnet/subnet-2"
    ]
    assert [e.target_key for e in moved.relationships_removed] == [
        "arn:aws:ec2:us-east-1:123456789012:subnet/subnet-1"
    ]
