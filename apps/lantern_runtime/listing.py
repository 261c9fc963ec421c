"""The query of the services' internal list endpoints (notifier's `GET /notifications`, bank's
`GET /authorizations`): the records of one order, at most `limit` of them.

These endpoints are for operators and tests, not customers; an order id is required, so no
request can read every record at once, and the limit bounds what one answer holds. A missing
order id, or a limit out of range, is a 422 naming the parameter.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Limit", "OrderId"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

OrderId = Annotated[str, Query(min_length=1, max_length=200, description="the order whose records to list")]
Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"at most this many records (default {DEFAULT_LIMIT})")
]
