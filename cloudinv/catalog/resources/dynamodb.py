"""DynamoDB tables."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec, uses_kms_key

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::DynamoDB::Table",
        relationships=(uses_kms_key("SSEDescription.KMSMasterKeyArn"),),
        service="dynamodb",
        list_operation="ListTables",
        result_path="TableNames[]",
        item_key="TableName",
        id_field="TableName",
        name_field="TableName",
        arn_field="TableArn",
        tags_field="Tags",
        details=(
            DetailCall(
                operation="DescribeTable", params={"TableName": "TableName"}, result_path="Table"
            ),
            DetailCall(
                operation="DescribeContinuousBackups",
                params={"TableName": "TableName"},
                result_path="ContinuousBackupsDescription",
                merge_key="ContinuousBackups",
            ),
            DetailCall(
                operation="ListTagsOfResource",
                params={"ResourceArn": "TableArn"},
                result_path="Tags",
                merge_key="Tags",
                stage=1,
            ),
        ),
        # Refreshed by AWS about every six hours.
        volatile_fields=(
            "ItemCount",
            "TableSizeBytes",
            "GlobalSecondaryIndexes[].ItemCount",
            "GlobalSecondaryIndexes[].IndexSizeBytes",
            "ContinuousBackups.PointInTimeRecoveryDescription.EarliestRestorableDateTime",
            "ContinuousBackups.PointInTimeRecoveryDescription.LatestRestorableDateTime",
        ),
        event_resource_ids={
            name: "requestParameters.tableName"
            for name in ("CreateTable", "UpdateTable", "DeleteTable", "UpdateContinuousBackups")
        },
    ),
)
