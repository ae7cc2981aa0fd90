"""What the matcher's wallet commands answered decides whether their batch counts as sent: an
answer the wallet did not record (it may apply the same command sent again) sends the batch again
instead of showing fills whose money never moved."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from shared.wallet_client import WalletResultNotFinal, WalletTimeout
from trading.spot.domain.book import Side
from trading.spot.domain.markets import MARKETS
from trading.spot.wallet import SpotWallet

MARKET = MARKETS["BTC-GBP"]
FILL = SimpleNamespace(
    buyer_id="bob",
    seller_id="amy",
    quote_units=6150,
    buy_order_id="bid",
    base_units=123_000,
    sell_order_id="ask",
    trade_id="spot:BTC-GBP:1",
    seller_fee=7,
    buyer_fee=123,
    price=5_000_000,
    taker_side=Side.BUY,
)
BATCH: Any = SimpleNamespace(batch_id="BTC-GBP:1", fills=[FILL], changes=[])


class Answering:
    """A wallet client whose settle_trade answers as given."""

    def __init__(self, answer: BaseException | None) -> None:
        self.answer = answer
        self.settled: list[str] = []

    async def settle_trade(self, **fields: Any) -> Any:
        self.settled.append(fields["reference_id"])
        if self.answer is not None:
            raise self.answer
        return SimpleNamespace(status="applied")


async def test_an_unrecorded_refusal_sends_the_batch_again() -> None:
    client = Answering(WalletResultNotFinal("the wallet could not process it"))
    with pytest.raises(WalletResultNotFinal):
        await SpotWallet(client).dispatch(BATCH, MARKET)  # type: ignore[arg-type]
    assert client.settled == ["spot:BTC-GBP:1"]
    # The matcher retries what raises an OSError (a TimeoutError is one): the batch comes again.
    assert issubclass(WalletResultNotFinal, OSError)


async def test_a_result_not_back_in_time_is_logged_and_the_batch_shown() -> None:
    client = Answering(WalletTimeout("no result in time"))
    with capture_logs() as logs:
        await SpotWallet(client).dispatch(BATCH, MARKET)  # type: ignore[arg-type]
    assert [e["event"] for e in logs] == ["spot.settlement_unconfirmed"]
