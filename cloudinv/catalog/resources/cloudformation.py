"""CloudFormation stacks."""

from __future__ import annotations

from cloudinv.catalog.spec import ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::CloudFormation::Stack",
        service="cloudformation",
        list_operation="DescribeStacks",
        result_path="Stacks[]",
        id_field="StackName",
        name_field="StackName",
        arn_field="StackId",
        tags_field="Tags",
        volatile_fields=("DriftInformation.LastCheckTimestamp",),
        event_resource_ids={
            name: "requestParameters.stackName"
            for name in ("CreateStack", "UpdateStack", "DeleteStack")
        },
    ),
)
