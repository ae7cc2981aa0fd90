"""Text from outside that the system can write."""

from __future__ import annotations


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
