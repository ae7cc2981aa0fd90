"""One writer per market: the matcher applies a market's trading.orders messages in order.

Per batch of messages: decide with the pure book, store the decisions (one insert), send the
wallet commands they need and wait for the wallet's answers, mark the batch dispatched, project
the decisions onto the orders and the market's snapshot, and only then commit the Kafka offsets.
The orders show a fill or a cancel once the wallet has applied it: a `filled` or `cancelled` order's
money has moved (the contract's rule for a status that follows a wallet result). A crash anywhere
replays safely:
- decisions stored but not projected are sent (if not marked dispatched) and projected on
  recovery (the wallet applies each reference once; projection is idempotent);
- decisions not stored were never acted on: the messages are consumed again and decided again
  (a `locked` message only enters the book while its order is still `pending`);
- commands of a stored batch not marked dispatched are sent again.
A batch is marked dispatched once the wallet answered each of its commands for good. One shown
without that (the wallet slower than the matcher's wait, a result lost, a failure the wallet
recorded no outcome for) stays unconfirmed and is sent again by `resend_unconfirmed`, which the
consumer runs between polls, right after each rebalance and then every `resend_every` seconds,
until the wallet answers it in full. The consumer's loop also rebuilds the markets of each
assignment (`take_over`): never the rebalance listener, as no heartbeat goes out while it runs,
and a wallet or a MongoDB that is down would hold each rebalance past the session timeout.
After a restart the book is the stored resting orders in their time priority: nothing open is
lost, and an order is in the book only once its lock is applied (it came from a `locked` message).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Final, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from trading.feature import Clock
from trading.spot.domain.book import EXPIRED, Fill, Order, OrderBook, OrderChange, Status
from trading.spot.domain.markets import MARKETS, Fees, Market
from trading.spot.messages import OrderMessage, decode
from trading.spot.orders import SpotBatch, SpotOrder
from trading.spot.ports import SpotStore
from trading.spot.wallet import SpotWallet

log = structlog.get_logger(__name__)

RETRY_DELAY_SECONDS: Final = 0.5
# Unconfirmed batches a resend pass sends at once (concurrently: the pass waits about one
# wallet wait, whatever the page); the next pass goes on after them.
UNCONFIRMED_PAGE: Final = 20
T = TypeVar("T")


async def retrying[T](what: str, action: Callable[[], Awaitable[T]]) -> T:
    """Decisions already taken must reach the store and the wallet: retry while they are away."""
    while True:
        try:
            return await action()
        except (PyMongoError, KafkaError, OSError):
            log.exception("spot.retrying", what=what)
            await asyncio.sleep(RETRY_DELAY_SECONDS)


def engine_order(order: SpotOrder, market: Market) -> Order:
    return Order(
        order.order_id,
        order.user_id,
        order.side,
        order.type,
        None if order.price is None else market.ticks(order.price),
        order.remaining,
        order.hold,
        market.steps(order.filled_amount) if order.filled_amount else 0,
        order.book_sequence or 0,
        order.status,
    )


class MarketMatcher:
    """The book of one market and the persistence of its decisions."""

    def __init__(
        self,
        market: Market,
        fees: Fees,
        store: SpotStore,
        wallet: SpotWallet,
        clock: Clock,
        *,
        levels: int = 50,
    ) -> None:
        self.market = market
        self._fees = fees
        self._store = store
        self._wallet = wallet
        self._clock = clock
        self._levels = levels
        self.book = OrderBook(market, fees)
        # The resting orders that have an expiry, the earliest first (an entry whose order has
        # left the book since is dropped when its time comes).
        self._expiries: list[tuple[datetime, str]] = []
        # Where the next resend pass goes on: the `last` of the page the pass before ended on.
        self._unconfirmed_after = 0

    async def recover(self) -> None:
        """Rebuild the book from the store: project the batches stored after the market's
        projected state, then the resting orders in their time priority, numbered on from the
        last batch projected here.

        Not from the last batch stored, nor from the resting orders' own numbers: another matcher
        of the market (an old owner still deciding) may have stored a batch since the batches
        were read, or be half-way through projecting one, so the resting orders may still show
        an ask its batch filled, beside orders it rested. A book numbered past that batch would
        append after it and fill that ask again; numbered from the last batch projected here,
        its first batch starts where that batch is, the store refuses it, and the book is
        rebuilt with that batch projected."""
        pair = self.market.pair
        state = await self._store.market_state(pair)
        projected = int(state["sequence"]) if state else 0
        stored = await self._store.batches_after(pair, projected)
        # Read after the batches: one an old owner stores meanwhile is not in `stored`, and one
        # listed is found here unless it was marked sent (by then the wallet applied it).
        unsent = {b.batch_id for b in await self._store.undispatched(pair, after=projected)}
        for batch in stored:
            if batch.batch_id in unsent:  # the wallet first, as `apply` does
                await self._dispatch(batch)
            await self._store.project(batch, self.market, self._clock())
            projected = max(projected, batch.last)
        book = OrderBook(self.market, self._fees, sequence=projected)
        resting = await self._store.resting(pair)
        for order in resting:
            book.restore(engine_order(order, self.market))
        book.sequence = projected  # `restore` moves it to the orders' numbers
        self.book = book
        self._expiries = [(o.expires_at, o.order_id) for o in resting if o.expires_at is not None]
        heapq.heapify(self._expiries)
        # The batches shown before the wallet answered them in full are the consumer's resend
        # passes' (the first right after this rebalance), from the oldest.
        self._unconfirmed_after = 0
        log.info("spot.recovered", pair=pair, resting=len(book), sequence=book.sequence)

    async def apply(self, messages: Sequence[OrderMessage]) -> SpotBatch | None:
        """Decide the messages, store the decisions, then act on them (send them to the wallet
        and wait for its answers, then project them onto the orders).

        If the store refuses the batch (it does not start right after the market's last stored
        batch), another matcher of this market got there first (a partition that moved while its
        old owner was still deciding, or a matcher racing its own restart): this book is stale,
        so none of its decisions is acted on. The book is rebuilt from the store and the messages
        decided again on it; those the other matcher decided are skipped there as redeliveries.
        """
        while True:
            batch = await self._decide(messages)
            if batch is None:
                return None
            now = self._clock()
            if await self._store_decisions(batch, now):
                break
            log.warning("spot.fenced", pair=self.market.pair, batch=batch.batch_id)
            await self.recover()
        # The wallet first: an order shows a fill or a cancel once its money has moved.
        await self._dispatch(batch)
        await retrying("project decisions", lambda: self._store.project(batch, self.market, now))
        return batch

    async def _store_decisions(self, batch: SpotBatch, now: datetime) -> bool:
        return await retrying("store decisions", lambda: self._store.add_batch(batch, now))

    async def _decide(self, messages: Sequence[OrderMessage]) -> SpotBatch | None:
        book = self.book
        locked = [m.order_id for m in messages if m.kind == "locked"]
        orders = await retrying("read orders", lambda: self._store.many(locked)) if locked else {}
        # every batch takes a sequence number of its own: its id, and the guard that keeps a
        # projection from going back (a batch of cancels alone decides no other number)
        book.sequence += 1
        first = book.sequence
        fills: list[Fill] = []
        changes: list[OrderChange] = []
        now = self._clock()
        # Orders whose time ran out leave the book before anything is matched: the expiry sweep
        # (every few seconds, through Kafka) would come after a taker had filled them.
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            change = book.cancel(heapq.heappop(expiries)[1], EXPIRED)
            if change is not None:
                changes.append(change)
        entered: set[str] = set()
        for message in messages:
            if message.kind == "cancel":
                change = book.cancel(message.order_id, message.reason)
                if change is not None:
                    changes.append(change)
                continue
            order = orders.get(message.order_id)
            if (
                order is None
                or order.pair != self.market.pair
                or order.status is not Status.PENDING
                or order.order_id in entered
            ):
                continue  # unknown, or already decided (a redelivered message)
            entered.add(order.order_id)
            taker = engine_order(order, self.market)
            if order.cancel_requested:
                changes.append(book.withdraw(taker))
                continue
            if order.expires_at is not None and order.expires_at <= now:
                changes.append(book.withdraw(taker, EXPIRED))
                continue
            decided_fills, decided_changes = book.submit(taker)
            fills += decided_fills
            changes += decided_changes
            if order.expires_at is not None and order.order_id in book:
                heapq.heappush(expiries, (order.expires_at, order.order_id))
        if len(expiries) > 2 * len(book) + 64:
            # Entries of orders filled or cancelled since stay until their time comes (up to
            # 90 days): dropped when they outnumber the book.
            expiries[:] = [entry for entry in expiries if entry[1] in book]
            heapq.heapify(expiries)
        if not changes:
            # Nothing stored: give the number back, so that the next batch still starts right
            # after the market's last one (`add_batch` refuses any other).
            book.sequence = first - 1
            return None
        bids, asks = book.depth(self._levels)
        return SpotBatch(self.market.pair, first, book.sequence, fills, changes, bids, asks)

    async def resend_unconfirmed(self, *, page: int = UNCONFIRMED_PAGE) -> int:
        """Sends the commands of stored batches not yet answered in full by the wallet again
        (the wallet applies each reference once), at most `page` batches, oldest first, going on
        after the page the pass before took (from the oldest again after the last). The number the
        wallet has now answered in full (marked dispatched).

        Never beside `apply` of this market: the consumer runs both from its one loop."""
        pair = self.market.pair

        async def page_after(after: int) -> list[SpotBatch]:
            return await retrying(
                "read unconfirmed batches",
                lambda: self._store.undispatched(pair, after=after, limit=page),
            )

        batches = await page_after(self._unconfirmed_after)
        if not batches and self._unconfirmed_after:
            batches = await page_after(0)  # the pass before ended on the last one: round again
        self._unconfirmed_after = batches[-1].last if len(batches) == page else 0
        if not batches:
            return 0
        confirmed = await asyncio.gather(*(self._dispatch(batch) for batch in batches))
        log.info("spot.unconfirmed_resent", pair=pair, sent=len(batches), confirmed=sum(confirmed))
        return sum(confirmed)

    async def _dispatch(self, batch: SpotBatch) -> bool:
        """Sends the batch's commands; marks it dispatched if the wallet answered each for good."""
        confirmed = await retrying(
            "send wallet commands", lambda: self._wallet.dispatch(batch, self.market)
        )
        if confirmed:
            await retrying("mark dispatched", lambda: self._store.mark_dispatched(batch))
        else:
            log.warning("spot.batch_unconfirmed", pair=self.market.pair, batch=batch.batch_id)
        return confirmed


def partition_of(pair: str, partitions: Sequence[int]) -> int:
    """The partition trading.orders puts a market's messages in (the producer's default)."""
    ordered = sorted(partitions)
    return int(DefaultPartitioner()(pair.encode(), ordered, ordered))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: MatcherConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._owner.revoked()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Noted only: the consumer's loop rebuilds the markets (`take_over`). No heartbeat goes
        # out while a listener runs, and a rebuild may wait on the wallet (a batch stored and
        # never sent) or on MongoDB: here it could outlast the session and rebalance the group
        # again, for as long as either is down.
        self._owner.assigned({tp.partition for tp in assigned})


class MatcherConsumer:
    """The consumer group of trading.orders: each market belongs to the instance that owns its
    partition, so each book has one writer."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        make_matcher: Callable[[Market], MarketMatcher],
        *,
        group_id: str,
        batch_size: int = 500,
        resend_every: float = 30.0,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
        markets: Mapping[str, Market] = MARKETS,
    ) -> None:
        self._topic = topic
        self._make_matcher = make_matcher
        self._markets = markets
        self._batch_size = batch_size
        self._resend_every = resend_every
        # When the next resend pass is due (the event loop's clock); 0 right after a rebalance.
        self._resend_at = 0.0
        # The partitions of the latest assignment, until the loop has taken their markets over,
        # and how many revocations there were (a rebuild that saw one meanwhile is void).
        self._assigned: set[int] | None = None
        self._revocations = 0
        self._options = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
        }
        self.matchers: dict[str, MarketMatcher] = {}
        self.joined = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        running = self._task is not None and not self._task.done()
        return running and self.joined.is_set()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(**self._options)
        await self._consumer.start()
        self._consumer.subscribe([self._topic], listener=_Rebalance(self))
        self._task = asyncio.create_task(self._run(), name="spot-matcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        self._task = self._consumer = None

    def revoked(self) -> None:
        self.joined.clear()
        self.matchers.clear()  # their next owner rebuilds them from the store
        self._assigned = None
        self._revocations += 1

    def assigned(self, partitions: set[int]) -> None:
        self._assigned = partitions

    async def _take_over_assigned(self) -> None:
        if self._assigned is not None:
            partitions, self._assigned = self._assigned, None
            if await self.take_over(partitions):
                self.joined.set()

    async def take_over(self, partitions: set[int]) -> bool:
        """Rebuilds the markets of `partitions`; False, keeping none of them, if the partitions
        were revoked meanwhile (the listener runs while a rebuild waits on MongoDB or the
        wallet): the next assignment's rebuild comes next."""
        assert self._consumer is not None
        revocations = self._revocations
        every = self._consumer.partitions_for_topic(self._topic) or partitions
        self.matchers.clear()
        for pair, market in self._markets.items():
            if partition_of(pair, list(every)) in partitions:
                matcher = self._make_matcher(market)
                await retrying(f"recover {pair}", matcher.recover)
                if self._revocations != revocations:  # `revoked` emptied `matchers`
                    log.info("spot.take_over_revoked", partitions=sorted(partitions))
                    return False
                self.matchers[pair] = matcher
        self._resend_at = 0.0  # their unconfirmed batches: in the loop, between two polls
        # which instance writes which market, after every rebalance
        log.info("spot.markets_owned", markets=sorted(self.matchers), partitions=sorted(partitions))
        return True

    async def _run(self) -> None:
        assert self._consumer is not None
        clock = asyncio.get_running_loop().time
        while True:
            await self._take_over_assigned()
            if clock() >= self._resend_at:
                await self._resend_unconfirmed()
                self._resend_at = clock() + self._resend_every
            batches = await self._consumer.getmany(timeout_ms=100, max_records=self._batch_size)
            # a rebalance within this poll: its markets are rebuilt before its records are decided
            await self._take_over_assigned()
            if not batches:
                continue
            by_market: dict[str, list[OrderMessage]] = {}
            for records in batches.values():
                for record in records:
                    message = self._read(record.value)
                    if message is not None:
                        by_market.setdefault(message.pair, []).append(message)
            matchers: list[tuple[MarketMatcher, list[OrderMessage]]] = []
            for pair, messages in by_market.items():
                matcher = self.matchers.get(pair)
                if matcher is None:
                    market = self._markets.get(pair)
                    if market is None:
                        log.warning("spot.unknown_market", pair=pair, count=len(messages))
                        continue
                    # it came on a partition this instance owns: this instance is its writer
                    matcher = self._make_matcher(market)
                    await retrying(f"recover {pair}", matcher.recover)
                    self.matchers[pair] = matcher
                    self._resend_at = 0.0
                matchers.append((matcher, messages))
            # The markets at once: each waits on the wallet for its own batch, so one market's
            # wait does not delay another's decided in the same poll (their books share
            # nothing). Each runs to its end: a market that fails stops no other half-way
            # (sent to the wallet, not shown); then the first failure ends the loop, before
            # any offset is committed.
            outcomes = await asyncio.gather(
                *(matcher.apply(messages) for matcher, messages in matchers),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            try:
                await self._consumer.commit()
            except CommitFailedError:
                log.warning("spot.commit_failed_after_rebalance")

    async def _resend_unconfirmed(self) -> None:
        """Every market's pass at once, between polls (never beside the market's `apply`); as
        with `apply`, each runs to its end before the first failure ends the loop."""
        outcomes = await asyncio.gather(
            *(matcher.resend_unconfirmed() for matcher in list(self.matchers.values())),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    @staticmethod
    def _read(value: bytes | None) -> OrderMessage | None:
        if value is None:
            return None
        try:
            return decode(value)
        except ValidationError:
            log.warning("spot.unreadable_message", value=value[:200])
            return None
