"""Step Functions state machines (with their definitions)."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec, uses_role

_MACHINE = {"stateMachineArn": "stateMachineArn"}

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::StepFunctions::StateMachine",
        relationships=(uses_role("roleArn"),),
        service="stepfunctions",
        list_operation="ListStateMachines",
        result_path="stateMachines[]",
        id_field="name",
        name_field="name",
        arn_field="stateMachineArn",
        tags_field="tags",
        details=(
            DetailCall(operation="DescribeStateMachine", params=_MACHINE),
            DetailCall(
                operation="ListTagsForResource",
                params={"resourceArn": "stateMachineArn"},
                result_path="tags",
                merge_key="tags",
            ),
        ),
    ),
)
