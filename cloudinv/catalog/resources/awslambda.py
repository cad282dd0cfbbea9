"""Lambda functions with their resource policy and tags."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, Relationship, ResourceSpec

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
            Relationship(name="uses", path="Role", target_type="AWS::IAM::Role", by="arn"),
            Relationship(
                name="is contained in",
                path="VpcConfig.SubnetIds[]",
                target_type="AWS::EC2::Subnet",
            ),
            Relationship(
                name="is associated with",
                path="VpcConfig.SecurityGroupIds[]",
                target_type="AWS::EC2::SecurityGroup",
            ),
            Relationship(
                name="is contained in", path="VpcConfig.VpcId", target_type="AWS::EC2::VPC"
            ),
            Relationship(name="uses", path="KMSKeyArn", target_type="AWS::KMS::Key", by="arn"),
        ),
    ),
)
