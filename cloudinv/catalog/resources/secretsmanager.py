"""Secrets Manager secrets: metadata and resource policy only, never a secret value."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec, uses_kms_key

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::SecretsManager::Secret",
        relationships=(uses_kms_key(),),
        service="secretsmanager",
        list_operation="ListSecrets",
        result_path="SecretList[]",
        id_field="Name",
        name_field="Name",
        arn_field="ARN",
        tags_field="Tags",
        details=(
            DetailCall(
                operation="GetResourcePolicy",
                params={"SecretId": "ARN"},
                result_path="ResourcePolicy",
                merge_key="ResourcePolicy",
            ),
        ),
        volatile_fields=("LastAccessedDate",),
    ),
)
