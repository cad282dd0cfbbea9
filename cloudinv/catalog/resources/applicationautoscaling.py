"""Application Auto Scaling scalable targets and scaling policies, every service namespace."""

from __future__ import annotations

from cloudinv.catalog.spec import ResourceSpec

# The list calls take one namespace each.
SERVICE_NAMESPACES: tuple[str, ...] = (
    "appstream",
    "cassandra",
    "comprehend",
    "custom-resource",
    "dynamodb",
    "ec2",
    "ecs",
    "elasticache",
    "elasticmapreduce",
    "kafka",
    "lambda",
    "neptune",
    "rds",
    "sagemaker",
    "workspaces",
)
_VARIANTS = tuple({"ServiceNamespace": namespace} for namespace in SERVICE_NAMESPACES)
# A namespace the region (or an emulator) does not support is rejected as invalid input.
_NAMESPACE_NOT_HERE = frozenset({"ValidationException"})

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::ApplicationAutoScaling::ScalableTarget",
        service="application-autoscaling",
        list_operation="DescribeScalableTargets",
        result_path="ScalableTargets[]",
        list_param_variants=_VARIANTS,
        ignore_error_codes=_NAMESPACE_NOT_HERE,
        id_field="ScalableTargetARN",
        name_field="ResourceId",
        arn_field="ScalableTargetARN",
    ),
    ResourceSpec(
        cfn_type="AWS::ApplicationAutoScaling::ScalingPolicy",
        service="application-autoscaling",
        list_operation="DescribeScalingPolicies",
        result_path="ScalingPolicies[]",
        list_param_variants=_VARIANTS,
        ignore_error_codes=_NAMESPACE_NOT_HERE,
        id_field="PolicyARN",
        name_field="PolicyName",
        arn_field="PolicyARN",
    ),
)
