"""ECS clusters, and the services and tasks of each cluster."""

from __future__ import annotations

from cloudinv.catalog.spec import (
    DetailCall,
    ParentRef,
    Relationship,
    ResourceSpec,
    in_subnets,
    uses_role,
    with_security_groups,
)

_IN_CLUSTER = ParentRef(
    cfn_type="AWS::ECS::Cluster",
    params={"cluster": "clusterArn"},
    absent_codes=frozenset({"ClusterNotFoundException"}),
)

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::ECS::Cluster",
        service="ecs",
        list_operation="ListClusters",
        result_path="clusterArns[]",
        item_key="clusterArn",
        id_field="clusterName",
        name_field="clusterName",
        arn_field="clusterArn",
        tags_field="tags",
        details=(
            DetailCall(
                operation="DescribeClusters",
                params={"clusters": "[clusterArn]"},
                static_params={"include": ["TAGS", "SETTINGS", "CONFIGURATIONS"]},
                result_path="clusters[0]",
            ),
        ),
        # Task and instance counts follow the workload, not the cluster's configuration.
        volatile_fields=(
            "runningTasksCount",
            "pendingTasksCount",
            "activeServicesCount",
            "registeredContainerInstancesCount",
            "statistics",
        ),
    ),
    ResourceSpec(
        cfn_type="AWS::ECS::Service",
        relationships=(
            Relationship(
                name="is contained in", path="clusterArn", target_type="AWS::ECS::Cluster", by="arn"
            ),
            in_subnets("networkConfiguration.awsvpcConfiguration.subnets[]"),
            with_security_groups("networkConfiguration.awsvpcConfiguration.securityGroups[]"),
            Relationship(
                name="is associated with",
                path="loadBalancers[].targetGroupArn",
                target_type="AWS::ElasticLoadBalancingV2::TargetGroup",
                by="arn",
            ),
            uses_role("roleArn"),
            Relationship(
                name="uses", path="taskDefinition", target_type="AWS::ECS::TaskDefinition", by="arn"
            ),
        ),
        service="ecs",
        parent=_IN_CLUSTER,
        list_operation="ListServices",
        result_path="serviceArns[]",
        item_key="serviceArn",
        id_field="serviceName",
        name_field="serviceName",
        arn_field="serviceArn",
        tags_field="tags",
        details=(
            DetailCall(
                operation="DescribeServices",
                params={"services": "[serviceArn]"},
                inherit_list_params=("cluster",),
                static_params={"include": ["TAGS"]},
                result_path="services[0]",
            ),
        ),
        volatile_fields=(
            "events",
            "runningCount",
            "pendingCount",
            "deployments[].runningCount",
            "deployments[].pendingCount",
            "deployments[].failedTasks",
            "deployments[].updatedAt",
        ),
    ),
    ResourceSpec(
        cfn_type="AWS::ECS::Task",
        relationships=(
            Relationship(
                name="is contained in", path="clusterArn", target_type="AWS::ECS::Cluster", by="arn"
            ),
            Relationship(
                name="uses",
                path="taskDefinitionArn",
                target_type="AWS::ECS::TaskDefinition",
                by="arn",
            ),
        ),
        service="ecs",
        parent=_IN_CLUSTER,
        list_operation="ListTasks",
        result_path="taskArns[]",
        item_key="taskArn",
        id_field="taskArn",
        arn_field="taskArn",
        tags_field="tags",
        details=(
            DetailCall(
                operation="DescribeTasks",
                params={"tasks": "[taskArn]"},
                inherit_list_params=("cluster",),
                static_params={"include": ["TAGS"]},
                result_path="tasks[0]",
            ),
        ),
        volatile_fields=("containers[].networkInterfaces", "lastStatus", "healthStatus"),
    ),
)
