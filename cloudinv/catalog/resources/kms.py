"""KMS keys (with rotation status, key policy and tags) and aliases."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, Relationship, ResourceSpec

_KEY = {"KeyId": "KeyId"}

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::KMS::Key",
        service="kms",
        list_operation="ListKeys",
        result_path="Keys[]",
        id_field="KeyId",
        name_field="Description",
        arn_field="KeyArn",
        arn_template="arn:{partition}:kms:{region}:{account}:key/{id}",
        tags_field="Tags",
        details=(
            DetailCall(operation="DescribeKey", params=_KEY, result_path="KeyMetadata"),
            DetailCall(
                operation="GetKeyRotationStatus",
                params=_KEY,
                result_path="KeyRotationEnabled",
                merge_key="KeyRotationEnabled",
                # Asymmetric, HMAC and imported keys have no automatic rotation.
                absent_codes=frozenset({"UnsupportedOperationException"}),
            ),
            DetailCall(
                operation="GetKeyPolicy",
                params=_KEY,
                static_params={"PolicyName": "default"},
                result_path="Policy",
                merge_key="KeyPolicy",
            ),
            DetailCall(
                operation="ListResourceTags",
                params=_KEY,
                result_path="Tags",
                merge_key="Tags",
            ),
        ),
        event_resource_ids={
            "CreateKey": "responseElements.keyMetadata.keyId",
            "DisableKey": "requestParameters.keyId",
            "EnableKey": "requestParameters.keyId",
            "ScheduleKeyDeletion": "requestParameters.keyId",
            "PutKeyPolicy": "requestParameters.keyId",
            "EnableKeyRotation": "requestParameters.keyId",
            "DisableKeyRotation": "requestParameters.keyId",
        },
    ),
    ResourceSpec(
        cfn_type="AWS::KMS::Alias",
        relationships=(
            Relationship(
                name="is associated with", path="TargetKeyId", target_type="AWS::KMS::Key"
            ),
        ),
        service="kms",
        list_operation="ListAliases",
        result_path="Aliases[]",
        id_field="AliasName",
        name_field="AliasName",
        arn_field="AliasArn",
    ),
)
