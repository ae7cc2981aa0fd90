"""The store contract, run against the in-memory stores and against MongoDB: what the handlers
rely on (conditional moves that change a trade once, the embedded outbox, the deadline query,
the lists read a page at a time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from p2p.adapters.memory import MemoryOffers, MemoryTrades
from p2p.adapters.mongo import MongoOffers, MongoTrades, ensure_indexes
from p2p.application.ports import Expected, Offer, Offers, OutboxEntry, Trade, Trades
from p2p.domain.offers import OfferStatus, OfferTerms
from p2p.domain.trades import TradeStatus
from shared.messaging import LockCommand, UnlockCommand
from shared.testing.fixtures import unique_database_name

S = TradeStatus
D = Decimal
# Millisecond-exact: what MongoDB stores.
T0 = datetime(2026, 11, 30, 12, 0, 0, 123000, tzinfo=UTC)


@dataclass
class Stores:
    offers: Offers
    trades: Trades


@dataclass
class MongoStores(Stores):
    database: AsyncDatabase[dict[str, Any]]


@pytest.fixture(params=["memory", pytest.param("mongo", marks=pytest.mark.integration)])
def bare_stores(request: pytest.FixtureRequest) -> Stores:
    """Sync on purpose: the MongoDB fixtures are pulled only by its variant (as the wallet's)."""
    if request.param == "memory":
        return Stores(MemoryOffers(), MemoryTrades())
    client: AsyncMongoClient[dict[str, Any]] = request.getfixturevalue("mongo_client")
    database = client[unique_database_name(f"p2p_{request.node.originalname}")]
    return MongoStores(MongoOffers(database), MongoTrades(database), database)


@pytest_asyncio.fixture
async def stores(bare_stores: Stores) -> AsyncIterator[Stores]:
    if not isinstance(bare_stores, MongoStores):
        yield bare_stores
        return
    await ensure_indexes(bare_stores.database)
    try:
        yield bare_stores
    finally:
        await bare_stores.database.client.drop_database(bare_stores.database.name)


def lock(trade_id: str, amount: str = "0.01001") -> LockCommand:
    return LockCommand(
        user_id="sam",
        currency="BTC",
        amount=amount,
        transaction_type="p2p_escrow",
        reference_id=trade_id,
        issued_at=T0,
    )


def unlock(trade_id: str) -> UnlockCommand:
    return UnlockCommand(
        user_id="sam",
        currency="BTC",
        amount="0.01001",
        transaction_type="p2p_cancelled",
        reference_id=trade_id,
        issued_at=T0,
    )


def trade(trade_id: str = "p2p_1", **changes: Any) -> Trade:
    base = Trade(
        trade_id=trade_id,
        offer_id="offer_1",
        seller_id="sam",
        buyer_id="bea",
        currency="BTC",
        fiat_currency="GBP",
        price=D("52000.5"),
        amount=D("0.01"),
        fee=D("0.00001"),
        fiat_amount=D("520.01"),
        payment_methods=("bank_transfer", "faster_payments"),
        payment_window_minutes=15,
        payment_deadline=T0 + timedelta(minutes=15),
        status=S.PENDING_ESCROW,
        created_at=T0,
        updated_at=T0,
        outbox=(OutboxEntry(lock(trade_id), created_at=T0),),
    )
    return replace(base, **changes)


def offer(offer_id: str = "offer_1", **changes: Any) -> Offer:
    terms = OfferTerms("BTC", "GBP", D("52000"), D("0.001"), D("0.5"), ("bank_transfer",), 15)
    base = Offer(offer_id, "sam", terms, OfferStatus.ACTIVE, T0, T0)
    return replace(base, **changes)


async def test_trade_round_trip(stores: Stores) -> None:
    original = trade()
    await stores.trades.insert(original)
    assert await stores.trades.get("p2p_1") == original
    assert await stores.trades.get("p2p_missing") is None


async def test_insert_is_unique_and_answers_the_trade_stored_first(stores: Stores) -> None:
    first = trade()
    assert await stores.trades.insert(first) is None
    again = trade(status=S.PAID, escrow_locked=True)
    assert await stores.trades.insert(again) == first
    assert await stores.trades.get("p2p_1") == first


async def test_a_move_happens_once(stores: Stores) -> None:
    await stores.trades.insert(trade())
    at = T0 + timedelta(seconds=1)
    moved = await stores.trades.move(
        "p2p_1", Expected(S.PENDING_ESCROW), S.ESCROWED, {"escrow_locked": True}, None, at
    )
    assert moved is not None
    assert (moved.status, moved.escrow_locked, moved.updated_at) == (S.ESCROWED, True, at)
    again = await stores.trades.move(
        "p2p_1", Expected(S.PENDING_ESCROW), S.FAILED, {"reason": "x"}, None, at
    )
    assert again is None
    stored = await stores.trades.get("p2p_1")
    assert stored is not None
    assert (stored.status, stored.reason) == (S.ESCROWED, None)


async def test_racing_moves_leave_exactly_one_done(stores: Stores) -> None:
    await stores.trades.insert(trade(status=S.PAID, escrow_locked=True))
    targets = [S.RELEASING, S.CANCELLING] * 4
    outcomes = await asyncio.gather(
        *(
            stores.trades.move("p2p_1", Expected(S.PAID), to, {}, unlock("p2p_1"), T0)
            for to in targets
        )
    )
    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1
    stored = await stores.trades.get("p2p_1")
    assert stored is not None
    assert stored.status is winners[0].status
    assert len(stored.outbox) == 2  # the lock and ONE decision


async def test_the_escrow_guard(stores: Stores) -> None:
    await stores.trades.insert(trade(status=S.CANCELLING))
    expected = Expected(S.CANCELLING, escrow_locked=True)
    assert await stores.trades.move("p2p_1", expected, S.CANCELLED, {}, None, T0) is None
    early = Expected(S.CANCELLING, escrow_locked=False)
    moved = await stores.trades.move(
        "p2p_1", early, S.CANCELLING, {"escrow_locked": True}, unlock("p2p_1"), T0
    )
    assert moved is not None
    assert moved.escrow_locked
    assert await stores.trades.move("p2p_1", early, S.CANCELLING, {}, unlock("p2p_1"), T0) is None
    assert await stores.trades.move("p2p_1", expected, S.CANCELLED, {}, None, T0) is not None


async def test_the_deadline_guards(stores: Stores) -> None:
    deadline = T0 + timedelta(minutes=15)
    await stores.trades.insert(trade(status=S.ESCROWED, escrow_locked=True))
    before, at = deadline - timedelta(milliseconds=1), deadline
    # Marking paid needs the deadline still ahead; expiring needs it reached.
    assert (
        await stores.trades.move(
            "p2p_1", Expected(S.ESCROWED, deadline_open_at=at), S.PAID, {}, None, at
        )
        is None
    )
    assert (
        await stores.trades.move(
            "p2p_1", Expected(S.ESCROWED, deadline_passed_at=before), S.CANCELLING, {}, None, at
        )
        is None
    )
    moved = await stores.trades.move(
        "p2p_1",
        Expected(S.ESCROWED, deadline_open_at=before),
        S.PAID,
        {"paid_at": before},
        None,
        at,
    )
    assert moved is not None
    assert moved.paid_at == before


async def test_due_lists_unpaid_trades_past_their_deadline(stores: Stores) -> None:
    for index, status in enumerate(
        [S.PENDING_ESCROW, S.ESCROWED, S.PAID, S.DISPUTED, S.CANCELLING, S.CANCELLED]
    ):
        await stores.trades.insert(trade(f"p2p_{index}", status=status))
    await stores.trades.insert(
        trade("p2p_later", status=S.ESCROWED, payment_deadline=T0 + timedelta(minutes=30))
    )
    now = T0 + timedelta(minutes=15)
    due = await stores.trades.due(now, 10)
    assert sorted(t.trade_id for t in due) == ["p2p_0", "p2p_1"]
    assert await stores.trades.due(now - timedelta(milliseconds=1), 10) == []


async def test_trades_past_their_deadline_come_earliest_first_a_page_after_another(
    stores: Stores,
) -> None:
    await insert_scattered(stores, lambda i, at: trade(i, status=S.ESCROWED, payment_deadline=at))
    now = T0 + timedelta(seconds=2)  # p2p_e's deadline is still ahead
    pages: list[list[str]] = []
    after = None
    while page := await stores.trades.due(now, 2, after=after):
        pages.append([t.trade_id for t in page])
        after = (page[-1].payment_deadline, page[-1].trade_id)
    assert pages == [["p2p_b", "p2p_a"], ["p2p_c", "p2p_d"]]


async def test_awaiting_wallet_lists_trades_in_flight_unmoved_since(stores: Stores) -> None:
    statuses = [S.PENDING_ESCROW, S.ESCROWED, S.PAID, S.RELEASING, S.CANCELLING, S.COMPLETED]
    for index, status in enumerate(statuses):
        await stores.trades.insert(trade(f"p2p_{index}", status=status))
    await stores.trades.insert(
        trade("p2p_moved", status=S.RELEASING, updated_at=T0 + timedelta(minutes=1))
    )
    waiting = await stores.trades.awaiting_wallet(T0 + timedelta(seconds=1), 10)
    assert sorted(t.trade_id for t in waiting) == ["p2p_0", "p2p_3", "p2p_4"]
    assert await stores.trades.awaiting_wallet(T0, 10) == []
    oldest = await stores.trades.awaiting_wallet(T0 + timedelta(minutes=2), 1)
    assert [t.updated_at for t in oldest] == [T0]


async def insert_scattered(stores: Stores, make: Callable[[str, datetime], Trade]) -> None:
    """Five trades, made at T0 plus 2, 0, 1, 1 and 3 seconds: oldest first (then by id) they are
    p2p_b, p2p_a, p2p_c, p2p_d, p2p_e."""
    scattered = {"p2p_d": 2, "p2p_b": 0, "p2p_c": 1, "p2p_a": 1, "p2p_e": 3}
    for trade_id, seconds in scattered.items():
        await stores.trades.insert(make(trade_id, T0 + timedelta(seconds=seconds)))


async def test_trades_awaiting_the_wallet_come_unmoved_longest_first_a_page_after_another(
    stores: Stores,
) -> None:
    await insert_scattered(stores, lambda i, at: trade(i, status=S.RELEASING, updated_at=at))
    since = T0 + timedelta(seconds=3)  # p2p_e moved since
    first = await stores.trades.awaiting_wallet(since, 2)
    assert [t.trade_id for t in first] == ["p2p_b", "p2p_a"]
    last = first[-1]
    second = await stores.trades.awaiting_wallet(since, 2, after=(last.updated_at, last.trade_id))
    assert [t.trade_id for t in second] == ["p2p_c", "p2p_d"]
    end = (second[-1].updated_at, second[-1].trade_id)
    assert await stores.trades.awaiting_wallet(since, 2, after=end) == []
    assert [t.trade_id for t in await stores.trades.awaiting_wallet(since, 10)] == [
        "p2p_b",
        "p2p_a",
        "p2p_c",
        "p2p_d",
    ]


async def test_the_outbox(stores: Stores) -> None:
    original = trade()
    await stores.trades.insert(original)
    later = T0 + timedelta(seconds=10)
    await stores.trades.move(
        "p2p_1", Expected(S.PENDING_ESCROW), S.CANCELLING, {}, unlock("p2p_1"), later
    )
    pending = await stores.trades.unpublished(T0 + timedelta(seconds=11), 10)
    assert sorted(u.command["type"] for u in pending) == ["lock", "unlock"]
    assert {(u.owner_id, u.owner_created_at) for u in pending} == {("p2p_1", T0)}
    # Only entries older than the cutoff (younger ones are being published by their request).
    younger = await stores.trades.unpublished(T0 + timedelta(seconds=5), 10)
    assert [u.command["type"] for u in younger] == ["lock"]
    [lock_command] = [u.build() for u in pending if u.command["type"] == "lock"]
    assert lock_command == original.outbox[0].command  # resent as recorded: same id and payload
    await stores.trades.mark_published("p2p_1", lock_command.command_id)
    remaining = await stores.trades.unpublished(T0 + timedelta(seconds=11), 10)
    assert [u.command["type"] for u in remaining] == ["unlock"]


async def test_unpublished_commands_come_by_trade_oldest_first_a_page_after_another(
    stores: Stores,
) -> None:
    await insert_scattered(
        stores, lambda i, at: trade(i, created_at=at, outbox=(OutboxEntry(lock(i), created_at=at),))
    )
    await stores.trades.insert(  # published: not the relay's
        trade("p2p_0", outbox=(OutboxEntry(lock("p2p_0"), created_at=T0, published=True),))
    )
    cutoff = T0 + timedelta(seconds=3)  # p2p_e's command is younger
    first = await stores.trades.unpublished(cutoff, 2)
    assert [u.owner_id for u in first] == ["p2p_b", "p2p_a"]
    last = (first[-1].owner_created_at, first[-1].owner_id)
    second = await stores.trades.unpublished(cutoff, 2, after=last)
    assert [u.owner_id for u in second] == ["p2p_c", "p2p_d"]
    end = (second[-1].owner_created_at, second[-1].owner_id)
    assert await stores.trades.unpublished(cutoff, 2, after=end) == []
    everything = await stores.trades.unpublished(cutoff, 10)
    assert [u.owner_id for u in everything] == ["p2p_b", "p2p_a", "p2p_c", "p2p_d"]


async def test_an_unpublished_command_the_model_refuses_comes_back_as_stored(
    stores: Stores,
) -> None:
    """Stored by an earlier version (a user id from a token subject with a space): reading the
    outbox does not fail on it; building it does, for the relay to report and go on."""
    refused = lock("p2p_old").model_copy(update={"user_id": "old user"})
    await stores.trades.insert(trade("p2p_old", outbox=(OutboxEntry(refused, created_at=T0),)))
    newer = trade("p2p_new", created_at=T0 + timedelta(seconds=1))
    await stores.trades.insert(newer)
    found = await stores.trades.unpublished(T0 + timedelta(seconds=1), 10)
    assert [(u.owner_id, u.command["user_id"]) for u in found] == [
        ("p2p_old", "old user"),
        ("p2p_new", "sam"),
    ]
    with pytest.raises(ValueError, match="invalid_field"):
        found[0].build()
    assert found[1].build() == newer.outbox[0].command


async def test_a_trade_whose_stored_command_the_model_refuses_is_read_all_the_same(
    stores: Stores,
) -> None:
    """Stored by an earlier version (a user id from a token subject with a space, an amount with
    more decimals than its currency now has): over MongoDB reading it failed, and with it every
    page it was on (the ask-again pass, the deadline sweeper) and its GET. It is read with the
    command as stored, which only sending refuses, and the pages hold every trade."""
    refused = {
        "p2p_b": lock("p2p_b").model_copy(update={"user_id": "old user"}),
        "p2p_c": lock("p2p_c").model_copy(update={"amount": D("0.010010001")}),
    }

    def make(trade_id: str, at: datetime) -> Trade:
        command = refused.get(trade_id, lock(trade_id))
        return trade(
            trade_id,
            status=S.PENDING_ESCROW,  # in flight and unpaid: on both pages
            updated_at=at,
            payment_deadline=at,
            outbox=(OutboxEntry(command, created_at=T0, published=True),),
        )

    await insert_scattered(stores, make)
    now = T0 + timedelta(seconds=4)
    order = ["p2p_b", "p2p_a", "p2p_c", "p2p_d", "p2p_e"]
    assert [t.trade_id for t in await stores.trades.awaiting_wallet(now, 10)] == order
    assert [t.trade_id for t in await stores.trades.due(now, 10)] == order
    first = await stores.trades.due(now, 2)
    after = (first[-1].payment_deadline, first[-1].trade_id)
    assert [t.trade_id for t in await stores.trades.due(now, 2, after=after)] == order[2:4]
    for trade_id, command in refused.items():
        read = await stores.trades.get(trade_id)
        assert read is not None
        [entry] = read.outbox
        assert entry.as_stored() == command.model_dump(mode="json")
        assert (entry.command_id, entry.type, entry.published) == (command.command_id, "lock", True)
        with pytest.raises(ValueError, match="invalid_"):
            entry.build()
        [listed] = [t for t in await stores.trades.list_for("bea", 10) if t.trade_id == trade_id]
        assert listed == read
    good = await stores.trades.get("p2p_a")
    assert good is not None
    assert (
        good.outbox[0].build()
        == good.outbox[0].command
        == lock("p2p_a").model_copy(update={"command_id": good.outbox[0].command_id})
    )


async def test_notes_and_listing(stores: Stores) -> None:
    await stores.trades.insert(trade("p2p_a"))
    await stores.trades.insert(trade("p2p_b", buyer_id="bob", created_at=T0 + timedelta(1)))
    noted_at = T0 + timedelta(seconds=1)
    await stores.trades.note("p2p_a", "unlock_rejected: x", noted_at)
    # A redelivered refusal notes the same thing again: kept once, and the trade left unmoved.
    await stores.trades.note("p2p_a", "unlock_rejected: x", T0 + timedelta(seconds=5))
    stored = await stores.trades.get("p2p_a")
    assert stored is not None
    assert (stored.notes, stored.updated_at) == (("unlock_rejected: x",), noted_at)
    await stores.trades.note("p2p_a", "transfer_locked_rejected: y", T0 + timedelta(seconds=9))
    stored = await stores.trades.get("p2p_a")
    assert stored is not None
    assert stored.notes == ("unlock_rejected: x", "transfer_locked_rejected: y")
    assert [t.trade_id for t in await stores.trades.list_for("sam", 10)] == ["p2p_b", "p2p_a"]
    assert [t.trade_id for t in await stores.trades.list_for("bea", 10)] == ["p2p_a"]
    assert await stores.trades.list_for("eve", 10) == []


async def test_an_offer_is_inserted_once_and_answers_the_one_stored_first(
    stores: Stores,
) -> None:
    assert await stores.offers.insert(offer()) is None
    again = offer(terms=replace(offer().terms, price=D("53000")))
    assert await stores.offers.insert(again) == offer()
    assert await stores.offers.get("offer_1") == offer()


async def test_offers(stores: Stores) -> None:
    await stores.offers.insert(offer())
    await stores.offers.insert(
        offer("offer_2", terms=replace(offer().terms, currency="ETH", price=D("2000")))
    )
    assert await stores.offers.get("offer_1") == offer()
    assert [o.offer_id for o in await stores.offers.list_active("BTC", None, 10)] == ["offer_1"]
    assert [o.offer_id for o in await stores.offers.list_active(None, "GBP", 10)] == [
        "offer_2",
        "offer_1",
    ]  # cheapest first
    later = T0 + timedelta(seconds=1)
    withdrawn = await stores.offers.withdraw("offer_1", later)
    assert withdrawn is not None
    assert withdrawn.status is OfferStatus.WITHDRAWN
    assert await stores.offers.withdraw("offer_1", later) is None
    assert [o.offer_id for o in await stores.offers.list_active(None, None, 10)] == ["offer_2"]


def priced(offer_id: str, price: str, seconds: int, **changes: Any) -> Offer:
    at = T0 + timedelta(seconds=seconds)
    terms = replace(offer().terms, price=D(price), **changes)
    return offer(offer_id, terms=terms, created_at=at, updated_at=at)


def positioned(o: Offer) -> tuple[Decimal, datetime, str]:
    return o.terms.price, o.created_at, o.offer_id


async def test_active_offers_come_cheapest_then_oldest_then_by_id_a_page_after_another(
    stores: Stores,
) -> None:
    for made in (
        priced("offer_e", "52000", 0),
        priced("offer_c", "51000.5", 2),
        priced("offer_a", "52000", 1),
        priced("offer_d", "52000.00", 1),  # the same price and instant: the id decides
        priced("offer_b", "52000", 1),
        priced("offer_f", "9", 5),
        priced("offer_eth", "1", 0, currency="ETH"),
        priced("offer_eur", "1", 0, fiat_currency="EUR"),
    ):
        await stores.offers.insert(made)
    await stores.offers.insert(priced("offer_gone", "1", 0))
    await stores.offers.withdraw("offer_gone", T0)
    pages: list[list[str]] = []
    after = None
    while page := await stores.offers.list_active("BTC", "GBP", 2, after):
        pages.append([o.offer_id for o in page])
        after = positioned(page[-1])
    assert pages == [["offer_f", "offer_c"], ["offer_e", "offer_a"], ["offer_b", "offer_d"]]
    everything = await stores.offers.list_active(None, None, 20)
    assert [o.offer_id for o in everything][:3] == ["offer_eth", "offer_eur", "offer_f"]
    cheapest = ("offer_eth", "offer_eur")
    after_cheapest = await stores.offers.list_active(None, None, 20, positioned(everything[1]))
    assert [o.offer_id for o in after_cheapest] == [
        o.offer_id for o in everything if o.offer_id not in cheapest
    ]


async def test_a_users_trades_come_newest_first_then_by_id_a_page_after_another(
    stores: Stores,
) -> None:
    made = {"p2p_a": 1, "p2p_e": 0, "p2p_c": 1, "p2p_b": 2, "p2p_d": 1}
    for index, (trade_id, seconds) in enumerate(made.items()):
        at = T0 + timedelta(seconds=seconds)
        # bea buys some and sells others
        parties = {"buyer_id": "sam", "seller_id": "bea"} if index % 2 else {}
        await stores.trades.insert(trade(trade_id, created_at=at, **parties))
    await stores.trades.insert(trade("p2p_other", buyer_id="eve", created_at=T0))
    pages: list[list[str]] = []
    before = None
    while page := await stores.trades.list_for("bea", 2, before):
        pages.append([t.trade_id for t in page])
        before = (page[-1].created_at, page[-1].trade_id)
    assert pages == [["p2p_b", "p2p_d"], ["p2p_c", "p2p_a"], ["p2p_e"]]
    assert [t.trade_id for t in await stores.trades.list_for("eve", 10)] == ["p2p_other"]


async def test_what_arrives_while_paging_neither_repeats_nor_hides_what_was_there(
    stores: Stores,
) -> None:
    """Trades and offers made between two pages, at the same instant as the last one read or
    later, cheaper or dearer, with an id before or after its: every one there when paging began
    is read exactly once, and none twice."""
    trades_there = [f"p2p_{index}" for index in range(7)]
    offers_there = [f"offer_{index}" for index in range(7)]
    for index in range(7):
        at = T0 + timedelta(milliseconds=index // 2)
        await stores.trades.insert(trade(trades_there[index], created_at=at))
        await stores.offers.insert(priced(offers_there[index], str(50000 + index // 3), index // 2))
    trades_read: list[str] = []
    before = None
    while page := await stores.trades.list_for("bea", 2, before):
        trades_read += [t.trade_id for t in page]
        last, count = page[-1], len(trades_read)
        for arrived in (f"{last.trade_id}_late", f"p2p_0_late_{count}"):
            await stores.trades.insert(trade(arrived, created_at=last.created_at))
        newer = T0 + timedelta(seconds=count)
        await stores.trades.insert(trade(f"p2p_late_{count}", created_at=newer))
        before = (last.created_at, last.trade_id)
    assert len(trades_read) == len(set(trades_read))
    assert sorted(t for t in trades_read if "late" not in t) == trades_there
    offers_read: list[str] = []
    after = None
    while offers := await stores.offers.list_active("BTC", "GBP", 2, after):
        offers_read += [o.offer_id for o in offers]
        last_offer, count = offers[-1], len(offers_read)
        after = positioned(last_offer)
        if count > 6:  # what arrives after the last one read is read too: let paging end
            continue
        for arrived, price in ((f"offer_late_{count}", "1"), (f"offer_late_{count}_", "99999")):
            await stores.offers.insert(priced(arrived, price, 0))
        for arrived in (f"{last_offer.offer_id}_late", f"offer_0_late_{count}"):
            await stores.offers.insert(replace(last_offer, offer_id=arrived))
    assert len(offers_read) == len(set(offers_read))
    assert sorted(o for o in offers_read if "late" not in o) == offers_there
