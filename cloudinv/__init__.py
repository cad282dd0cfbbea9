"""cloudinv: an event-streaming inventory of AWS estates.

One installed package, in layers; each imports only the layers below it (``make lint``
checks this with import-linter, ``.importlinter``):

- ``cloudinv.cli`` — the command line;
- ``cloudinv.runtime`` — running the roles: the whole stack in one command, the embedded
  broker, child processes, the roles' health server;
- ``cloudinv.simulator`` — the simulated AWS estate of the demo (never imported by a stage);
- ``cloudinv.api`` — the aiohttp API and web UI (folder ``api/``);
- ``cloudinv.streams`` — the Faust app and its agents (folder ``streams/``);
- ``cloudinv.producers`` and ``cloudinv.sinks`` — collectors and the CloudTrail tailer
  (folder ``producers/``), stores and the warehouse (folder ``sinks/``), independent of
  each other;
- ``cloudinv.catalog`` — what a resource type is: specs, the registry, the declared types,
  identity and diff rules;
- ``cloudinv.core`` — settings, message models, the wire codec, topic names, Kafka client
  settings, logging and metrics.

The stages keep their folders at the top of the repository; ``cloudinv/<stage>`` is a
symbolic link to each, so the source tree, the editable install and the wheel all import
them as ``cloudinv.<stage>``.
"""

__version__ = "0.1.0"
