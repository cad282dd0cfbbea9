"""Redshift provisioned clusters."""

from __future__ import annotations

from cloudinv.catalog.spec import (
    ResourceSpec,
    in_vpc,
    uses_kms_key,
    uses_role,
    with_security_groups,
)

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::Redshift::Cluster",
        relationships=(
            in_vpc(),
            with_security_groups("VpcSecurityGroups[].VpcSecurityGroupId"),
            uses_kms_key(),
            uses_role("IamRoles[].IamRoleArn"),
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
