"""Fixtures of the cross-package tests."""

from tests.system import running_system

__all__ = ["running_system"]
