"""The page cursor of background passes: on after a full page, from the oldest after a short one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.paging import PageCursor, Position

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _position(record: tuple[int, str]) -> Position:
    return (T0 + timedelta(seconds=record[0]), record[1])


def _page(*seconds: int) -> list[tuple[int, str]]:
    return [(s, f"r{s}") for s in seconds]


def test_a_full_page_moves_the_cursor_past_its_last_record() -> None:
    cursor = PageCursor(_position)
    cursor.advance(_page(1, 2, 3), limit=3)
    assert cursor.after == (T0 + timedelta(seconds=3), "r3")
    cursor.advance(_page(4, 5, 6), limit=3)
    assert cursor.after == (T0 + timedelta(seconds=6), "r6")


def test_a_short_or_empty_page_starts_the_next_pass_from_the_oldest() -> None:
    cursor = PageCursor(_position, after=(T0, "r0"))
    cursor.advance(_page(1, 2), limit=3)
    assert cursor.after is None
    cursor.advance(_page(1, 2, 3), limit=3)
    cursor.advance([], limit=3)
    assert cursor.after is None


def test_no_limit_never_moves_the_cursor() -> None:
    # A limit of 0 reads nothing (or everything): either way there is no next page to go on to.
    cursor = PageCursor(_position, after=(T0, "r0"))
    cursor.advance([], limit=0)
    assert cursor.after is None


def test_a_last_record_without_a_position_starts_the_next_pass_from_the_oldest() -> None:
    cursor: PageCursor[tuple[int, str] | None] = PageCursor(
        lambda record: None if record is None else _position(record)
    )
    cursor.advance([(1, "r1"), None], limit=2)
    assert cursor.after is None
