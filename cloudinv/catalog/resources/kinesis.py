"""Kinesis data streams."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

_STREAM = {"StreamName": "StreamName"}

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::Kinesis::Stream",
        service="kinesis",
        list_operation="ListStreams",
        result_path="StreamNames[]",
        item_key="StreamName",
        id_field="StreamName",
        name_field="StreamName",
        arn_field="StreamARN",
        tags_field="Tags",
        details=(
            DetailCall(
                operation="DescribeStreamSummary",
                params=_STREAM,
                result_path="StreamDescriptionSummary",
            ),
            DetailCall(
                operation="ListTagsForStream", params=_STREAM, result_path="Tags", merge_key="Tags"
            ),
        ),
    ),
)
