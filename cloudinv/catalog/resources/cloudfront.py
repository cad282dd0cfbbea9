"""CloudFront distributions (global)."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::CloudFront::Distribution",
        service="cloudfront",
        list_operation="ListDistributions",
        result_path="DistributionList.Items[]",
        id_field="Id",
        name_field="DomainName",
        arn_field="ARN",
        tags_field="Tags",
        global_service=True,
        details=(
            DetailCall(
                operation="ListTagsForResource",
                params={"Resource": "ARN"},
                result_path="Tags.Items",
                merge_key="Tags",
            ),
        ),
        event_resource_ids={
            name: "requestParameters.id" for name in ("UpdateDistribution", "DeleteDistribution")
        },
    ),
)
