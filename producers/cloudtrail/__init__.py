"""CloudTrail: log files from S3 (live through SQS, or backfilled) to the CloudTrail topic.

- :mod:`producers.cloudtrail.normalize`: one raw record → :class:`~cloudinv.models.CloudTrailEvent`
  (credentials and secret-looking values dropped).
- :mod:`producers.cloudtrail.logfile`: bytes of one log file → records, and the record of
  rejected files.
- :mod:`producers.cloudtrail.publish`: records → Kafka, acknowledged per file.
- :mod:`producers.cloudtrail.tailer`: SQS (S3 notifications or EventBridge) → Kafka.
- :mod:`producers.cloudtrail.backfill`: S3 date ranges or local files → Kafka, resumable.
"""
