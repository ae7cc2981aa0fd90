"""Spot orders as the API sees them: placing (validate, store pending, lock), reading, cancelling,
and following the wallet's answers to the locks."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

import structlog

from shared.messaging import CommandResult, unsendable_reason
from shared.money import LEDGER_CONTEXT, MoneyError, max_integer_digits, parse_decimal
from shared.paging import Page, PageCursor, Position, page_of
from trading.errors import Conflict, Invalid, NotFound
from trading.feature import Clock
from trading.messaging import EventPublisher
from trading.spot.domain.book import (
    CLOSED_STATUSES,
    NO_LIQUIDITY,
    OrderType,
    Side,
    Status,
)
from trading.spot.domain.markets import Fees, Market, MarketError, get_market
from trading.spot.messages import OrderMessage, encode
from trading.spot.orders import OPEN_STATUSES, SpotBatch, SpotOrder
from trading.spot.paging import DEFAULT_PAGE_SIZE, check_limit, order_cursor, order_position
from trading.spot.ports import BookPosition, SpotStore
from trading.spot.wallet import SpotWallet

log = structlog.get_logger(__name__)


def _amount(raw: str | None, field: str) -> Decimal | None:
    if raw is None:
        return None
    try:
        value = parse_decimal(raw)
    except MoneyError as exc:
        raise Invalid(exc.code, f"{field}: {exc.message}") from None
    if value <= 0:
        raise Invalid("amount_not_positive", f"{field} must be greater than zero")
    return value


# client_order_id → order id: the same user and client id name the same order
_CLIENT_ORDER_IDS = uuid.UUID("5b0e4c1a-3f38-4c55-9a47-2f1d6a7c9e10")


def _order_id(user_id: str, client_order_id: str | None) -> str:
    if client_order_id is None:
        return uuid.uuid4().hex
    return uuid.uuid5(_CLIENT_ORDER_IDS, f"{user_id}\x00{client_order_id}").hex


def _same_request(earlier: SpotOrder | None, order: SpotOrder) -> SpotOrder:
    """The order a client_order_id placed before, when this request is that one again."""
    if earlier is None or not earlier.same_request(order):
        raise Conflict("idempotency_conflict", "client_order_id was used for a different order")
    return earlier


def _fits(market: Market, fees: Fees, ticks: int, steps: int) -> bool:
    """Whether an order of `steps` at `ticks` can trade at all (a quote amount, fees below it)."""
    quote = market.quote_floor(ticks, steps)
    base = market.base_units(steps)
    rate = fees.highest
    return quote > 0 and rate.of(quote) < quote and rate.of(base) < base


class SpotOrders:
    def __init__(
        self,
        store: SpotStore,
        wallet: SpotWallet,
        publisher: EventPublisher,
        orders_topic: str,
        fees: Fees,
        clock: Clock,
        *,
        market_buy_margin: Decimal = Decimal("0.05"),
        cancel_wait_seconds: float = 5.0,
        resend_page: int = 200,
        expire_page: int = 200,
        ask_page: int = 200,
        max_open_per_user: int = 1000,
    ) -> None:
        self._store = store
        self._wallet = wallet
        self._publisher = publisher
        self._topic = orders_topic
        self._fees = fees
        self._clock = clock
        self._margin = market_buy_margin
        self._cancel_wait = cancel_wait_seconds
        self._resend_page = resend_page
        # Where the next lock relay pass goes on, by (created_at, order_id).
        self._resend_cursor: PageCursor[SpotOrder] = PageCursor(
            lambda order: (order.created_at, order.order_id)
        )
        self._expire_page = expire_page
        # Where the next expiry sweep goes on, by (expires_at, order_id).
        self._expire_cursor: PageCursor[SpotOrder] = PageCursor(_expiry_position)
        # Resting sells read per page while pricing a market buy beyond the snapshot's levels.
        self._ask_page = ask_page
        self._max_open = max_open_per_user

    async def place(
        self,
        user_id: str,
        *,
        pair: str,
        side: Side,
        type: OrderType,
        amount: str | None,
        price: str | None,
        quote_amount: str | None,
        client_order_id: str | None = None,
        expires_in_seconds: int | None = None,
    ) -> SpotOrder:
        """A new order, or with a client_order_id seen before, the order it placed then."""
        try:
            market = get_market(pair)
        except MarketError as exc:
            raise Invalid(exc.code, exc.message) from None
        base_amount = _amount(amount, "amount")
        limit_price = _amount(price, "price")
        spend = _amount(quote_amount, "quote_amount")
        order = SpotOrder(
            order_id=_order_id(user_id, client_order_id),
            client_order_id=client_order_id,
            user_id=user_id,
            pair=market.pair,
            side=side,
            type=type,
            price=limit_price,
            amount=base_amount,
            quote_amount=spend,
            lock_currency=market.quote.code if side is Side.BUY else market.base.code,
            lock_amount=Decimal(0),
            created_at=self._clock(),
        )
        order.updated_at = order.created_at  # as stored: the create answers what a read shows
        if expires_in_seconds is not None:
            if type is not OrderType.LIMIT:
                raise Invalid("expiry_not_allowed", "only a limit order rests, and can expire")
            order.expires_at = order.created_at + timedelta(seconds=expires_in_seconds)
        try:
            await self._size(order, market)
        except MarketError as exc:
            raise Invalid(exc.code, exc.message) from None
        if spend is not None:
            try:
                await self._check_buys_minimum(spend, market)
            except Invalid:
                # Refused on the book as it is now: the retry of an order placed while the book
                # let it is answered with that order, as any retry is.
                earlier = None if client_order_id is None else await self._store.get(order.order_id)
                if earlier is None or not earlier.same_request(order):
                    raise
                return earlier
        if type is OrderType.LIMIT and await self._store.open_count(user_id) >= self._max_open:
            # A limit order may rest; a market order never does. The retry of an order placed
            # before the cap was reached is answered with it, as any retry is. Two racing
            # requests may both pass at the cap less one: the cap bounds a user's orders, it is
            # not a balance.
            earlier = None if client_order_id is None else await self._store.get(order.order_id)
            if earlier is None:
                raise Conflict(
                    "too_many_open_orders",
                    f"at most {self._max_open} of your orders can be open at once: cancel one, "
                    "or wait for one to fill",
                )
            return _same_request(earlier, order)
        if await self._store.add(order) is None:
            return _same_request(await self._store.get(order.order_id), order)
        if order.status is Status.PENDING:
            try:
                await self._wallet.lock(order)
            except Exception:
                # stored as pending: the relay sends the lock again
                log.exception("spot.lock_not_sent", order_id=order.order_id)
        return order

    async def _size(self, order: SpotOrder, market: Market) -> None:
        """Check the order against its market and work out what it locks (sets remaining, hold)."""
        if order.type is OrderType.LIMIT:
            if order.price is None:
                raise Invalid("price_required", "a limit order needs a price")
            if order.quote_amount is not None:
                raise Invalid("quote_amount_not_allowed", "quote_amount is for market buys only")
        elif order.price is not None:
            raise Invalid("price_not_allowed", "a market order has no price")
        if order.side is Side.SELL or order.type is OrderType.LIMIT:
            if order.amount is None:
                raise Invalid("amount_required", "amount is required")
            if order.quote_amount is not None:
                raise Invalid("quote_amount_not_allowed", "quote_amount is for market buys only")
        elif (order.amount is None) == (order.quote_amount is None):
            raise Invalid("amount_or_quote_amount", "a market buy gives amount or quote_amount")
        if order.amount is not None:
            steps = market.steps(order.amount)
            if order.amount < market.min_amount:
                raise Invalid(
                    "amount_below_minimum", f"{market.pair} orders are at least {market.min_amount}"
                )
            order.remaining = steps
        ticks = None if order.price is None else market.ticks(order.price)
        if ticks is not None:
            order.price = market.price(ticks)  # shown with the tick's decimals from now on
        if ticks is not None:
            assert order.remaining is not None
            if not _fits(market, self._fees, ticks, order.remaining):
                raise Invalid("order_too_small", "amount × price is too small to trade")
        if order.side is Side.SELL:
            assert order.remaining is not None
            order.hold = market.base_units(order.remaining)
        elif ticks is not None:
            assert order.remaining is not None
            order.hold = market.quote_ceil(ticks, order.remaining)
        elif order.quote_amount is not None:
            order.hold = market.quote_units_of(order.quote_amount)
            if self._fees.maker.of(order.hold) >= order.hold:
                # Whatever the price, a fill's quote is at most this, and the seller's (a
                # maker's) fee on it, rounded up, would take all of it: locked, it could only fail.
                raise Invalid("order_too_small", "quote_amount is too small to trade")
        else:
            assert order.remaining is not None
            order.hold = await self._market_buy_budget(market, order.remaining)
            if order.hold == 0:
                order.status, order.reason = Status.FAILED, NO_LIQUIDITY
        currency = market.quote if order.side is Side.BUY else market.base
        if order.hold >= 10 ** (max_integer_digits(currency) + currency.scale):
            # no wallet amount is that large: its lock could never be sent
            raise Invalid(
                "amount_too_large",
                f"{currency.code} amounts are below 10^{max_integer_digits(currency)}; "
                "this order would lock more",
            )
        order.lock_amount = Decimal(order.hold).scaleb(-currency.scale)

    async def _check_buys_minimum(self, spend: Decimal, market: Market) -> None:
        """A market buy by `spend` (quote) must buy at least the market's minimum at the best ask,
        as an order by amount must give it; with no asks shown it is not refused here (it fails
        no_liquidity, or fills from asks that arrive before it reaches the book)."""
        shown, _ = await self._shown_asks(market)
        if not shown:
            return
        best = shown[0][0]
        if spend < LEDGER_CONTEXT.multiply(best, market.min_amount):
            raise Invalid(
                "amount_below_minimum",
                f"quote_amount {spend} {market.quote.code} buys less than {market.pair}'s minimum "
                f"{market.min_amount} {market.base.code} at the best ask {best}",
            )

    async def _shown_asks(
        self, market: Market
    ) -> tuple[list[tuple[Decimal, Decimal]], list[SpotBatch]]:
        """The market's asks as the book shows them now (price, amount; best first, the best
        `levels` only), and the batches stored after its snapshot."""
        state = await self._store.market_state(market.pair) or {}
        shown = [(Decimal(price), Decimal(amount)) for price, amount in state.get("asks", [])]
        # A batch is shown once the wallet applied it: the book after the latest batch the
        # matcher stored is in that batch (the snapshot may be a wallet round trip behind).
        newer = await self._store.batches_after(market.pair, int(state.get("sequence", 0)))
        if newer:
            shown = [(market.price(ticks), market.amount(n)) for ticks, n in newer[-1].asks]
        return shown, newer

    async def _market_buy_budget(self, market: Market, steps: int) -> int:
        """Quote units to lock for buying `steps` now: the asks' cost of them plus the margin."""
        wanted = market.amount(steps)
        shown, newer = await self._shown_asks(market)
        cost, left = _cost_of(shown, wanted)
        if left > 0 and shown:
            # The market's snapshot shows the best levels only (the matcher's `levels`): priced
            # from them alone, the lock ran out there and the rest was cancelled as slippage
            # while the book still had asks.
            cost, left = _cost_of(await self._cheapest_asks(market, newer, steps), wanted)
        if cost == 0:
            return 0
        budget = LEDGER_CONTEXT.multiply(cost, 1 + self._margin)
        return int(budget.scaleb(market.quote.scale).to_integral_value(rounding=ROUND_CEILING))

    async def _cheapest_asks(
        self, market: Market, newer: list[SpotBatch], steps: int
    ) -> list[tuple[Decimal, Decimal]]:
        """The resting asks (price, amount; best first) as the latest stored batch leaves them,
        the cheapest only: all of them below the price at which they hold `steps`, and enough
        at it (all of them if they never do). The stored orders show the batches the wallet
        applied, and `newer` (stored, not shown yet) changes them further: orders it filled or
        cancelled leave, orders it rested or filled in part rest as it left them. The stored
        ones are read a page at a time, cheapest first, until they hold `steps`: a market buy
        reads what it could take, not the whole book."""
        latest = {c.order_id: c for batch in newer for c in batch.changes if c.side is Side.SELL}
        resting = {Status.OPEN, Status.PARTIALLY_FILLED}
        # what `newer` left resting, priced from the stored orders (a price never changes)
        left = {i: c.remaining for i, c in latest.items() if c.status in resting and c.remaining}
        stored = await self._store.many(left) if left else {}
        changed = sorted((o.price, left[i]) for i, o in stored.items() if o.price is not None)
        asks: list[tuple[Decimal, int]] = []  # (price, steps) of the stored ones `newer` left be
        read = 0  # their steps
        after: BookPosition | None = None
        while True:
            page = await self._store.resting_sells(market.pair, self._ask_page, after)
            for order in page:
                if order.order_id not in latest and order.price is not None and order.remaining:
                    asks.append((order.price, order.remaining))
                    read += order.remaining
            if len(page) < self._ask_page:
                break  # every resting ask read
            last = page[-1]
            assert last.price is not None
            assert last.book_sequence is not None
            after = (last.price, last.book_sequence)
            # The unread ones cost `last.price` or more: those read up to it are the cheapest.
            if read + sum(n for price, n in changed if price <= last.price) >= steps:
                break
        return [(price, market.amount(n)) for price, n in sorted(asks + changed)]

    async def get(self, order_id: str, user_id: str, *, admin: bool = False) -> SpotOrder:
        order = await self._store.get(order_id)
        if order is None or (order.user_id != user_id and not admin):
            raise NotFound("order_not_found", "no such order")
        return order

    async def of_user(
        self,
        user_id: str,
        status: str | None,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[SpotOrder]:
        """A page of the user's orders (open, closed or all), newest first, then by id; `cursor`
        is the `next_cursor` of the page before."""
        if status == "open":
            statuses: frozenset[Status] = OPEN_STATUSES
        elif status == "closed":
            statuses = CLOSED_STATUSES
        elif status is None:
            statuses = OPEN_STATUSES | CLOSED_STATUSES
        else:
            raise Invalid("invalid_status", "status is open or closed")
        check_limit(limit)
        before = None if cursor is None else order_position(cursor)
        found = await self._store.of_user(user_id, statuses, limit=limit + 1, before=before)
        return page_of(found, limit, order_cursor)

    async def cancel(self, order_id: str, user_id: str) -> tuple[SpotOrder, bool]:
        """Ask the market's matcher to cancel; (the order, whether it is already cancelled)."""
        order = await self._store.request_cancel(order_id, user_id, self._clock())
        if order is None:
            current = await self.get(order_id, user_id)
            if current.status is Status.CANCELLED:
                return current, True  # the same request again, or cancelled already (its reason)
            raise Conflict("order_not_open", f"the order is {current.status.value}")
        await self._publisher.publish(
            self._topic,
            order.pair,
            encode(OrderMessage(kind="cancel", order_id=order_id, pair=order.pair)),
        )
        deadline = asyncio.get_running_loop().time() + self._cancel_wait
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            current = await self.get(order_id, user_id)
            if current.status is Status.CANCELLED:
                return current, True
            if current.closed:
                # Filled (or failed) before the cancel reached the matcher: an order shows its
                # fills once the wallet applied them, so this race lasts a wallet round trip.
                raise Conflict("order_not_open", f"the order is {current.status.value}")
        return order, False

    async def order_book(self, pair: str) -> dict[str, Any]:
        try:
            market = get_market(pair)
        except MarketError as exc:
            raise NotFound(exc.code, exc.message) from None
        state = await self._store.market_state(market.pair) or {}
        return {"pair": market.pair, "bids": state.get("bids", []), "asks": state.get("asks", [])}

    # the wallet's answers

    async def apply_result(self, result: CommandResult) -> None:
        if result.type != "lock" or not result.reference_id.endswith(":lock"):
            if result.status == "rejected":
                # settle and unlock amounts come from the book's own holds: a refusal is a bug
                log.error(
                    "spot.wallet_refused", reference=result.reference_id, reason=result.reason
                )
            return
        order_id = result.reference_id.removesuffix(":lock")
        outcome = result.original_status if result.status == "duplicate" else result.status
        # The result's user is the command's: a result under this reference for another user's
        # command (another producer's) is not the answer to this order's lock.
        if outcome == "rejected":
            await self._store.fail_pending(
                order_id, result.user_id, result.reason or "rejected", self._clock()
            )
            return
        order = await self._store.get(order_id)
        if order is not None and order.status is Status.PENDING and order.user_id == result.user_id:
            await self._publisher.publish(
                self._topic,
                order.pair,
                encode(OrderMessage(kind="locked", order_id=order_id, pair=order.pair)),
            )

    async def expire(self, again_after: timedelta) -> int:
        """Ask the matchers to cancel the open orders whose time ran out, and again, at most once
        per `again_after`, while they stay open (a cancel of an order no longer resting changes
        nothing). A sweep takes at most `expire_page` orders, the earliest expiry first, and the
        next goes on after them: however many expired orders stay open (a market whose matcher is
        not running), every other one gets its cancel."""
        now = self._clock()
        expired = await self._store.expired(
            now,
            limit=self._expire_page,
            after=self._expire_cursor.after,
            cancelled_before=now - again_after,
        )
        self._expire_cursor.advance(expired, self._expire_page)
        for order in expired:
            message = OrderMessage(
                kind="cancel", order_id=order.order_id, pair=order.pair, reason="expired"
            )
            await self._publisher.publish(self._topic, order.pair, encode(message))
            await self._store.mark_cancel_sent(order.order_id, self._clock())
        return len(expired)

    async def resend_locks(self, grace: timedelta) -> int:
        """Locks of orders still pending after `grace` (lost sends, lost results) go again; the
        number sent. An order whose lock cannot be built (a stored value the wallet's command
        refuses) is logged as `spot.lock_unsendable` and left pending, and the others still go:
        one bad order holds back no other order's lock. A pass takes at most `resend_page`
        orders, oldest first, and the next pass goes on after them: however many pending orders
        cannot be sent, every other one gets its turn. A lock sent again is stamped on its order
        (`asked_at`), which is sent again at most once per `grace`."""
        before: datetime = self._clock() - grace
        page = await self._store.pending_before(
            before, limit=self._resend_page, after=self._resend_cursor.after
        )
        self._resend_cursor.advance(page, self._resend_page)
        sent = 0
        for order in page:
            try:
                await self._wallet.lock(order)
            except ValueError as error:
                log.error(
                    "spot.lock_unsendable",
                    order_id=order.order_id,
                    reason=unsendable_reason(error),
                )
                continue
            await self._store.mark_asked(order.order_id, self._clock())
            sent += 1
        return sent


def _cost_of(asks: list[tuple[Decimal, Decimal]], amount: Decimal) -> tuple[Decimal, Decimal]:
    """What buying `amount` from these asks (price, amount; best first) costs, and what of it
    they cannot give."""
    cost = Decimal(0)
    left = amount
    for price, available in asks:
        take = min(left, available)
        cost = LEDGER_CONTEXT.add(cost, LEDGER_CONTEXT.multiply(price, take))
        left -= take
        if left == 0:
            break
    return cost, left


def _expiry_position(order: SpotOrder) -> Position | None:
    # An order without an expiry is never in an expiry page; were one there, the sweep restarts.
    return None if order.expires_at is None else (order.expires_at, order.order_id)
