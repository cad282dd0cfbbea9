"""Stream processing: the Faust app, its agents and their tables.

``cloudinv.streams.app`` builds the one Faust app; each domain module
(``cloudinv.streams.inventory``, …) declares its topics, tables and agents against it through a
``bind(app, topics)`` function, so the same agents run in ``cloudinv worker``, in the demo, and in
tests.
"""
