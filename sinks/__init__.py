"""Sinks: where versions, changes, scans, CloudTrail events and alerts are kept.

Today: local SQLite stores (WAL) under the data directory; the Parquet warehouse (local
directory and S3, :mod:`cloudinv.sinks.parquet_warehouse`) with its Athena DDL and DuckDB views;
alert deliveries (webhooks, SNS).
"""
