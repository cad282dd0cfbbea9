"""EFS file systems (with their file system and backup policies) and access points."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, Relationship, ResourceSpec, uses_kms_key

_FS = {"FileSystemId": "FileSystemId"}

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::EFS::FileSystem",
        relationships=(uses_kms_key(),),
        service="efs",
        list_operation="DescribeFileSystems",
        result_path="FileSystems[]",
        id_field="FileSystemId",
        name_field="Name",
        arn_field="FileSystemArn",
        arn_template="arn:{partition}:elasticfilesystem:{region}:{account}:file-system/{id}",
        tags_field="Tags",
        details=(
            DetailCall(
                operation="DescribeFileSystemPolicy",
                params=_FS,
                result_path="Policy",
                merge_key="FileSystemPolicy",
                absent_codes=frozenset({"PolicyNotFound"}),
            ),
            DetailCall(
                operation="DescribeBackupPolicy",
                params=_FS,
                result_path="BackupPolicy",
                merge_key="BackupPolicy",
                absent_codes=frozenset({"PolicyNotFound"}),
            ),
        ),
        # Metered continuously.
        volatile_fields=("SizeInBytes",),
    ),
    ResourceSpec(
        cfn_type="AWS::EFS::AccessPoint",
        relationships=(
            Relationship(
                name="is contained in", path="FileSystemId", target_type="AWS::EFS::FileSystem"
            ),
        ),
        service="efs",
        list_operation="DescribeAccessPoints",
        result_path="AccessPoints[]",
        id_field="AccessPointId",
        name_field="Name",
        arn_field="AccessPointArn",
        tags_field="Tags",
    ),
)
