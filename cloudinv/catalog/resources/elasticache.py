"""ElastiCache cache clusters and replication groups."""

from __future__ import annotations

from cloudinv.catalog.spec import ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::ElastiCache::CacheCluster",
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
        service="elasticache",
        list_operation="DescribeReplicationGroups",
        result_path="ReplicationGroups[]",
        id_field="ReplicationGroupId",
        name_field="ReplicationGroupId",
        arn_field="ARN",
    ),
)
