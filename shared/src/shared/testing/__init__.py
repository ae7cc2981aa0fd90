"""Test helpers and the pytest plugin shared by every package."""
