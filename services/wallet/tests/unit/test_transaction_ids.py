"""Transaction ids: time-ordered, strictly increasing in a process, random after the time."""

from __future__ import annotations

import re
import time

from wallet.application.ids import TransactionIds


def test_ids_increase_strictly_and_start_with_the_time_across_refills() -> None:
    ids = TransactionIds(draws_per_refill=3)  # a refill every third id
    before = time.time_ns() // 1_000_000
    drawn = [ids() for _ in range(50)]
    after = time.time_ns() // 1_000_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in drawn)
    assert drawn == sorted(drawn)
    assert len(set(drawn)) == len(drawn)
    # The first 48 bits are the milliseconds (bumped only to stay increasing within one).
    assert before <= int(drawn[0][:12], 16) <= after + len(drawn)


def test_two_generators_draw_different_random_parts() -> None:
    first, second = TransactionIds(), TransactionIds()
    assert {first()[12:] for _ in range(5)}.isdisjoint({second()[12:] for _ in range(5)})
