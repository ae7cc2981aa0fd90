"""Test doubles of the P2P tests: a double-entry memory wallet and a publisher that queues.

The memory wallet decides the commands the P2P service sends as the wallet's ledger does
(available/locked per user, holds per reference, fees to platform:fees, idempotency by
(type, transaction_type, reference_id) with final outcomes), so property tests can check
conservation and that nothing stays locked for a finished trade.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from p2p.adapters.memory import MemoryOffers, MemoryTrades
from p2p.application.offers import OfferHandler
from p2p.application.relay import OutboxRelay
from p2p.application.trades import TradeHandler
from shared.messaging import (
    BalanceSnapshot,
    CommandResult,
    CreditCommand,
    LockCommand,
    TransferLockedCommand,
    UnlockCommand,
    WalletCommand,
)

ZERO = Decimal(0)
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass
class MemoryWallet:
    # (account, currency) → balance; accounts as the ledger names them.
    accounts: dict[tuple[str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    holds: dict[tuple[str, str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    outcomes: dict[tuple[str, str, str], tuple[str, CommandResult]] = field(default_factory=dict)
    applied: list[WalletCommand] = field(default_factory=list)

    def available(self, user: str, currency: str) -> Decimal:
        return self.accounts[(f"user:{user}:available", currency)]

    def locked(self, user: str, currency: str) -> Decimal:
        return self.accounts[(f"user:{user}:locked", currency)]

    def fees(self, currency: str) -> Decimal:
        return self.accounts[("platform:fees", currency)]

    def total(self, currency: str) -> Decimal:
        return sum((v for (_, c), v in self.accounts.items() if c == currency), ZERO)

    def deposit(self, user: str, currency: str, amount: str, reference_id: str) -> None:
        """Credit a user's available balance, as a NOWPayments deposit would."""
        self.apply(
            CreditCommand(
                user_id=user,
                currency=currency,
                amount=amount,
                transaction_type="deposit_nowpayments",
                reference_id=reference_id,
            )
        )

    def apply(self, command: WalletCommand) -> CommandResult:
        key = command.idempotency_key
        if key in self.outcomes:
            fingerprint, first = self.outcomes[key]
            if fingerprint != command.fingerprint():
                return self._result(command, "rejected", "idempotency_conflict")
            repeat = {"command_id": command.command_id, "status": "duplicate"}
            return first.model_copy(update={**repeat, "original_status": first.status})
        reason = self._decide(command)
        result = self._result(command, "rejected" if reason else "applied", reason)
        self.outcomes[key] = (command.fingerprint(), result)
        if reason is None:
            self.applied.append(command)
        return result

    def _move(self, source: str, target: str, currency: str, amount: Decimal) -> None:
        self.accounts[(source, currency)] -= amount
        self.accounts[(target, currency)] += amount

    def _decide(self, command: WalletCommand) -> str | None:
        user, currency, amount = command.user_id, command.currency, command.amount
        available, locked = f"user:{user}:available", f"user:{user}:locked"
        hold = (user, currency, command.reference_id)
        if isinstance(command, CreditCommand):
            self._move("external:nowpayments", available, currency, amount)
        elif isinstance(command, LockCommand):
            if self.accounts[(available, currency)] < amount:
                return "insufficient_funds"
            self._move(available, locked, currency, amount)
            self.holds[hold] += amount
        elif isinstance(command, UnlockCommand):
            if self.holds[hold] < amount:
                return "insufficient_locked_funds"
            self._move(locked, available, currency, amount)
            self.holds[hold] -= amount
        elif isinstance(command, TransferLockedCommand):
            if self.holds[hold] < amount:
                return "insufficient_locked_funds"
            fee = command.fee_amount
            self._move(locked, f"user:{command.to_user}:available", currency, amount - fee)
            self._move(locked, "platform:fees", currency, fee)
            self.holds[hold] -= amount
        else:
            return "unsupported_by_memory_wallet"
        return None

    def _result(self, command: WalletCommand, status: str, reason: str | None) -> CommandResult:
        snapshot = BalanceSnapshot(
            user_id=command.user_id,
            currency=command.currency,
            available_balance=self.available(command.user_id, command.currency),
            locked_balance=self.locked(command.user_id, command.currency),
            savings_balance=ZERO,
            total_balance=self.available(command.user_id, command.currency)
            + self.locked(command.user_id, command.currency),
        )
        return CommandResult(
            command_id=command.command_id,
            type=command.type,
            transaction_type=command.transaction_type,
            reference_id=command.reference_id,
            user_id=command.user_id,
            status=status,  # type: ignore[arg-type]
            reason=reason,
            balances=[snapshot],
        )


@dataclass
class QueuedPublisher:
    """Commands wait in `queue` until a test delivers them; `answer_now` makes publish_and_wait
    deliver at once (the wallet answered in time), `broken` makes publishing fail."""

    wallet: MemoryWallet
    queue: list[WalletCommand] = field(default_factory=list)
    answer_now: bool = True
    broken: bool = False
    published: list[WalletCommand] = field(default_factory=list)

    async def publish(self, command: WalletCommand) -> None:
        if self.broken:
            raise ConnectionError("broker away")
        self.published.append(command)
        self.queue.append(command)

    async def publish_and_wait(
        self, command: WalletCommand, wait_seconds: float
    ) -> CommandResult | None:
        await self.publish(command)
        if not self.answer_now:
            return None
        self.queue.remove(command)
        return self.wallet.apply(command)


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start
        self._ticks = itertools.count()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class MemoryP2p:
    wallet: MemoryWallet
    publisher: QueuedPublisher
    offers: OfferHandler
    trades: TradeHandler
    store: MemoryTrades
    relay: OutboxRelay
    clock: Clock

    async def funded_offer(self, seller: str = "sam") -> str:
        """An active BTC/GBP offer of a seller holding 1 BTC; its id."""
        self.wallet.deposit(seller, "BTC", "1", f"deposit-{seller}")
        offer = await self.offers.create(
            seller,
            currency="BTC",
            fiat_currency="GBP",
            price="52000",
            min_amount="0.001",
            max_amount="0.5",
            payment_methods=["bank_transfer"],
            payment_window_minutes=15,
        )
        return str(offer.offer_id)

    async def deliver_all(self) -> None:
        """Let the wallet answer everything queued, and the results move the trades, until quiet."""
        while self.publisher.queue:
            command = self.publisher.queue.pop(0)
            await self.trades.apply_result(self.wallet.apply(command))


def build_memory_p2p(fee_rate: Decimal = Decimal("0.001")) -> MemoryP2p:
    wallet, clock = MemoryWallet(), Clock()
    publisher = QueuedPublisher(wallet)
    offers, trades = MemoryOffers(), MemoryTrades()
    handler = TradeHandler(
        trades=trades, offers=offers, publisher=publisher, fee_rate=fee_rate, clock=clock
    )
    return MemoryP2p(
        wallet=wallet,
        publisher=publisher,
        offers=OfferHandler(offers, clock),
        trades=handler,
        store=trades,
        relay=OutboxRelay(trades, publisher, clock),
        clock=clock,
    )


@pytest.fixture
def memory_p2p() -> MemoryP2p:
    return build_memory_p2p()


@pytest.fixture(scope="session")
def make_memory_p2p() -> Callable[..., MemoryP2p]:
    return build_memory_p2p
