"""The wallet process collects cyclic garbage less often than CPython's default."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from wallet.__main__ import YOUNG_GENERATION_THRESHOLD, tune_garbage_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


@pytest.mark.usefixtures("restored_collector")
def test_the_young_generation_waits_longer_and_start_up_objects_are_frozen() -> None:
    _, older, oldest = gc.get_threshold()
    tune_garbage_collector()
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, older, oldest)
    assert YOUNG_GENERATION_THRESHOLD > 2_000
    assert gc.get_freeze_count() > 0
