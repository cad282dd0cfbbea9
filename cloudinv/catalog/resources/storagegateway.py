"""Storage Gateway gateways."""

from __future__ import annotations

from cloudinv.catalog.spec import ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::StorageGateway::Gateway",
        service="storagegateway",
        list_operation="ListGateways",
        result_path="Gateways[]",
        id_field="GatewayId",
        name_field="GatewayName",
        arn_field="GatewayARN",
    ),
)
