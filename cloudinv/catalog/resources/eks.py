"""EKS clusters."""

from __future__ import annotations

from cloudinv.catalog.spec import (
    DetailCall,
    ResourceSpec,
    in_subnets,
    in_vpc,
    uses_role,
    with_security_groups,
)

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::EKS::Cluster",
        relationships=(
            uses_role("roleArn"),
            in_subnets("resourcesVpcConfig.subnetIds[]"),
            with_security_groups("resourcesVpcConfig.securityGroupIds[]"),
            with_security_groups("resourcesVpcConfig.clusterSecurityGroupId"),
            in_vpc("resourcesVpcConfig.vpcId"),
        ),
        service="eks",
        list_operation="ListClusters",
        result_path="clusters[]",
        item_key="name",
        id_field="name",
        name_field="name",
        arn_field="arn",
        tags_field="tags",
        tag_format="dict",
        details=(
            DetailCall(operation="DescribeCluster", params={"name": "name"}, result_path="cluster"),
        ),
    ),
)
