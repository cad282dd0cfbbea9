"""What every layer shares: settings, message models, the wire codec, topic names, Kafka
client settings, errors, logging and metrics. Imports nothing else of cloudinv."""
