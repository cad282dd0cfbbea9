"""Redshift provisioned clusters."""

from __future__ import annotations

from cloudinv.catalog.spec import Relationship, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::Redshift::Cluster",
        relationships=(
            Relationship(name="is contained in", path="VpcId", target_type="AWS::EC2::VPC"),
            Relationship(
                name="is associated with",
                path="VpcSecurityGroups[].VpcSecurityGroupId",
                target_type="AWS::EC2::SecurityGroup",
            ),
            Relationship(name="uses", path="KmsKeyId", target_type="AWS::KMS::Key", by="arn"),
            Relationship(
                name="uses", path="IamRoles[].IamRoleArn", target_type="AWS::IAM::Role", by="arn"
            ),
        ),
        service="redshift",
        list_operation="DescribeClusters",
        result_path="Clusters[]",
        id_field="ClusterIdentifier",
        name_field="ClusterIdentifier",
        arn_template="arn:{partition}:redshift:{region}:{account}:cluster:{id}",
        tags_field="Tags",
    ),
)
