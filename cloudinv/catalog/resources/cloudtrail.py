"""CloudTrail trails (each recorded in its home region, not as shadow copies)."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, Relationship, ResourceSpec, uses_kms_key, uses_role

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::CloudTrail::Trail",
        relationships=(
            Relationship(
                name="uses", path="S3BucketName", target_type="AWS::S3::Bucket", by="name"
            ),
            uses_kms_key(),
            Relationship(name="uses", path="SnsTopicARN", target_type="AWS::SNS::Topic", by="arn"),
            Relationship(
                name="uses",
                path="CloudWatchLogsLogGroupArn",
                target_type="AWS::Logs::LogGroup",
                by="arn",
            ),
            uses_role("CloudWatchLogsRoleArn"),
        ),
        service="cloudtrail",
        list_operation="DescribeTrails",
        list_params={"includeShadowTrails": False},
        result_path="trailList[]",
        id_field="Name",
        name_field="Name",
        arn_field="TrailARN",
        details=(
            DetailCall(
                operation="GetEventSelectors",
                params={"TrailName": "TrailARN"},
                merge_key="EventSelectors",
            ),
        ),
        event_resource_ids={
            name: "requestParameters.name"
            for name in (
                "CreateTrail",
                "UpdateTrail",
                "DeleteTrail",
                "StartLogging",
                "StopLogging",
                "PutEventSelectors",
            )
        },
    ),
)
