"""The wallet commands of spot trading: one lock per order, one settle_trade per fill, one unlock
per release. A lock is sent without waiting: its outcome comes back on wallet.results (see
`feature`). A batch's settlements and unlocks are waited for (up to `settle_wait_seconds`): the
matcher shows them on the orders once the wallet has applied them, and a batch not answered in
full is sent again later (`MarketMatcher.resend_unconfirmed`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final

import structlog

from shared.messaging import CommandResult
from shared.wallet_client import WalletClient, WalletTimeout, send_until_final
from trading.spot.domain.book import Side
from trading.spot.domain.markets import Market
from trading.spot.orders import (
    SPOT_ORDER,
    SPOT_TRADE,
    SpotBatch,
    SpotOrder,
    lock_reference,
    unlock_reference,
)

log = structlog.get_logger(__name__)

# A batch's command the wallet answers `processing_failed` (it failed on it and recorded no
# outcome) is sent again, pausing this long times the try's number (`send_until_final`).
UNRECORDED_REFUSAL_PAUSE_SECONDS: Final = 1.0

type Send = Callable[[], Awaitable[CommandResult | None]]


class SpotWallet:
    def __init__(
        self,
        client: WalletClient,
        *,
        settle_wait_seconds: float = 5.0,
        unrecorded_refusal_pause: float = UNRECORDED_REFUSAL_PAUSE_SECONDS,
    ) -> None:
        self._client = client
        self._settle_wait = settle_wait_seconds
        self._unrecorded_refusal_pause = unrecorded_refusal_pause

    async def lock(self, order: SpotOrder) -> None:
        await self._client.lock_balance(
            user_id=order.user_id,
            currency=order.lock_currency,
            amount=order.lock_amount,
            lock_type=SPOT_ORDER,
            reference_id=lock_reference(order.order_id),
            hold_id=order.order_id,
            metadata={"pair": order.pair, "side": order.side.value, "order_id": order.order_id},
            wait=False,
        )

    async def dispatch(self, batch: SpotBatch, market: Market) -> bool:
        """Sends every command the batch's decisions need (the wallet applies each reference
        once); whether the wallet answered each one for good (applied, or refused and recorded).
        False when an answer did not come in time or stayed not final: the batch is to be sent
        again."""
        sends: list[Send] = []
        for fill in batch.fills:
            sends.append(
                partial(
                    self._client.settle_trade,
                    buyer_id=fill.buyer_id,
                    seller_id=fill.seller_id,
                    quote_currency=market.quote.code,
                    quote_amount=market.quote_amount(fill.quote_units),
                    buyer_hold_id=fill.buy_order_id,
                    base_currency=market.base.code,
                    base_amount=market.base_amount(fill.base_units),
                    seller_hold_id=fill.sell_order_id,
                    reference_id=fill.trade_id,
                    transaction_type=SPOT_TRADE,
                    seller_fee=market.quote_amount(fill.seller_fee),
                    buyer_fee=market.base_amount(fill.buyer_fee),
                    metadata={
                        "pair": market.pair,
                        "price": str(market.price(fill.price)),
                        "buy_order_id": fill.buy_order_id,
                        "sell_order_id": fill.sell_order_id,
                        "taker_side": fill.taker_side.value,
                    },
                    result_timeout=self._settle_wait,
                )
            )
        for change in batch.changes:
            if change.released <= 0:
                continue
            buying = change.side is Side.BUY
            sends.append(
                partial(
                    self._client.unlock_balance,
                    user_id=change.user_id,
                    currency=market.quote.code if buying else market.base.code,
                    amount=(market.quote_amount if buying else market.base_amount)(change.released),
                    unlock_type=SPOT_ORDER,
                    reference_id=unlock_reference(change.order_id, change.status.value),
                    hold_id=change.order_id,
                    metadata={"pair": market.pair, "order_id": change.order_id},
                    result_timeout=self._settle_wait,
                )
            )
        # Concurrently: the producer batches them into few requests. A send the broker refused
        # raises (the matcher sends the batch again; the wallet applies each reference once); a
        # result not back in time is logged, and the batch is shown anyway but stays unconfirmed
        # (a refusal is logged where results are read, `SpotOrders.apply_result`). A command the
        # wallet failed on without recording an outcome may still apply: it is sent again a few
        # times (a passing database error must not leave a fill unsettled or a release locked),
        # then the batch is shown as any batch whose wallet answer did not come.
        answers = await asyncio.gather(
            *(
                send_until_final(
                    send, event="spot.wallet_not_final", pause=self._unrecorded_refusal_pause
                )
                for send in sends
            ),
            return_exceptions=True,
        )
        unanswered = unapplied = 0
        for answer in answers:
            if isinstance(answer, WalletTimeout):
                log.warning("spot.settlement_unconfirmed", batch=batch.batch_id, error=str(answer))
                unanswered += 1
            elif isinstance(answer, BaseException):
                raise answer
            elif answer is None:
                unanswered += 1  # not waited for: only a client built to send without waiting
            elif not answer.final:
                unapplied += 1
        if unapplied:
            log.error("spot.wallet_failed_on_batch", batch=batch.batch_id, commands=unapplied)
        return unanswered == unapplied == 0
