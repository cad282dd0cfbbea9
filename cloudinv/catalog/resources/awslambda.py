"""Lambda functions with their resource policy and tags."""

from __future__ import annotations

from cloudinv.catalog.spec import (
    DetailCall,
    ResourceSpec,
    in_subnets,
    in_vpc,
    uses_kms_key,
    uses_role,
    with_security_groups,
)

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::Lambda::Function",
        service="lambda",
        list_operation="ListFunctions",
        result_path="Functions[]",
        id_field="FunctionName",
        name_field="FunctionName",
        arn_field="FunctionArn",
        tags_field="Tags",
        tag_format="dict",
        details=(
            DetailCall(
                operation="GetPolicy",
                params={"FunctionName": "FunctionName"},
                result_path="Policy",
                merge_key="Policy",
                absent_codes=frozenset({"ResourceNotFoundException"}),
            ),
            DetailCall(
                operation="ListTags",
                params={"Resource": "FunctionArn"},
                result_path="Tags",
                merge_key="Tags",
            ),
        ),
        event_resource_ids={
            "CreateFunction20150331": "requestParameters.functionName",
            "DeleteFunction20150331": "requestParameters.functionName",
            "UpdateFunctionConfiguration20150331v2": "requestParameters.functionName",
            "UpdateFunctionCode20150331v2": "requestParameters.functionName",
            "AddPermission20150331v2": "requestParameters.functionName",
            "RemovePermission20150331v2": "requestParameters.functionName",
        },
        relationships=(
            uses_role("Role"),
            in_subnets("VpcConfig.SubnetIds[]"),
            with_security_groups("VpcConfig.SecurityGroupIds[]"),
            in_vpc("VpcConfig.VpcId"),
            uses_kms_key("KMSKeyArn"),
        ),
    ),
)
