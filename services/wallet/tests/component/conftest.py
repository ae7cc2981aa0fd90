"""The component tests' wallet: the in-memory store, the broker built but never started."""

import pytest

from wallet.bootstrap import WalletRuntime, build_runtime
from wallet.settings import WalletSettings


@pytest.fixture(scope="module")
def runtime() -> WalletRuntime:
    """A fresh wallet per test module (modules never see each other's users)."""
    return build_runtime(
        WalletSettings(WALLET_STORE="memory", kafka_bootstrap_servers="127.0.0.1:1")
    )
