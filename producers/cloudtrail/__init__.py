"""CloudTrail: log files from S3 (live through SQS, or backfilled) to the CloudTrail topic.

- :mod:`cloudinv.producers.cloudtrail.normalize`: one raw record →
  :class:`~cloudinv.core.models.CloudTrailEvent` (credentials and secret-looking values dropped).
- :mod:`cloudinv.producers.cloudtrail.logfile`: bytes of one log file → records, and the record of
  rejected files.
- :mod:`cloudinv.producers.cloudtrail.publish`: records → Kafka, acknowledged per file.
- :mod:`cloudinv.producers.cloudtrail.tailer`: SQS (S3 notifications or EventBridge) → Kafka.
- :mod:`cloudinv.producers.cloudtrail.backfill`: S3 date ranges or local files → Kafka, resumable.
"""
