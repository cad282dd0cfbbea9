"""EC2 Auto Scaling groups and launch configurations."""

from __future__ import annotations

from cloudinv.catalog.spec import ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::AutoScaling::AutoScalingGroup",
        service="autoscaling",
        list_operation="DescribeAutoScalingGroups",
        result_path="AutoScalingGroups[]",
        id_field="AutoScalingGroupName",
        name_field="AutoScalingGroupName",
        arn_field="AutoScalingGroupARN",
        tags_field="Tags",
        event_resource_ids={
            name: "requestParameters.autoScalingGroupName"
            for name in (
                "CreateAutoScalingGroup",
                "UpdateAutoScalingGroup",
                "DeleteAutoScalingGroup",
                "SetDesiredCapacity",
            )
        },
    ),
    ResourceSpec(
        cfn_type="AWS::AutoScaling::LaunchConfiguration",
        service="autoscaling",
        list_operation="DescribeLaunchConfigurations",
        result_path="LaunchConfigurations[]",
        id_field="LaunchConfigurationName",
        name_field="LaunchConfigurationName",
        arn_field="LaunchConfigurationARN",
    ),
)
