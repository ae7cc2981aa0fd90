"""Text from outside that the system can write."""

from __future__ import annotations

from typing import Any


def utf8_encodable(text: str) -> bool:
    """Whether UTF-8 can encode the text: a str decoded from JSON can hold a lone UTF-16
    surrogate (`"\\ud800"`), which no document, message or key can then be written with."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def unencodable_at(document: Any) -> str | None:
    """Where in a decoded JSON document a string or a field name UTF-8 cannot encode is (a
    dotted path), or None. Walked without recursion: a body may nest deeper than Python does."""
    stack: list[tuple[str, Any]] = [("body", document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if not utf8_encodable(value):
                return where
        elif isinstance(value, dict):
            for key, item in value.items():
                if not utf8_encodable(key):
                    return f"{where}.{key!r}"  # the repr shows the surrogate escaped
                stack.append((f"{where}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{where}.{index}", item) for index, item in enumerate(value))
    return None
