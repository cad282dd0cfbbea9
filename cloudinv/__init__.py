"""cloudinv: an event-streaming inventory of AWS estates.

This package holds what every part shares: settings, message models, the wire codec, topic
names, the command line and the embedded runtime. The stages live beside it in ``producers``,
``streams``, ``sinks`` and ``api``.
"""

__version__ = "0.1.0"
