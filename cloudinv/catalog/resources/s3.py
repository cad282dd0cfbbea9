"""S3 buckets: one configuration combined from the bucket's configuration calls.

ListBuckets is global (called once per account), but each bucket is recorded in its own
region, read from ``Location`` (GetBucketLocation), as AWS Config does. A configuration that
was never set (no policy, no encryption rule, no tags...) is recorded as ``null``, not as an
error.
"""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, ResourceSpec

_BUCKET = {"Bucket": "Name"}


def _config(
    operation: str,
    merge_key: str,
    result_path: str | None = None,
    absent: tuple[str, ...] = (),
) -> DetailCall:
    return DetailCall(
        operation=operation,
        params=_BUCKET,
        result_path=result_path,
        merge_key=merge_key,
        absent_codes=frozenset(absent),
    )


_BUCKET_IN_REQUEST = "requestParameters.bucketName"

SPECS: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        cfn_type="AWS::S3::Bucket",
        service="s3",
        list_operation="ListBuckets",
        result_path="Buckets[]",
        id_field="Name",
        name_field="Name",
        arn_template="arn:{partition}:s3:::{id}",
        tags_field="Tagging",
        global_service=True,
        region_field="Location",
        details=(
            _config("GetBucketLocation", "Location", "LocationConstraint"),
            _config("GetBucketPolicy", "Policy", "Policy", ("NoSuchBucketPolicy",)),
            _config(
                "GetBucketPolicyStatus", "PolicyStatus", "PolicyStatus", ("NoSuchBucketPolicy",)
            ),
            _config("GetBucketAcl", "Acl"),
            _config(
                "GetBucketEncryption",
                "Encryption",
                "ServerSideEncryptionConfiguration",
                ("ServerSideEncryptionConfigurationNotFoundError",),
            ),
            _config("GetBucketVersioning", "Versioning"),
            _config(
                "GetBucketLifecycleConfiguration",
                "Lifecycle",
                "Rules",
                ("NoSuchLifecycleConfiguration",),
            ),
            _config("GetBucketLogging", "Logging", "LoggingEnabled"),
            _config(
                "GetBucketReplication",
                "Replication",
                "ReplicationConfiguration",
                ("ReplicationConfigurationNotFoundError",),
            ),
            _config("GetBucketCors", "Cors", "CORSRules", ("NoSuchCORSConfiguration",)),
            _config("GetBucketTagging", "Tagging", "TagSet", ("NoSuchTagSet",)),
            _config(
                "GetPublicAccessBlock",
                "PublicAccessBlock",
                "PublicAccessBlockConfiguration",
                ("NoSuchPublicAccessBlockConfiguration",),
            ),
            _config(
                "GetBucketOwnershipControls",
                "OwnershipControls",
                "OwnershipControls",
                ("OwnershipControlsNotFoundError",),
            ),
        ),
        event_resource_ids={
            name: _BUCKET_IN_REQUEST
            for name in (
                "CreateBucket",
                "DeleteBucket",
                "PutBucketPolicy",
                "DeleteBucketPolicy",
                "PutBucketAcl",
                "PutBucketEncryption",
                "DeleteBucketEncryption",
                "PutBucketVersioning",
                "PutBucketLifecycle",
                "PutBucketLifecycleConfiguration",
                "DeleteBucketLifecycle",
                "PutBucketLogging",
                "PutBucketReplication",
                "DeleteBucketReplication",
                "PutBucketCors",
                "DeleteBucketCors",
                "PutBucketTagging",
                "DeleteBucketTagging",
                "PutBucketPublicAccessBlock",
                "DeleteBucketPublicAccessBlock",
                "PutBucketOwnershipControls",
                "DeleteBucketOwnershipControls",
            )
        },
    ),
)
