"""`make demo` passes against `make run`: the seed's phase-4 checklist through the public API of the
whole running system (every service, the embedded Kafka and MongoDB, the NOWPayments simulator)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.system import RunningSystem


@pytest.mark.slow
@pytest.mark.integration
def test_make_demo_passes_against_make_run(running_system: RunningSystem) -> None:
    demo = subprocess.run(
        [sys.executable, "-m", "demo"],
        env={**os.environ, **running_system.env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(demo.stdout)
    assert demo.returncode == 0, demo.stdout + demo.stderr + running_system.output.read_text()
    assert "✗" not in demo.stdout
    checks = [line for line in demo.stdout.splitlines() if line.lstrip().startswith("✓")]
    assert len(checks) >= 15, demo.stdout
    for step in ("Deposit", "Withdrawal", "P2P", "Swap", "Express buy", "Referral", "Portfolio"):
        assert step in demo.stdout
