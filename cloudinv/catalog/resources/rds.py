"""RDS DB instances, clusters, snapshots (manual and automated) and subnet groups."""

from __future__ import annotations

from cloudinv.catalog.spec import (
    Relationship,
    ResourceSpec,
    in_subnets,
    in_vpc,
    uses_kms_key,
    with_security_groups,
)

# Advanced by AWS every few minutes: not a change of the database.
_INSTANCE_RESTORE_WINDOW = ("LatestRestorableTime",)
_CLUSTER_RESTORE_WINDOW = ("LatestRestorableTime", "EarliestRestorableTime")

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::RDS::DBInstance",
        relationships=(
            in_subnets("DBSubnetGroup.Subnets[].SubnetIdentifier"),
            in_vpc("DBSubnetGroup.VpcId"),
            with_security_groups("VpcSecurityGroups[].VpcSecurityGroupId"),
            uses_kms_key(),
            Relationship(
                name="is contained in",
                path="DBClusterIdentifier",
                target_type="AWS::RDS::DBCluster",
            ),
            Relationship(
                name="is associated with",
                path="DBSubnetGroup.DBSubnetGroupName",
                target_type="AWS::RDS::DBSubnetGroup",
                by="name",
            ),
        ),
        service="rds",
        list_operation="DescribeDBInstances",
        result_path="DBInstances[]",
        id_field="DBInstanceIdentifier",
        name_field="DBInstanceIdentifier",
        arn_field="DBInstanceArn",
        arn_template="arn:{partition}:rds:{region}:{account}:db:{id}",
        tags_field="TagList",
        volatile_fields=_INSTANCE_RESTORE_WINDOW,
        event_resource_ids={
            "CreateDBInstance": "requestParameters.dBInstanceIdentifier",
            "ModifyDBInstance": "requestParameters.dBInstanceIdentifier",
            "DeleteDBInstance": "requestParameters.dBInstanceIdentifier",
            "RebootDBInstance": "requestParameters.dBInstanceIdentifier",
            "StartDBInstance": "requestParameters.dBInstanceIdentifier",
            "StopDBInstance": "requestParameters.dBInstanceIdentifier",
        },
        # creating -> backing-up -> available (the endpoint appears), stopping -> stopped.
        state_field="DBInstanceStatus",
        state_moves=("Endpoint", "InstanceCreateTime"),
    ),
    ResourceSpec(
        cfn_type="AWS::RDS::DBCluster",
        relationships=(
            with_security_groups("VpcSecurityGroups[].VpcSecurityGroupId"),
            uses_kms_key(),
            Relationship(
                name="is associated with",
                path="DBSubnetGroup",
                target_type="AWS::RDS::DBSubnetGroup",
                by="name",
            ),
        ),
        service="rds",
        list_operation="DescribeDBClusters",
        result_path="DBClusters[]",
        id_field="DBClusterIdentifier",
        name_field="DBClusterIdentifier",
        arn_field="DBClusterArn",
        arn_template="arn:{partition}:rds:{region}:{account}:cluster:{id}",
        tags_field="TagList",
        volatile_fields=_CLUSTER_RESTORE_WINDOW,
        event_resource_ids={
            "CreateDBCluster": "requestParameters.dBClusterIdentifier",
            "ModifyDBCluster": "requestParameters.dBClusterIdentifier",
            "DeleteDBCluster": "requestParameters.dBClusterIdentifier",
        },
        state_field="Status",
    ),
    ResourceSpec(
        cfn_type="AWS::RDS::DBSnapshot",
        relationships=(
            Relationship(
                name="is associated with",
                path="DBInstanceIdentifier",
                target_type="AWS::RDS::DBInstance",
            ),
            uses_kms_key(),
        ),
        service="rds",
        list_operation="DescribeDBSnapshots",
        result_path="DBSnapshots[]",
        id_field="DBSnapshotIdentifier",
        name_field="DBSnapshotIdentifier",
        arn_field="DBSnapshotArn",
        tags_field="TagList",
        event_resource_ids={
            "CreateDBSnapshot": "requestParameters.dBSnapshotIdentifier",
            "DeleteDBSnapshot": "requestParameters.dBSnapshotIdentifier",
            "ModifyDBSnapshotAttribute": "requestParameters.dBSnapshotIdentifier",
        },
        state_field="Status",  # creating -> available
        state_moves=("PercentProgress",),
    ),
    ResourceSpec(
        cfn_type="AWS::RDS::DBClusterSnapshot",
        relationships=(
            Relationship(
                name="is associated with",
                path="DBClusterIdentifier",
                target_type="AWS::RDS::DBCluster",
            ),
            uses_kms_key(),
        ),
        service="rds",
        list_operation="DescribeDBClusterSnapshots",
        result_path="DBClusterSnapshots[]",
        id_field="DBClusterSnapshotIdentifier",
        name_field="DBClusterSnapshotIdentifier",
        arn_field="DBClusterSnapshotArn",
        tags_field="TagList",
        event_resource_ids={
            "CreateDBClusterSnapshot": "requestParameters.dBClusterSnapshotIdentifier",
            "DeleteDBClusterSnapshot": "requestParameters.dBClusterSnapshotIdentifier",
            "ModifyDBClusterSnapshotAttribute": "requestParameters.dBClusterSnapshotIdentifier",
        },
    ),
    ResourceSpec(
        cfn_type="AWS::RDS::DBSubnetGroup",
        relationships=(
            in_vpc(),
            Relationship(
                name="is associated with",
                path="Subnets[].SubnetIdentifier",
                target_type="AWS::EC2::Subnet",
            ),
        ),
        service="rds",
        list_operation="DescribeDBSubnetGroups",
        result_path="DBSubnetGroups[]",
        id_field="DBSubnetGroupName",
        name_field="DBSubnetGroupName",
        arn_field="DBSubnetGroupArn",
        arn_template="arn:{partition}:rds:{region}:{account}:subgrp:{id}",
    ),
)
