"""`wallet dead-letters` prints what poison messages held: never as terminal control sequences."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.messaging import DeadLetter
from wallet.adapters.dead_letters import StoredDeadLetter
from wallet.entrypoints.cli import _dead_letter_text

# Erase the line, move up, set the window title, colour red, override the text direction.
HOSTILE = "\x1b[2K\r\x1b[1A\x1b]0;owned\x07\x1b[31m\u202eok\n"


def shown(letter: DeadLetter | None, text: str = "") -> str:
    return _dead_letter_text(StoredDeadLetter(partition=1, offset=7, letter=letter, text=text))


def test_control_characters_of_a_letter_are_shown_escaped() -> None:
    letter = DeadLetter(
        reason="invalid_field",
        detail=f"type: {HOSTILE}",
        raw_value=f'{{"type": "{HOSTILE}"}}',
        key="alice",
        source_topic="wallet.commands",
        source_partition=2,
        source_offset=11,
        failed_at=datetime(2026, 12, 1, 9, tzinfo=UTC),
    )
    text = shown(letter)
    assert text.count("\n") == 2  # the three lines of a letter, none added by its contents
    assert all(c.isprintable() for c in text.replace("\n", ""))
    escaped = "\\x1b[2K\\r\\x1b[1A\\x1b]0;owned\\x07\\x1b[31m\\u202eok\\n"
    assert f"invalid_field: type: {escaped}" in text
    assert f'{{"type": "{escaped}"}}' in text


def test_a_record_that_is_no_letter_is_shown_escaped_too() -> None:
    assert shown(None, text=f"junk{HOSTILE}") == (
        "[1@7] not a dead letter: junk\\x1b[2K\\r\\x1b[1A\\x1b]0;owned\\x07\\x1b[31m\\u202eok\\n"
    )


def test_printable_text_is_shown_as_it_is() -> None:
    assert shown(None, text='{"amount": "1é€"}') == '[1@7] not a dead letter: {"amount": "1é€"}'
