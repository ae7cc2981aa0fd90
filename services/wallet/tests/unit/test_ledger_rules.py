"""The ledger's rules, pure: each command decides to balanced entries or to a rejection."""

from decimal import Decimal as D

import pytest

from shared.messaging import (
    CreditCommand,
    DebitCommand,
    ExchangeCommand,
    LockCommand,
    ReleaseLockedCommand,
    SavingsInCommand,
    SavingsOutCommand,
    TransferCommand,
    TransferLockedCommand,
    UnlockCommand,
    WalletCommand,
)
from wallet.domain.accounts import parse_user_account, user_account
from wallet.domain.ledger import (
    Balances,
    Entry,
    Rejection,
    WalletKey,
    apply_entries,
    decide,
    fold,
    hold_change,
    is_balanced,
    with_hold,
)

ALICE = Balances(available=D("1.5"), locked=D("0.5"), savings=D("0.25"))
COMMON = {"reference_id": "ref-1", "transaction_type": "test", "currency": "BTC"}


def balances(key: WalletKey) -> Balances:
    return ALICE if key == ("alice", "BTC") else Balances()


def holds(key: WalletKey, reference_id: str) -> D:
    # All of alice's locked BTC is held for ref-1.
    return ALICE.locked if (key, reference_id) == (("alice", "BTC"), "ref-1") else D(0)


def no_holds(key: WalletKey, reference_id: str) -> D:
    return D(0)


def entries_of(command: WalletCommand) -> tuple[Entry, ...]:
    decision = decide(command, balances, holds)
    assert not isinstance(decision, Rejection), decision
    assert is_balanced(decision)
    return decision


def moves(entries: tuple[Entry, ...]) -> set[tuple[str, str, str]]:
    return {(e.account, e.currency, str(e.amount)) for e in entries}


def test_credit_moves_money_from_the_external_counterparty() -> None:
    command = CreditCommand(
        user_id="alice", amount="0.01", **{**COMMON, "transaction_type": "deposit_nowpayments"}
    )
    assert moves(entries_of(command)) == {
        ("external:nowpayments", "BTC", "-0.01000000"),
        ("user:alice:available", "BTC", "0.01000000"),
    }


def test_debit_lock_unlock_savings_move_between_the_right_buckets() -> None:
    cases = [
        (DebitCommand, "user:alice:available", "external:test"),
        (LockCommand, "user:alice:available", "user:alice:locked"),
        (UnlockCommand, "user:alice:locked", "user:alice:available"),
        (SavingsInCommand, "user:alice:available", "user:alice:savings"),
        (SavingsOutCommand, "user:alice:savings", "user:alice:available"),
    ]
    for command_type, source, target in cases:
        command = command_type(user_id="alice", amount="0.25", **COMMON)
        assert moves(entries_of(command)) == {
            (source, "BTC", "-0.25000000"),
            (target, "BTC", "0.25000000"),
        }, command_type


def test_release_locked_splits_the_fee_out_of_the_amount() -> None:
    command = ReleaseLockedCommand(user_id="alice", amount="0.0041", fee="0.0001", **COMMON)
    assert moves(entries_of(command)) == {
        ("user:alice:locked", "BTC", "-0.00410000"),
        ("external:withdrawals", "BTC", "0.00400000"),
        ("platform:fees", "BTC", "0.00010000"),
    }


def test_transfer_locked_pays_the_buyer_less_the_fee() -> None:
    command = TransferLockedCommand(
        user_id="alice", to_user="bob", amount="0.5", fee="0.005", **COMMON
    )
    assert moves(entries_of(command)) == {
        ("user:alice:locked", "BTC", "-0.50000000"),
        ("user:bob:available", "BTC", "0.49500000"),
        ("platform:fees", "BTC", "0.00500000"),
    }


def test_transfer_without_fee_has_no_fee_entry() -> None:
    command = TransferCommand(user_id="alice", to_user="bob", amount="1.5", **COMMON)
    assert moves(entries_of(command)) == {
        ("user:alice:available", "BTC", "-1.50000000"),
        ("user:bob:available", "BTC", "1.50000000"),
    }


def test_exchange_is_balanced_in_each_currency() -> None:
    command = ExchangeCommand(
        user_id="alice",
        amount="0.01",
        fee="0.0001",
        receive_currency="ETH",
        receive_amount="0.3",
        **COMMON,
    )
    assert moves(entries_of(command)) == {
        ("user:alice:available", "BTC", "-0.01000000"),
        ("platform:liquidity", "BTC", "0.00990000"),
        ("platform:fees", "BTC", "0.00010000"),
        ("platform:liquidity", "ETH", "-0.300000000000000000"),
        ("user:alice:available", "ETH", "0.300000000000000000"),
    }


@pytest.mark.parametrize(
    ("command", "bucket"),
    [
        (DebitCommand(user_id="alice", amount="1.50000001", **COMMON), "available"),
        (LockCommand(user_id="alice", amount="2", **COMMON), "available"),
        (UnlockCommand(user_id="alice", amount="0.50000001", **COMMON), "locked"),
        (ReleaseLockedCommand(user_id="alice", amount="0.6", **COMMON), "locked"),
        (TransferCommand(user_id="alice", to_user="bob", amount="1.6", **COMMON), "available"),
        (
            TransferLockedCommand(user_id="alice", to_user="bob", amount="0.6", **COMMON),
            "locked",
        ),
        (SavingsInCommand(user_id="alice", amount="1.6", **COMMON), "available"),
        (SavingsOutCommand(user_id="alice", amount="0.26", **COMMON), "savings"),
        (DebitCommand(user_id="nobody", amount="0.00000001", **COMMON), "available"),
        (
            ExchangeCommand(
                user_id="alice",
                amount="1.6",
                receive_currency="ETH",
                receive_amount="1",
                **COMMON,
            ),
            "available",
        ),
    ],
)
def test_insufficient_funds_is_a_rejection_that_names_the_bucket(
    command: WalletCommand, bucket: str
) -> None:
    decision = decide(command, balances, holds)
    assert isinstance(decision, Rejection)
    assert decision.reason == "insufficient_funds"
    assert decision.detail.startswith(bucket)


def test_exactly_the_whole_balance_can_be_spent() -> None:
    command = DebitCommand(user_id="alice", amount="1.5", **COMMON)
    touched, _ = apply_entries(balances, entries_of(command))
    assert touched[("alice", "BTC")] == Balances(D(0), D("0.5"), D("0.25"))


@pytest.mark.parametrize("command_type", [TransferCommand, TransferLockedCommand])
def test_transfers_to_oneself_are_rejected(
    command_type: type[TransferCommand] | type[TransferLockedCommand],
) -> None:
    decision = decide(
        command_type(user_id="alice", to_user="alice", amount="0.1", **COMMON), balances, holds
    )
    assert decision == Rejection("same_account", "a transfer needs two different users")


def test_apply_entries_refuses_to_take_a_user_bucket_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        apply_entries(balances, [Entry(user_account("bob", "locked"), "BTC", D("-1"))])


def test_fold_totals_every_account_and_conserves_money() -> None:
    commands: list[WalletCommand] = [
        CreditCommand(user_id="a", amount="2", **COMMON),
        TransferCommand(user_id="a", to_user="b", amount="0.5", **COMMON),
        LockCommand(user_id="b", amount="0.2", **COMMON),
        TransferLockedCommand(user_id="b", to_user="a", amount="0.2", fee="0.01", **COMMON),
    ]
    wallets: dict[WalletKey, Balances] = {}
    held: dict[tuple[WalletKey, str], D] = {}
    transactions = []
    for command in commands:
        decision = decide(
            command, lambda k: wallets.get(k, Balances()), lambda k, r: held.get((k, r), D(0))
        )
        assert not isinstance(decision, Rejection)
        change = hold_change(command)
        if change is not None:
            held[change[0], change[1]] = held.get((change[0], change[1]), D(0)) + change[2]
        touched, _ = apply_entries(lambda k: wallets.get(k, Balances()), decision)
        wallets.update(touched)
        transactions.append(decision)
    folded, others = fold(transactions)
    assert folded == wallets
    assert folded[("a", "BTC")] == Balances(available=D("1.69"))
    assert folded[("b", "BTC")] == Balances(available=D("0.3"))
    assert others == {("external:test", "BTC"): D("-2"), ("platform:fees", "BTC"): D("0.01")}
    total = sum((b.available + b.locked + b.savings for b in folded.values()), D(0))
    assert total + sum(others.values(), D(0)) == 0


def test_user_accounts_may_contain_colons() -> None:
    assert parse_user_account(user_account("tenant:42", "locked")) == ("tenant:42", "locked")
    assert parse_user_account("platform:fees") is None
    with pytest.raises(ValueError, match="not a user account"):
        parse_user_account("user:alice:wallet")


@pytest.mark.parametrize(
    "command",
    [
        UnlockCommand(user_id="alice", amount="0.1", **{**COMMON, "reference_id": "other-trade"}),
        ReleaseLockedCommand(user_id="alice", amount="0.1", **{**COMMON, "reference_id": "wd-9"}),
        TransferLockedCommand(
            user_id="alice", to_user="bob", amount="0.1", **{**COMMON, "reference_id": "t-2"}
        ),
    ],
)
def test_locked_money_is_spent_only_under_the_reference_that_locked_it(
    command: WalletCommand,
) -> None:
    # alice has 0.5 BTC locked, all of it for ref-1: another trade cannot take any of it.
    decision = decide(command, balances, holds)
    assert isinstance(decision, Rejection)
    assert decision.reason == "insufficient_funds"
    assert f"under {command.reference_id} is 0" in decision.detail


def test_a_hold_cannot_be_overspent_even_when_more_is_locked() -> None:
    def partly_held(key: WalletKey, reference_id: str) -> D:
        return D("0.2") if reference_id == "ref-1" else D("0.3")

    over = UnlockCommand(user_id="alice", amount="0.25", **COMMON)
    assert isinstance(decide(over, balances, partly_held), Rejection)
    exact = UnlockCommand(user_id="alice", amount="0.2", **COMMON)
    assert not isinstance(decide(exact, balances, partly_held), Rejection)


def test_holds_change_with_lock_and_spend_and_vanish_at_zero() -> None:
    lock = LockCommand(user_id="alice", amount="0.3", **COMMON)
    unlock = UnlockCommand(user_id="alice", amount="0.1", **COMMON)
    assert hold_change(lock) == (("alice", "BTC"), "ref-1", D("0.3"))
    assert hold_change(unlock) == (("alice", "BTC"), "ref-1", D("-0.1"))
    assert hold_change(CreditCommand(user_id="alice", amount="1", **COMMON)) is None
    holds_now = with_hold((("b-ref", D("1")),), "a-ref", D("0.3"))
    assert holds_now == (("a-ref", D("0.3")), ("b-ref", D("1")))
    assert with_hold(holds_now, "a-ref", D("-0.3")) == (("b-ref", D("1")),)
    with pytest.raises(ValueError, match="negative"):
        with_hold(holds_now, "b-ref", D("-1.1"))
