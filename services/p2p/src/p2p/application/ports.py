"""What the handlers need from the outside world, and the records they keep.

Every write the handlers rely on is a single-document atomic operation: an insert on a unique key
or a conditional update whose filter holds the expected status. A wallet command is stored in the
trade (an embedded outbox) by the same update that decided it, published afterwards and marked
published; what a crash left unmarked is published again (the wallet dedupes by reference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from p2p.domain.offers import OfferStatus, OfferTerms
from p2p.domain.trades import TradeStatus
from shared.messaging import CommandResult, WalletCommand
from shared.money import LEDGER_CONTEXT, decimal_places, format_amount, get_currency
from shared.outbox import RecordedCommand, Unpublished
from shared.paging import Position

# An offer's place in the list of active offers: its price, then when it was made, then its id.
type OfferPosition = tuple[Decimal, datetime, str]


def fiat_text(value: Decimal, currency: str) -> str:
    """A fiat figure with at least its currency's decimals ("520.00"), as money is shown."""
    scale = get_currency(currency).scale
    if decimal_places(value) >= scale:
        return format_amount(value)
    return format(value.quantize(get_currency(currency).quantum, context=LEDGER_CONTEXT), "f")


# A wallet command recorded in the trade before it is published (`shared.outbox`): its command
# is None when what is stored is one the command model now refuses, kept as stored.
OutboxEntry = RecordedCommand


@dataclass(frozen=True, slots=True)
class Offer:
    offer_id: str
    seller_id: str
    terms: OfferTerms
    status: OfferStatus
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, Any]:
        terms = self.terms
        return {
            "offer_id": self.offer_id,
            "seller_id": self.seller_id,
            "status": self.status.value,
            "currency": terms.currency,
            "fiat_currency": terms.fiat_currency,
            "price": fiat_text(terms.price, terms.fiat_currency),
            "min_amount": format_amount(terms.min_amount),
            "max_amount": format_amount(terms.max_amount),
            "payment_methods": list(terms.payment_methods),
            "payment_window_minutes": terms.payment_window_minutes,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: str
    offer_id: str
    seller_id: str
    buyer_id: str
    currency: str
    fiat_currency: str
    price: Decimal
    amount: Decimal
    fee: Decimal
    fiat_amount: Decimal
    payment_methods: tuple[str, ...]
    payment_window_minutes: int
    payment_deadline: datetime
    status: TradeStatus
    created_at: datetime
    updated_at: datetime
    # Whether the wallet applied the escrow lock (an early cancel waits for it before unlocking).
    escrow_locked: bool = False
    reason: str | None = None
    cancelled_by: str | None = None
    disputed_by: str | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    paid_at: datetime | None = None
    notes: tuple[str, ...] = ()
    outbox: tuple[OutboxEntry, ...] = ()

    def public(self) -> dict[str, Any]:
        """The contract's shape of a trade (amounts as strings)."""
        return {
            "trade_id": self.trade_id,
            "offer_id": self.offer_id,
            "status": self.status.value,
            "seller_id": self.seller_id,
            "buyer_id": self.buyer_id,
            "currency": self.currency,
            "fiat_currency": self.fiat_currency,
            "price": fiat_text(self.price, self.fiat_currency),
            "amount": format_amount(self.amount),
            "fee": format_amount(self.fee),
            "fiat_amount": fiat_text(self.fiat_amount, self.fiat_currency),
            "payment_methods": list(self.payment_methods),
            "payment_window_minutes": self.payment_window_minutes,
            "payment_deadline": self.payment_deadline.isoformat(),
            "reason": self.reason,
            "cancelled_by": self.cancelled_by,
            "disputed_by": self.disputed_by,
            "resolved_by": self.resolved_by,
            "resolution": self.resolution,
            "paid_at": self.paid_at.isoformat() if self.paid_at else None,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Expected:
    """The filter of a conditional update: the status the trade must still be in, and optionally
    whether its escrow is known locked and where its payment deadline stands against `now`."""

    status: TradeStatus
    escrow_locked: bool | None = None
    deadline_passed_at: datetime | None = None  # payment_deadline <= this
    deadline_open_at: datetime | None = None  # payment_deadline > this


# Fields a move may set besides status (simple values only: str, bool, datetime, None).
TradeChanges = Mapping[str, str | bool | datetime | None]


class Offers(Protocol):
    async def insert(self, offer: Offer) -> Offer | None:
        """Store a new offer; None when stored, else the offer already stored under its id."""
        ...

    async def get(self, offer_id: str) -> Offer | None: ...
    async def list_active(
        self,
        currency: str | None,
        fiat_currency: str | None,
        limit: int,
        after: OfferPosition | None = None,
    ) -> Sequence[Offer]:
        """The active offers (of `currency` and `fiat_currency` when given), cheapest first,
        then the oldest, then by `offer_id`; only those after `after` (the `(price, created_at,
        offer_id)` of one this returned) when given; at most `limit`. None of these values ever
        changes on an offer: a page after another neither repeats nor skips one."""
        ...

    async def withdraw(self, offer_id: str, now: datetime) -> Offer | None:
        """Active → withdrawn; None when it was not active."""
        ...


class Trades(Protocol):
    async def insert(self, trade: Trade) -> Trade | None:
        """Store a new trade; None when stored, else the trade already stored under its id."""
        ...

    async def get(self, trade_id: str) -> Trade | None: ...
    async def list_for(
        self, user_id: str, limit: int, before: Position | None = None
    ) -> Sequence[Trade]:
        """The trades `user_id` is the buyer or the seller of, newest first (by `created_at`,
        then `trade_id`, both descending); only those before `before` (the `(created_at,
        trade_id)` of one this returned) when given; at most `limit`."""
        ...

    async def move(
        self,
        trade_id: str,
        expected: Expected,
        to: TradeStatus,
        changes: TradeChanges,
        command: WalletCommand | None,
        now: datetime,
    ) -> Trade | None:
        """One conditional update: if the trade matches `expected`, set `to` and `changes` and
        append `command` to its outbox; the trade after, or None when it did not match."""
        ...

    async def note(self, trade_id: str, note: str, now: datetime) -> None:
        """Something ops must look at (a refused release or unlock); a note already there is not
        added again, and then the trade is left as it was."""
        ...

    async def due(
        self, now: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Trade]:
        """Unpaid trades whose payment deadline is not after `now`, the earliest deadline first
        (then by `trade_id`), only those after `after` (the `(payment_deadline, trade_id)` of one
        this returned) when given, at most `limit`."""
        ...

    async def awaiting_wallet(
        self, unmoved_since: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Trade]:
        """Trades waiting on the wallet (IN_FLIGHT) that have not changed since `unmoved_since`,
        oldest first (by `updated_at`, then `trade_id`), only those after `after` (the
        `(updated_at, trade_id)` of a trade this returned) when given, at most `limit`."""
        ...

    async def mark_published(self, trade_id: str, command_id: str) -> None: ...
    async def unpublished(
        self, older_than: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Unpublished]:
        """The outbox entries not published and recorded before `older_than` of at most `limit`
        trades, oldest first (`shared.outbox.Outbox`)."""
        ...


class CommandPublisher(Protocol):
    async def publish(self, command: WalletCommand) -> None:
        """Hand the command to the broker (acknowledged); do not wait for the wallet."""
        ...

    async def publish_and_wait(
        self, command: WalletCommand, wait_seconds: float
    ) -> CommandResult | None:
        """Publish and wait for the wallet's result; None if it did not come in time."""
        ...
