"""Suite-wide fixtures: one moto server and one Tansu broker for the whole run.

Tests isolate themselves by unique names (topics, consumer groups, buckets, account ids)
rather than by starting their own servers, so the suite stays fast.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

# Dummy credentials for moto: no test may ever reach real AWS.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server in a thread of the test process; its URL (http://127.0.0.1:PORT)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group, bucket and table names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """One Tansu broker for the suite; its bootstrap address (127.0.0.1:PORT)."""
    from cloudinv.embedded import EmbeddedBroker

    embedded = EmbeddedBroker(tmp_path_factory.mktemp("broker"))
    await embedded.start()
    try:
        yield embedded.bootstrap
    finally:
        await embedded.stop()
