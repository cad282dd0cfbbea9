"""ECR repositories with their repository and lifecycle policies."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

_REPO = {"repositoryName": "repositoryName"}

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::ECR::Repository",
        service="ecr",
        list_operation="DescribeRepositories",
        result_path="repositories[]",
        id_field="repositoryName",
        name_field="repositoryName",
        arn_field="repositoryArn",
        tags_field="tags",
        details=(
            DetailCall(
                operation="GetRepositoryPolicy",
                params=_REPO,
                result_path="policyText",
                merge_key="repositoryPolicy",
                absent_codes=frozenset({"RepositoryPolicyNotFoundException"}),
            ),
            DetailCall(
                operation="GetLifecyclePolicy",
                params=_REPO,
                result_path="lifecyclePolicyText",
                merge_key="lifecyclePolicy",
                absent_codes=frozenset({"LifecyclePolicyNotFoundException"}),
            ),
            DetailCall(
                operation="ListTagsForResource",
                params={"resourceArn": "repositoryArn"},
                result_path="tags",
                merge_key="tags",
            ),
        ),
    ),
)
