"""A matcher batch's wallet commands: one the wallet failed on without recording an outcome
(`processing_failed`: it may still apply) is sent again, a few times, before the batch is shown
anyway. Before, such an answer left the fill unsettled (shown filled, nothing moved) or the
release locked for good after one passing database error. The dispatch says whether the wallet
answered every command for good: a batch it did not is sent again later by the matcher."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from shared.wallet_client import UNRECORDED_REFUSAL_TRIES
from trading.spot.domain.book import Fill, OrderChange, Side, Status
from trading.spot.domain.markets import MARKETS
from trading.spot.orders import SpotBatch
from trading.spot.wallet import SpotWallet
from trading.testing import AnsweringWallet

MARKET = MARKETS["BTC-GBP"]


def batch() -> SpotBatch:
    """bob's buy takes 0.001 BTC from amy's sell at 100.00; amy's order closes, releasing 5 units
    of BTC still locked for it."""
    fill = Fill(
        "t-1",
        2,
        10_000,
        100,
        MARKET.base_units(100),
        MARKET.quote_floor(10_000, 100),
        "buy-1",
        "sell-1",
        "bob",
        "amy",
        Side.BUY,
        2000,
        1,
    )
    closed = OrderChange("sell-1", "amy", Side.SELL, Status.FILLED, None, 100, 0, 0, 5, 2)
    return SpotBatch(MARKET.pair, 2, 2, [fill], [closed], [], [])


async def test_a_command_the_wallet_failed_on_is_sent_again_until_it_applies() -> None:
    client = AnsweringWallet()
    client.answers = ["failed", "applied", "applied"]  # the settle first, then the unlock
    with capture_logs() as logs:
        confirmed = await SpotWallet(client, unrecorded_refusal_pause=0).dispatch(batch(), MARKET)
    assert confirmed
    assert [(c.type, c.reference_id) for c in client.sent] == [
        ("settle_trade", "t-1"),
        ("unlock", "sell-1:unlock:filled"),
        ("settle_trade", "t-1"),
    ]
    [not_final] = [e for e in logs if e["event"] == "spot.wallet_not_final"]
    assert (not_final["reference"], not_final["attempt"]) == ("t-1", 1)
    assert not [e for e in logs if e["log_level"] == "error"]


async def test_a_command_the_wallet_fails_on_every_time_holds_the_batch_back_only_a_while() -> None:
    client = AnsweringWallet()
    client.answers = ["failed", "applied"] + ["failed"] * (UNRECORDED_REFUSAL_TRIES - 1)
    with capture_logs() as logs:
        confirmed = await SpotWallet(client, unrecorded_refusal_pause=0).dispatch(batch(), MARKET)
    assert not confirmed
    settles = [c for c in client.sent if c.type == "settle_trade"]
    assert len(settles) == UNRECORDED_REFUSAL_TRIES
    [failed] = [e for e in logs if e["event"] == "spot.wallet_failed_on_batch"]
    assert (failed["commands"], failed["log_level"]) == (1, "error")


@pytest.mark.parametrize(
    ("answers", "confirmed"),
    [
        (["applied", "applied"], True),
        (["duplicate", "applied"], True),
        (["rejected", "applied"], True),  # refused and recorded: final (logged where read)
        (["applied", "timeout"], False),  # the unlock's answer did not come in time
        (["timeout", "applied"], False),
    ],
)
async def test_the_dispatch_says_whether_the_wallet_answered_every_command_for_good(
    answers: list[str], confirmed: bool
) -> None:
    client = AnsweringWallet()
    client.answers = list(answers)
    wallet = SpotWallet(client, unrecorded_refusal_pause=0)
    assert await wallet.dispatch(batch(), MARKET) is confirmed
