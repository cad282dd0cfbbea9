"""Sinks: where versions, changes, scans, CloudTrail events and alerts are kept.

Today: local SQLite stores (WAL) under the data directory; alert deliveries (webhooks, SNS).
"""
