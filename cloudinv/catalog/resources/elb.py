"""Elastic Load Balancing: classic load balancers, ELBv2 load balancers and target groups."""

from __future__ import annotations

from cloudinv.catalog.spec import (
    DetailCall,
    Relationship,
    ResourceSpec,
    in_subnets,
    in_vpc,
    with_security_groups,
)

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::ElasticLoadBalancing::LoadBalancer",
        service="elb",
        list_operation="DescribeLoadBalancers",
        result_path="LoadBalancerDescriptions[]",
        id_field="LoadBalancerName",
        name_field="LoadBalancerName",
        arn_template="arn:{partition}:elasticloadbalancing:{region}:{account}:loadbalancer/{id}",
        tags_field="Tags",
        details=(
            DetailCall(
                operation="DescribeLoadBalancerAttributes",
                params={"LoadBalancerName": "LoadBalancerName"},
                result_path="LoadBalancerAttributes",
                merge_key="Attributes",
            ),
            DetailCall(
                operation="DescribeTags",
                params={"LoadBalancerNames": "[LoadBalancerName]"},
                result_path="TagDescriptions[0].Tags",
                merge_key="Tags",
            ),
        ),
        event_resource_ids={
            name: "requestParameters.loadBalancerName"
            for name in (
                "CreateLoadBalancer",
                "DeleteLoadBalancer",
                "CreateLoadBalancerListeners",
                "DeleteLoadBalancerListeners",
                "ModifyLoadBalancerAttributes",
                "RegisterInstancesWithLoadBalancer",
                "DeregisterInstancesFromLoadBalancer",
                "ApplySecurityGroupsToLoadBalancer",
                "ConfigureHealthCheck",
            )
        },
        relationships=(
            in_vpc("VPCId"),
            in_subnets("Subnets[]"),
            with_security_groups("SecurityGroups[]"),
            Relationship(
                name="is associated with",
                path="Instances[].InstanceId",
                target_type="AWS::EC2::Instance",
            ),
        ),
    ),
    ResourceSpec(
        cfn_type="AWS::ElasticLoadBalancingV2::LoadBalancer",
        service="elbv2",
        list_operation="DescribeLoadBalancers",
        result_path="LoadBalancers[]",
        id_field="LoadBalancerName",
        name_field="LoadBalancerName",
        arn_field="LoadBalancerArn",
        tags_field="Tags",
        details=(
            DetailCall(
                operation="DescribeLoadBalancerAttributes",
                params={"LoadBalancerArn": "LoadBalancerArn"},
                result_path="Attributes",
                merge_key="Attributes",
            ),
            DetailCall(
                operation="DescribeListeners",
                params={"LoadBalancerArn": "LoadBalancerArn"},
                result_path="Listeners",
                merge_key="Listeners",
            ),
            DetailCall(
                operation="DescribeTags",
                params={"ResourceArns": "[LoadBalancerArn]"},
                result_path="TagDescriptions[0].Tags",
                merge_key="Tags",
            ),
        ),
        event_resource_ids={
            "CreateLoadBalancer": "responseElements.loadBalancers[].loadBalancerName",
        },
        relationships=(
            in_vpc("VpcId"),
            in_subnets("AvailabilityZones[].SubnetId"),
            with_security_groups("SecurityGroups[]"),
        ),
    ),
    ResourceSpec(
        cfn_type="AWS::ElasticLoadBalancingV2::TargetGroup",
        service="elbv2",
        list_operation="DescribeTargetGroups",
        result_path="TargetGroups[]",
        id_field="TargetGroupName",
        name_field="TargetGroupName",
        arn_field="TargetGroupArn",
        tags_field="Tags",
        details=(
            DetailCall(
                operation="DescribeTargetGroupAttributes",
                params={"TargetGroupArn": "TargetGroupArn"},
                result_path="Attributes",
                merge_key="Attributes",
            ),
            DetailCall(
                operation="DescribeTags",
                params={"ResourceArns": "[TargetGroupArn]"},
                result_path="TagDescriptions[0].Tags",
                merge_key="Tags",
            ),
            DetailCall(
                operation="DescribeTargetHealth",
                params={"TargetGroupArn": "TargetGroupArn"},
                result_path="TargetHealthDescriptions",
                merge_key="Targets",
            ),
        ),
        # The registered targets are configuration; their health moves on its own.
        volatile_fields=("Targets[].TargetHealth", "Targets[].HealthCheckPort"),
        # DescribeTargetHealth's order is not stable: a target is its id, port and zone.
        list_ids={"Targets": ("Target",)},
        relationships=(
            in_vpc("VpcId"),
            Relationship(
                name="is associated with",
                path="LoadBalancerArns[]",
                target_type="AWS::ElasticLoadBalancingV2::LoadBalancer",
                by="arn",
            ),
            Relationship(
                name="is associated with",
                path="Targets[].Target.Id",
                target_type="AWS::EC2::Instance",
                when="TargetType == 'instance'",
            ),
            Relationship(
                name="is associated with",
                path="Targets[].Target.Id",
                target_type="AWS::Lambda::Function",
                by="arn",
                when="TargetType == 'lambda'",
            ),
        ),
    ),
)
