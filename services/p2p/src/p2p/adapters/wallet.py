"""Wallet commands over Kafka: the shared publisher over the shared WalletClient."""

from __future__ import annotations

from shared.wallet_client import WalletCommandPublisher as WalletCommandPublisher
