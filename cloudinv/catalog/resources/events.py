"""EventBridge rules of the default event bus."""

from __future__ import annotations

from cloudinv.catalog.spec import Relationship, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::Events::Rule",
        relationships=(
            Relationship(name="uses", path="RoleArn", target_type="AWS::IAM::Role", by="arn"),
        ),
        service="events",
        list_operation="ListRules",
        result_path="Rules[]",
        id_field="Name",
        name_field="Name",
        arn_field="Arn",
        event_resource_ids={
            name: "requestParameters.name"
            for name in ("PutRule", "DeleteRule", "EnableRule", "DisableRule")
        },
    ),
)
