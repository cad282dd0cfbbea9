"""api.routes_common.offset_page: the pages of lists the API reads whole (types, accounts,
principals, services, activity), by position, and what a damaged cursor gets."""

from __future__ import annotations

import pytest

from cloudinv.api.endpoints import BadRequest, PageQuery
from cloudinv.api.routes_common import encode_cursor, offset_page


def test_pages_follow_the_cursor_to_the_end() -> None:
    items = list(range(7))
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = offset_page(items, PageQuery(limit=3, cursor=cursor), "types")
        seen += page
        pages += 1
        if cursor is None:
            break
    assert seen == items and pages == 3
    assert offset_page(items, PageQuery(limit=7), "types") == (items, None)


@pytest.mark.parametrize(
    "cursor",
    [encode_cursor("types", o=-1), encode_cursor("types", o="3"), encode_cursor("scans", o=3)],
)
def test_a_damaged_or_foreign_cursor_is_a_bad_request(cursor: str) -> None:
    with pytest.raises(BadRequest) as raised:
        offset_page([1, 2, 3], PageQuery(limit=2, cursor=cursor), "types")
    assert raised.value.parameter == "cursor"
