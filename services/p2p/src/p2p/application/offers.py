"""Sell offers: create, list the active ones, withdraw. An offer locks nothing."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from p2p.application.paging import (
    DEFAULT_PAGE_SIZE,
    check_limit,
    offer_cursor,
    offer_position,
)
from p2p.application.ports import Offer, Offers
from p2p.domain.errors import Conflict, Forbidden, NotFound
from p2p.domain.offers import OfferStatus, offered_coin, offered_fiat, validate_offer
from shared.paging import Page, page_of


@dataclass
class OfferHandler:
    offers: Offers
    clock: Callable[[], datetime]

    async def create(
        self,
        seller_id: str,
        *,
        currency: object,
        fiat_currency: object,
        price: object,
        min_amount: object,
        max_amount: object,
        payment_methods: object,
        payment_window_minutes: object,
        named_id: str | None = None,
    ) -> Offer:
        """A new active offer of the seller's. With `named_id` (the request's Idempotency-Key,
        named by the route) it is stored under it: a retry that took over the key from a request
        that stopped before answering finds that offer instead of listing a second one."""
        terms = validate_offer(
            currency,
            fiat_currency,
            price,
            min_amount,
            max_amount,
            payment_methods,
            payment_window_minutes,
        )
        now = self.clock()
        offer = Offer(
            offer_id=f"offer_{named_id or secrets.token_hex(12)}",
            seller_id=seller_id,
            terms=terms,
            status=OfferStatus.ACTIVE,
            created_at=now,
            updated_at=now,
        )
        stored = await self.offers.insert(offer)
        if stored is None:
            return offer
        if (stored.seller_id, stored.terms) != (seller_id, terms):
            raise Conflict("idempotency_conflict", "this Idempotency-Key created another offer")
        return stored  # withdrawn since or not: what that request created

    async def list_active(
        self,
        currency: str | None,
        fiat_currency: str | None,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Offer]:
        """A page of the active offers, cheapest first (then the oldest, then by id), filtered
        by what a create takes and refusing what it refuses: a filter no offer could match
        (`?currency=GBP`) is an error, not an empty list. An empty one (`?currency=`, a form's
        "any") filters nothing. `cursor` is the `next_cursor` of the page before."""
        coin = offered_coin(currency).code if currency else None
        fiat = offered_fiat(fiat_currency).code if fiat_currency else None
        check_limit(limit)
        after = offer_position(cursor) if cursor else None
        found = await self.offers.list_active(coin, fiat, limit + 1, after)
        return page_of(found, limit, offer_cursor)

    async def get(self, offer_id: str) -> Offer:
        offer = await self.offers.get(offer_id)
        if offer is None:
            raise NotFound("offer_not_found", f"no offer {offer_id[:64]!r}")
        return offer

    async def withdraw(self, user_id: str, offer_id: str) -> Offer:
        """The seller takes the offer down; trades already made on it go on. Repeatable."""
        offer = await self.get(offer_id)
        if offer.seller_id != user_id:
            raise Forbidden("not_the_seller", "only the seller may withdraw an offer")
        withdrawn = await self.offers.withdraw(offer_id, self.clock())
        return withdrawn if withdrawn is not None else await self.get(offer_id)
