"""ACM certificates (metadata and tags; never the private key)."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

_CERT = {"CertificateArn": "CertificateArn"}

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::CertificateManager::Certificate",
        service="acm",
        list_operation="ListCertificates",
        result_path="CertificateSummaryList[]",
        id_field="CertificateArn",
        name_field="DomainName",
        arn_field="CertificateArn",
        tags_field="Tags",
        details=(
            DetailCall(operation="DescribeCertificate", params=_CERT, result_path="Certificate"),
            DetailCall(
                operation="ListTagsForCertificate",
                params=_CERT,
                result_path="Tags",
                merge_key="Tags",
            ),
        ),
    ),
)
