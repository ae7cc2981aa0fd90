"""Entrypoints: the HTTP routes and the wallet.results consumer."""
