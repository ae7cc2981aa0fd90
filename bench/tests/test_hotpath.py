"""The in-process timing of the wallet's work runs on a tiny input and reports every phase."""

from __future__ import annotations

import argparse

from bench.hotpath import PHASES, _child


def test_a_measurement_reports_each_phase_per_command() -> None:
    figures = _child(None, argparse.Namespace(commands=200, batch=50, repeats=1))
    assert set(figures) == set(PHASES)
    assert all(value > 0 for value in figures.values())
