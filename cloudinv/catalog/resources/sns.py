"""SNS topics and subscriptions."""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, Relationship, ResourceSpec

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::SNS::Topic",
        service="sns",
        list_operation="ListTopics",
        result_path="Topics[]",
        id_field="TopicArn",
        arn_field="TopicArn",
        tags_field="Tags",
        details=(
            DetailCall(
                operation="GetTopicAttributes",
                params={"TopicArn": "TopicArn"},
                result_path="Attributes",
                merge_key="Attributes",
            ),
            DetailCall(
                operation="ListTagsForResource",
                params={"ResourceArn": "TopicArn"},
                result_path="Tags",
                merge_key="Tags",
            ),
        ),
        # Subscriptions are their own resources.
        volatile_fields=(
            "Attributes.SubscriptionsConfirmed",
            "Attributes.SubscriptionsPending",
            "Attributes.SubscriptionsDeleted",
        ),
    ),
    ResourceSpec(
        cfn_type="AWS::SNS::Subscription",
        relationships=(
            Relationship(
                name="is associated with", path="TopicArn", target_type="AWS::SNS::Topic", by="arn"
            ),
        ),
        service="sns",
        list_operation="ListSubscriptions",
        result_path="Subscriptions[]",
        # A subscription awaiting confirmation has no ARN yet ("PendingConfirmation").
        item_filter="starts_with(SubscriptionArn, 'arn:')",
        id_field="SubscriptionArn",
        arn_field="SubscriptionArn",
    ),
)
