"""The demo's simulated AWS estate (:mod:`.estate`) and the CloudTrail log files its changes
write (:mod:`.trail`). Used by the runtime, the tests and the benchmarks, never by a stage."""
