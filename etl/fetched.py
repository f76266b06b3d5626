"""What an API answer is, before any layer interprets it: the bytes as received
(``Fetched``) and the names of the values an ``/activity`` row carries.

Standard library only, on purpose: the layers share these without importing one another.
The HTTP client (``etl.client``) makes a ``Fetched``; the warehouse (``etl.warehouse``)
stores it without importing httpx or tenacity; validation (``etl.validate``) builds rows
of these columns without importing SQLAlchemy; the schema (``etl.schema``) declares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# The value columns of an /activity row (and of the breakdown tables), in storage order.
ACTIVITY_METRICS = (
    "usage",
    "byok_usage_inference",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
)
ACTIVITY_ATTRIBUTES = ("model", "model_permaslug", "provider_name")
# Every column a validated row carries: its day, its endpoint, then the values above.
ROW_COLUMNS = ("date", "endpoint_id", *ACTIVITY_ATTRIBUTES, *ACTIVITY_METRICS)


@dataclass(frozen=True)
class Fetched:
    """One successful response: the bytes as received and their parsed JSON."""

    path: str
    params: dict[str, str]
    status: int
    content_type: str
    body: bytes
    document: Any
    fetched_at: datetime
    attempts: int = 1
