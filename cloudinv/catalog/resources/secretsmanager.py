"""Secrets Manager secrets: metadata and resource policy only, never a secret value."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, Relationship, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::SecretsManager::Secret",
        relationships=(
            Relationship(name="uses", path="KmsKeyId", target_type="AWS::KMS::Key", by="arn"),
        ),
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
