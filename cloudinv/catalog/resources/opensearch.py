"""OpenSearch Service (and Elasticsearch) domains."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::OpenSearchService::Domain",
        service="opensearch",
        list_operation="ListDomainNames",
        result_path="DomainNames[]",
        id_field="DomainName",
        name_field="DomainName",
        arn_field="ARN",
        tags_field="Tags",
        details=(
            DetailCall(
                operation="DescribeDomain",
                params={"DomainName": "DomainName"},
                result_path="DomainStatus",
            ),
            DetailCall(
                operation="ListTags",
                params={"ARN": "ARN"},
                result_path="TagList",
                merge_key="Tags",
                stage=1,
            ),
        ),
    ),
)
