"""In-memory storage of quotes and liquidity fundings with the MongoDB store's guarantees (tests,
one process).

Each method reads and writes without an await in between, so in one event loop it is atomic: a
quote is claimed once and settled once, a funding is added once per reference and settled once.
What it keeps is what MongoDB would keep: instants in UTC to the millisecond (rounded down, and
compared at that precision); amounts as decimal128 holds them (more than 34 significant digits
raise `decimal.Inexact`, as encoding them does); rates, prices, fee rate and spread through their
decimal strings; the TTL through float seconds. Quotes and fundings are immutable values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from shared.money import format_amount
from shared.paging import Position
from trading.conversions.application import Funding, QuoteExists
from trading.conversions.domain import ConversionKind, Quote, Status, Terms
from trading.memory_values import stored_decimal, stored_instant
from trading.prices.domain import Price


def _exact_text(value: Decimal) -> Decimal:
    """What a decimal stored as its plain string reads back as."""
    return Decimal(format_amount(value))


def _kept_price(price: Price) -> Price:
    return Price(
        price.currency, _exact_text(price.price), stored_instant(price.as_of), price.source
    )


def _kept(quote: Quote) -> Quote:
    executed_at = quote.executed_at
    return replace(
        quote,
        pay_amount=stored_decimal(quote.pay_amount),
        fee=stored_decimal(quote.fee),
        rate=_exact_text(quote.rate),
        receive_amount=stored_decimal(quote.receive_amount),
        pay_price=_kept_price(quote.pay_price),
        receive_price=_kept_price(quote.receive_price),
        terms=Terms(
            fee_rate=_exact_text(quote.terms.fee_rate),
            spread=_exact_text(quote.terms.spread),
            ttl=timedelta(seconds=quote.terms.ttl.total_seconds()),
        ),
        created_at=stored_instant(quote.created_at),
        expires_at=stored_instant(quote.expires_at),
        executed_at=None if executed_at is None else stored_instant(executed_at),
    )


@dataclass
class _Record:
    quote: Quote
    published_at: datetime | None = None
    asked_at: datetime | None = None


def _first[T](found: list[T], limit: int) -> list[T]:
    # A limit of 0 is no limit, a negative one counts as its absolute value (as a cursor's).
    return found[: abs(limit)] if limit else found


def _page(found: list[Quote], limit: int, after: Position | None) -> list[Quote]:
    """The relays' order: by when each quote was made, then by id; only those after `after`."""
    found = sorted(found, key=lambda q: (q.created_at, q.quote_id))
    if after is not None:
        found = [q for q in found if (q.created_at, q.quote_id) > after]
    return _first(found, limit)


class MemoryQuotes:
    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}

    async def add(self, quote: Quote) -> None:
        kept = _kept(quote)  # may raise, before anything is stored
        if quote.quote_id in self._records:
            raise QuoteExists(quote.quote_id)
        self._records[quote.quote_id] = _Record(kept)

    async def get(self, quote_id: str) -> Quote | None:
        record = self._records.get(quote_id)
        return record.quote if record else None

    async def by_execution(self, kind: ConversionKind, execution_id: str) -> Quote | None:
        for record in self._records.values():
            if record.quote.execution_id == execution_id and record.quote.kind is kind:
                return record.quote
        return None

    async def claim(
        self, quote_id: str, kind: ConversionKind, user_id: str, execution_id: str, now: datetime
    ) -> Quote | None:
        record = self._records.get(quote_id)
        at = stored_instant(now)
        if (
            record is None
            or record.quote.kind is not kind
            or record.quote.user_id != user_id
            or record.quote.status is not Status.QUOTED
            or record.quote.expired(at)
        ):
            return None
        record.quote = replace(
            record.quote, status=Status.PENDING, execution_id=execution_id, executed_at=at
        )
        return record.quote

    async def mark_published(self, quote_id: str, at: datetime) -> None:
        record = self._records.get(quote_id)
        if record is not None and record.published_at is None:
            record.published_at = record.asked_at = stored_instant(at)

    async def unpublished(
        self, older_than: datetime, limit: int = 100, after: Position | None = None
    ) -> Sequence[Quote]:
        cutoff = stored_instant(older_than)
        return _page(
            [
                r.quote
                for r in self._records.values()
                if r.quote.status is Status.PENDING
                and r.published_at is None
                and r.quote.executed_at is not None
                and r.quote.executed_at < cutoff
            ],
            limit,
            after,
        )

    async def awaiting_wallet(
        self, asked_before: datetime, limit: int = 100, after: Position | None = None
    ) -> Sequence[Quote]:
        cutoff = stored_instant(asked_before)
        return _page(
            [
                r.quote
                for r in self._records.values()
                if r.quote.status is Status.PENDING
                and r.asked_at is not None
                and r.asked_at < cutoff
            ],
            limit,
            after,
        )

    async def mark_asked(self, quote_id: str, at: datetime) -> None:
        record = self._records.get(quote_id)
        if record is not None:
            record.asked_at = stored_instant(at)

    async def settle(
        self,
        kind: ConversionKind,
        execution_id: str,
        user_id: str,
        status: Status,
        reason: str | None,
        at: datetime,
    ) -> bool:
        for record in self._records.values():
            quote = record.quote
            if (
                quote.execution_id == execution_id
                and quote.kind is kind
                and quote.user_id == user_id
                and quote.status is Status.PENDING
            ):
                record.quote = replace(quote, status=status, reason=reason)
                return True
        return False


@dataclass
class _FundingRecord:
    funding: Funding
    published_at: datetime | None = None
    asked_at: datetime | None = None


def _funding_page(found: list[Funding], limit: int, after: Position | None) -> list[Funding]:
    """The relays' order: by when each funding was stored, then by reference; only those after
    `after`."""
    found = sorted(found, key=lambda f: (f.created_at, f.reference_id))
    if after is not None:
        found = [f for f in found if (f.created_at, f.reference_id) > after]
    return _first(found, limit)


class MemoryFundings:
    def __init__(self) -> None:
        self._records: dict[str, _FundingRecord] = {}

    async def add(self, funding: Funding) -> Funding | None:
        kept = replace(
            funding,
            amount=stored_decimal(funding.amount),
            created_at=stored_instant(funding.created_at),
        )
        if funding.reference_id in self._records:
            return None
        self._records[funding.reference_id] = _FundingRecord(kept)
        # As the MongoDB store answers a new funding: what it was given, not read back.
        return funding

    async def get(self, reference_id: str) -> Funding | None:
        record = self._records.get(reference_id)
        return record.funding if record else None

    async def settle(
        self, reference_id: str, admin_id: str, status: Status, reason: str | None, at: datetime
    ) -> bool:
        record = self._records.get(reference_id)
        if (
            record is None
            or record.funding.admin_id != admin_id
            or record.funding.status is not Status.PENDING
        ):
            return False
        record.funding = replace(record.funding, status=status, reason=reason)
        return True

    async def mark_published(self, reference_id: str, at: datetime) -> None:
        record = self._records.get(reference_id)
        if record is not None and record.published_at is None:
            record.published_at = record.asked_at = stored_instant(at)

    async def unpublished(
        self, older_than: datetime, limit: int = 100, after: Position | None = None
    ) -> Sequence[Funding]:
        cutoff = stored_instant(older_than)
        return _funding_page(
            [
                r.funding
                for r in self._records.values()
                if r.funding.status is Status.PENDING
                and r.published_at is None
                and r.funding.created_at < cutoff
            ],
            limit,
            after,
        )

    async def awaiting_wallet(
        self, asked_before: datetime, limit: int = 100, after: Position | None = None
    ) -> Sequence[Funding]:
        cutoff = stored_instant(asked_before)
        return _funding_page(
            [
                r.funding
                for r in self._records.values()
                if r.funding.status is Status.PENDING
                and r.asked_at is not None
                and r.asked_at < cutoff
            ],
            limit,
            after,
        )

    async def mark_asked(self, reference_id: str, at: datetime) -> None:
        record = self._records.get(reference_id)
        if record is not None:
            record.asked_at = stored_instant(at)
