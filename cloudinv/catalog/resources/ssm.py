"""SSM parameters: metadata from DescribeParameters only, never a parameter value."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::SSM::Parameter",
        service="ssm",
        list_operation="DescribeParameters",
        result_path="Parameters[]",
        id_field="Name",
        name_field="Name",
        arn_field="ARN",
        arn_template="arn:{partition}:ssm:{region}:{account}:parameter/{id_relative}",
        tags_field="Tags",
        details=(
            DetailCall(
                operation="ListTagsForResource",
                params={"ResourceId": "Name"},
                static_params={"ResourceType": "Parameter"},
                result_path="TagList",
                merge_key="Tags",
            ),
        ),
    ),
)
