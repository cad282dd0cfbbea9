"""ElastiCache cache clusters and replication groups."""

from __future__ import annotations

from cloudinv.catalog.spec import Relationship, ResourceSpec, uses_kms_key, with_security_groups

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::ElastiCache::CacheCluster",
        relationships=(
            with_security_groups("SecurityGroups[].SecurityGroupId"),
            Relationship(
                name="is contained in",
                path="ReplicationGroupId",
                target_type="AWS::ElastiCache::ReplicationGroup",
            ),
        ),
        service="elasticache",
        list_operation="DescribeCacheClusters",
        list_params={"ShowCacheNodeInfo": True},
        result_path="CacheClusters[]",
        id_field="CacheClusterId",
        name_field="CacheClusterId",
        arn_field="ARN",
    ),
    ResourceSpec(
        cfn_type="AWS::ElastiCache::ReplicationGroup",
        relationships=(uses_kms_key(),),
        service="elasticache",
        list_operation="DescribeReplicationGroups",
        result_path="ReplicationGroups[]",
        id_field="ReplicationGroupId",
        name_field="ReplicationGroupId",
        arn_field="ARN",
        arn_template="arn:{partition}:elasticache:{region}:{account}:replicationgroup:{id}",
    ),
)
