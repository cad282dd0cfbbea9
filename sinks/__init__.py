"""Sinks: where versions, changes, events and alerts are kept (local SQLite + Parquet, S3, DynamoDB)."""
