"""Athena work groups and data catalogs."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::Athena::WorkGroup",
        service="athena",
        list_operation="ListWorkGroups",
        result_path="WorkGroups[]",
        id_field="Name",
        name_field="Name",
        arn_template="arn:{partition}:athena:{region}:{account}:workgroup/{id}",
        details=(
            DetailCall(
                operation="GetWorkGroup", params={"WorkGroup": "Name"}, result_path="WorkGroup"
            ),
        ),
    ),
    ResourceSpec(
        cfn_type="AWS::Athena::DataCatalog",
        service="athena",
        list_operation="ListDataCatalogs",
        result_path="DataCatalogsSummary[]",
        id_field="CatalogName",
        name_field="CatalogName",
        arn_template="arn:{partition}:athena:{region}:{account}:datacatalog/{id}",
        details=(
            DetailCall(
                operation="GetDataCatalog",
                params={"Name": "CatalogName"},
                result_path="DataCatalog",
            ),
        ),
    ),
)
