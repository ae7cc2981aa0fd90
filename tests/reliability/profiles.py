"""How hard the battery pushes: `ci` by default, `deep` with RELIABILITY_PROFILE=deep (nightly or by
hand before a release). RELIABILITY_SEED=<n> reruns one seed of the seeded tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from hypothesis import HealthCheck, settings


@dataclass(frozen=True)
class Profile:
    examples: int  # state-machine runs
    steps: int  # rules per run
    seeds: int  # delivery-simulator seeds
    commands: int  # distinct commands per simulated stream
    interleavings: int  # racing-consumer seeds


PROFILES: Final = {
    "ci": Profile(examples=200, steps=50, seeds=200, commands=60, interleavings=50),
    "deep": Profile(examples=2_000, steps=100, seeds=5_000, commands=200, interleavings=1_000),
}
PROFILE_NAME: Final = os.environ.get("RELIABILITY_PROFILE", "ci")
PROFILE: Final = PROFILES[PROFILE_NAME]


def seeds(count: int) -> list[int]:
    """The seeds to run: all of them, or the one RELIABILITY_SEED names."""
    chosen = os.environ.get("RELIABILITY_SEED")
    return [int(chosen)] if chosen else list(range(count))


def hypothesis_settings() -> settings:
    return settings(
        max_examples=PROFILE.examples,
        stateful_step_count=PROFILE.steps,
        deadline=None,
        # Each step runs the ledger and a full verify; slow data generation is expected.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        print_blob=True,
    )
