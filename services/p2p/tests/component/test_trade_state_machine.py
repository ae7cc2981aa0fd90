"""Random actions by buyers, sellers, an outsider, an admin and the clock, with the wallet answering
late, twice or not at all (a broken broker), checked against the table and the wallet's balances.

After every step: each answer is the one the transition table gives for the status the trade was
in; statuses only move forward; money is conserved; a trade's hold is exactly what its status
says (nothing locked for a finished trade); a completed trade paid its buyer the amount and the
platform the fee exactly once and was never unlocked, a cancelled one was unlocked and never paid.
At the end the broker heals and every trade settles in a finished or waiting status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from p2p.application.trades import Caller
from p2p.domain.errors import P2pError
from p2p.domain.trades import (
    Action,
    Move,
    Refusal,
    TradeStatus,
    actor_of,
    decide,
)
from shared.messaging import CreditCommand

S = TradeStatus
D = Decimal
ZERO = D(0)
ORDER = [
    S.PENDING_ESCROW,
    S.ESCROWED,
    S.PAID,
    S.DISPUTED,
    S.RELEASING,
    S.CANCELLING,
    S.COMPLETED,
    S.CANCELLED,
    S.FAILED,
]
PEOPLE = {
    "buyer": None,  # resolved per trade
    "seller": None,
    "eve": Caller("eve"),
    "ops": Caller("ops", is_admin=True),
}
USER_ACTIONS = [a for a in Action if a is not Action.EXPIRE]
_KINDS = {"forbidden": 403, "not_found": 404, "conflict": 409}


class TradeMachine(RuleBasedStateMachine):
    factory: Callable[..., Any]

    trades = Bundle("trades")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.p2p = self.factory()
        self.seen: dict[str, TradeStatus] = {}
        wallet = self.p2p.wallet
        for user, amount in (("sam", "1"), ("pat", "0.0015")):
            wallet.apply(
                CreditCommand(
                    user_id=user,
                    currency="BTC",
                    amount=amount,
                    transaction_type="deposit_nowpayments",
                    reference_id=f"funding:{user}",
                )
            )
        self.offers = [self.run(self._offer(seller)) for seller in ("sam", "pat")]

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def _offer(self, seller: str) -> str:
        offer = await self.p2p.offers.create(
            seller,
            currency="BTC",
            fiat_currency="GBP",
            price="52000.01",
            min_amount="0.001",
            max_amount="0.5",
            payment_methods=["bank_transfer"],
            payment_window_minutes=15,
        )
        return str(offer.offer_id)

    def teardown(self) -> None:
        try:
            # The broker heals: everything recorded reaches the wallet, every answer comes back.
            self.p2p.publisher.broken = False
            self.p2p.clock.advance(timedelta(seconds=1))  # what was recorded is now older
            for _ in range(3):
                self.run(self.p2p.relay.run_once(grace=timedelta(0)))
                self.run(self.p2p.deliver_all())
            for trade in self.p2p.store.trades.values():
                assert trade.status not in (S.PENDING_ESCROW, S.RELEASING, S.CANCELLING), trade
            self.check_money()
        finally:
            self.loop.close()

    @rule(
        target=trades,
        offer=st.integers(0, 1),
        buyer=st.sampled_from(["bea", "bob"]),
        amount=st.sampled_from(["0.001", "0.01234567", "0.2", "0.5"]),
    )
    def create_trade(self, offer: int, buyer: str, amount: str) -> str:
        trade = self.run(self.p2p.trades.create(buyer, self.offers[offer], amount))
        assert trade.status is S.PENDING_ESCROW
        self.seen[trade.trade_id] = trade.status
        return str(trade.trade_id)

    @rule(trade_id=trades, action=st.sampled_from(USER_ACTIONS), who=st.sampled_from(list(PEOPLE)))
    def act(self, trade_id: str, action: Action, who: str) -> None:
        before = self.p2p.store.trades[trade_id]
        caller = PEOPLE[who] or Caller(before.buyer_id if who == "buyer" else before.seller_id)
        actor = actor_of(caller.user_id, caller.is_admin, before.buyer_id, before.seller_id)
        verdict = decide(before.status, action, actor)
        if action in (Action.RESOLVE_BUYER, Action.RESOLVE_SELLER) and not caller.is_admin:
            verdict = Refusal("forbidden", "admin_required")
        late = action is Action.MARK_PAID and self.p2p.clock() >= before.payment_deadline
        refused: P2pError | None = None
        try:
            after = self.run(self.p2p.trades.act(caller, trade_id, action, "because"))
        except P2pError as error:
            refused = error
        if refused is not None:
            if isinstance(verdict, Move) and late:
                assert refused.code == "payment_deadline_passed"
            else:
                assert isinstance(verdict, Refusal), (before.status, action, actor, refused)
                assert refused.code == verdict.code
            assert self.p2p.store.trades[trade_id] == before  # a refusal changes nothing
            return
        assert not isinstance(verdict, Refusal), (before.status, action, actor, verdict)
        if isinstance(verdict, Move):
            assert ORDER.index(after.status) >= ORDER.index(verdict.to)
        else:
            assert after == before  # a repeat changes nothing

    @rule(answer_now=st.booleans())
    def wallet_answers_in_time(self, answer_now: bool) -> None:
        self.p2p.publisher.answer_now = answer_now

    @rule(broken=st.booleans())
    def broker(self, broken: bool) -> None:
        self.p2p.publisher.broken = broken

    @precondition(lambda self: bool(self.p2p.publisher.queue))
    @rule(pick=st.integers(0, 50), twice=st.booleans())
    def deliver(self, pick: int, twice: bool) -> None:
        queue = self.p2p.publisher.queue
        command = queue.pop(pick % len(queue))
        for _ in range(2 if twice else 1):
            self.run(self.p2p.trades.apply_result(self.p2p.wallet.apply(command)))

    @precondition(lambda self: not self.p2p.publisher.broken)
    @rule()
    def relay(self) -> None:
        self.run(self.p2p.relay.run_once(grace=timedelta(0)))

    @rule(minutes=st.integers(1, 20))
    def clock(self, minutes: int) -> None:
        self.p2p.clock.advance(timedelta(minutes=minutes))
        self.run(self.p2p.trades.expire_due())

    @invariant()
    def statuses_only_move_forward(self) -> None:
        for trade_id, trade in self.p2p.store.trades.items():
            assert ORDER.index(trade.status) >= ORDER.index(self.seen[trade_id]), trade_id
            self.seen[trade_id] = trade.status

    @invariant()
    def holds_match_statuses(self) -> None:
        wallet = self.p2p.wallet
        for trade in self.p2p.store.trades.values():
            hold = wallet.holds[(trade.seller_id, "BTC", trade.trade_id)]
            escrowed = trade.amount + trade.fee
            applied = {c.type for c in wallet.applied if c.reference_id == trade.trade_id}
            match trade.status:
                case S.PENDING_ESCROW | S.FAILED:
                    assert hold == 0
                    assert not applied
                case S.ESCROWED | S.PAID | S.DISPUTED | S.RELEASING:
                    assert hold == escrowed
                    assert applied == {"lock"}
                case S.CANCELLING:
                    assert hold == (escrowed if trade.escrow_locked else ZERO)
                    assert applied == ({"lock"} if trade.escrow_locked else set())
                case S.COMPLETED:
                    assert hold == 0
                    assert applied == {"lock", "transfer_locked"}
                case S.CANCELLED:
                    assert hold == 0
                    assert applied == {"lock", "unlock"}

    @invariant()
    def money_is_conserved(self) -> None:
        self.check_money()

    def check_money(self) -> None:
        wallet = self.p2p.wallet
        assert wallet.total("BTC") == 0  # every movement is balanced
        completed = [t for t in self.p2p.store.trades.values() if t.status is S.COMPLETED]
        assert wallet.fees("BTC") == sum((t.fee for t in completed), ZERO)
        for buyer in ("bea", "bob"):
            bought = sum((t.amount for t in completed if t.buyer_id == buyer), ZERO)
            assert wallet.available(buyer, "BTC") == bought
            assert wallet.locked(buyer, "BTC") == 0
        for seller, funded in (("sam", D("1")), ("pat", D("0.0015"))):
            sold = sum((t.amount + t.fee for t in completed if t.seller_id == seller), ZERO)
            holding = wallet.available(seller, "BTC") + wallet.locked(seller, "BTC")
            assert holding == funded - sold
            assert wallet.locked(seller, "BTC") == sum(
                (v for (u, _, _), v in wallet.holds.items() if u == seller), ZERO
            )


def test_random_trades_against_the_wallet(make_memory_p2p: Callable[..., Any]) -> None:
    TradeMachine.factory = staticmethod(make_memory_p2p)  # type: ignore[assignment]
    run_state_machine_as_test(
        TradeMachine,
        settings=settings(
            max_examples=80,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
