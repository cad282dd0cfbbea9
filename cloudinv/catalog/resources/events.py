"""EventBridge rules of the default event bus."""

from __future__ import annotations

from cloudinv.catalog.spec import ResourceSpec, uses_role

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::Events::Rule",
        relationships=(uses_role("RoleArn"),),
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
