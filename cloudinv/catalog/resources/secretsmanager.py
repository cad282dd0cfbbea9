"""Secrets Manager secrets: metadata and resource policy only, never a secret value."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::SecretsManager::Secret",
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
