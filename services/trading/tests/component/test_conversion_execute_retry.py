"""A client whose execute answer was lost executes the same quote again: the 409 quote_used it
gets names the swap (or order) the quote became, so it can follow it; another user learns nothing.
Over each store (memory and MongoDB)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from shared.http import create_app
from trading.bootstrap import install_trading_errors
from trading.conversions.adapters.memory import MemoryQuotes
from trading.conversions.adapters.mongo import MongoQuotes
from trading.conversions.application import Conversions
from trading.conversions.entrypoints import conversion_routes
from trading.conversions.settings import ConversionSettings
from trading.prices.domain import Price, PriceBook
from trading.testing import FakeClock, RecordingSender, result_of

type Database = AsyncDatabase[dict[str, Any]]

SWAP_QUOTE = {"from_currency": "BTC", "to_currency": "ETH", "from_amount": "0.01"}
EXPRESS_QUOTE = {"fiat_currency": "GBP", "fiat_amount": "100.00", "crypto_currency": "BTC"}
# (kind, quote route, its body, execute route, the id the execution answers with)
KINDS = [
    ("swap", "/api/swap/quote", SWAP_QUOTE, "/api/swap/execute", "swap_id"),
    (
        "express-buy",
        "/api/express-buy/quote",
        EXPRESS_QUOTE,
        "/api/express-buy/execute",
        "order_id",
    ),
]


async def _ready() -> bool:
    return True


@pytest.fixture
async def rig(store_database: Database | None, clock: FakeClock, jwt_secret: str) -> Any:
    quotes = MemoryQuotes() if store_database is None else MongoQuotes(store_database)
    book = PriceBook(max_age=timedelta(seconds=60))
    for currency, price in (("BTC", "52000"), ("ETH", "2800")):
        book.update(Price(currency, Decimal(price), clock(), "test"), clock())
    sender = RecordingSender()
    ids = itertools.count(1)
    conversions = Conversions(
        quotes=quotes,
        wallet=sender,
        prices=book,
        terms=ConversionSettings().terms(),
        clock=clock,
        new_id=lambda: f"id-{next(ids)}",
    )
    app = create_app(title="trading-test", auth_secret=jwt_secret, ready=_ready)
    install_trading_errors(app)
    app.include_router(conversion_routes(conversions))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://trading") as http:
        yield http, conversions, sender


@pytest.mark.parametrize(("kind", "quote_path", "quote_body", "execute_path", "id_field"), KINDS)
async def test_a_retried_execute_names_what_the_quote_became(
    rig: Any,
    auth_headers: Any,
    kind: str,
    quote_path: str,
    quote_body: dict[str, str],
    execute_path: str,
    id_field: str,
) -> None:
    http, conversions, sender = rig
    amy = auth_headers("amy")
    quote_id = (await http.post(quote_path, json=quote_body, headers=amy)).json()["quote_id"]
    lost = await http.post(execute_path, json={"quote_id": quote_id}, headers=amy)
    assert lost.status_code == 202, lost.text  # ...but the client never reads this answer
    executed_id = lost.json()[id_field]

    retry = await http.post(execute_path, json={"quote_id": quote_id}, headers=amy)
    assert retry.status_code == 409, retry.text
    assert retry.json() == {
        "error": {
            "code": "quote_used",
            "message": "this quote was already executed",
            id_field: executed_id,
        }
    }
    assert len(sender.sent) == 1  # executed once
    followed = await http.get(f"/api/{kind}/{retry.json()['error'][id_field]}", headers=amy)
    assert followed.status_code == 200, followed.text
    assert (followed.json()["quote_id"], followed.json()["status"]) == (quote_id, "pending")

    # Settled, it is still named.
    await conversions.apply_result(result_of(sender.sent[-1], "applied"))
    again = await http.post(execute_path, json={"quote_id": quote_id}, headers=amy)
    assert (again.status_code, again.json()["error"].get(id_field)) == (409, executed_id)

    # Another user's quote stays as good as absent: no hint that it exists, nor what it became.
    eve = await http.post(execute_path, json={"quote_id": quote_id}, headers=auth_headers("eve"))
    assert eve.status_code == 404, eve.text
    assert eve.json() == {"error": {"code": "quote_not_found", "message": "no such quote"}}
    assert executed_id not in eve.text
