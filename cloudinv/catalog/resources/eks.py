"""EKS clusters."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::EKS::Cluster",
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
