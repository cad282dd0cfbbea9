"""The /v1 endpoints. Importing this module registers them (see :mod:`api.endpoints`)."""
