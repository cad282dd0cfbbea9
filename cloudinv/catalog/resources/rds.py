"""RDS DB instances, clusters, snapshots (manual and automated) and subnet groups."""

from __future__ import annotations

from cloudinv.catalog.spec import ResourceSpec

# Advanced by AWS every few minutes: not a change of the database.
_INSTANCE_RESTORE_WINDOW = ("LatestRestorableTime",)
_CLUSTER_RESTORE_WINDOW = ("LatestRestorableTime", "EarliestRestorableTime")

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::RDS::DBInstance",
        service="rds",
        list_operation="DescribeDBInstances",
        result_path="DBInstances[]",
        id_field="DBInstanceIdentifier",
        name_field="DBInstanceIdentifier",
        arn_field="DBInstanceArn",
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
    ),
    ResourceSpec(
        cfn_type="AWS::RDS::DBCluster",
        service="rds",
        list_operation="DescribeDBClusters",
        result_path="DBClusters[]",
        id_field="DBClusterIdentifier",
        name_field="DBClusterIdentifier",
        arn_field="DBClusterArn",
        tags_field="TagList",
        volatile_fields=_CLUSTER_RESTORE_WINDOW,
        event_resource_ids={
            "CreateDBCluster": "requestParameters.dBClusterIdentifier",
            "ModifyDBCluster": "requestParameters.dBClusterIdentifier",
            "DeleteDBCluster": "requestParameters.dBClusterIdentifier",
        },
    ),
    ResourceSpec(
        cfn_type="AWS::RDS::DBSnapshot",
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
    ),
    ResourceSpec(
        cfn_type="AWS::RDS::DBClusterSnapshot",
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
        service="rds",
        list_operation="DescribeDBSubnetGroups",
        result_path="DBSubnetGroups[]",
        id_field="DBSubnetGroupName",
        name_field="DBSubnetGroupName",
        arn_field="DBSubnetGroupArn",
    ),
)
