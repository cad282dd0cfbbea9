"""CloudWatch Logs log groups."""

from __future__ import annotations

from cloudinv.catalog.spec import ResourceSpec, uses_kms_key

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::Logs::LogGroup",
        relationships=(uses_kms_key("kmsKeyId"),),
        service="logs",
        list_operation="DescribeLogGroups",
        result_path="logGroups[]",
        id_field="logGroupName",
        name_field="logGroupName",
        arn_field="logGroupArn",
        arn_template="arn:{partition}:logs:{region}:{account}:log-group:{id}",
        # Grows as logs arrive.
        volatile_fields=("storedBytes",),
    ),
)
