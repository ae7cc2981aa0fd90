"""Fixtures of the cross-package tests."""

from tests.system import running_system, running_system_for_module

__all__ = ["running_system", "running_system_for_module"]
