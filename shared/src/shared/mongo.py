"""One way to open MongoDB: timezone-aware UTC datetimes, so nothing naive leaks into the domain."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient


def connect(url: str, **options: Any) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(url, tz_aware=True, **options)
