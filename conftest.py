"""Root of the test suite: the shared infrastructure fixtures for every package's tests."""

pytest_plugins = ["shared.testing.fixtures"]
