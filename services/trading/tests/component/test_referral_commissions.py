"""Referrals over each store (memory and the real MongoDB) with a wallet double: a binding happens
once even when two requests race, a fee is paid on once however often its event is delivered, a
fee read while its payer's binding was being stored is paid on exactly when it counts, and a
commission whose result never came back is asked about again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase
from structlog.testing import capture_logs

from shared.messaging import LedgerTransaction, Posting, WalletCommand
from trading.referrals.adapters.memory import MemoryBindings, MemoryCommissions
from trading.referrals.adapters.mongo import MongoBindings, MongoCommissions, ensure_indexes
from trading.referrals.application.ports import Bindings, Commissions
from trading.referrals.application.service import ReferralService
from trading.referrals.domain.commissions import commission_reference
from trading.referrals.domain.errors import AlreadyBound, ReferralRefused
from trading.testing import AnsweringWallet, FakeClock, result_of

type Database = AsyncDatabase[dict[str, Any]]


@dataclass
class Rig:
    service: ReferralService
    bindings: Bindings
    commissions: Commissions
    wallet: AnsweringWallet
    clock: FakeClock


@pytest_asyncio.fixture
async def rig(store_database: Database | None) -> Rig:
    clock, wallet = FakeClock(), AnsweringWallet()
    bindings: Bindings
    commissions: Commissions
    if store_database is None:
        bindings, commissions = MemoryBindings(clock), MemoryCommissions()
    else:
        await ensure_indexes(store_database)
        bindings, commissions = (
            MongoBindings(store_database, clock),
            MongoCommissions(store_database),
        )
    service = ReferralService(
        bindings=bindings,
        commissions=commissions,
        wallet=wallet,
        rate=Decimal("0.20"),
        clock=clock,
    )
    return Rig(service, bindings, commissions, wallet, clock)


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


async def test_a_referrer_id_no_command_can_carry_is_refused_and_nothing_is_bound(
    rig: Rig,
) -> None:
    # A lone surrogate passes every character rule but UTF-8 cannot encode it: MongoDB could not
    # store the binding (a 500), and no commission credit to it could ever be sent.
    with pytest.raises(ReferralRefused) as refused:
        await rig.service.bind("ivy", "ref\ud800")
    assert (refused.value.code, refused.value.http_status) == ("invalid_referrer", 400)
    assert await rig.bindings.of("ivy") is None
    bound = await rig.service.bind("ivy", "ref")
    assert bound.referrer_id == "ref"


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


async def test_a_result_that_only_names_a_commission_settles_nothing(rig: Rig) -> None:
    await rig.service.bind("ola", "pim")
    await rig.service.on_ledger_transaction(_swap("ola", "tx-f", rig.clock.now))
    [sent] = rig.wallet.sent
    # Another user's credit, or another command type, under the commission's reference.
    for foreign in (
        sent.model_copy(update={"user_id": "mallory"}),
        sent.model_copy(update={"type": "debit"}),
    ):
        await rig.service.on_commission_result(
            result_of(foreign, "rejected", reason="insufficient_funds")
        )
    record = await rig.commissions.get(sent.reference_id)
    assert record is not None
    assert record["status"] == "pending"
    await rig.service.on_commission_result(result_of(sent, "applied"))
    assert (await rig.service.summary("pim"))["earned"] == [
        {"currency": "BTC", "amount": "0.000002"}
    ]


async def test_a_refused_payout_is_recorded_and_not_earned(rig: Rig) -> None:
    await rig.service.bind("ned", "rox")
    await rig.service.on_ledger_transaction(_swap("ned", "tx-r", rig.clock.now))
    await rig.service.on_commission_result(
        result_of(rig.wallet.sent[0], "rejected", reason="insufficient_platform_funds")
    )
    assert (await rig.service.summary("rox"))["earned"] == []
    await rig.service.on_ledger_transaction(_swap("ned", "tx-r", rig.clock.now))
    assert len(rig.wallet.sent) == 1


async def test_a_fee_read_while_the_binding_is_being_stored_is_paid_on_if_it_counts(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bind request has begun but its binding is not stored yet when the invitee pays a fee
    and the fee's event is read (no binding: nothing owed then). Whatever `bound_at` the binding
    then gets, every fee that occurred at or after it is paid on, once, however often its event
    is delivered. `bound_at` was taken before the insert, so the fee counted (it occurred after
    it) but, its event read once, was never paid on."""
    fees: list[LedgerTransaction] = []
    insert = rig.bindings.insert

    async def insert_while_a_fee_is_read(*args: Any) -> Any:
        rig.clock.advance(1)
        fees.append(_swap("wes", "tx-window", rig.clock.now))
        rig.clock.advance(1)  # its event is read a moment later
        await rig.service.on_ledger_transaction(fees[-1])
        rig.clock.advance(1)  # and the insert commits a moment after that
        return await insert(*args)

    monkeypatch.setattr(rig.bindings, "insert", insert_while_a_fee_is_read)
    binding = await rig.service.bind("wes", "rio")
    assert await rig.bindings.of("wes") == binding  # the answer is what is stored
    fees.append(_swap("wes", "tx-at-bound", binding.bound_at))
    fees.append(_swap("wes", "tx-later", binding.bound_at + timedelta(milliseconds=1)))
    for fee in fees[1:]:
        await rig.service.on_ledger_transaction(fee)
    owed = {
        commission_reference(fee.transaction_id, "BTC")
        for fee in fees
        if fee.occurred_at >= binding.bound_at
    }
    assert {"referral:tx-at-bound:BTC", "referral:tx-later:BTC"} <= owed
    assert {c.reference_id for c in rig.wallet.sent} == owed
    for command in rig.wallet.sent:
        await rig.service.on_commission_result(result_of(command, "applied"))
    sent = len(rig.wallet.sent)
    for fee in fees:  # at least once: redelivered, the window's fee included, nothing changes
        await rig.service.on_ledger_transaction(fee)
    assert len(rig.wallet.sent) == sent
    assert (await rig.service.summary("rio"))["earned"] == [
        {"currency": "BTC", "amount": str(Decimal("0.000002") * len(owed))}
    ]


async def _asked_again(rig: Rig, reference_id: str) -> list[WalletCommand]:
    """The commands for `reference_id` that one ask-again pass sent."""
    sent = len(rig.wallet.sent)
    await rig.service.ask_again(timedelta(seconds=60))
    return [c for c in rig.wallet.sent[sent:] if c.reference_id == reference_id]


@pytest.mark.parametrize(("original", "earned"), [("applied", "0.000002"), ("rejected", None)])
async def test_a_commission_whose_result_was_lost_is_asked_about_again(
    rig: Rig, original: str, earned: str | None
) -> None:
    """The wallet decided the credit, its result never came back (lost, or dead-lettered after
    failing here): 60 s after it was sent the command goes out again with the same money fields,
    once per period, until the wallet's answer (a duplicate carrying the first outcome) settles
    the commission as the first result would have."""
    await rig.service.bind("lia", "rob")
    await rig.service.on_ledger_transaction(_swap("lia", "tx-lost", rig.clock.now))
    [first] = rig.wallet.sent
    rig.clock.advance(59)
    assert await _asked_again(rig, first.reference_id) == []  # the answer may be on its way
    rig.clock.advance(2)
    [again] = await _asked_again(rig, first.reference_id)
    assert await _asked_again(rig, first.reference_id) == []  # once per period
    assert (again.idempotency_key, again.fingerprint(), again.metadata) == (
        first.idempotency_key,
        first.fingerprint(),
        first.metadata,
    )
    rig.clock.advance(61)
    [still] = await _asked_again(rig, first.reference_id)  # that answer was lost too
    await rig.service.on_commission_result(result_of(still, "duplicate", original_status=original))
    expected = [{"currency": "BTC", "amount": earned}] if earned else []
    assert (await rig.service.summary("rob"))["earned"] == expected
    rig.clock.advance(3600)
    assert await _asked_again(rig, first.reference_id) == []  # settled: nothing awaited


async def test_a_refused_commission_is_not_asked_again(rig: Rig) -> None:
    await rig.service.bind("rhys", "ray")
    await rig.service.on_ledger_transaction(_swap("rhys", "tx-refused", rig.clock.now))
    [command] = rig.wallet.sent
    await rig.service.on_commission_result(
        result_of(command, "rejected", reason="insufficient_platform_funds")
    )
    rig.clock.advance(3600)
    assert await _asked_again(rig, command.reference_id) == []
    assert rig.wallet.sent == [command]


async def test_a_commission_an_earlier_version_failed_without_an_outcome_is_paid(
    rig: Rig,
) -> None:
    """Earlier versions recorded a `processing_failed` answer (the wallet recorded no outcome)
    as the commission's refusal, and it was never sent again: that referrer was never paid. It
    is asked again like a pending one, and the wallet's answer pays it; a redelivered fee event
    sends it again too."""
    await rig.service.bind("uma", "una")
    await rig.service.on_ledger_transaction(_swap("uma", "tx-unrecorded", rig.clock.now))
    [command] = rig.wallet.sent
    await rig.commissions.settle(command.reference_id, "failed", "processing_failed", rig.clock.now)
    await rig.service.on_ledger_transaction(_swap("uma", "tx-unrecorded", rig.clock.now))
    assert [c.reference_id for c in rig.wallet.sent] == [command.reference_id] * 2
    rig.clock.advance(61)
    [again] = await _asked_again(rig, command.reference_id)
    await rig.service.on_commission_result(result_of(again, "applied"))
    assert (await rig.service.summary("una"))["earned"] == [
        {"currency": "BTC", "amount": "0.000002"}
    ]
    rig.clock.advance(3600)
    assert await _asked_again(rig, command.reference_id) == []  # paid: nothing awaited


async def _unsendable_commission(rig: Rig, invitee: str, tx_id: str) -> str:
    """A commission owed to a referrer an earlier version bound with an id no wallet command can
    carry (a space): its credit cannot be built, its first send failed as every send will. Its
    reference."""
    await rig.bindings.insert(invitee, "old user")
    with capture_logs() as logs:
        await rig.service.on_ledger_transaction(_swap(invitee, tx_id, rig.clock.now))
    reference = commission_reference(tx_id, "BTC")
    [logged] = [e for e in logs if e["event"] == "referrals.commission_unsendable"]
    assert (logged["reference"], logged["log_level"]) == (reference, "error")
    assert logged["reason"].startswith("invalid_field: user_id")
    return reference


async def test_an_event_owing_a_commission_that_cannot_be_built_is_handled(rig: Rig) -> None:
    """Its handler raised on every delivery: the events consumer retried it for good, and no later
    transaction of its partition paid a commission again. It is handled (the commission stays
    pending, logged), the same event again changes nothing, and the next pays."""
    unsendable = await _unsendable_commission(rig, "ivy", "tx-old")
    await rig.service.on_ledger_transaction(_swap("ivy", "tx-old", rig.clock.now))  # redelivered
    record = await rig.commissions.get(unsendable)
    assert record is not None
    assert record["status"] == "pending"
    assert rig.wallet.sent == []
    lost = await _lost_commission(rig)
    assert rig.wallet.sent == [lost]
    assert lost.user_id == "rob"


async def _lost_commission(rig: Rig) -> WalletCommand:
    """A commission the wallet applied whose result never came back: its command."""
    await rig.service.bind("lia", "rob")
    await rig.service.on_ledger_transaction(_swap("lia", "tx-lost", rig.clock.now))
    [command] = rig.wallet.sent
    return command


async def test_a_commission_whose_command_cannot_be_built_holds_back_no_other(rig: Rig) -> None:
    """It stopped the ask-again at that commission on every pass, so no commission after it whose
    result was lost was ever asked about again; it is logged and left pending, and the others go."""
    unsendable = await _unsendable_commission(rig, "ivy", "tx-old")
    rig.clock.advance(1)
    lost = await _lost_commission(rig)
    rig.clock.advance(61)
    with capture_logs() as logs:
        assert await rig.service.ask_again(timedelta(seconds=60)) == 1
    assert rig.wallet.sent[-1].fingerprint() == lost.fingerprint()  # the same command again
    [logged] = [e for e in logs if e["event"] == "referrals.commission_unsendable"]
    assert (logged["reference"], logged["log_level"]) == (unsendable, "error")
    assert logged["reason"].startswith("invalid_field")
    record = await rig.commissions.get(unsendable)
    assert record is not None
    assert record["status"] == "pending"


async def test_unsendable_commissions_do_not_take_every_pass(rig: Rig) -> None:
    """A pass takes a page of pending commissions, oldest first, and the next goes on after it: a
    page of commissions that cannot be sent (never marked asked, so due on every pass) no longer
    keeps a newer one from ever being asked about."""
    rig.service.ask_again_page = 2
    for n in range(2):
        await _unsendable_commission(rig, f"ivy{n}", f"tx-old-{n}")
    rig.clock.advance(1)
    lost = await _lost_commission(rig)
    rig.clock.advance(61)
    assert await rig.service.ask_again(timedelta(seconds=60)) == 0  # a page of unsendable ones
    assert await rig.service.ask_again(timedelta(seconds=60)) == 1  # on after it
    assert rig.wallet.sent[-1].fingerprint() == lost.fingerprint()  # the same command again
    assert await rig.service.ask_again(timedelta(seconds=60)) == 0  # back to the start
