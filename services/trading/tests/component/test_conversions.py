"""Swaps, express buy and liquidity funding over each store (memory and the real MongoDB) with a
fake clock and a recording wallet sender: the quote lifecycle (firm for its TTL, single use also when executed
concurrently, owned by the asker, settled by wallet results exactly once) and the HTTP answers."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase
from structlog.testing import capture_logs

from shared.http import create_app
from shared.messaging import CreditCommand, ExchangeCommand, WalletCommand
from trading.bootstrap import install_trading_errors
from trading.conversions.adapters.memory import MemoryFundings, MemoryQuotes
from trading.conversions.adapters.mongo import MongoFundings, MongoQuotes
from trading.conversions.application import (
    RELAY_PAGE,
    Conversions,
    Fundings,
    Liquidity,
    Quotes,
)
from trading.conversions.domain import ConversionKind, Quote, Status
from trading.conversions.entrypoints import conversion_routes, liquidity_routes
from trading.conversions.settings import ConversionSettings
from trading.errors import Conflict, Invalid, NotFound, TradingError
from trading.prices.domain import Price, PriceBook
from trading.testing import FakeClock, RecordingSender, result_of

SWAP, EXPRESS = ConversionKind.SWAP, ConversionKind.EXPRESS_BUY
_rigs = itertools.count(1)


class Rig:
    def __init__(self, quotes: Quotes, fundings: Fundings, clock: FakeClock) -> None:
        self.clock = clock
        self.book = PriceBook(max_age=timedelta(seconds=60))
        self.sender = RecordingSender()
        rig, ids = next(_rigs), itertools.count(1)
        self.quotes = quotes
        self.conversions = Conversions(
            quotes=self.quotes,
            wallet=self.sender,
            prices=self.book,
            terms=ConversionSettings().terms(),
            clock=clock,
            new_id=lambda: f"r{rig}-{next(ids)}",
        )
        self.liquidity = Liquidity(fundings, self.sender, clock)
        self.set_price("BTC", "52000")
        self.set_price("ETH", "2800")

    def set_price(self, currency: str, value: str) -> None:
        self.book.update(Price(currency, Decimal(value), self.clock(), "test"), self.clock())


@pytest.fixture(params=["memory", pytest.param("mongo", marks=pytest.mark.integration)])
def rig(request: pytest.FixtureRequest, clock: FakeClock) -> Rig:
    """The MongoDB fixtures are pulled only by its variant (one database per module: each rig
    makes ids of its own)."""
    if request.param == "memory":
        return Rig(MemoryQuotes(), MemoryFundings(), clock)
    database: AsyncDatabase[dict[str, Any]] = request.getfixturevalue("mongo_database")
    return Rig(MongoQuotes(database), MongoFundings(database), clock)


async def refused(call: Any) -> TradingError:
    with pytest.raises(TradingError) as caught:
        await call
    return caught.value


async def test_a_swap_quote_executes_once_into_one_exchange_command(rig: Rig) -> None:
    quote = await rig.conversions.quote_swap("amy", "btc", "ETH", "0.01")
    assert (quote.fee, quote.rate, quote.receive_amount) == (
        Decimal("0.00001"),
        Decimal("18.478571428571428571"),
        Decimal("0.184600928571428571"),
    )
    stored = await rig.quotes.get(quote.quote_id)
    assert stored is not None
    assert stored.pay_price.price == Decimal("52000")
    assert stored.terms.spread == Decimal("0.005")

    rig.clock.advance(9.9)
    swap = await rig.conversions.execute(SWAP, "amy", quote.quote_id)
    assert swap.status is Status.PENDING
    assert swap.execution_id is not None
    [command] = rig.sender.sent
    assert isinstance(command, ExchangeCommand)
    assert command.model_dump(
        include={
            "user_id",
            "currency",
            "amount",
            "fee",
            "receive_currency",
            "receive_amount",
            "transaction_type",
            "reference_id",
        }
    ) == {
        "user_id": "amy",
        "currency": "BTC",
        "amount": "0.01",
        "fee": "0.00001",
        "receive_currency": "ETH",
        "receive_amount": "0.184600928571428571",
        "transaction_type": "swap",
        "reference_id": f"swap:{swap.execution_id}",
    }

    again = await refused(rig.conversions.execute(SWAP, "amy", quote.quote_id))
    assert isinstance(again, Conflict)
    assert again.code == "quote_used"
    assert len(rig.sender.sent) == 1

    await rig.conversions.apply_result(result_of(command, "applied"))
    await rig.conversions.apply_result(result_of(command, "rejected", reason="late"))  # replay
    done = await rig.conversions.get(SWAP, swap.execution_id, "amy", admin=False)
    assert (done.status, done.reason) == (Status.COMPLETED, None)


async def test_concurrent_executions_of_one_quote_complete_once(rig: Rig) -> None:
    quote = await rig.conversions.quote_swap("amy", "ETH", "BTC", "1.123456789012345678")
    outcomes = await asyncio.gather(
        *(rig.conversions.execute(SWAP, "amy", quote.quote_id) for _ in range(6)),
        return_exceptions=True,
    )
    succeeded = [o for o in outcomes if not isinstance(o, BaseException)]
    refusals = [o for o in outcomes if isinstance(o, Conflict)]
    assert len(succeeded) == 1
    assert len(refusals) == 5
    assert {r.code for r in refusals} == {"quote_used"}
    assert len(rig.sender.sent) == 1


async def test_an_expired_quote_is_refused_at_its_ttl(rig: Rig) -> None:
    quote = await rig.conversions.quote_swap("amy", "BTC", "ETH", "0.5")
    rig.clock.advance(10)
    error = await refused(rig.conversions.execute(SWAP, "amy", quote.quote_id))
    assert isinstance(error, Conflict)
    assert error.code == "quote_expired"

    express = await rig.conversions.quote_express_buy("amy", "GBP", "100.00", "BTC")
    rig.clock.advance(29.999)
    assert (
        await rig.conversions.execute(EXPRESS, "amy", express.quote_id)
    ).status is Status.PENDING
    assert rig.sender.sent[-1].transaction_type == "express_buy"


async def test_another_users_quote_or_swap_is_not_found(rig: Rig) -> None:
    quote = await rig.conversions.quote_swap("amy", "BTC", "ETH", "0.01")
    error = await refused(rig.conversions.execute(SWAP, "bob", quote.quote_id))
    assert isinstance(error, NotFound)
    assert error.code == "quote_not_found"
    wrong_kind = await refused(rig.conversions.execute(EXPRESS, "amy", quote.quote_id))
    assert isinstance(wrong_kind, NotFound)
    swap = await rig.conversions.execute(SWAP, "amy", quote.quote_id)
    assert swap.execution_id is not None
    with pytest.raises(NotFound):
        await rig.conversions.get(SWAP, swap.execution_id, "bob", admin=False)
    seen_by_admin = await rig.conversions.get(SWAP, swap.execution_id, "ops", admin=True)
    assert seen_by_admin.user_id == "amy"


async def test_a_stale_price_is_never_quoted(rig: Rig) -> None:
    rig.clock.advance(61)
    error = await refused(rig.conversions.quote_swap("amy", "BTC", "ETH", "0.01"))
    assert error.code == "price_unavailable"
    rig.set_price("BTC", "52000")  # fresh BTC, ETH still stale
    assert (await refused(rig.conversions.quote_swap("amy", "BTC", "ETH", "0.01"))).code == (
        "price_unavailable"
    )
    # GBP needs no price: an express buy quotes with BTC alone.
    assert (await rig.conversions.quote_express_buy("amy", "GBP", "10", "BTC")).rate > 0


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("BTC", "ETH", "0.000000001"), "amount_too_precise"),
        (("BTC", "ETH", "-1"), "amount_not_positive"),
        (("BTC", "ETH", "NaN"), "amount_not_a_number"),
        (("BTC", "DOGE", "1"), "unknown_currency"),
        (("BTC", "GBP", "1"), "not_crypto"),
        (("BTC", "BTC", "1"), "same_currency"),
        (("SOL", "SOL", "1"), "same_currency"),  # no SOL price: still bad input, not a 503
        (("BTC", "ETH", "0.00000001"), "amount_too_small"),
    ],
)
async def test_bad_swap_input_is_refused_and_nothing_is_stored(
    rig: Rig, args: tuple[str, str, str], code: str
) -> None:
    error = await refused(rig.conversions.quote_swap("amy", *args))
    assert isinstance(error, Invalid)
    assert error.code == code


async def test_more_than_a_currency_can_hold_is_refused(rig: Rig) -> None:
    rig.set_price("BTC", "0.00000001")
    error = await refused(rig.conversions.quote_swap("amy", "ETH", "BTC", "999999999999999"))
    assert isinstance(error, Invalid)
    assert error.code == "amount_too_large"


async def test_a_failed_swap_keeps_the_wallets_reason(rig: Rig) -> None:
    quote = await rig.conversions.quote_swap("amy", "BTC", "ETH", "0.01")
    swap = await rig.conversions.execute(SWAP, "amy", quote.quote_id)
    command = rig.sender.sent[-1]
    await rig.conversions.apply_result(
        result_of(command, "duplicate", original_status="rejected", reason="insufficient_liquidity")
    )
    assert swap.execution_id is not None
    failed = await rig.conversions.get(SWAP, swap.execution_id, "amy", admin=False)
    assert (failed.status, failed.reason) == (Status.FAILED, "insufficient_liquidity")


async def test_a_result_for_another_users_command_under_the_swaps_reference_changes_nothing(
    rig: Rig,
) -> None:
    """Identity comes from the stored quote: a refusal that only names the swap's reference (a
    command another producer sent under it) does not fail the swap the wallet is about to apply."""
    quote = await rig.conversions.quote_swap("amy", "BTC", "ETH", "0.01")
    swap = await rig.conversions.execute(SWAP, "amy", quote.quote_id)
    command = rig.sender.sent[-1]
    assert swap.execution_id is not None
    foreign = result_of(command, "rejected", reason="insufficient_funds", user_id="mallory")
    await rig.conversions.apply_result(foreign)
    assert (await rig.conversions.get(SWAP, swap.execution_id, "amy", admin=False)).status is (
        Status.PENDING
    )
    await rig.conversions.apply_result(result_of(command, "applied"))
    assert (await rig.conversions.get(SWAP, swap.execution_id, "amy", admin=False)).status is (
        Status.COMPLETED
    )


async def test_a_command_whose_send_failed_is_sent_again_with_the_same_reference(rig: Rig) -> None:
    quote = await rig.conversions.quote_swap("amy", "BTC", "ETH", "0.01")
    rig.sender.fail_next = True
    pending = await rig.conversions.execute(SWAP, "amy", quote.quote_id)
    assert pending.status is Status.PENDING
    assert rig.sender.sent == []
    # The quote is claimed (a retry by the user is quote_used), its command still owed.
    assert (
        await refused(rig.conversions.execute(SWAP, "amy", quote.quote_id))
    ).code == "quote_used"
    assert await rig.conversions.resend_unpublished(grace=timedelta(seconds=5)) == 0  # too young
    rig.clock.advance(6)
    assert await rig.conversions.resend_unpublished(grace=timedelta(seconds=5)) == 1
    [command] = rig.sender.sent
    claimed = await rig.quotes.get(quote.quote_id)
    assert claimed is not None
    assert command.reference_id == claimed.wallet_reference
    assert await rig.conversions.resend_unpublished(grace=timedelta(seconds=5)) == 0  # published


@pytest.fixture
def own_rig(store_database: AsyncDatabase[dict[str, Any]] | None, clock: FakeClock) -> Rig:
    """A rig whose store holds this test's quotes only (a fresh MongoDB database each time)."""
    if store_database is None:
        return Rig(MemoryQuotes(), MemoryFundings(), clock)
    return Rig(MongoQuotes(store_database), MongoFundings(store_database), clock)


async def executed_swaps(rig: Rig, *, bad: dict[str, Any], sent: bool) -> list[Quote]:
    """A swap whose command cannot be built from what is stored (`bad` changes its quote), then
    two good ones, all executed; their sends failed unless `sent` (then only the bad one's did,
    and the store records it as published, as an earlier version that accepted it would have)."""
    template = await rig.conversions.quote_swap("amy", "BTC", "ETH", "0.01")
    broken = replace(template, quote_id=f"{template.quote_id}-bad", **bad)
    await rig.quotes.add(broken)  # first: made with the template, its id sorts before theirs
    quotes = [
        broken,
        await rig.conversions.quote_swap("amy", "BTC", "ETH", "0.01"),
        await rig.conversions.quote_swap("amy", "BTC", "ETH", "0.02"),
    ]
    executed = []
    for quote in quotes:
        rig.sender.fail_next = not sent
        executed.append(await rig.conversions.execute(SWAP, "amy", quote.quote_id))
    rig.sender.fail_next = False
    if sent:
        await rig.quotes.mark_published(broken.quote_id, rig.clock())
    assert [q.status for q in executed] == [Status.PENDING] * 3
    return executed


UNSENDABLE = [
    ({"pay_amount": Decimal("0.000000001")}, "invalid_amount: amount_too_precise"),
    ({"fee": Decimal("0.02")}, "invalid_amount: fee_not_below_amount"),
    ({"receive_currency": "DOGE"}, "unknown_currency"),
]


@pytest.mark.parametrize(("bad", "reason"), UNSENDABLE)
async def test_a_quote_whose_command_cannot_be_built_holds_back_no_other_resend(
    own_rig: Rig, bad: dict[str, Any], reason: str
) -> None:
    """Also at the service's start, which resends every unpublished command first: one bad quote
    must neither stop the start nor keep the other conversions' commands from ever going out."""
    broken, *good = await executed_swaps(own_rig, bad=bad, sent=False)
    own_rig.sender.sent.clear()
    own_rig.clock.advance(6)
    with capture_logs() as logs:
        assert await own_rig.conversions.resend_unpublished(grace=timedelta(seconds=5)) == 2
    assert [c.reference_id for c in own_rig.sender.sent] == [q.wallet_reference for q in good]
    [unsendable] = [e for e in logs if e["event"] == "conversions.command_unsendable"]
    assert (unsendable["quote_id"], unsendable["log_level"]) == (broken.quote_id, "error")
    assert unsendable["reason"].startswith(reason)
    # the good ones are published now; the bad one still pending, and named again next time
    own_rig.sender.sent.clear()
    with capture_logs() as logs:
        assert await own_rig.conversions.resend_unpublished(grace=timedelta(seconds=5)) == 0
    assert own_rig.sender.sent == []
    assert [e["quote_id"] for e in logs if e["event"] == "conversions.command_unsendable"] == [
        broken.quote_id
    ]
    kept = await own_rig.quotes.get(broken.quote_id)
    assert kept is not None
    assert kept.status is Status.PENDING


@pytest.mark.parametrize(("bad", "reason"), UNSENDABLE)
async def test_a_quote_whose_command_cannot_be_built_holds_back_no_other_ask_again(
    own_rig: Rig, bad: dict[str, Any], reason: str
) -> None:
    broken, *good = await executed_swaps(own_rig, bad=bad, sent=True)
    own_rig.sender.sent.clear()
    own_rig.clock.advance(31)
    with capture_logs() as logs:
        assert await own_rig.conversions.ask_again(timedelta(seconds=30)) == 2
    assert [c.reference_id for c in own_rig.sender.sent] == [q.wallet_reference for q in good]
    [unsendable] = [e for e in logs if e["event"] == "conversions.command_unsendable"]
    assert unsendable["quote_id"] == broken.quote_id
    assert unsendable["reason"].startswith(reason)
    for quote in good:  # settled: no longer awaited, so the next pass names only the bad one
        command = next(c for c in own_rig.sender.sent if c.reference_id == quote.wallet_reference)
        await own_rig.conversions.apply_result(result_of(command, "applied"))
    own_rig.sender.sent.clear()
    own_rig.clock.advance(31)
    with capture_logs() as logs:
        assert await own_rig.conversions.ask_again(timedelta(seconds=30)) == 0
    assert [e["quote_id"] for e in logs if e["event"] == "conversions.command_unsendable"] == [
        broken.quote_id
    ]


async def test_a_page_of_quotes_that_cannot_be_sent_holds_back_no_quote_behind_it(
    own_rig: Rig,
) -> None:
    """As many unsendable quotes as a relay pass takes, older than a good one: each pass of the
    resend and of the ask-again goes on after the last, so the good one gets its turn."""
    template = await own_rig.conversions.quote_swap("amy", "BTC", "ETH", "0.01")
    broken = [
        replace(template, quote_id=f"{template.quote_id}-bad-{n:03}", pay_amount=Decimal("1e-9"))
        for n in range(RELAY_PAGE)
    ]
    for quote in broken:
        await own_rig.quotes.add(quote)
        await own_rig.conversions.execute(SWAP, "amy", quote.quote_id)  # its send fails
    own_rig.clock.advance(1)
    later = await own_rig.conversions.quote_swap("amy", "BTC", "ETH", "0.02")
    own_rig.sender.fail_next = True
    good = await own_rig.conversions.execute(SWAP, "amy", later.quote_id)
    own_rig.sender.sent.clear()
    own_rig.clock.advance(6)
    grace = timedelta(seconds=5)
    assert await own_rig.conversions.resend_unpublished(grace) == 0  # the broken page
    assert await own_rig.conversions.resend_unpublished(grace) == 1  # then the good one
    assert [c.reference_id for c in own_rig.sender.sent] == [good.wallet_reference]

    for quote in broken:  # as an earlier version that could send them would have recorded
        await own_rig.quotes.mark_published(quote.quote_id, own_rig.clock())
    own_rig.sender.sent.clear()
    own_rig.clock.advance(31)
    after = timedelta(seconds=30)
    assert await own_rig.conversions.ask_again(after) == 0
    assert await own_rig.conversions.ask_again(after) == 1
    assert [c.reference_id for c in own_rig.sender.sent] == [good.wallet_reference]


async def test_a_swap_whose_result_was_lost_is_asked_about_again(rig: Rig) -> None:
    """The wallet applied the exchange, its result never came back (lost, or dead-lettered after
    failing here): after `after` the command goes out again with the same money fields, and the
    wallet's answer (a duplicate carrying the first outcome) completes the swap."""
    quote = await rig.conversions.quote_swap("amy", "BTC", "ETH", "0.01")
    swap = await rig.conversions.execute(SWAP, "amy", quote.quote_id)
    assert swap.execution_id is not None
    first = rig.sender.sent[-1]

    async def asked_again() -> list[WalletCommand]:
        """This swap's commands sent by one pass (other tests' pending swaps share the store)."""
        sent = len(rig.sender.sent)
        await rig.conversions.ask_again(timedelta(seconds=30))
        return [c for c in rig.sender.sent[sent:] if c.reference_id == first.reference_id]

    rig.clock.advance(29)
    assert await asked_again() == []  # the answer may still be on its way
    rig.clock.advance(2)
    [again] = await asked_again()
    assert await asked_again() == []  # once per period
    assert (again.idempotency_key, again.fingerprint()) == (
        first.idempotency_key,
        first.fingerprint(),
    )
    await rig.conversions.apply_result(result_of(again, "duplicate", original_status="applied"))
    completed = await rig.conversions.get(SWAP, swap.execution_id, "amy", admin=False)
    assert completed.status is Status.COMPLETED
    rig.clock.advance(60)
    assert await asked_again() == []  # settled: nothing awaited


async def test_liquidity_funding_is_idempotent_by_reference(rig: Rig) -> None:
    reference = f"fund-{id(rig)}"
    first = await rig.liquidity.fund("ops", "eth", "100", reference)
    again = await rig.liquidity.fund("ops2", "ETH", "100.0", reference)
    assert (again.admin_id, again.amount) == ("ops", Decimal("100"))
    one, two = rig.sender.sent
    assert isinstance(one, CreditCommand)
    assert one.fingerprint() == two.fingerprint()
    assert (one.user_id, one.transaction_type, one.reference_id) == (
        "ops",
        "liquidity_funding",
        reference,
    )
    conflict = await refused(rig.liquidity.fund("ops", "ETH", "101", reference))
    assert isinstance(conflict, Conflict)
    assert conflict.code == "idempotency_conflict"
    # A refusal of another user's credit under this reference is not the funding's answer.
    await rig.liquidity.apply_result(result_of(one, "rejected", user_id="ops2"))
    assert (await rig.liquidity.get(reference)).status is Status.PENDING
    await rig.liquidity.apply_result(result_of(one, "applied"))
    assert (await rig.liquidity.get(reference)).status is Status.COMPLETED
    assert first.status is Status.PENDING


def app_for(rig: Rig, jwt_secret: str) -> FastAPI:
    async def ready() -> bool:
        return True

    app = create_app(title="trading-test", auth_secret=jwt_secret, ready=ready)
    install_trading_errors(app)
    app.include_router(conversion_routes(rig.conversions))
    app.include_router(liquidity_routes(rig.liquidity))
    return app


@pytest.fixture
async def http(rig: Rig, jwt_secret: str) -> Any:
    transport = httpx.ASGITransport(app=app_for(rig, jwt_secret))
    async with httpx.AsyncClient(transport=transport, base_url="http://trading") as client:
        yield client


async def test_swap_over_http(rig: Rig, http: httpx.AsyncClient, auth_headers: Any) -> None:
    amy = auth_headers("amy")
    quoted = await http.post(
        "/api/swap/quote",
        json={"from_currency": "BTC", "to_currency": "ETH", "from_amount": "0.01"},
        headers=amy,
    )
    assert quoted.status_code == 200, quoted.text
    body = quoted.json()
    assert {k: v for k, v in body.items() if k not in {"quote_id", "expires_at"}} == {
        "from_currency": "BTC",
        "to_currency": "ETH",
        "from_amount": "0.01",
        "fee": "0.00001",
        "fee_currency": "BTC",
        "rate": "18.478571428571428571",
        "to_amount": "0.184600928571428571",
    }
    assert body["expires_at"].startswith("2026-11-30T12:00:10")

    other = await http.post(
        "/api/swap/execute", json={"quote_id": body["quote_id"]}, headers=auth_headers("bob")
    )
    assert (other.status_code, other.json()["error"]["code"]) == (404, "quote_not_found")

    executed = await http.post(
        "/api/swap/execute", json={"quote_id": body["quote_id"]}, headers=amy
    )
    assert executed.status_code == 202, executed.text
    swap = executed.json()
    assert swap["status"] == "pending"
    assert (swap["from_amount"], swap["fee"], swap["to_amount"]) == (
        "0.01",
        "0.00001",
        "0.184600928571428571",
    )
    twice = await http.post("/api/swap/execute", json={"quote_id": body["quote_id"]}, headers=amy)
    assert (twice.status_code, twice.json()["error"]["code"]) == (409, "quote_used")

    await rig.conversions.apply_result(
        result_of(rig.sender.sent[-1], "rejected", reason="insufficient_funds")
    )
    read = await http.get(f"/api/swap/{swap['swap_id']}", headers=amy)
    assert (read.json()["status"], read.json()["reason"]) == ("failed", "insufficient_funds")
    hidden = await http.get(f"/api/swap/{swap['swap_id']}", headers=auth_headers("bob"))
    assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "swap_not_found")


async def test_express_buy_over_http(rig: Rig, http: httpx.AsyncClient, auth_headers: Any) -> None:
    amy = auth_headers("amy")
    quoted = await http.post(
        "/api/express-buy/quote",
        json={"fiat_currency": "GBP", "fiat_amount": "100.00", "crypto_currency": "BTC"},
        headers=amy,
    )
    assert quoted.status_code == 200, quoted.text
    body = quoted.json()
    assert (body["fiat_amount"], body["fee"], body["rate"], body["crypto_amount"]) == (
        "100",
        "1.5",
        "0.000019038461538461",
        "0.00187528",
    )
    rig.clock.advance(30)
    expired = await http.post(
        "/api/express-buy/execute", json={"quote_id": body["quote_id"]}, headers=amy
    )
    assert (expired.status_code, expired.json()["error"]["code"]) == (409, "quote_expired")

    rig.set_price("BTC", "52000")
    fresh = await http.post(
        "/api/express-buy/quote",
        json={"fiat_currency": "GBP", "fiat_amount": "100.00", "crypto_currency": "BTC"},
        headers=amy,
    )
    executed = await http.post(
        "/api/express-buy/execute", json={"quote_id": fresh.json()["quote_id"]}, headers=amy
    )
    assert executed.status_code == 202, executed.text
    order = executed.json()
    await rig.conversions.apply_result(result_of(rig.sender.sent[-1], "applied"))
    read = await http.get(f"/api/express-buy/{order['order_id']}", headers=amy)
    assert read.json()["status"] == "completed"
    assert read.json()["crypto_amount"] == "0.00187528"


@pytest.mark.parametrize(
    ("path", "payload", "status", "code"),
    [
        (
            "/api/swap/quote",
            {"from_currency": "BTC", "to_currency": "ETH", "from_amount": 0.01},
            422,
            "validation_error",
        ),
        (
            "/api/swap/quote",
            {"from_currency": "BTC", "to_currency": "ETH", "from_amount": "0.01", "rate": "99"},
            422,
            "validation_error",
        ),
        (
            "/api/swap/quote",
            {"from_currency": "BTC", "to_currency": "ETH", "from_amount": "1e400"},
            422,
            "amount_too_large",
        ),
        (
            "/api/swap/quote",
            {"from_currency": "BTC", "to_currency": "SOL", "from_amount": "1"},
            503,
            "price_unavailable",
        ),
        (
            "/api/express-buy/quote",
            {"fiat_currency": "BTC", "fiat_amount": "1", "crypto_currency": "ETH"},
            422,
            "not_fiat",
        ),
        (
            "/api/express-buy/quote",
            # GBP only: no source prices another fiat (503, which a client retries, it answered)
            {"fiat_currency": "EUR", "fiat_amount": "1", "crypto_currency": "ETH"},
            422,
            "unsupported_fiat",
        ),
        (
            "/api/express-buy/quote",
            {"fiat_currency": "GBP", "fiat_amount": "1.001", "crypto_currency": "ETH"},
            422,
            "amount_too_precise",
        ),
        ("/api/swap/execute", {"quote_id": "nope"}, 404, "quote_not_found"),
        ("/api/swap/execute", {"quote_id": ""}, 422, "validation_error"),
    ],
)
async def test_bad_requests_answer_the_contracts_error_body(
    http: httpx.AsyncClient,
    auth_headers: Any,
    path: str,
    payload: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = await http.post(path, json=payload, headers=auth_headers("amy"))
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


class LaggingReads:
    """A quote store whose reads of a frozen quote answer it as it was when frozen, as a read
    from a replica that has not yet applied the latest writes does; claims go to the store."""

    def __init__(self, store: Quotes) -> None:
        self._store = store
        self._frozen: dict[str, Quote] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def freeze(self, quote_id: str) -> None:
        quote = await self._store.get(quote_id)
        assert quote is not None
        self._frozen[quote_id] = quote

    def catch_up(self) -> None:
        self._frozen.clear()

    async def get(self, quote_id: str) -> Quote | None:
        return self._frozen.get(quote_id) or await self._store.get(quote_id)


async def test_an_execute_whose_read_lags_a_racing_claim_is_409_quote_busy(
    rig: Rig, jwt_secret: str, auth_headers: Any
) -> None:
    """The claim (a conditional update) is refused, and the quote read to tell why still shows it
    quoted and unexpired: the read has not seen the racing execute that claimed it. Nothing was
    executed by this request; executing the same quote again answers why, once the read shows it."""
    lagging = LaggingReads(rig.quotes)
    rig = Rig(lagging, MemoryFundings(), rig.clock)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app_for(rig, jwt_secret))
    amy = auth_headers("amy")
    async with httpx.AsyncClient(transport=transport, base_url="http://trading") as http:
        for quote_path, execute_path, body in (
            (
                "/api/swap/quote",
                "/api/swap/execute",
                {"from_currency": "BTC", "to_currency": "ETH", "from_amount": "0.01"},
            ),
            (
                "/api/express-buy/quote",
                "/api/express-buy/execute",
                {"fiat_currency": "GBP", "fiat_amount": "100.00", "crypto_currency": "BTC"},
            ),
        ):
            quote_id = (await http.post(quote_path, json=body, headers=amy)).json()["quote_id"]
            await lagging.freeze(quote_id)
            sent = len(rig.sender.sent)
            first = await http.post(execute_path, json={"quote_id": quote_id}, headers=amy)
            assert first.status_code == 202, first.text
            busy = await http.post(execute_path, json={"quote_id": quote_id}, headers=amy)
            assert busy.status_code == 409, busy.text
            assert busy.json()["error"]["code"] == "quote_busy"
            assert len(rig.sender.sent) == sent + 1  # the quote is executed once
            lagging.catch_up()
            again = await http.post(execute_path, json={"quote_id": quote_id}, headers=amy)
            assert (again.status_code, again.json()["error"]["code"]) == (409, "quote_used")


async def test_no_token_is_401_and_liquidity_is_for_admins(
    rig: Rig, http: httpx.AsyncClient, auth_headers: Any
) -> None:
    for path in (
        "/api/swap/quote",
        "/api/swap/execute",
        "/api/express-buy/quote",
        "/api/admin/liquidity",
    ):
        assert (await http.post(path, json={})).status_code == 401
    assert (await http.get("/api/swap/x")).status_code == 401
    funding = {"currency": "ETH", "amount": "100", "reference_id": "treasury-1"}
    forbidden = await http.post("/api/admin/liquidity", json=funding, headers=auth_headers("amy"))
    assert (forbidden.status_code, forbidden.json()["error"]["code"]) == (403, "forbidden")
    assert rig.sender.sent == []
    accepted = await http.post(
        "/api/admin/liquidity", json=funding, headers=auth_headers("ops", "admin")
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "pending"
    conflict = await http.post(
        "/api/admin/liquidity",
        json={**funding, "amount": "5"},
        headers=auth_headers("ops", "admin"),
    )
    assert (conflict.status_code, conflict.json()["error"]["code"]) == (409, "idempotency_conflict")


def test_openapi_documents_every_error_answer(rig: Rig, jwt_secret: str) -> None:
    paths = app_for(rig, jwt_secret).openapi()["paths"]
    expected = {
        ("/api/swap/quote", "post"): {"401", "422", "503"},
        ("/api/swap/execute", "post"): {"401", "404", "409", "422"},
        ("/api/swap/{swap_id}", "get"): {"401", "404"},
        ("/api/express-buy/quote", "post"): {"401", "422", "503"},
        ("/api/express-buy/execute", "post"): {"401", "404", "409", "422"},
        ("/api/admin/liquidity", "post"): {"401", "403", "409", "422"},
    }
    for path in ("/api/swap/execute", "/api/express-buy/execute"):
        described = paths[path]["post"]["description"]
        for code in ("quote_used", "quote_expired", "quote_busy"):
            assert code in described, (path, code)
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert statuses <= set(responses), (path, set(responses))
        for status in statuses:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith("/ErrorBody")
