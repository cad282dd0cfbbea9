"""The live change feed (``GET /v1/changes/stream``) over the DynamoDB store (moto's server):
the feed tests of :mod:`tests.test_api_feed`, imported so that they run here with this
module's ``api`` fixture: live changes, Last-Event-ID reconnects missing nothing and repeating
nothing, a change committed after newer ones, filters. The store's change log (commit
numbers, gaps) is tested in :mod:`tests.test_dynamodb_store`.

The store writes one request at a time (``write_concurrency=1``): moto's server is not safe
under concurrent writes (see :mod:`tests.test_dynamodb_store`).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudinv.sinks.dynamodb_store import DynamoStore
from tests.api_helpers import Api, running_api
from tests.test_api_feed import A
from tests.test_api_feed import (
    test_a_change_committed_after_newer_ones_is_still_delivered as test_a_change_committed_after_newer_ones_is_still_delivered,  # noqa: E501
)
from tests.test_api_feed import test_filters as test_filters
from tests.test_api_feed import (
    test_last_event_id_as_a_parameter_and_bad_ids as test_last_event_id_as_a_parameter_and_bad_ids,
)
from tests.test_api_feed import (
    test_new_changes_reach_a_client_within_a_second as test_new_changes_reach_a_client_within_a_second,  # noqa: E501
)
from tests.test_api_feed import (
    test_reconnecting_with_last_event_id_misses_nothing_and_repeats_nothing as test_reconnecting_with_last_event_id_misses_nothing_and_repeats_nothing,  # noqa: E501
)
from tests.test_api_feed import writer as writer


@pytest.fixture
async def api(tmp_path: Path, moto_endpoint: str) -> AsyncIterator[Api]:
    prefix = f"feed{random.randrange(16**8):08x}"
    async with (
        DynamoStore(
            prefix, region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1
        ) as store,
        running_api(tmp_path, {"admin": None, "a": [A]}, store) as running,
    ):
        assert running.inventory is store
        yield running
    assert "Scan" not in store.stats.calls, store.stats.calls
    assert store.stats.calls["Query"] > 0
