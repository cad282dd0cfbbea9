"""Step Functions state machines (with their definitions)."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, Relationship, ResourceSpec

_MACHINE = {"stateMachineArn": "stateMachineArn"}

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::StepFunctions::StateMachine",
        relationships=(
            Relationship(name="uses", path="roleArn", target_type="AWS::IAM::Role", by="arn"),
        ),
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
