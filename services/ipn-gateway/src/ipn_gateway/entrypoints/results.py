"""The consumer of `wallet.results` (group `ipn-gateway`): withdrawal and payment states follow
the wallet. The shared consumer (shared.results_consumer) with the gateway's dead letters: a
result it cannot apply is kept for a person after a few attempts, and one retried for too long
makes /healthz answer 503."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from ipn_gateway.domain.withdrawals import REFERENCE_PREFIX as WITHDRAWAL_REFERENCE_PREFIX
from shared.messaging import CommandResult
from shared.results_consumer import WalletResultsConsumer

OUR_REFERENCES: Final = (WITHDRAWAL_REFERENCE_PREFIX, "nowpayments:")


def is_gateway_result(result: CommandResult) -> bool:
    return result.reference_id.startswith(OUR_REFERENCES)


def is_asked_again(result: CommandResult) -> bool:
    """Every command of the gateway is asked again while it waits (a withdrawal's by
    `WithdrawalHandler.ask_again`, a deposit's credit by `UnansweredCredits`): a not-final
    answer to one is no answer yet."""
    return is_gateway_result(result)


class ResultsConsumer(WalletResultsConsumer):
    def __init__(
        self,
        bootstrap_servers: str,
        dispatch: Callable[[CommandResult], Awaitable[None]],
        **options: Any,
    ) -> None:
        super().__init__(
            bootstrap_servers, dispatch, is_gateway_result, asked_again=is_asked_again, **options
        )
