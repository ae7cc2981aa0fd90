"""A trading process whose spot matcher can be made to hang before it sends a fill to the wallet:
run by test_two_trading_processes.py, which SIGKILLs it while it hangs. Configured from the
environment like `python -m trading`.

Once the file named by TRADING_HANG_ARMED exists, the next batch of fills of TRADING_HANG_PAIR
that the matcher has stored and is about to send for the first time stops there: the process
writes the batch's first trade id to the file named by TRADING_HANG_MARKER and never sends it, so
the test kills the process at exactly that point (decided and stored, not sent, not marked sent).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from trading.__main__ import main
from trading.spot.domain.markets import Market
from trading.spot.orders import SpotBatch
from trading.spot.wallet import SpotWallet

_send = SpotWallet.dispatch


class Hang:
    def __init__(self) -> None:
        self.armed = Path(os.environ["TRADING_HANG_ARMED"])
        self.marker = Path(os.environ["TRADING_HANG_MARKER"])
        self.pair = os.environ["TRADING_HANG_PAIR"]
        self.sent: set[str] = set()

    def here(self, batch: SpotBatch, market: Market) -> bool:
        # Only a batch's first sending: a resend pass's (a batch the wallet was slow on before the
        # test armed this) is not the decision the test waits for.
        first = batch.batch_id not in self.sent
        self.sent.add(batch.batch_id)
        if first and batch.fills and market.pair == self.pair and self.armed.exists():
            self.marker.write_text(batch.fills[0].trade_id)
            return True
        return False


async def _dispatch_or_hang(self: SpotWallet, batch: SpotBatch, market: Market) -> bool:
    if HANG.here(batch, market):
        await asyncio.Event().wait()  # never returns: the process is killed here
    return await _send(self, batch, market)


if __name__ == "__main__":
    HANG = Hang()
    SpotWallet.dispatch = _dispatch_or_hang  # type: ignore[method-assign]
    main()
