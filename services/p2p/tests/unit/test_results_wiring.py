"""p2p follows its trades on wallet.results and asks the wallet again about every trade waiting
on it: an answer the wallet recorded nowhere (`processing_failed`) leaves the trade waiting."""

from __future__ import annotations

from p2p.bootstrap import build_p2p
from p2p.settings import P2pSettings
from shared.messaging import CommandResult


def test_an_unrecorded_refusal_leaves_a_trade_waiting_and_a_recorded_one_moves_it() -> None:
    p2p = build_p2p(P2pSettings(mongodb_url="mongodb://127.0.0.1:1"))  # never started
    refused = CommandResult(
        command_id="c1",
        type="transfer_locked",
        transaction_type="p2p_completed",
        reference_id="p2p_f2835bd6079d374b7b8cfe5b",
        user_id="sam",
        status="rejected",
        reason="insufficient_funds",
    )
    unrecorded = refused.model_copy(update={"reason": "processing_failed"})
    wanted = p2p.results._wanted(refused)
    assert wanted, "a result of a p2p trade"
    assert p2p.results._read(unrecorded.model_dump_json().encode()) is None
    assert p2p.results._read(refused.model_dump_json().encode()) == refused
