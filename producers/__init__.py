"""Producers: the pollers and tailers that read AWS and emit snapshots, manifests and events."""
