"""Read-side queries of the store contract, against the in-memory store and MongoDB: one
reference's history rows, and balances as of an instant of the wallet's commit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from shared.messaging import CreditCommand, LockCommand, SavingsInCommand
from wallet.application.balance_queries import balances_at
from wallet.application.ledger_service import LedgerService
from wallet.application.ports import LedgerStore
from wallet.domain.ledger import Balances

D = Decimal
T0 = datetime(2041, 3, 1, 9, 30, 0, 123_000, tzinfo=UTC)  # past 2038, with milliseconds


class StepClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _credit(reference: str, currency: str, amount: str) -> CreditCommand:
    return CreditCommand(
        reference_id=reference,
        transaction_type="deposit_nowpayments",
        user_id="dora",
        currency=currency,
        amount=D(amount),
    )


async def test_history_of_one_reference_and_balances_at_an_instant(store: LedgerStore) -> None:
    clock = StepClock()
    service = LedgerService(store, clock=clock, backoff_seconds=0.001)
    await service.handle_batch([_credit("d1", "BTC", "1"), _credit("d2", "ETH", "4")])
    clock.now = T0 + timedelta(milliseconds=1)
    await service.handle_batch(
        [
            LockCommand(reference_id="order-7", transaction_type="p2p_escrow", user_id="dora",
                        currency="BTC", amount=D("0.4")),
            SavingsInCommand(reference_id="s1", transaction_type="savings_deposit",
                             user_id="dora", currency="ETH", amount=D("1.5")),
        ]
    )  # fmt: skip

    rows = await store.history_of(
        "dora", currency=None, limit=10, before=None, reference_id="order-7"
    )
    assert [(r.reference_id, r.direction, r.amount) for r in rows] == [
        ("order-7", "lock", D("0.4"))
    ]
    assert await store.history_of("dora", currency="ETH", limit=10, before=None,
                                  reference_id="order-7") == []  # fmt: skip

    async def at(instant: datetime) -> dict[str, Balances]:
        return {b.currency: b.balances for b in await balances_at(store, "dora", instant)}

    assert await at(T0 - timedelta(milliseconds=1)) == {}
    first = {"BTC": Balances(D(1), D(0), D(0)), "ETH": Balances(D(4), D(0), D(0))}
    assert await at(T0) == first
    assert await at(T0 + timedelta(microseconds=999)) == first
    assert await at(T0 + timedelta(milliseconds=1)) == {
        "BTC": Balances(D("0.6"), D("0.4"), D(0)),
        "ETH": Balances(D("2.5"), D(0), D("1.5")),
    }
