"""The accrual over the real MongoDB with a wallet double: which balance a day pays on, that
each (currency, day, user) is paid once — the amount decided at the first claim — and that a run
that claimed every payment of its day makes the day final, while one stopped midway is continued."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase
from structlog.testing import capture_logs

from trading.savings.adapters.mongo import (
    ACCRUAL_RUNS,
    ACCRUALS,
    MOVEMENTS,
    MongoAccruals,
    MongoSavingsHistory,
    MongoTransfers,
)
from trading.savings.application.scheduler import AccrualScheduler
from trading.savings.application.service import SavingsService
from trading.savings.domain.accrual import AccrualDue, SavingsMovement
from trading.savings.domain.errors import SavingsUnavailable
from trading.savings.settings import SavingsSettings
from trading.testing import AnsweringWallet, FakeClock, result_of

DAY = date(2026, 11, 29)


class InterruptibleAccruals(MongoAccruals):
    """The MongoDB store, whose claims for the users in `failing` fail (a run stopped midway)."""

    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        super().__init__(database)
        self.failing: set[str] = set()

    async def claim(self, due: AccrualDue, at: datetime) -> dict[str, Any]:
        if due.user_id in self.failing:
            raise RuntimeError("the run stopped here")
        return await super().claim(due, at)


@dataclass
class Rig:
    service: SavingsService
    wallet: AnsweringWallet
    history: MongoSavingsHistory
    clock: FakeClock
    accruals: InterruptibleAccruals
    caught_up: list[bool] = field(default_factory=lambda: [True])

    async def save(self, user: str, amount: str, at: datetime, currency: str = "USDT") -> None:
        await self.history.record_event(
            SavingsMovement(
                uuid.uuid4().hex, "savings_deposit", user, currency, Decimal(amount), at
            )
        )

    def paid(self) -> list[tuple[str, str, Decimal]]:
        return [(c.reference_id, c.user_id, c.amount) for c in self.wallet.sent]


@pytest_asyncio.fixture(loop_scope="session")
async def rig(mongo_database: AsyncDatabase[dict[str, Any]]) -> AsyncIterator[Rig]:
    for collection in (MOVEMENTS, ACCRUALS, ACCRUAL_RUNS):
        await mongo_database[collection].delete_many({})
    clock = FakeClock(datetime(2026, 11, 30, 0, 0, 5, tzinfo=UTC))
    wallet = AnsweringWallet()
    history = MongoSavingsHistory(mongo_database)
    caught_up = [True]
    accruals = InterruptibleAccruals(mongo_database)

    async def history_caught_up() -> bool:
        return caught_up[0]

    service = SavingsService(
        transfers=MongoTransfers(mongo_database),
        history=history,
        accruals=accruals,
        wallet=wallet,
        aprs={"USDT": Decimal("0.05")},
        clock=clock,
        history_caught_up=history_caught_up,
        result_timeout=1.0,
        unrecorded_refusal_pause=0.0,
    )
    yield Rig(service, wallet, history, clock, accruals, caught_up)


async def test_a_day_pays_on_its_end_of_day_balance_once(rig: Rig) -> None:
    await rig.save("amy", "1000", datetime(2026, 11, 29, 9, tzinfo=UTC))
    await rig.save("amy", "-270", datetime(2026, 11, 29, 23, 59, tzinfo=UTC))
    await rig.save("amy", "5000", datetime(2026, 11, 30, 0, 0, tzinfo=UTC))  # the next day's
    await rig.save("bob", "0.007", datetime(2026, 11, 29, 9, tzinfo=UTC))  # dust: nothing due

    report = await rig.service.accrue(DAY)
    # 730 × 0.05 / 365 = 0.1 exactly
    assert rig.paid() == [("interest:USDT:2026-11-29:amy", "amy", Decimal("0.1"))]
    assert report["items"][0] == {
        "currency": "USDT",
        "apr": "0.05",
        "accounts_owed": 1,
        "paid": 1,
        "paid_amount": "0.1",
        "already_settled": 0,
        "pending": 0,
        "failed": 0,
        "unsendable": 0,
        "claimed_earlier": 0,
    }
    command = rig.wallet.sent[0]
    assert (command.type, command.transaction_type) == ("credit", "savings_interest")
    assert (await rig.service.positions("amy")) == [
        {"currency": "USDT", "savings_balance": "5730.1", "interest_earned": "0.1"}
    ]

    again = await rig.service.accrue(DAY)
    assert len(rig.wallet.sent) == 1
    assert (again["items"][0]["paid"], again["items"][0]["already_settled"]) == (0, 1)


async def test_a_payment_whose_credit_cannot_be_built_holds_back_no_other_saver_or_day(
    rig: Rig,
) -> None:
    """A saver the ledger knows under an id an earlier version accepted and no wallet command can
    carry now (a space): the day's run stopped at that payment and raised, the scheduler retried
    that day forever and paid no saver on any later day. The payment is logged, left pending and
    counted apart; the others are paid, and nothing is left for the scheduler to wait on."""
    await rig.save("old user", "3650", datetime(2026, 11, 29, 9, tzinfo=UTC))
    await rig.save("amy", "730", datetime(2026, 11, 29, 9, tzinfo=UTC))
    with capture_logs() as logs:
        report = await rig.service.accrue(DAY)
    assert rig.paid() == [("interest:USDT:2026-11-29:amy", "amy", Decimal("0.1"))]
    [item] = report["items"]
    assert (item["paid"], item["pending"], item["unsendable"], item["already_settled"]) == (
        1,
        0,
        1,
        0,
    )
    [logged] = [e for e in logs if e["event"] == "savings.interest_unsendable"]
    assert (logged["reference"], logged["log_level"]) == (
        "interest:USDT:2026-11-29:old user",
        "error",
    )
    assert logged["reason"].startswith("invalid_field")
    stored = await rig.accruals.get("interest:USDT:2026-11-29:old user")
    assert stored is not None
    assert stored["status"] == "pending"
    again = await rig.service.accrue(DAY)  # a rerun names it again, and pays nothing twice
    assert (again["items"][0]["unsendable"], again["items"][0]["already_settled"]) == (1, 1)
    assert len(rig.wallet.sent) == 1


async def test_a_payment_without_a_result_is_resent_with_the_amount_first_claimed(rig: Rig) -> None:
    await rig.save("cal", "3650", datetime(2026, 11, 29, 9, tzinfo=UTC))
    rig.wallet.answers = ["timeout"]
    first = await rig.service.accrue(DAY)
    assert first["items"][0]["pending"] == 1
    # An event that reached the history late changes the balance; the key keeps its amount.
    await rig.save("cal", "3650", datetime(2026, 11, 29, 10, tzinfo=UTC))
    rig.wallet.answers = ["duplicate"]
    second = await rig.service.accrue(DAY)
    assert rig.paid() == [("interest:USDT:2026-11-29:cal", "cal", Decimal("0.5"))] * 2
    assert (second["items"][0]["already_settled"], second["items"][0]["pending"]) == (0, 0)
    await rig.service.accrue(DAY)
    assert len(rig.wallet.sent) == 2


async def test_a_result_that_only_names_a_payment_settles_nothing(rig: Rig) -> None:
    await rig.save("eli", "3650", datetime(2026, 11, 29, 9, tzinfo=UTC))
    rig.wallet.answers = ["timeout"]
    assert (await rig.service.accrue(DAY))["items"][0]["pending"] == 1
    [sent] = rig.wallet.sent
    # Another user's credit, or another command type, under the payment's reference.
    for foreign in (
        sent.model_copy(update={"user_id": "mallory"}),
        sent.model_copy(update={"type": "debit"}),
    ):
        await rig.service.on_interest_result(result_of(foreign, "rejected", reason="x"))
    # Still pending: the next run sends the same payment again, and its answer pays it.
    rerun = await rig.service.accrue(DAY)
    assert (rerun["items"][0]["paid"], rerun["items"][0]["failed"]) == (1, 0)
    assert rig.paid() == [("interest:USDT:2026-11-29:eli", "eli", Decimal("0.5"))] * 2


async def test_a_refused_payment_is_not_sent_again(rig: Rig) -> None:
    await rig.save("dee", "3650", datetime(2026, 11, 29, 9, tzinfo=UTC))
    rig.wallet.answers = ["rejected"]
    assert (await rig.service.accrue(DAY))["items"][0]["failed"] == 1
    assert (await rig.service.accrue(DAY))["items"][0]["already_settled"] == 1
    assert len(rig.wallet.sent) == 1
    assert (await rig.service.positions("dee"))[0]["interest_earned"] == "0"


async def test_a_payment_the_wallet_failed_on_is_sent_again_and_paid_once(rig: Rig) -> None:
    """A `processing_failed` answer (the wallet recorded no outcome; the same credit may still
    apply) was taken as the payment's refusal: the day's interest failed for good after one
    passing database error. The run sends it again and the later answer pays it; the same
    answer read from `wallet.results` meanwhile settles nothing."""
    await rig.save("fay", "3650", datetime(2026, 11, 29, 9, tzinfo=UTC))
    rig.wallet.answers = ["failed"]
    with capture_logs() as logs:
        report = await rig.service.accrue(DAY)
    assert (report["items"][0]["paid"], report["items"][0]["failed"]) == (1, 0)
    first, again = rig.wallet.sent
    assert (again.reference_id, again.amount) == (first.reference_id, first.amount)
    [not_final] = [e for e in logs if e["event"] == "savings.interest_not_final"]
    assert (not_final["reference"], not_final["attempt"]) == (first.reference_id, 1)
    assert (await rig.service.positions("fay"))[0]["interest_earned"] == "0.5"
    assert (await rig.service.accrue(DAY))["items"][0]["already_settled"] == 1


async def test_an_unrecorded_refusal_read_from_the_results_settles_nothing(rig: Rig) -> None:
    await rig.save("hal", "3650", datetime(2026, 11, 29, 9, tzinfo=UTC))
    rig.wallet.answers = ["timeout"]
    assert (await rig.service.accrue(DAY))["items"][0]["pending"] == 1
    [sent] = rig.wallet.sent
    await rig.service.on_interest_result(result_of(sent, "rejected", reason="processing_failed"))
    [record] = await rig.accruals.of_day("USDT", DAY)
    assert record["status"] == "pending"
    rerun = await rig.service.accrue(DAY)  # sent again; this time the wallet applies it
    assert (rerun["items"][0]["paid"], rerun["items"][0]["failed"]) == (1, 0)


async def test_a_payment_the_wallet_fails_on_every_time_fails_after_a_few_tries(rig: Rig) -> None:
    """No day waits for good on it: after the last try it is failed with the wallet's reason.
    Not for good: the wallet recorded no outcome, so the next run of the day (the scheduler's
    at its start, an operator's) sends it again. Before, it was never sent again and the saver
    was never paid that day."""
    await rig.save("gus", "3650", datetime(2026, 11, 29, 9, tzinfo=UTC))
    rig.wallet.answers = ["failed"] * 3
    report = await rig.service.accrue(DAY)
    assert (report["items"][0]["failed"], report["items"][0]["pending"]) == (1, 0)
    assert len(rig.wallet.sent) == 3
    [record] = await rig.accruals.of_day("USDT", DAY)
    assert (record["status"], record["reason"]) == ("failed", "processing_failed")

    rerun = await rig.service.accrue(DAY)  # the wallet applies it this time
    assert (rerun["items"][0]["paid"], rerun["items"][0]["already_settled"]) == (1, 0)
    assert len(rig.wallet.sent) == 4
    assert {c.reference_id for c in rig.wallet.sent} == {record["reference_id"]}
    assert (await rig.service.positions("gus"))[0]["interest_earned"] == "0.5"
    assert (await rig.service.accrue(DAY))["items"][0]["already_settled"] == 1
    assert len(rig.wallet.sent) == 4


async def test_a_later_answer_pays_a_payment_failed_without_an_outcome(rig: Rig) -> None:
    """Another trading instance's run of the day got it applied after this one's last try
    failed: the applied result read from `wallet.results` pays it. Before, the record stayed
    failed while the saver's history showed the interest."""
    await rig.save("ivy", "3650", datetime(2026, 11, 29, 9, tzinfo=UTC))
    rig.wallet.answers = ["failed"] * 3
    await rig.service.accrue(DAY)
    sent = rig.wallet.sent[-1]
    await rig.service.on_interest_result(result_of(sent, "applied", transaction_id="tx-ivy"))
    [record] = await rig.accruals.of_day("USDT", DAY)
    assert (record["status"], record["reason"]) == ("paid", None)
    assert (await rig.service.positions("ivy"))[0]["interest_earned"] == "0.5"


async def test_today_pays_on_the_balance_at_the_moment_of_the_run(rig: Rig) -> None:
    rig.clock.now = datetime(2026, 11, 30, 15, tzinfo=UTC)
    await rig.save("eve", "3650", datetime(2026, 11, 30, 14, tzinfo=UTC))
    await rig.save("eve", "3650", datetime(2026, 11, 30, 15, 0, 1, tzinfo=UTC))  # after the run
    await rig.service.accrue(date(2026, 11, 30))
    assert rig.paid() == [("interest:USDT:2026-11-30:eve", "eve", Decimal("0.5"))]


async def test_nothing_is_paid_while_the_history_is_behind(rig: Rig) -> None:
    await rig.save("fay", "3650", datetime(2026, 11, 29, 9, tzinfo=UTC))
    rig.caught_up[0] = False
    with pytest.raises(SavingsUnavailable) as refused:
        await rig.service.accrue(DAY)
    assert (refused.value.code, refused.value.http_status) == ("ledger_history_behind", 503)
    assert rig.wallet.sent == []


async def test_a_user_id_too_long_for_the_plain_key_is_paid_under_a_hashed_one(rig: Rig) -> None:
    # A user id may have 200 characters; "interest:USDT:2026-11-29:" before it would make a
    # reference no wallet command can carry, and the run failed for every saver of every
    # currency after it, that day and (the scheduler retrying it) every day after.
    long_id = "u" * 200
    await rig.save(long_id, "3650", datetime(2026, 11, 29, 9, tzinfo=UTC))
    await rig.save("gus", "3650", datetime(2026, 11, 29, 9, tzinfo=UTC))
    report = await rig.service.accrue(DAY)
    assert (report["items"][0]["paid"], report["items"][0]["pending"]) == (2, 0)
    hashed = "interest:sha256:USDT:2026-11-29:" + hashlib.sha256(long_id.encode()).hexdigest()
    assert sorted(rig.paid()) == [
        ("interest:USDT:2026-11-29:gus", "gus", Decimal("0.5")),
        (hashed, long_id, Decimal("0.5")),
    ]
    assert (await rig.service.positions(long_id))[0]["interest_earned"] == "0.5"
    again = await rig.service.accrue(DAY)
    assert (again["items"][0]["paid"], again["items"][0]["already_settled"]) == (0, 2)
    assert len(rig.wallet.sent) == 2


TODAY = date(2026, 11, 30)


async def test_today_run_again_pays_no_one_who_started_saving_after_the_first_run(
    rig: Rig,
) -> None:
    rig.clock.now = datetime(2026, 11, 30, 10, tzinfo=UTC)
    await rig.save("amy", "3650", datetime(2026, 11, 30, 9, tzinfo=UTC))
    first = await rig.service.accrue(TODAY)
    assert first["items"][0]["paid"] == 1
    # After the run: a new saver, and amy saves more.
    await rig.save("bob", "7300", datetime(2026, 11, 30, 11, tzinfo=UTC))
    await rig.save("amy", "3650", datetime(2026, 11, 30, 11, tzinfo=UTC))
    rig.clock.now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    again = await rig.service.accrue(TODAY)
    assert again["items"][0] == {
        "currency": "USDT",
        "apr": "0.05",
        "accounts_owed": 1,
        "paid": 0,
        "paid_amount": "0",
        "already_settled": 1,
        "pending": 0,
        "failed": 0,
        "unsendable": 0,
        "claimed_earlier": 0,
    }
    # The scheduler's run for the day once it ended: the day is final, as the operator left it.
    rig.clock.now = datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC)
    after_midnight = await rig.service.accrue(TODAY)
    assert (after_midnight["items"][0]["paid"], after_midnight["items"][0]["already_settled"]) == (
        0,
        1,
    )
    assert rig.paid() == [("interest:USDT:2026-11-30:amy", "amy", Decimal("0.5"))]


async def test_a_completed_day_run_again_only_resends_what_got_no_result(rig: Rig) -> None:
    rig.clock.now = datetime(2026, 11, 30, 10, tzinfo=UTC)
    await rig.save("cal", "3650", datetime(2026, 11, 30, 9, tzinfo=UTC))
    await rig.save("dee", "3650", datetime(2026, 11, 30, 9, tzinfo=UTC))
    rig.wallet.answers = ["timeout"]  # cal's result is lost
    assert (await rig.service.accrue(TODAY))["items"][0]["pending"] == 1
    await rig.save("eve", "3650", datetime(2026, 11, 30, 11, tzinfo=UTC))
    await rig.save("cal", "3650", datetime(2026, 11, 30, 11, tzinfo=UTC))
    rig.clock.now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    rig.wallet.answers = ["duplicate"]
    rerun = await rig.service.accrue(TODAY)
    item = rerun["items"][0]
    assert (item["accounts_owed"], item["paid"], item["already_settled"]) == (2, 1, 1)
    assert (item["paid_amount"], item["pending"]) == ("0.5", 0)
    assert rig.paid() == [
        ("interest:USDT:2026-11-30:cal", "cal", Decimal("0.5")),
        ("interest:USDT:2026-11-30:dee", "dee", Decimal("0.5")),
        ("interest:USDT:2026-11-30:cal", "cal", Decimal("0.5")),
    ]


async def test_a_run_stopped_before_it_claimed_every_payment_is_continued(rig: Rig) -> None:
    await rig.save("fay", "3650", datetime(2026, 11, 29, 9, tzinfo=UTC))
    await rig.save("gil", "3650", datetime(2026, 11, 29, 9, tzinfo=UTC))
    rig.accruals.failing = {"gil"}
    with pytest.raises(RuntimeError):
        await rig.service.accrue(DAY)
    assert rig.wallet.sent == []  # fay's payment was claimed, not sent
    # A saver whose deposit event reached the history late: the stopped run had not seen them.
    await rig.save("hal", "3650", datetime(2026, 11, 29, 23, tzinfo=UTC))
    rig.accruals.failing = set()
    rig.clock.now += timedelta(minutes=1)
    report = await rig.service.accrue(DAY)
    assert (report["items"][0]["paid"], report["items"][0]["accounts_owed"]) == (3, 3)
    assert sorted(rig.paid()) == [
        (f"interest:USDT:2026-11-29:{user}", user, Decimal("0.5")) for user in ("fay", "gil", "hal")
    ]
    await rig.save("ivy", "3650", datetime(2026, 11, 29, 23, 30, tzinfo=UTC))
    assert (await rig.service.accrue(DAY))["items"][0]["already_settled"] == 3
    assert len(rig.wallet.sent) == 3


class StopScheduler(BaseException):  # not an Exception: the scheduler retries those
    pass


async def test_a_restart_after_an_outage_longer_than_the_lookback_pays_every_missed_day(
    rig: Rig,
) -> None:
    """Paid through 2 Nov, then down until 13 Nov at noon: with the default lookback of 7 days the
    restarted scheduler still pays 3 to 12 Nov, each day once, at 1 USDT a day."""
    await rig.save("amy", "7300", datetime(2026, 10, 31, 9, tzinfo=UTC))  # × 0.05 / 365 = 1
    for day in (date(2026, 11, 1), date(2026, 11, 2)):
        await rig.service.accrue(day)
    rig.clock.now = datetime(2026, 11, 13, 12, tzinfo=UTC)

    async def sleep(seconds: float) -> None:
        raise StopScheduler  # the catch-up is done: the scheduler waits for midnight

    scheduler = AccrualScheduler(
        rig.service.accrue,
        clock=rig.clock,
        delay=timedelta(seconds=5),
        lookback_days=SavingsSettings().savings_accrual_lookback_days,
        sleep=sleep,
        newest_completed=rig.service.newest_completed_days,
    )
    with pytest.raises(StopScheduler):
        await scheduler.run()
    paid = [reference for reference, _, _ in rig.paid()]
    assert paid == [f"interest:USDT:2026-11-{day:02}:amy" for day in range(1, 13)]
    assert {amount for _, _, amount in rig.paid()} == {Decimal(1)}
