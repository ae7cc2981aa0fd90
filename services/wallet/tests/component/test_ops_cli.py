"""`wallet verify` and `wallet replay` as ops run them, on the in-memory ledger: a platform account
whose stored balance no event explains is named by verify, and by replay before it resets it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from shared.messaging import CreditCommand
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.application.ledger_service import LedgerService
from wallet.entrypoints import cli

OK = "ok: projections match the events and every currency sums to zero\n"


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> InMemoryLedgerStore:
    """The ledger every command of the CLI opens: alice deposited 1.5 BTC."""
    store = InMemoryLedgerStore()
    deposit = CreditCommand(
        user_id="alice",
        currency="BTC",
        amount="1.5",
        transaction_type="deposit_nowpayments",
        reference_id="d1",
    )
    asyncio.run(LedgerService(store).handle_batch([deposit]))

    @asynccontextmanager
    async def open_store() -> AsyncIterator[InMemoryLedgerStore]:
        yield store

    monkeypatch.setattr(cli, "open_store", open_store)
    return store


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.app, list(args))
    return result.exit_code, result.output


def test_replay_prints_each_platform_account_it_resets_before_it_does(
    store: InMemoryLedgerStore,
) -> None:
    assert run("verify") == (0, OK)
    # A fee balance no event explains (written around the ledger), and one changed by hand.
    store.accounts[("platform:fees", "BTC")] = Decimal("0.0000001")
    store.accounts[("external:nowpayments", "BTC")] = Decimal("-2")

    code, output = run("verify")
    assert code == 1
    assert output.splitlines() == [
        "account external:nowpayments/BTC: balance expected -1.5, found -2",
        "account platform:fees/BTC: balance expected 0, found 0.0000001",
        "currency BTC: sum of all accounts expected 0, found -0.4999999",
        "3 difference(s) found",
    ]

    code, output = run("replay", "--yes")
    assert code == 0, output
    reset = "(the events do not explain the stored balance: reset to the rebuilt one)"
    assert output.splitlines() == [
        f"account external:nowpayments/BTC: stored -2, rebuilt -1.5 {reset}",
        f"account platform:fees/BTC: stored 0.0000001, rebuilt 0 {reset}",
        "replayed: 1 wallets, 1 history rows, 1 platform accounts;"
        " 2 platform account balance(s) reset, listed above",
    ]
    assert store.accounts == {("external:nowpayments", "BTC"): Decimal("-1.5")}
    assert run("verify") == (0, OK)

    # Nothing to reset: nothing said about it.
    assert run("replay", "--yes") == (
        0,
        "replayed: 1 wallets, 1 history rows, 1 platform accounts\n",
    )
