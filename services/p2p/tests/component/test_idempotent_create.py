"""create-trade with an Idempotency-Key locks the seller's coins once, even when a retry takes the
key over from a request that stopped (or stalled) before answering."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.responses import JSONResponse

from p2p.domain.errors import Conflict
from shared.http.auth import User
from shared.http.idempotency import Idempotency, IdempotentRequest, MemoryIdempotencyStore

BEA = User(user_id="bea", roles=frozenset())


async def test_a_retry_that_takes_over_a_stalled_request_finds_its_trade(memory_p2p: Any) -> None:
    offer_id = await memory_p2p.funded_offer()
    once = Idempotency(MemoryIdempotencyStore(), "p2p:create-trade", clock=memory_p2p.clock)
    request = IdempotentRequest("key-1", "same-body")
    stalled = asyncio.Event()

    async def create() -> dict[str, Any]:
        named = once.named_id(BEA, request)
        trade = await memory_p2p.trades.create("bea", offer_id, "0.01", named)
        return trade.public()  # type: ignore[no-any-return]

    async def create_then_stall() -> dict[str, Any]:
        answer = await create()
        await stalled.wait()  # e.g. a publish hanging while the broker is away
        return answer

    first = asyncio.create_task(once.run(BEA, request, create_then_stall, status_code=202))
    await asyncio.sleep(0)
    memory_p2p.clock.advance(timedelta(seconds=61))  # past the key's stale_after: taken over
    second = await once.run(BEA, request, create, status_code=202)
    stalled.set()
    first_answer = await first

    ids = {json.loads(a.body)["trade_id"] for a in (first_answer, second)}  # type: ignore[union-attr]
    assert len(ids) == 1
    assert len(await memory_p2p.store.list_for("bea", 10)) == 1
    await memory_p2p.deliver_all()
    assert memory_p2p.wallet.locked("sam", "BTC") == Decimal("0.01001")


async def test_a_key_that_created_another_trade_is_refused(memory_p2p: Any) -> None:
    offer_id = await memory_p2p.funded_offer()
    once = Idempotency(MemoryIdempotencyStore(), "p2p:create-trade", clock=memory_p2p.clock)
    named = once.named_id(BEA, IdempotentRequest("key-2", "body"))
    first = await memory_p2p.trades.create("bea", offer_id, "0.01", named)
    again = await memory_p2p.trades.create("bea", offer_id, "0.01", named)
    assert again.trade_id == first.trade_id
    with pytest.raises(Conflict) as refused:
        await memory_p2p.trades.create("bea", offer_id, "0.02", named)
    assert refused.value.code == "idempotency_conflict"
    # Another buyer's key of the same text names another trade; no key, a new trade each time.
    cat = User(user_id="cat", roles=frozenset())
    other = await memory_p2p.trades.create(
        "cat", offer_id, "0.01", once.named_id(cat, IdempotentRequest("key-2", "body"))
    )
    assert other.trade_id != first.trade_id
    plain = [await memory_p2p.trades.create("bea", offer_id, "0.01") for _ in range(2)]
    assert len({t.trade_id for t in plain} | {first.trade_id}) == 3
    await memory_p2p.deliver_all()
    assert memory_p2p.wallet.locked("sam", "BTC") == Decimal("0.01001") * 4


async def test_a_retry_finds_its_trade_after_the_seller_withdrew_the_offer(
    memory_p2p: Any,
) -> None:
    """The first request made the trade (the seller's coins are escrowed for it) and stopped
    before answering; the seller then took the offer down. The buyer's retry with the key answers
    that trade, not 409 offer_not_active, which would hide a live trade from its buyer."""
    offer_id = await memory_p2p.funded_offer()
    once = Idempotency(MemoryIdempotencyStore(), "p2p:create-trade", clock=memory_p2p.clock)
    request = IdempotentRequest("key-3", "same-body")
    stalled = asyncio.Event()

    async def create() -> dict[str, Any]:
        named = once.named_id(BEA, request)
        trade = await memory_p2p.trades.create("bea", offer_id, "0.01", named)
        return trade.public()  # type: ignore[no-any-return]

    async def create_then_stall() -> dict[str, Any]:
        answer = await create()
        await stalled.wait()
        return answer

    first = asyncio.create_task(once.run(BEA, request, create_then_stall, status_code=202))
    await asyncio.sleep(0)
    await memory_p2p.deliver_all()
    await memory_p2p.offers.withdraw("sam", offer_id)
    memory_p2p.clock.advance(timedelta(seconds=61))  # past the key's stale_after: taken over
    second = await once.run(BEA, request, create, status_code=202)
    stalled.set()
    await first

    assert isinstance(second, JSONResponse)
    assert second.status_code == 202, second.body
    [trade] = await memory_p2p.store.list_for("bea", 10)
    assert json.loads(bytes(second.body))["trade_id"] == trade.trade_id
    assert memory_p2p.wallet.locked("sam", "BTC") == Decimal("0.01001")
    # Without an earlier trade under the key, a withdrawn offer is still refused.
    with pytest.raises(Conflict) as refused:
        await memory_p2p.trades.create("bea", offer_id, "0.01", "another-key")
    assert refused.value.code == "offer_not_active"


async def test_a_retry_that_takes_over_a_stalled_offer_request_finds_its_offer(
    memory_p2p: Any,
) -> None:
    """Offers were stored under a random id: a retry that took the key over from a request that
    stalled after storing its offer listed a second one."""
    sam = User(user_id="sam", roles=frozenset())
    once = Idempotency(MemoryIdempotencyStore(), "p2p:offers", clock=memory_p2p.clock)
    request = IdempotentRequest("offer-key", "same-body")
    stalled = asyncio.Event()

    async def create(price: str = "52000") -> dict[str, Any]:
        offer = await memory_p2p.offers.create(
            "sam",
            currency="BTC",
            fiat_currency="GBP",
            price=price,
            min_amount="0.001",
            max_amount="0.5",
            payment_methods=["bank_transfer"],
            payment_window_minutes=15,
            named_id=once.named_id(sam, request),
        )
        return offer.public()  # type: ignore[no-any-return]

    async def create_then_stall() -> dict[str, Any]:
        answer = await create()
        await stalled.wait()
        return answer

    first = asyncio.create_task(once.run(sam, request, create_then_stall, status_code=201))
    await asyncio.sleep(0)
    memory_p2p.clock.advance(timedelta(seconds=61))  # past the key's stale_after: taken over
    second = await once.run(sam, request, create, status_code=201)
    stalled.set()
    first_answer = await first
    ids = {json.loads(a.body)["offer_id"] for a in (first_answer, second)}  # type: ignore[union-attr]
    assert len(ids) == 1
    assert len((await memory_p2p.offers.list_active(None, None)).items) == 1
    with pytest.raises(Conflict) as refused:
        await create(price="53000")
    assert refused.value.code == "idempotency_conflict"
