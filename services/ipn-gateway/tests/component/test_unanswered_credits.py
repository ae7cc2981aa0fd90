"""Deposit credits the wallet has not answered are sent again (`UnansweredCredits`): a result
lost on its way back is recorded after all, and a credit the wallet failed on without recording
an outcome (`processing_failed`) is applied by a later try instead of leaving the deposit
uncredited. Nothing is credited twice: the wallet answers a resend with its first outcome."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from structlog.testing import capture_logs

from ipn_gateway.application.credits import UnansweredCredits
from ipn_gateway.application.relay import ResultsDispatcher
from ipn_gateway.application.withdrawals import WithdrawalHandler, WithdrawalPolicy
from ipn_gateway.entrypoints.results import is_asked_again
from shared.messaging import CommandResult, WalletCommand
from shared.messaging.outcomes import UNRECORDED_REFUSAL

from ..conftest import FakeWallet
from .test_ipn_handler import World, body, signed

PAYMENT_ID = "5077125051"


class Rig:
    def __init__(self) -> None:
        self.world = World()
        self.wallet = FakeWallet()
        self.credits = UnansweredCredits(
            self.world.payments, self.world.publisher, self.world.clock
        )
        withdrawals = WithdrawalHandler(
            None,  # type: ignore[arg-type]  # only payments' results here
            self.world.publisher,
            WithdrawalPolicy(fees={}, max_per_request={}, daily_limit={}),
            self.world.clock,
        )
        self.dispatcher = ResultsDispatcher(withdrawals, self.world.payments)

    async def deposit(self) -> WalletCommand:
        """A finished payment: its credit recorded and published; the wallet's answer not yet
        delivered."""
        assert await self.world.handler.handle(signed(body("finished"))) == "credited"
        [credit] = self.world.credits
        return credit

    async def deliver(self, result: CommandResult) -> None:
        """The results consumer's part: what it passes on (not-final answers to commands the
        gateway asks again about are skipped) reaches the dispatcher."""
        if result.final or not is_asked_again(result):
            await self.dispatcher.dispatch(result)

    def later(self, seconds: float) -> None:
        self.world.clock.now += timedelta(seconds=seconds)

    def entry(self) -> tuple[str | None, str | None]:
        [entry] = self.world.payments.payments[PAYMENT_ID].outbox
        return entry.result_status, entry.result_reason


async def test_a_credit_the_wallet_failed_on_is_sent_again_and_credited_once() -> None:
    """Before, the `processing_failed` answer was recorded as the credit's refusal: the deposit
    stayed uncredited, with nothing to send it again."""
    rig = Rig()
    credit = await rig.deposit()
    rig.wallet.fail_next.add(credit.reference_id)
    failed = rig.wallet.apply(credit)
    assert (failed.status, failed.reason) == ("rejected", UNRECORDED_REFUSAL)
    await rig.deliver(failed)
    assert rig.entry() == (None, None)  # no answer yet
    assert rig.world.payments.payments[PAYMENT_ID].reviews == ()

    rig.later(rig.credits.ask_again_after.total_seconds() - 1)
    assert await rig.credits.ask_again() == 0  # its answer may still be on its way
    rig.later(2)
    with capture_logs() as logs:
        assert await rig.credits.ask_again() == 1
    resent = rig.world.publisher.published[-1]
    assert resent == credit  # the same command: same id, same payload
    [asked] = [e for e in logs if e["event"] == "payment.credit_asked_again"]
    assert (asked["payment_id"], asked["log_level"]) == (PAYMENT_ID, "warning")

    await rig.deliver(rig.wallet.apply(resent))
    assert rig.entry() == ("applied", None)
    assert rig.wallet.balance("alice", "BTC") == (Decimal("0.0015321"), Decimal(0))
    rig.later(rig.credits.ask_again_after.total_seconds() * 3)
    assert await rig.credits.ask_again() == 0  # answered: never asked about again


async def test_a_credit_whose_result_was_lost_is_recorded_from_the_resends_duplicate() -> None:
    rig = Rig()
    credit = await rig.deposit()
    rig.wallet.apply(credit)  # applied; its result is lost on the way back
    rig.later(rig.credits.ask_again_after.total_seconds() + 1)
    assert await rig.credits.ask_again() == 1
    duplicate = rig.wallet.apply(rig.world.publisher.published[-1])
    assert duplicate.status == "duplicate"
    await rig.deliver(duplicate)
    assert rig.entry() == ("applied", None)  # the outcome it repeats
    assert rig.wallet.balance("alice", "BTC") == (Decimal("0.0015321"), Decimal(0))


async def test_a_credit_is_asked_about_at_most_once_per_period() -> None:
    rig = Rig()
    credit = await rig.deposit()
    period = rig.credits.ask_again_after.total_seconds()
    rig.later(period + 1)
    assert await rig.credits.ask_again() == 1
    assert await rig.credits.ask_again() == 0  # asked just now
    rig.later(period - 1)
    assert await rig.credits.ask_again() == 0
    rig.later(2)
    assert await rig.credits.ask_again() == 1
    assert rig.world.publisher.published == [credit, credit, credit]
    # Asking moves nothing: the payment is as it was, only `asked_at` is noted.
    payment = rig.world.payments.payments[PAYMENT_ID]
    assert (payment.version, payment.asked_at) == (0, rig.world.clock.now)


async def test_a_refused_credit_is_recorded_and_never_asked_about_again() -> None:
    """A final refusal is the credit's outcome: noted for a person, and asking would only
    repeat it."""
    rig = Rig()
    credit = await rig.deposit()
    refused = rig.wallet.apply(credit).model_copy(
        update={"status": "rejected", "reason": "unknown_currency"}
    )
    await rig.deliver(refused)
    assert rig.entry() == ("rejected", "unknown_currency")
    notes = rig.world.payments.payments[PAYMENT_ID].reviews
    assert [(n.code, n.detail) for n in notes] == [
        ("credit_rejected", f"nowpayments:{PAYMENT_ID}: unknown_currency")
    ]
    rig.later(rig.credits.ask_again_after.total_seconds() * 2)
    assert await rig.credits.ask_again() == 0
    assert rig.world.publisher.published == [credit]


async def test_an_unpublished_credit_is_the_relays_and_an_unsendable_one_is_logged() -> None:
    rig = Rig()
    rig.world.publisher.fail_next = 1  # the broker is away when the credit is recorded
    await rig.world.handler.handle(signed(body("finished")))
    rig.later(rig.credits.ask_again_after.total_seconds() + 1)
    assert await rig.credits.ask_again() == 0
    assert rig.world.publisher.published == []

    # Published, but stored by an earlier version with a user id no command can carry now.
    payment = rig.world.payments.payments[PAYMENT_ID]
    [entry] = payment.outbox
    stored = {**entry.as_stored(), "user_id": "old user"}
    broken = replace(entry, command=None, stored=stored, published=True)
    rig.world.payments.payments[PAYMENT_ID] = replace(payment, outbox=(broken,))
    with capture_logs() as logs:
        assert await rig.credits.ask_again() == 0
    [unsendable] = [e for e in logs if e["event"] == "payment.credit_unsendable"]
    assert (unsendable["payment_id"], unsendable["log_level"]) == (PAYMENT_ID, "error")
    assert rig.world.publisher.published == []
