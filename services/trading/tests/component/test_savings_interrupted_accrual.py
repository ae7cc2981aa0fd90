"""The accrual over the in-memory stores with a wallet double: a run stopped after it claimed some
payments of its day is completed by the next one, which sends every claim of the day, also those
of savers its own balances no longer owe, so that none is left pending for a later run."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from shared.messaging import CommandResult, WalletCommand
from trading.savings.adapters.memory import MemoryAccruals, MemorySavingsHistory, MemoryTransfers
from trading.savings.application.ports import AccrualRecord
from trading.savings.application.service import SavingsService
from trading.savings.domain.accrual import AccrualDue, SavingsMovement
from trading.testing import AnsweringWallet, FakeClock

TODAY = date(2026, 11, 30)


class InterruptibleAccruals(MemoryAccruals):
    """The in-memory store, whose claims for the users in `failing` fail (a run stopped midway)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()

    async def claim(self, due: AccrualDue, at: datetime) -> AccrualRecord:
        if due.user_id in self.failing:
            raise RuntimeError("the run stopped here")
        return await super().claim(due, at)


class LosingWallet(AnsweringWallet):
    """The wallet double, whose results for the users in `lost` do not come (a timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: set[str] = set()

    async def send(self, command: WalletCommand, **options: Any) -> CommandResult | None:
        if command.user_id in self.lost:
            self.answers.insert(0, "timeout")
        return await super().send(command, **options)


@dataclass
class Rig:
    service: SavingsService
    wallet: LosingWallet
    history: MemorySavingsHistory
    accruals: InterruptibleAccruals
    clock: FakeClock

    async def move(self, user: str, amount: str, at: datetime, kind: str) -> None:
        await self.history.record_event(
            SavingsMovement(uuid.uuid4().hex, kind, user, "USDT", Decimal(amount), at)
        )

    def paid(self) -> list[tuple[str, str, Decimal]]:
        return sorted((c.reference_id, c.user_id, c.amount) for c in self.wallet.sent)


@pytest.fixture
def rig() -> Rig:
    clock = FakeClock(datetime(2026, 11, 30, 10, tzinfo=UTC))
    wallet, history, accruals = LosingWallet(), MemorySavingsHistory(), InterruptibleAccruals()

    async def caught_up() -> bool:
        return True

    service = SavingsService(
        transfers=MemoryTransfers(),
        history=history,
        accruals=accruals,
        wallet=wallet,
        aprs={"USDT": Decimal("0.05")},
        clock=clock,
        history_caught_up=caught_up,
        result_timeout=1.0,
    )
    return Rig(service, wallet, history, accruals, clock)


async def test_the_run_completing_a_day_sends_the_claims_of_savers_who_left_since(
    rig: Rig,
) -> None:
    """An operator's run of today claimed amy's interest, then stopped before bob's; amy took all
    her savings out; the next run completed the day on the balances of its moment, which owe amy
    nothing, and sent bob's payment only: amy's claim stayed pending, reported nowhere, and the
    scheduler sent it after midnight. Her amount was decided when it was claimed: the completing
    run sends it, and counts it."""
    await rig.move("amy", "3650", datetime(2026, 11, 30, 9, tzinfo=UTC), "savings_deposit")
    await rig.move("bob", "3650", datetime(2026, 11, 30, 9, tzinfo=UTC), "savings_deposit")
    rig.accruals.failing = {"bob"}
    with pytest.raises(RuntimeError):
        await rig.service.accrue(TODAY)
    assert rig.wallet.sent == []  # amy's payment was claimed, not sent
    await rig.move("amy", "-3650", datetime(2026, 11, 30, 10, 30, tzinfo=UTC), "savings_withdrawal")

    rig.accruals.failing = set()
    rig.clock.now = datetime(2026, 11, 30, 11, tzinfo=UTC)
    report = await rig.service.accrue(TODAY)
    assert report["items"][0] == {
        "currency": "USDT",
        "apr": "0.05",
        "accounts_owed": 2,
        "paid": 2,
        "paid_amount": "1",
        "already_settled": 0,
        "pending": 0,
        "failed": 0,
        "unsendable": 0,
        "claimed_earlier": 1,
    }
    # 3650 × 0.05 / 365 = 0.5 each, under each saver's own key, once.
    expected = [
        ("interest:USDT:2026-11-30:amy", "amy", Decimal("0.5")),
        ("interest:USDT:2026-11-30:bob", "bob", Decimal("0.5")),
    ]
    assert rig.paid() == expected
    day = await rig.accruals.of_day("USDT", TODAY)
    assert [(r["user_id"], r["status"], r["amount"]) for r in day] == [
        ("amy", "paid", Decimal("0.5")),
        ("bob", "paid", Decimal("0.5")),
    ]
    assert await rig.service.positions("amy") == [
        {"currency": "USDT", "savings_balance": "0.5", "interest_earned": "0.5"}
    ]
    assert await rig.service.positions("bob") == [
        {"currency": "USDT", "savings_balance": "3650.5", "interest_earned": "0.5"}
    ]

    # The scheduler's run after midnight: the day is final and paid, nothing is sent again.
    rig.clock.now = datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC)
    after_midnight = await rig.service.accrue(TODAY)
    item = after_midnight["items"][0]
    assert (item["paid"], item["already_settled"], item["pending"]) == (0, 2, 0)
    assert item["claimed_earlier"] == 0
    assert rig.paid() == expected


async def test_a_claim_of_a_saver_who_left_whose_result_is_lost_is_sent_again_by_the_next_run(
    rig: Rig,
) -> None:
    """The completing run sends amy's earlier claim but gets no result: it stays pending and is
    reported so; the next run of the day sends the same payment, under the same key, again."""
    await rig.move("amy", "3650", datetime(2026, 11, 30, 9, tzinfo=UTC), "savings_deposit")
    await rig.move("bob", "3650", datetime(2026, 11, 30, 9, tzinfo=UTC), "savings_deposit")
    rig.accruals.failing = {"bob"}
    with pytest.raises(RuntimeError):
        await rig.service.accrue(TODAY)
    await rig.move("amy", "-3650", datetime(2026, 11, 30, 10, 30, tzinfo=UTC), "savings_withdrawal")
    rig.accruals.failing = set()
    rig.clock.now = datetime(2026, 11, 30, 11, tzinfo=UTC)
    rig.wallet.lost = {"amy"}
    report = await rig.service.accrue(TODAY)
    item = report["items"][0]
    assert (item["paid"], item["pending"], item["claimed_earlier"]) == (1, 1, 1)
    rig.wallet.lost = set()
    rig.wallet.answers = ["duplicate"]  # the wallet had applied it: it answers the first outcome
    rerun = await rig.service.accrue(TODAY)
    assert (rerun["items"][0]["paid"], rerun["items"][0]["pending"]) == (1, 0)
    amy = ("interest:USDT:2026-11-30:amy", "amy", Decimal("0.5"))
    assert rig.paid() == [amy, amy, ("interest:USDT:2026-11-30:bob", "bob", Decimal("0.5"))]
    assert [r["status"] for r in await rig.accruals.of_day("USDT", TODAY)] == ["paid", "paid"]
