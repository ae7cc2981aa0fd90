"""In-memory stores with the same guarantees as the MongoDB ones (fast tests, one process)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from p2p.application.ports import (
    Expected,
    Offer,
    OfferPosition,
    OutboxEntry,
    Trade,
    TradeChanges,
)
from p2p.domain.offers import OfferStatus
from p2p.domain.trades import IN_FLIGHT, UNPAID, TradeStatus
from shared.messaging import WalletCommand
from shared.outbox import Unpublished, unpublished_page
from shared.paging import Position


def matches(trade: Trade, expected: Expected) -> bool:
    """Whether `trade` passes the filter of a conditional update."""
    if trade.status is not expected.status:
        return False
    if expected.escrow_locked is not None and trade.escrow_locked != expected.escrow_locked:
        return False
    if expected.deadline_passed_at is not None and (
        trade.payment_deadline > expected.deadline_passed_at
    ):
        return False
    return not (
        expected.deadline_open_at is not None
        and trade.payment_deadline <= expected.deadline_open_at
    )


def _offer_position(offer: Offer) -> OfferPosition:
    return offer.terms.price, offer.created_at, offer.offer_id


class MemoryOffers:
    def __init__(self) -> None:
        self.offers: dict[str, Offer] = {}

    async def insert(self, offer: Offer) -> Offer | None:
        stored = self.offers.get(offer.offer_id)
        if stored is not None:
            return stored
        self.offers[offer.offer_id] = offer
        return None

    async def get(self, offer_id: str) -> Offer | None:
        return self.offers.get(offer_id)

    async def list_active(
        self,
        currency: str | None,
        fiat_currency: str | None,
        limit: int,
        after: OfferPosition | None = None,
    ) -> Sequence[Offer]:
        found = [
            o
            for o in self.offers.values()
            if o.status is OfferStatus.ACTIVE
            and currency in (None, o.terms.currency)
            and fiat_currency in (None, o.terms.fiat_currency)
            and (after is None or _offer_position(o) > after)
        ]
        found.sort(key=_offer_position)
        return found[:limit]

    async def withdraw(self, offer_id: str, now: datetime) -> Offer | None:
        offer = self.offers.get(offer_id)
        if offer is None or offer.status is not OfferStatus.ACTIVE:
            return None
        self.offers[offer_id] = replace(offer, status=OfferStatus.WITHDRAWN, updated_at=now)
        return self.offers[offer_id]


class MemoryTrades:
    """Each method runs without an await in between its read and write: atomic in one loop."""

    def __init__(self) -> None:
        self.trades: dict[str, Trade] = {}

    async def insert(self, trade: Trade) -> Trade | None:
        stored = self.trades.get(trade.trade_id)
        if stored is not None:
            return stored
        self.trades[trade.trade_id] = trade
        return None

    async def get(self, trade_id: str) -> Trade | None:
        return self.trades.get(trade_id)

    async def list_for(
        self, user_id: str, limit: int, before: Position | None = None
    ) -> Sequence[Trade]:
        own = [
            t
            for t in self.trades.values()
            if user_id in (t.buyer_id, t.seller_id)
            and (before is None or (t.created_at, t.trade_id) < before)
        ]
        own.sort(key=lambda t: (t.created_at, t.trade_id), reverse=True)
        return own[:limit]

    async def move(
        self,
        trade_id: str,
        expected: Expected,
        to: TradeStatus,
        changes: TradeChanges,
        command: WalletCommand | None,
        now: datetime,
    ) -> Trade | None:
        trade = self.trades.get(trade_id)
        if trade is None or not matches(trade, expected):
            return None
        outbox = trade.outbox
        if command is not None:
            outbox = (*outbox, OutboxEntry(command, created_at=now))
        moved = replace(trade, status=to, updated_at=now, outbox=outbox, **changes)  # type: ignore[arg-type]
        self.trades[trade_id] = moved
        return moved

    async def note(self, trade_id: str, note: str, now: datetime) -> None:
        trade = self.trades.get(trade_id)
        if trade is not None and note not in trade.notes:
            self.trades[trade_id] = replace(trade, notes=(*trade.notes, note), updated_at=now)

    async def awaiting_wallet(
        self, unmoved_since: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Trade]:
        found = [
            t
            for t in self.trades.values()
            if t.status in IN_FLIGHT
            and t.updated_at < unmoved_since
            and (after is None or (t.updated_at, t.trade_id) > after)
        ]
        found.sort(key=lambda t: (t.updated_at, t.trade_id))
        return found[:limit]

    async def due(
        self, now: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Trade]:
        found = [
            t
            for t in self.trades.values()
            if t.status in UNPAID
            and t.payment_deadline <= now
            and (after is None or (t.payment_deadline, t.trade_id) > after)
        ]
        found.sort(key=lambda t: (t.payment_deadline, t.trade_id))
        return found[:limit]

    async def mark_published(self, trade_id: str, command_id: str) -> None:
        trade = self.trades.get(trade_id)
        if trade is None:
            return
        outbox = tuple(
            replace(e, published=True) if e.command_id == command_id else e for e in trade.outbox
        )
        self.trades[trade_id] = replace(trade, outbox=outbox)

    async def unpublished(
        self, older_than: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Unpublished]:
        owners = ((t.trade_id, t.created_at, t.outbox) for t in self.trades.values())
        return unpublished_page(owners, older_than, limit, after)
