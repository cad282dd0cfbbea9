"""``/v1/resources/{key}/related`` and ``/graph`` over the DynamoDB store (moto's server):
the tests of ``tests/test_api_relationships.py`` run unchanged with this module's ``api``."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudinv.sinks.dynamodb_store import DynamoStore
from tests.api_helpers import Api
from tests.test_api_relationships import serving
from tests.test_api_relationships import (
    test_account_scoped_tokens_see_only_their_side as test_account_scoped_tokens_see_only_their_side,  # noqa: E501
)
from tests.test_api_relationships import (
    test_bad_parameters_are_problems_and_unknown_keys_404 as test_bad_parameters_are_problems_and_unknown_keys_404,  # noqa: E501
)
from tests.test_api_relationships import (
    test_graph_walks_both_directions_and_caps as test_graph_walks_both_directions_and_caps,
)
from tests.test_api_relationships import (
    test_related_answers_in_the_documented_shape as test_related_answers_in_the_documented_shape,
)
from tests.test_api_relationships import (
    test_related_as_of_an_earlier_time_and_filtered as test_related_as_of_an_earlier_time_and_filtered,  # noqa: E501
)


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str) -> AsyncIterator[Api]:
    data_dir: Path = tmp_path_factory.mktemp("relationships-api-dynamodb")
    prefix = f"ra{random.randrange(16**8):08x}"
    async with (
        DynamoStore(
            prefix, region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1
        ) as store,
        serving(data_dir, store) as running,
    ):
        yield running
