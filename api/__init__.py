"""The HTTP API and web UI (aiohttp). ``api.app.create_app`` is the factory."""
