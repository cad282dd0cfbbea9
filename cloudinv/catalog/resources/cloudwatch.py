"""CloudWatch metric and composite alarms."""

from __future__ import annotations

from cloudinv.catalog.spec import ResourceSpec

# Rewritten on every evaluation; the alarm's state (StateValue) itself is kept.
_ALARM_STATE_DETAILS = (
    "StateReason",
    "StateReasonData",
    "StateUpdatedTimestamp",
    "StateTransitionedTimestamp",
)

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::CloudWatch::Alarm",
        service="cloudwatch",
        list_operation="DescribeAlarms",
        list_params={"AlarmTypes": ["MetricAlarm"]},
        result_path="MetricAlarms[]",
        id_field="AlarmName",
        name_field="AlarmName",
        arn_field="AlarmArn",
        volatile_fields=_ALARM_STATE_DETAILS,
    ),
    ResourceSpec(
        cfn_type="AWS::CloudWatch::CompositeAlarm",
        service="cloudwatch",
        list_operation="DescribeAlarms",
        list_params={"AlarmTypes": ["CompositeAlarm"]},
        result_path="CompositeAlarms[]",
        id_field="AlarmName",
        name_field="AlarmName",
        arn_field="AlarmArn",
        volatile_fields=_ALARM_STATE_DETAILS,
    ),
)
