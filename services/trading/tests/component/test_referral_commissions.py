"""Referrals over the real MongoDB with a wallet double: a binding happens once even when two
requests race, and a fee is paid on once however often its event is delivered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from shared.messaging import LedgerTransaction, Posting
from trading.referrals.adapters.mongo import (
    BINDINGS,
    COMMISSIONS,
    MongoBindings,
    MongoCommissions,
)
from trading.referrals.application.service import ReferralService
from trading.referrals.domain.errors import AlreadyBound
from trading.testing import AnsweringWallet, FakeClock, result_of


@dataclass
class Rig:
    service: ReferralService
    wallet: AnsweringWallet
    clock: FakeClock


@pytest_asyncio.fixture(loop_scope="session")
async def rig(mongo_database: AsyncDatabase[dict[str, Any]]) -> AsyncIterator[Rig]:
    for collection in (BINDINGS, COMMISSIONS):
        await mongo_database[collection].delete_many({})
    clock, wallet = FakeClock(), AnsweringWallet()
    service = ReferralService(
        bindings=MongoBindings(mongo_database),
        commissions=MongoCommissions(mongo_database),
        wallet=wallet,
        rate=Decimal("0.20"),
        clock=clock,
    )
    yield Rig(service, wallet, clock)


def _swap(user: str, tx_id: str, at: datetime, fee: str = "0.00001") -> LedgerTransaction:
    postings = [
        (f"user:{user}:available", "BTC", f"-{Decimal('0.01')}"),
        ("platform:fees", "BTC", fee),
        ("platform:liquidity", "BTC", str(Decimal("0.01") - Decimal(fee))),
        ("platform:liquidity", "ETH", "-0.3"),
        (f"user:{user}:available", "ETH", "0.3"),
    ]
    return LedgerTransaction(
        transaction_id=tx_id,
        command_id=f"c-{tx_id}",
        type="exchange",
        transaction_type="swap",
        reference_id=f"swap:{tx_id}",
        user_id=user,
        postings=[Posting(account=a, currency=c, amount=Decimal(v)) for a, c, v in postings],
        occurred_at=at,
    )


async def test_two_racing_binds_bind_once(rig: Rig) -> None:
    outcomes = await asyncio.gather(
        rig.service.bind("ivy", "rex"), rig.service.bind("ivy", "ron"), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, AlreadyBound)]
    assert len(refused) == 1
    assert refused[0].code == "already_bound"
    summary = await rig.service.summary("ivy")
    assert summary["referrer_id"] in {"rex", "ron"}
    assert (await rig.service.summary(summary["referrer_id"]))["invitees"] == 1


async def test_a_redelivered_fee_is_paid_on_once(rig: Rig) -> None:
    await rig.service.bind("ian", "rae")
    swap = _swap("ian", "tx-1", rig.clock.now + timedelta(seconds=1))
    for _ in range(3):
        await rig.service.on_ledger_transaction(swap)
    # Not settled yet (no result): each delivery resends the same command, the wallet's key
    # makes it one payment.
    assert {(c.reference_id, c.user_id, c.amount) for c in rig.wallet.sent} == {
        ("referral:tx-1:BTC", "rae", Decimal("0.000002"))
    }
    sent = len(rig.wallet.sent)
    await rig.service.on_commission_result(result_of(rig.wallet.sent[0], "applied"))
    await rig.service.on_ledger_transaction(swap)
    assert len(rig.wallet.sent) == sent  # settled: a later delivery sends nothing
    assert (await rig.service.summary("rae"))["earned"] == [
        {"currency": "BTC", "amount": "0.000002"}
    ]
    assert rig.wallet.sent[0].metadata == {
        "referred_user_id": "ian",
        "source_transaction_id": "tx-1",
        "source_transaction_type": "swap",
        "fee": "0.00001",
        "rate": "0.2",
    }


async def test_fees_before_the_binding_and_of_others_earn_nothing(rig: Rig) -> None:
    await rig.service.on_ledger_transaction(_swap("una", "tx-early", rig.clock.now))
    rig.clock.advance(60)
    await rig.service.bind("una", "rik")
    await rig.service.on_ledger_transaction(
        _swap("una", "tx-before", rig.clock.now - timedelta(seconds=1))
    )
    await rig.service.on_ledger_transaction(_swap("stranger", "tx-other", rig.clock.now))
    assert rig.wallet.sent == []
    await rig.service.on_ledger_transaction(_swap("una", "tx-after", rig.clock.now))
    assert [c.reference_id for c in rig.wallet.sent] == ["referral:tx-after:BTC"]


async def test_a_refused_payout_is_recorded_and_not_earned(rig: Rig) -> None:
    await rig.service.bind("ned", "rox")
    await rig.service.on_ledger_transaction(_swap("ned", "tx-r", rig.clock.now))
    await rig.service.on_commission_result(
        result_of(rig.wallet.sent[0], "rejected", reason="insufficient_platform_funds")
    )
    assert (await rig.service.summary("rox"))["earned"] == []
    await rig.service.on_ledger_transaction(_swap("ned", "tx-r", rig.clock.now))
    assert len(rig.wallet.sent) == 1
