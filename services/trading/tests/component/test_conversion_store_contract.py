"""The conversion storage contract, run against the in-memory stores and against MongoDB: a quote
is added once per id and claimed once (by its user, for its kind, before it expires), settled once
and only by its own user's result; the relay finds what was never published and what has waited
on the wallet since it was last sent; a funding is added once per reference and settled once, by
its admin; instants and amounts come back as MongoDB keeps them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, Inexact
from typing import Any

import pytest
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from shared.prices import FUTURE_TOLERANCE
from trading.conversions.adapters.memory import MemoryFundings, MemoryQuotes
from trading.conversions.adapters.mongo import MongoFundings, MongoQuotes
from trading.conversions.application import Funding, Fundings, QuoteExists, Quotes
from trading.conversions.domain import ConversionKind, Quote, Status, Terms
from trading.prices.domain import Price
from trading.testing import FakeClock

type Database = AsyncDatabase[dict[str, Any]]

D = Decimal
T0 = FakeClock().now  # whole seconds: what both stores keep as it is
MS = timedelta(milliseconds=1)
US = timedelta(microseconds=1)
SWAP, EXPRESS = ConversionKind.SWAP, ConversionKind.EXPRESS_BUY
TTL = timedelta(seconds=10)


@dataclass
class Stores:
    quotes: Quotes
    fundings: Fundings


@pytest_asyncio.fixture
async def stores(store_database: Database | None) -> Stores:
    if store_database is None:
        return Stores(MemoryQuotes(), MemoryFundings())
    quotes = MongoQuotes(store_database)
    await quotes.ensure_indexes()
    return Stores(quotes, MongoFundings(store_database))


def _quote(quote_id: str, **changes: Any) -> Quote:
    quote = Quote(
        quote_id=quote_id,
        kind=SWAP,
        user_id="amy",
        pay_currency="BTC",
        pay_amount=D("0.01"),
        fee=D("0.00001"),
        rate=D("18.478571428571428571"),
        receive_currency="ETH",
        receive_amount=D("0.184600928571428571"),
        pay_price=Price("BTC", D("52000"), T0, "test"),
        receive_price=Price("ETH", D("2800"), T0, "test"),
        terms=Terms(fee_rate=D("0.001"), spread=D("0.005"), ttl=TTL),
        created_at=T0,
        expires_at=T0 + TTL,
    )
    return replace(quote, **changes)


async def _claimed(quotes: Quotes, quote_id: str, at: datetime = T0, **changes: Any) -> Quote:
    await quotes.add(_quote(quote_id, **changes))
    kind, user = changes.get("kind", SWAP), changes.get("user_id", "amy")
    claimed = await quotes.claim(quote_id, kind, user, f"x-{quote_id}", at)
    assert claimed is not None
    return claimed


def _ids(quotes: Any) -> set[str]:
    return {q.quote_id for q in quotes}


def _funding(reference_id: str = "fund-1", **changes: Any) -> Funding:
    funding = Funding(reference_id, "ETH", D("100"), "ops", Status.PENDING, None, T0)
    return replace(funding, **changes)


# Adding and reading quotes


async def test_a_quote_is_read_back_as_it_was_added(stores: Stores) -> None:
    quote = _quote("q1")
    await stores.quotes.add(quote)
    assert await stores.quotes.get("q1") == quote
    assert await stores.quotes.get("q2") is None
    assert await stores.quotes.by_execution(SWAP, "x-q1") is None  # not executed


async def test_a_quote_id_is_added_once(stores: Stores) -> None:
    first = _quote("q1")
    await stores.quotes.add(first)
    with pytest.raises(QuoteExists):
        await stores.quotes.add(_quote("q1", user_id="eve", pay_amount=D("5")))
    assert await stores.quotes.get("q1") == first


async def test_instants_are_kept_in_utc_to_the_millisecond(stores: Stores) -> None:
    plus_two = timezone(timedelta(hours=2))
    created = datetime(2026, 11, 30, 14, 0, 0, 123987, tzinfo=plus_two)
    as_of = datetime(2026, 11, 30, 11, 59, 59, 999999, tzinfo=UTC)
    quote = _quote(
        "q1",
        created_at=created,
        expires_at=created + TTL,
        pay_price=Price("BTC", D("52000"), as_of, "test"),
    )
    await stores.quotes.add(quote)
    read = await stores.quotes.get("q1")
    assert read is not None
    kept = datetime(2026, 11, 30, 12, 0, 0, 123000, tzinfo=UTC)
    assert (read.created_at, read.expires_at) == (kept, kept + TTL)
    assert read.pay_price.as_of == datetime(2026, 11, 30, 11, 59, 59, 999000, tzinfo=UTC)
    assert read.created_at.utcoffset() == timedelta(0)
    assert read.terms.ttl == TTL


async def test_amounts_are_kept_as_decimal128_and_rates_and_prices_as_their_text(
    stores: Stores,
) -> None:
    quote = _quote(
        "q1",
        pay_amount=D("1234567890.123456789012345678901234"),  # 34 significant digits
        fee=D("0.10"),
        receive_amount=D("0.000000000000000001"),
        rate=D("1.500000000000000000"),
        pay_price=Price("BTC", D("52000.1234567890123456789012345678901234567"), T0, "test"),
        terms=Terms(fee_rate=D("0.0010"), spread=D("0.005"), ttl=timedelta(seconds=2.5)),
    )
    await stores.quotes.add(quote)
    read = await stores.quotes.get("q1")
    assert read is not None
    assert (read.pay_amount, read.receive_amount) == (quote.pay_amount, quote.receive_amount)
    assert str(read.fee) == "0.10"  # decimal128 keeps the exponent too
    assert str(read.rate) == "1.5"  # a decimal string keeps the value, without trailing zeros
    assert str(read.terms.fee_rate) == "0.001"
    assert read.pay_price.price == D("52000.1234567890123456789012345678901234567")  # 42 digits
    assert read.terms.ttl == timedelta(seconds=2.5)
    assert read == quote


@pytest.mark.parametrize("field", ["pay_amount", "fee", "receive_amount"])
async def test_an_amount_of_more_than_34_digits_is_refused_and_nothing_stored(
    stores: Stores, field: str
) -> None:
    too_long = _quote("q1", **{field: D("1234567890.1234567890123456789012345")})  # 35 digits
    with pytest.raises(Inexact):
        await stores.quotes.add(too_long)
    assert await stores.quotes.get("q1") is None


# Claiming


async def test_a_claim_moves_the_quote_to_pending_once(stores: Stores) -> None:
    quotes = stores.quotes
    await quotes.add(_quote("q1", fee=D("0.000010")))
    at = T0 + timedelta(seconds=3, microseconds=456789)
    claimed = await quotes.claim("q1", SWAP, "amy", "x-1", at)
    expected = _quote(
        "q1",
        fee=D("0.000010"),
        status=Status.PENDING,
        execution_id="x-1",
        executed_at=T0 + timedelta(seconds=3, milliseconds=456),
    )
    assert claimed == expected
    assert claimed is not None
    assert str(claimed.fee) == "0.000010"  # as stored: the claim answers the record read back
    assert await quotes.get("q1") == expected
    assert await quotes.by_execution(SWAP, "x-1") == expected
    assert await quotes.by_execution(EXPRESS, "x-1") is None
    # A second claim (another request, another execution id) gets nothing and changes nothing.
    assert await quotes.claim("q1", SWAP, "amy", "x-2", at + MS) is None
    assert await quotes.get("q1") == expected
    assert await quotes.by_execution(SWAP, "x-2") is None


async def test_a_claim_of_another_users_or_kinds_or_an_unknown_quote_changes_nothing(
    stores: Stores,
) -> None:
    quotes = stores.quotes
    quote = _quote("q1")
    await quotes.add(quote)
    assert await quotes.claim("q1", SWAP, "eve", "x-1", T0) is None
    assert await quotes.claim("q1", EXPRESS, "amy", "x-2", T0) is None
    assert await quotes.claim("q2", SWAP, "amy", "x-3", T0) is None
    assert await quotes.get("q1") == quote
    assert await quotes.get("q2") is None
    for execution_id in ("x-1", "x-2", "x-3"):
        assert await quotes.by_execution(SWAP, execution_id) is None
        assert await quotes.by_execution(EXPRESS, execution_id) is None


@pytest.mark.parametrize("status", [Status.PENDING, Status.COMPLETED, Status.FAILED])
async def test_only_a_quoted_quote_is_claimed(stores: Stores, status: Status) -> None:
    quote = _quote("q1", status=status, execution_id="x-0", executed_at=T0)
    await stores.quotes.add(quote)
    assert await stores.quotes.claim("q1", SWAP, "amy", "x-1", T0) is None
    assert await stores.quotes.get("q1") == quote


async def test_a_quote_is_claimed_only_before_it_expires_to_the_millisecond(
    stores: Stores,
) -> None:
    quotes = stores.quotes
    expires = T0 + TTL
    for quote_id in ("just-before", "at", "within-its-millisecond", "kept-to-its-ms"):
        await quotes.add(_quote(quote_id))
    before = await quotes.claim("just-before", SWAP, "amy", "x-1", expires - US)
    assert before is not None
    assert before.executed_at == expires - MS  # now, to the millisecond
    assert await quotes.claim("at", SWAP, "amy", "x-2", expires) is None
    assert (
        await quotes.claim("within-its-millisecond", SWAP, "amy", "x-3", expires + 999 * US) is None
    )
    # An expiry given with microseconds is kept (and compared) to its millisecond.
    await quotes.add(_quote("sub-ms", expires_at=expires + timedelta(microseconds=500)))
    assert (
        await quotes.claim("sub-ms", SWAP, "amy", "x-4", expires + timedelta(microseconds=200))
        is None
    )
    for quote_id in ("at", "within-its-millisecond", "sub-ms"):
        read = await quotes.get(quote_id)
        assert read is not None
        assert (read.status, read.execution_id) == (Status.QUOTED, None)


async def test_a_quote_made_further_ahead_of_the_clock_than_hosts_differ_is_not_claimed(
    stores: Stores,
) -> None:
    """The clock stepped back 10 minutes after the quote was made: by it the quote would stay
    executable for its TTL plus the step. Within the tolerance (another host's clock a little
    behind the one that made it) the quote is claimed as usual."""
    quotes = stores.quotes
    await quotes.add(_quote("stepped-back"))
    await quotes.add(_quote("skewed"))
    assert (
        await quotes.claim("stepped-back", SWAP, "amy", "x-1", T0 - timedelta(minutes=10)) is None
    )
    edge = T0 - FUTURE_TOLERANCE
    assert await quotes.claim("stepped-back", SWAP, "amy", "x-2", edge - MS) is None
    assert await quotes.claim("skewed", SWAP, "amy", "x-3", edge) is not None
    read = await quotes.get("stepped-back")
    assert read is not None
    assert (read.status, read.execution_id) == (Status.QUOTED, None)


async def test_racing_claims_of_one_quote_claim_it_once(stores: Stores) -> None:
    await stores.quotes.add(_quote("q1"))
    claims = await asyncio.gather(
        *(stores.quotes.claim("q1", SWAP, "amy", f"x-{n}", T0 + n * MS) for n in range(6))
    )
    [winner] = [c for c in claims if c is not None]
    assert winner.execution_id is not None
    assert claims.count(None) == 5
    assert await stores.quotes.get("q1") == winner
    found = [await stores.quotes.by_execution(SWAP, f"x-{n}") for n in range(6)]
    assert [f for f in found if f is not None] == [winner]


# Settling


async def test_a_claimed_quote_is_settled_once(stores: Stores) -> None:
    quotes = stores.quotes
    claimed = await _claimed(quotes, "q1")
    later = T0 + timedelta(seconds=2)
    assert await quotes.settle(SWAP, "x-q1", "amy", Status.FAILED, "insufficient_funds", later)
    failed = replace(claimed, status=Status.FAILED, reason="insufficient_funds")
    assert await quotes.get("q1") == failed
    assert not await quotes.settle(SWAP, "x-q1", "amy", Status.COMPLETED, None, later)  # replay
    assert await quotes.by_execution(SWAP, "x-q1") == failed


async def test_a_quote_is_settled_only_by_its_users_result_of_its_kind(stores: Stores) -> None:
    quotes = stores.quotes
    claimed = await _claimed(quotes, "q1")
    await quotes.add(_quote("q2"))  # quoted, never claimed
    assert not await quotes.settle(SWAP, "x-q1", "eve", Status.COMPLETED, None, T0)
    assert not await quotes.settle(EXPRESS, "x-q1", "amy", Status.COMPLETED, None, T0)
    assert not await quotes.settle(SWAP, "x-unknown", "amy", Status.COMPLETED, None, T0)
    assert not await quotes.settle(SWAP, "x-q2", "amy", Status.COMPLETED, None, T0)
    assert await quotes.get("q1") == claimed
    assert await quotes.get("q2") == _quote("q2")
    assert await quotes.settle(SWAP, "x-q1", "amy", Status.COMPLETED, None, T0)
    assert await quotes.get("q1") == replace(claimed, status=Status.COMPLETED)


async def test_an_express_buy_is_settled_by_its_own_kind(stores: Stores) -> None:
    claimed = await _claimed(stores.quotes, "q1", kind=EXPRESS)
    assert not await stores.quotes.settle(SWAP, "x-q1", "amy", Status.COMPLETED, None, T0)
    assert await stores.quotes.settle(EXPRESS, "x-q1", "amy", Status.COMPLETED, None, T0)
    assert await stores.quotes.by_execution(EXPRESS, "x-q1") == replace(
        claimed, status=Status.COMPLETED
    )


async def test_racing_results_settle_a_quote_once(stores: Stores) -> None:
    claimed = await _claimed(stores.quotes, "q1")
    outcomes = [(Status.COMPLETED, None), (Status.FAILED, "rejected")] * 3
    settled = await asyncio.gather(
        *(stores.quotes.settle(SWAP, "x-q1", "amy", s, r, T0) for s, r in outcomes)
    )
    assert settled.count(True) == 1
    status, reason = outcomes[settled.index(True)]
    assert await stores.quotes.get("q1") == replace(claimed, status=status, reason=reason)


# The relay: never published, and waiting on the wallet


async def test_claimed_quotes_never_published_are_found_by_when_they_were_executed(
    stores: Stores,
) -> None:
    quotes = stores.quotes
    await _claimed(quotes, "early", T0)
    await _claimed(quotes, "late", T0 + timedelta(seconds=5))
    await _claimed(quotes, "published", T0)
    await _claimed(quotes, "settled", T0)
    await quotes.add(_quote("quoted"))
    await quotes.mark_published("published", T0 + MS)
    await quotes.settle(SWAP, "x-settled", "amy", Status.COMPLETED, None, T0)

    assert _ids(await quotes.unpublished(T0 + timedelta(seconds=5))) == {"early"}
    assert _ids(await quotes.unpublished(T0 + timedelta(seconds=6))) == {"early", "late"}
    assert await quotes.unpublished(T0) == []
    # Executed within the millisecond of the cutoff: not before it.
    await _claimed(quotes, "sub-ms", T0 + timedelta(seconds=9, microseconds=200))
    cutoff = T0 + timedelta(seconds=9, microseconds=900)
    assert _ids(await quotes.unpublished(cutoff)) == {"early", "late"}
    assert _ids(await quotes.unpublished(T0 + timedelta(seconds=9) + MS)) == {
        "early",
        "late",
        "sub-ms",
    }


async def test_published_quotes_await_the_wallet_since_they_were_last_sent(
    stores: Stores,
) -> None:
    quotes = stores.quotes
    await _claimed(quotes, "q1")
    await _claimed(quotes, "never-published")
    first = T0 + timedelta(seconds=1)
    await quotes.mark_published("q1", first)
    assert await quotes.awaiting_wallet(first) == []
    [waiting] = await quotes.awaiting_wallet(first + MS)
    assert waiting == await quotes.get("q1")
    assert _ids(await quotes.unpublished(T0 + timedelta(hours=1))) == {"never-published"}
    # Only the first publication counts: it is not published (nor asked) again.
    await quotes.mark_published("q1", first + timedelta(seconds=30))
    assert _ids(await quotes.awaiting_wallet(first + MS)) == {"q1"}
    asked = first + timedelta(seconds=40)
    await quotes.mark_asked("q1", asked)
    assert await quotes.awaiting_wallet(asked) == []
    assert await quotes.awaiting_wallet(asked + 999 * US) == []  # to the millisecond
    assert _ids(await quotes.awaiting_wallet(asked + MS)) == {"q1"}
    await quotes.settle(SWAP, "x-q1", "amy", Status.COMPLETED, None, asked)
    assert await quotes.awaiting_wallet(asked + timedelta(hours=1)) == []
    await quotes.mark_asked("q1", T0)  # settled: still not awaited, whenever last asked
    assert await quotes.awaiting_wallet(asked + timedelta(hours=1)) == []


async def test_marking_an_unknown_quote_stores_nothing(stores: Stores) -> None:
    await stores.quotes.mark_published("q-unknown", T0)
    await stores.quotes.mark_asked("q-unknown", T0)
    assert await stores.quotes.get("q-unknown") is None
    assert await stores.quotes.awaiting_wallet(T0 + timedelta(hours=1)) == []


async def test_a_quoted_quote_is_neither_unpublished_nor_awaited(stores: Stores) -> None:
    await stores.quotes.add(_quote("q1"))
    await stores.quotes.mark_published("q1", T0)
    await stores.quotes.mark_asked("q1", T0)
    later = T0 + timedelta(hours=1)
    assert await stores.quotes.unpublished(later) == []
    assert await stores.quotes.awaiting_wallet(later) == []


async def test_at_most_limit_quotes_are_found_by_the_relay(stores: Stores) -> None:
    quotes = stores.quotes
    for n in range(5):
        await _claimed(quotes, f"u{n}")
        await _claimed(quotes, f"p{n}")
        await quotes.mark_published(f"p{n}", T0)
    later = T0 + timedelta(seconds=1)
    unpublished = {f"u{n}" for n in range(5)}
    published = {f"p{n}" for n in range(5)}
    assert _ids(await quotes.unpublished(later)) == unpublished
    assert _ids(await quotes.awaiting_wallet(later)) == published
    for limit in (2, -2):
        two = await quotes.unpublished(later, limit=limit)
        assert len(two) == 2
        assert _ids(two) <= unpublished
        two = await quotes.awaiting_wallet(later, limit=limit)
        assert len(two) == 2
        assert _ids(two) <= published
    assert _ids(await quotes.unpublished(later, limit=0)) == unpublished
    assert _ids(await quotes.awaiting_wallet(later, limit=0)) == published


async def test_the_relay_finds_quotes_oldest_first_a_page_after_another(stores: Stores) -> None:
    quotes = stores.quotes
    made = (("b", 2 * MS), ("c", MS), ("a", MS), ("d", 0 * MS), ("e", 3 * MS))
    for quote_id, at in made:
        await _claimed(quotes, f"u-{quote_id}", created_at=T0 + at)
        await _claimed(quotes, f"p-{quote_id}", created_at=T0 + at)
        await quotes.mark_published(f"p-{quote_id}", T0)
    later = T0 + timedelta(seconds=1)
    for prefix, find in (("u-", quotes.unpublished), ("p-", quotes.awaiting_wallet)):
        # By when each was made, then by id (two made within one millisecond).
        assert [q.quote_id for q in await find(later)] == [prefix + x for x in "dacbe"]
        first = await find(later, limit=2)
        assert [q.quote_id for q in first] == [prefix + "d", prefix + "a"]
        second = await find(later, limit=2, after=(first[-1].created_at, first[-1].quote_id))
        assert [q.quote_id for q in second] == [prefix + "c", prefix + "b"]
        rest = await find(later, after=(second[-1].created_at, second[-1].quote_id))
        assert [q.quote_id for q in rest] == [prefix + "e"]


async def test_the_relay_finds_at_most_100_at_a_time_by_default(stores: Stores) -> None:
    quotes = stores.quotes
    for n in range(101):
        await _claimed(quotes, f"q{n:03}")
    later = T0 + timedelta(seconds=1)
    assert len(await quotes.unpublished(later)) == 100
    for n in range(101):
        await quotes.mark_published(f"q{n:03}", T0)
    assert await quotes.unpublished(later) == []
    assert len(await quotes.awaiting_wallet(later)) == 100


# Liquidity fundings


async def test_a_funding_is_added_once_per_reference(stores: Stores) -> None:
    fundings = stores.fundings
    at = datetime(2026, 11, 30, 13, 0, 0, 456789, tzinfo=timezone(timedelta(hours=1)))
    funding = _funding(created_at=at, amount=D("100.10"))
    # A new funding is answered as given; read back, as kept.
    assert await fundings.add(funding) == funding
    kept = replace(funding, created_at=datetime(2026, 11, 30, 12, 0, 0, 456000, tzinfo=UTC))
    read = await fundings.get("fund-1")
    assert read == kept
    assert read is not None
    assert str(read.amount) == "100.10"
    assert read.created_at.utcoffset() == timedelta(0)
    assert await fundings.add(_funding(currency="BTC", amount=D("1"), admin_id="eve")) is None
    assert await fundings.get("fund-1") == kept
    assert await fundings.get("fund-2") is None


async def test_funding_amounts_are_kept_exact_to_34_digits(stores: Stores) -> None:
    exact = _funding("exact", amount=D("1234567890.123456789012345678901234"))
    await stores.fundings.add(exact)
    assert await stores.fundings.get("exact") == exact
    with pytest.raises(Inexact):
        await stores.fundings.add(
            _funding("long", amount=D("1234567890.1234567890123456789012345"))
        )
    assert await stores.fundings.get("long") is None


async def test_racing_adds_of_one_reference_store_it_once(stores: Stores) -> None:
    tries = [_funding(amount=D(n)) for n in range(1, 6)]
    added = await asyncio.gather(*(stores.fundings.add(f) for f in tries))
    [winner] = [a for a in added if a is not None]
    assert added.count(None) == 4
    assert await stores.fundings.get("fund-1") == winner


async def test_a_funding_is_settled_once_by_its_admin(stores: Stores) -> None:
    fundings = stores.fundings
    await fundings.add(_funding())
    assert not await fundings.settle("fund-1", "eve", Status.COMPLETED, None, T0)
    assert await fundings.get("fund-1") == _funding()
    assert not await fundings.settle("fund-unknown", "ops", Status.COMPLETED, None, T0)
    assert await fundings.get("fund-unknown") is None
    assert await fundings.settle("fund-1", "ops", Status.FAILED, "insufficient_funds", T0)
    failed = _funding(status=Status.FAILED, reason="insufficient_funds")
    assert await fundings.get("fund-1") == failed
    assert not await fundings.settle("fund-1", "ops", Status.COMPLETED, None, T0)
    assert await fundings.get("fund-1") == failed


async def test_racing_results_settle_a_funding_once(stores: Stores) -> None:
    await stores.fundings.add(_funding())
    outcomes = [(Status.COMPLETED, None), (Status.FAILED, "rejected")] * 3
    settled = await asyncio.gather(
        *(stores.fundings.settle("fund-1", "ops", s, r, T0) for s, r in outcomes)
    )
    assert settled.count(True) == 1
    status, reason = outcomes[settled.index(True)]
    assert await stores.fundings.get("fund-1") == _funding(status=status, reason=reason)


async def test_records_an_earlier_version_published_without_asked_at_await_the_wallet(
    mongo_database: Database,
) -> None:
    """Versions before the ask-again pass published a swap, an express buy or a funding without
    `asked_at`: such a record whose result was lost stayed pending for good (the pass matched
    only `asked_at`). It awaits the wallet from when it was published. MongoDB only: the memory
    store holds no earlier version's records."""
    quotes, fundings = MongoQuotes(mongo_database), MongoFundings(mongo_database)
    await quotes.ensure_indexes()
    await fundings.ensure_indexes()
    await _claimed(quotes, "old-q")
    await quotes.mark_published("old-q", T0)
    await fundings.add(_funding("old-f"))
    await fundings.mark_published("old-f", T0)
    for collection, key in ((quotes._quotes, "old-q"), (fundings._fundings, "old-f")):
        await collection.update_one({"_id": key}, {"$unset": {"asked_at": ""}})

    assert await quotes.awaiting_wallet(T0) == []  # published at T0: not before it
    assert _ids(await quotes.awaiting_wallet(T0 + MS)) == {"old-q"}
    assert [f.reference_id for f in await fundings.awaiting_wallet(T0 + MS)] == ["old-f"]
    await quotes.mark_asked("old-q", T0 + timedelta(seconds=30))
    assert await quotes.awaiting_wallet(T0 + timedelta(seconds=30)) == []
