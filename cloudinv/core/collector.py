"""Garbage-collector tuning of a long-running cloudinv process: the one setting, shared by
the stream worker and the CloudTrail tailer (``cloudinv worker``, ``cloudinv cloudtrail
tail`` and ``run``, and the benchmarks that stand in for them)."""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "tune_gc"]

GC_THRESHOLDS = (50_000, 20, 10)
"""Python's defaults are (700, 10, 10)."""


def tune_gc() -> None:
    """Set once, after start-up imports, before the process starts its work.

    Every message or log file allocates dozens to hundreds of short-lived objects (Faust's
    message and event, the parsed JSON, whole configurations through decode, normalize, diff,
    send and store; a log file's records, events and HTTP answers), many alive at once. With
    the default thresholds they outlive young collections, fill the oldest generation, and
    the collector walks the whole long-lived heap (Faust, aiokafka, botocore, pydantic) over
    and over: full collections took a quarter of the worker's CPU on changed resources
    (gc.callbacks in bench/changes.py). Freezing what exists at start and a larger young
    generation let them die young (about 8% more CloudTrail events per worker CPU-second,
    and a sixth less tailer CPU per small file, bench/cloudtrail.py); cycles are still
    collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
