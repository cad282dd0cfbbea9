"""AWS Backup vaults and plans."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::Backup::BackupVault",
        service="backup",
        list_operation="ListBackupVaults",
        result_path="BackupVaultList[]",
        id_field="BackupVaultName",
        name_field="BackupVaultName",
        arn_field="BackupVaultArn",
        # Grows with every backup taken: not a change of the vault.
        volatile_fields=("NumberOfRecoveryPoints",),
    ),
    ResourceSpec(
        cfn_type="AWS::Backup::BackupPlan",
        service="backup",
        list_operation="ListBackupPlans",
        result_path="BackupPlansList[]",
        id_field="BackupPlanId",
        name_field="BackupPlanName",
        arn_field="BackupPlanArn",
        volatile_fields=("LastExecutionDate",),
        details=(
            DetailCall(
                operation="GetBackupPlan",
                params={"BackupPlanId": "BackupPlanId"},
                result_path="BackupPlan",
                merge_key="BackupPlan",
            ),
        ),
    ),
)
