"""Stateful property test of the ledger's application layer over the in-memory store.

Random commands of every type (registered transaction types and a few that are not) across three
users and three currencies are issued, and orders with a fill settled from their named holds; then
delivered in batches in any order, redelivered as new messages, and reused under the same key with
another payload. After every step: conservation per currency, no negative bucket or hold, holds
summing to the locked balance, platform:liquidity and platform:fees never below zero, total =
available + locked, verify is clean, each key applied at most once, and every answer and balance is
what an independently written exactly-once model predicts.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from shared.messaging import CommandResult, LedgerTransaction, WalletCommand
from tests.reliability.checks import check_applied_once, check_ledger
from tests.reliability.commands import (
    CURRENCIES,
    USERS,
    command_specs,
    conflicting,
    make_command,
    order_fill_specs,
    resend,
)
from tests.reliability.model import ExactlyOnceModel, Key, check_answer, key_of
from tests.reliability.profiles import hypothesis_settings
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.application.ledger_service import LedgerService

# A small pool of shared references makes keys collide (the seed reuses one reference for a trade's
# lock, unlock and release); fresh ones keep most commands independent.
REFERENCES = st.tuples(st.integers(0, 15), st.uuids()).map(
    lambda p: f"trade-{p[0]}" if p[0] < 4 else p[1].hex[:12]
)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = InMemoryLedgerStore()
        self.ledger = LedgerService(self.store, backoff_seconds=0)
        self.model = ExactlyOnceModel()
        self.pending: list[WalletCommand] = []  # issued, not delivered yet
        self.delivered: list[WalletCommand] = []
        self.results: list[tuple[Key, CommandResult]] = []
        self.events: list[LedgerTransaction] = []

    def teardown(self) -> None:
        self.loop.close()

    def deliver(self, batch: Sequence[WalletCommand]) -> None:
        report = self.loop.run_until_complete(self.ledger.handle_batch(batch))
        assert len(report.results) == len(batch), "one result per delivered command"
        for command, (kafka_key, result), expected in zip(
            batch, report.results, self.model.run(batch), strict=True
        ):
            assert kafka_key == command.user_id
            check_answer(command, result, expected)
            self.results.append((key_of(command), result))
        self.events.extend(report.events)
        self.delivered.extend(batch)

    @initialize(amounts=st.lists(st.integers(0, 200), min_size=9, max_size=9))
    def open_wallets(self, amounts: list[int]) -> None:
        # Opening deposits, so that debits, locks and transfers have something to move.
        opening = [
            make_command(
                {
                    "type": "credit",
                    "reference_id": f"opening-{user}-{currency}",
                    "transaction_type": "deposit_nowpayments",
                    "user_id": user,
                    "currency": currency,
                    "amount": str(quarters / Decimal(4)),
                }
            )
            for (user, currency), quarters in zip(
                itertools.product(USERS, CURRENCIES), amounts, strict=True
            )
            if quarters
        ]
        if opening:
            self.deliver(opening)

    @rule(specs=st.lists(command_specs(REFERENCES), min_size=1, max_size=3))
    def issue(self, specs: list[dict[str, Any]]) -> None:
        self.pending.extend(make_command(spec) for spec in specs)

    @rule(
        buyer=st.sampled_from(USERS),
        seller=st.sampled_from(USERS),
        quote=st.sampled_from(CURRENCIES),
        quarters=st.integers(1, 20),
        fee_quarters=st.integers(0, 8),
        tag=st.uuids(),
    )
    def open_orders_and_fill(
        self, buyer: str, seller: str, quote: str, quarters: int, fee_quarters: int, tag: Any
    ) -> None:
        # Delivered like everything else: in any order, so a fill may come before its orders.
        specs = order_fill_specs(buyer, seller, quote, quarters, fee_quarters, tag.hex[:10])
        self.pending.extend(make_command(spec) for spec in specs)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def deliver_pending(self, data: st.DataObject) -> None:
        # Any subset in any order: the delivery order is the order of decision.
        order = data.draw(st.permutations(range(len(self.pending))))
        size = data.draw(st.integers(1, len(order)))
        batch = [self.pending[i] for i in order[:size]]
        self.pending = [self.pending[i] for i in sorted(order[size:])]
        # A producer's retry can land in the same fetch as the first copy.
        for index in data.draw(st.lists(st.integers(0, size - 1), max_size=2)):
            position = data.draw(st.integers(index + 1, len(batch)))
            again = resend(batch[index]) if data.draw(st.booleans()) else batch[index]
            batch.insert(position, again)
        self.deliver(batch)

    @precondition(lambda self: self.delivered)
    @rule(data=st.data(), as_new_message=st.booleans(), copies=st.integers(1, 3))
    def redeliver(self, data: st.DataObject, as_new_message: bool, copies: int) -> None:
        # Kafka redelivers the same message; a producer resends it as a new one.
        earlier = data.draw(st.sampled_from(self.delivered))
        again = resend(earlier) if as_new_message else earlier
        self.deliver([again] * copies)

    @precondition(lambda self: self.delivered)
    @rule(data=st.data(), with_pending=st.booleans())
    def reuse_key_with_another_payload(self, data: st.DataObject, with_pending: bool) -> None:
        other = conflicting(data.draw(st.sampled_from(self.delivered)))
        batch = [other, *self.pending[:2]] if with_pending else [other]
        if with_pending:
            del self.pending[:2]
        self.deliver(batch)

    @invariant()
    def ledger_is_exactly_once(self) -> None:
        self.loop.run_until_complete(check_ledger(self.store, self.model))
        check_applied_once(self.results, self.events)


LedgerMachine.TestCase.settings = hypothesis_settings()
TestLedgerStateMachine = LedgerMachine.TestCase
