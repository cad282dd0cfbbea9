"""EKS clusters."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, Relationship, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::EKS::Cluster",
        relationships=(
            Relationship(name="uses", path="roleArn", target_type="AWS::IAM::Role", by="arn"),
            Relationship(
                name="is contained in",
                path="resourcesVpcConfig.subnetIds[]",
                target_type="AWS::EC2::Subnet",
            ),
            Relationship(
                name="is associated with",
                path="resourcesVpcConfig.securityGroupIds[]",
                target_type="AWS::EC2::SecurityGroup",
            ),
            Relationship(
                name="is associated with",
                path="resourcesVpcConfig.clusterSecurityGroupId",
                target_type="AWS::EC2::SecurityGroup",
            ),
            Relationship(
                name="is contained in", path="resourcesVpcConfig.vpcId", target_type="AWS::EC2::VPC"
            ),
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
