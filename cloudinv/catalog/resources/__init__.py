"""Built-in resource type declarations, one module per AWS service.

Each module exposes ``SPECS: tuple[ResourceSpec, ...]``; ``cloudinv.catalog.registry`` lists the
modules and registers their specs. A new simple type is one ``ResourceSpec(...)`` entry.
"""
