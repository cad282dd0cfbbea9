"""API Gateway REST APIs (v1) and HTTP/WebSocket APIs (v2)."""

from __future__ import annotations

from cloudinv.catalog.spec import ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::ApiGateway::RestApi",
        service="apigateway",
        list_operation="GetRestApis",
        result_path="items[]",
        id_field="id",
        name_field="name",
        arn_template="arn:{partition}:apigateway:{region}::/restapis/{id}",
        tags_field="tags",
        tag_format="dict",
    ),
    ResourceSpec(
        cfn_type="AWS::ApiGatewayV2::Api",
        service="apigatewayv2",
        list_operation="GetApis",
        result_path="Items[]",
        id_field="ApiId",
        name_field="Name",
        arn_template="arn:{partition}:apigateway:{region}::/apis/{id}",
        tags_field="Tags",
        tag_format="dict",
    ),
)
