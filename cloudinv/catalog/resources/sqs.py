"""SQS queues with all their attributes and tags."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

_QUEUE = {"QueueUrl": "QueueUrl"}

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::SQS::Queue",
        service="sqs",
        list_operation="ListQueues",
        result_path="QueueUrls[]",
        item_key="QueueUrl",
        id_field="QueueUrl",
        arn_field="Attributes.QueueArn",
        tags_field="Tags",
        tag_format="dict",
        details=(
            DetailCall(
                operation="GetQueueAttributes",
                params=_QUEUE,
                static_params={"AttributeNames": ["All"]},
                result_path="Attributes",
                merge_key="Attributes",
            ),
            DetailCall(
                operation="ListQueueTags", params=_QUEUE, result_path="Tags", merge_key="Tags"
            ),
        ),
        # Message counts move with traffic.
        volatile_fields=(
            "Attributes.ApproximateNumberOfMessages",
            "Attributes.ApproximateNumberOfMessagesNotVisible",
            "Attributes.ApproximateNumberOfMessagesDelayed",
        ),
    ),
)
