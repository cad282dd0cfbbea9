"""EC2 Auto Scaling groups and launch configurations."""

from __future__ import annotations

from cloudinv.catalog.spec import Relationship, ResourceSpec, with_security_groups

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::AutoScaling::AutoScalingGroup",
        relationships=(
            Relationship(
                name="contains", path="Instances[].InstanceId", target_type="AWS::EC2::Instance"
            ),
            Relationship(
                name="is associated with",
                path="TargetGroupARNs[]",
                target_type="AWS::ElasticLoadBalancingV2::TargetGroup",
                by="arn",
            ),
            Relationship(
                name="is associated with",
                path="LoadBalancerNames[]",
                target_type="AWS::ElasticLoadBalancing::LoadBalancer",
                by="name",
            ),
            Relationship(
                name="uses",
                path="LaunchTemplate.LaunchTemplateId",
                target_type="AWS::EC2::LaunchTemplate",
            ),
        ),
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
        relationships=(
            with_security_groups("SecurityGroups[]"),
            Relationship(name="uses", path="KeyName", target_type="AWS::EC2::KeyPair", by="name"),
        ),
        service="autoscaling",
        list_operation="DescribeLaunchConfigurations",
        result_path="LaunchConfigurations[]",
        id_field="LaunchConfigurationName",
        name_field="LaunchConfigurationName",
        arn_field="LaunchConfigurationARN",
    ),
)
