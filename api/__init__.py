"""The HTTP API and web UI (aiohttp). ``cloudinv.api.app.create_app`` is the factory."""
