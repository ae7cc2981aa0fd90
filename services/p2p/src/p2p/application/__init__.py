"""Handlers: what the P2P service does, talking to ports rather than drivers."""
