"""Handlers: what the gateway does, talking to ports rather than drivers."""
