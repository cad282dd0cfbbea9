"""CloudTrail trails (each recorded in its home region, not as shadow copies)."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::CloudTrail::Trail",
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
