"""Redshift provisioned clusters."""

from __future__ import annotations

from cloudinv.catalog.spec import ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::Redshift::Cluster",
        service="redshift",
        list_operation="DescribeClusters",
        result_path="Clusters[]",
        id_field="ClusterIdentifier",
        name_field="ClusterIdentifier",
        arn_template="arn:{partition}:redshift:{region}:{account}:cluster:{id}",
        tags_field="Tags",
    ),
)
