"""A ledger transaction's balance check sums in the ledger's 60-digit context, not Python's 28."""

from decimal import Decimal

from shared.messaging import LedgerTransaction, Posting


def _transaction(*amounts: str) -> LedgerTransaction:
    return LedgerTransaction(
        transaction_id="t",
        command_id="c",
        type="credit",
        transaction_type="deposit_nowpayments",
        reference_id="r",
        user_id="u",
        postings=[
            Posting(account=f"a{i}", currency="ETH", amount=Decimal(amount))
            for i, amount in enumerate(amounts)
        ],
    )


def test_33_digit_eth_postings_that_balance_are_balanced() -> None:
    # In a 28-digit context the first sum drops the last wei and the three no longer cancel.
    assert _transaction(
        "100000000000000.000000000000000001", "-100000000000000", "-0.000000000000000001"
    ).is_balanced()


def test_one_wei_off_is_not_balanced() -> None:
    assert not _transaction(
        "100000000000000.000000000000000001", "-100000000000000", "-0.000000000000000002"
    ).is_balanced()
