"""Route 53 hosted zones (global)."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::Route53::HostedZone",
        service="route53",
        list_operation="ListHostedZones",
        result_path="HostedZones[]",
        id_field="Id",
        id_strip_prefix="/hostedzone/",
        name_field="Name",
        arn_template="arn:{partition}:route53:::hostedzone/{id}",
        tags_field="Tags",
        global_service=True,
        details=(
            DetailCall(
                operation="ListTagsForResource",
                params={"ResourceId": "strip_prefix(Id, '/hostedzone/')"},
                static_params={"ResourceType": "hostedzone"},
                result_path="ResourceTagSet.Tags",
                merge_key="Tags",
            ),
        ),
        # Follows the records, which are not part of the zone's configuration here.
        volatile_fields=("ResourceRecordSetCount",),
    ),
)
