"""shared.text: where a decoded JSON body holds text UTF-8 cannot encode."""

from __future__ import annotations

from typing import Any

import pytest

from shared.text import unencodable_at


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({"reason": "fine", "note": "caf\u00e9 \U0001f600"}, None),
        ({"reason": "x\ud800"}, "body.reason"),
        ({"items": [{"id": "a"}, {"id": "\udfff"}]}, "body.items.1.id"),
        ({"ok\ud800": 1}, "body.'ok\\ud800'"),
        (["\ud800"], "body.0"),
        ("\ud800", "body"),
        ({"n": 1, "b": True, "z": None, "f": 1.5}, None),
    ],
)
def test_the_place_of_a_lone_surrogate_is_named(document: Any, where: str | None) -> None:
    assert unencodable_at(document) == where


def test_a_body_nested_deeper_than_python_recurses_is_walked() -> None:
    deep: Any = "\ud800"
    for _ in range(50_000):
        deep = [deep]
    found = unencodable_at(deep)
    assert found is not None
    assert found.startswith("body.0.0.")
