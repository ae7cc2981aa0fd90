"""The ledger's rules, pure: each command decides to balanced entries or to a rejection."""

from dataclasses import dataclass, field
from decimal import Decimal as D
from typing import Any

import pytest

from shared.messaging import (
    CreditCommand,
    DebitCommand,
    ExchangeCommand,
    LockCommand,
    ReleaseLockedCommand,
    SavingsInCommand,
    SavingsOutCommand,
    SettleTradeCommand,
    TransferCommand,
    TransferLockedCommand,
    UnlockCommand,
    WalletCommand,
)
from wallet.domain.accounts import parse_user_account, user_account
from wallet.domain.ledger import (
    AccountKey,
    Balances,
    Entry,
    Rejection,
    WalletKey,
    apply_entries,
    decide,
    floored_accounts,
    hold_changes,
    is_balanced,
    wallet_keys,
    with_hold,
)
from wallet.domain.registry import REGISTRY, registered

# A registered transaction type for each command type (the registry refuses any other).
TYPE_FOR = {
    "credit": "deposit_nowpayments",
    "debit": "withdrawal",
    "lock": "p2p_escrow",
    "unlock": "p2p_cancelled",
    "release_locked": "withdrawal",
    "transfer": "p2p_payment",
    "transfer_locked": "p2p_completed",
    "exchange": "swap",
    "savings_in": "savings_deposit",
    "savings_out": "savings_withdrawal",
    "settle_trade": "spot_trade",
}


def make(command_type: type[Any], **fields: Any) -> Any:
    kind = command_type.model_fields["type"].default
    defaults = {"reference_id": "ref-1", "currency": "BTC", "transaction_type": TYPE_FOR[kind]}
    return command_type(**{**defaults, **fields})


ALICE = Balances(available=D("1.5"), locked=D("0.5"), savings=D("0.25"))


@dataclass
class View:
    """A LedgerView over plain dictionaries."""

    wallets: dict[WalletKey, Balances] = field(default_factory=dict)
    holds: dict[tuple[WalletKey, str], D] = field(default_factory=dict)
    accounts: dict[AccountKey, D] = field(default_factory=dict)

    def balance_of(self, key: WalletKey) -> Balances:
        return self.wallets.get(key, Balances())

    def hold_of(self, key: WalletKey, hold: str) -> D:
        return self.holds.get((key, hold), D(0))

    def account_of(self, key: AccountKey) -> D:
        return self.accounts.get(key, D(0))

    def apply(self, command: WalletCommand) -> tuple[Entry, ...] | Rejection:
        """Decide and, if applied, apply: the way the service does it."""
        decision = decide(command, self)
        if isinstance(decision, Rejection):
            return decision
        touched, others = apply_entries(self.balance_of, decision)
        self.wallets.update(touched)
        for key, delta in others.items():
            self.accounts[key] = self.accounts.get(key, D(0)) + delta
        for wallet, hold, delta in hold_changes(command):
            self.holds[wallet, hold] = self.holds.get((wallet, hold), D(0)) + delta
        return decision


def alice_view() -> View:
    # All of alice's locked BTC is held for ref-1; liquidity has 10 ETH, fees hold 0.1 BTC.
    return View(
        wallets={("alice", "BTC"): ALICE},
        holds={(("alice", "BTC"), "ref-1"): ALICE.locked},
        accounts={("platform:liquidity", "ETH"): D(10), ("platform:fees", "BTC"): D("0.1")},
    )


def entries_of(command: WalletCommand, view: View | None = None) -> tuple[Entry, ...]:
    decision = decide(command, view or alice_view())
    assert not isinstance(decision, Rejection), decision
    assert is_balanced(decision)
    return decision


def rejection_of(command: WalletCommand, view: View | None = None) -> Rejection:
    decision = decide(command, view or alice_view())
    assert isinstance(decision, Rejection), decision
    return decision


def moves(entries: tuple[Entry, ...]) -> set[tuple[str, str, str]]:
    return {(e.account, e.currency, str(e.amount)) for e in entries}


def test_credit_moves_money_from_the_external_counterparty() -> None:
    command = make(CreditCommand, user_id="alice", amount="0.01")
    assert moves(entries_of(command)) == {
        ("external:nowpayments", "BTC", "-0.01000000"),
        ("user:alice:available", "BTC", "0.01000000"),
    }


def test_debit_lock_unlock_savings_move_between_the_right_buckets() -> None:
    cases = [
        (DebitCommand, "user:alice:available", "external:withdrawals"),
        (LockCommand, "user:alice:available", "user:alice:locked"),
        (UnlockCommand, "user:alice:locked", "user:alice:available"),
        (SavingsInCommand, "user:alice:available", "user:alice:savings"),
        (SavingsOutCommand, "user:alice:savings", "user:alice:available"),
    ]
    for command_type, source, target in cases:
        command = make(command_type, user_id="alice", amount="0.25")
        assert moves(entries_of(command)) == {
            (source, "BTC", "-0.25000000"),
            (target, "BTC", "0.25000000"),
        }, command_type


def test_release_locked_splits_the_fee_out_of_the_amount() -> None:
    command = make(ReleaseLockedCommand, user_id="alice", amount="0.0041", fee="0.0001")
    assert moves(entries_of(command)) == {
        ("user:alice:locked", "BTC", "-0.00410000"),
        ("external:withdrawals", "BTC", "0.00400000"),
        ("platform:fees", "BTC", "0.00010000"),
    }


def test_transfer_locked_pays_the_buyer_less_the_fee() -> None:
    command = make(TransferLockedCommand, user_id="alice", to_user="bob", amount="0.5", fee="0.005")
    assert moves(entries_of(command)) == {
        ("user:alice:locked", "BTC", "-0.50000000"),
        ("user:bob:available", "BTC", "0.49500000"),
        ("platform:fees", "BTC", "0.00500000"),
    }


def test_transfer_without_fee_has_no_fee_entry() -> None:
    command = make(TransferCommand, user_id="alice", to_user="bob", amount="1.5")
    assert moves(entries_of(command)) == {
        ("user:alice:available", "BTC", "-1.50000000"),
        ("user:bob:available", "BTC", "1.50000000"),
    }


def exchange(receive_amount: str, **fields: Any) -> ExchangeCommand:
    command: ExchangeCommand = make(
        ExchangeCommand,
        user_id="alice",
        amount="0.01",
        fee="0.0001",
        receive_currency="ETH",
        receive_amount=receive_amount,
        **fields,
    )
    return command


def test_exchange_is_balanced_in_each_currency() -> None:
    assert moves(entries_of(exchange("0.3"))) == {
        ("user:alice:available", "BTC", "-0.01000000"),
        ("platform:liquidity", "BTC", "0.00990000"),
        ("platform:fees", "BTC", "0.00010000"),
        ("platform:liquidity", "ETH", "-0.300000000000000000"),
        ("user:alice:available", "ETH", "0.300000000000000000"),
    }


@pytest.mark.parametrize("transaction_type", ["swap", "express_buy"])
def test_an_exchange_liquidity_cannot_cover_is_rejected_and_moves_nothing(
    transaction_type: str,
) -> None:
    view = alice_view()
    assert not isinstance(view.apply(exchange("10", transaction_type=transaction_type)), Rejection)
    assert view.accounts[("platform:liquidity", "ETH")] == 0  # exactly all of it can be taken
    before = (dict(view.wallets), dict(view.accounts))
    refused = view.apply(exchange("0.000000000000000001", reference_id="ref-2"))
    assert refused == Rejection(
        "insufficient_liquidity", "platform:liquidity ETH is 0, 0.000000000000000001 needed"
    )
    assert (view.wallets, view.accounts) == before
    assert floored_accounts(exchange("1")) == (("platform:liquidity", "ETH"),)


@pytest.mark.parametrize(
    ("command", "bucket"),
    [
        (make(DebitCommand, user_id="alice", amount="1.50000001"), "available"),
        (make(LockCommand, user_id="alice", amount="2"), "available"),
        (make(UnlockCommand, user_id="alice", amount="0.50000001"), "locked"),
        (make(ReleaseLockedCommand, user_id="alice", amount="0.6"), "locked"),
        (make(TransferCommand, user_id="alice", to_user="bob", amount="1.6"), "available"),
        (make(TransferLockedCommand, user_id="alice", to_user="bob", amount="0.6"), "locked"),
        (make(SavingsInCommand, user_id="alice", amount="1.6"), "available"),
        (make(SavingsOutCommand, user_id="alice", amount="0.26"), "savings"),
        (make(DebitCommand, user_id="nobody", amount="0.00000001"), "available"),
        (
            make(
                ExchangeCommand,
                user_id="alice",
                amount="1.6",
                receive_currency="ETH",
                receive_amount="1",
            ),
            "available",
        ),
    ],
)
def test_insufficient_funds_is_a_rejection_that_names_the_bucket(
    command: WalletCommand, bucket: str
) -> None:
    decision = rejection_of(command)
    assert decision.reason == "insufficient_funds"
    assert decision.detail.startswith(bucket)


def test_exactly_the_whole_balance_can_be_spent() -> None:
    command = make(DebitCommand, user_id="alice", amount="1.5")
    view = alice_view()
    touched, _ = apply_entries(view.balance_of, entries_of(command))
    assert touched[("alice", "BTC")] == Balances(D(0), D("0.5"), D("0.25"))


@pytest.mark.parametrize("command_type", [TransferCommand, TransferLockedCommand])
def test_transfers_to_oneself_are_rejected(
    command_type: type[TransferCommand] | type[TransferLockedCommand],
) -> None:
    decision = rejection_of(make(command_type, user_id="alice", to_user="alice", amount="0.1"))
    assert decision == Rejection("same_account", "a transfer needs two different users")


def test_apply_entries_refuses_to_take_a_user_bucket_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        apply_entries(alice_view().balance_of, [Entry(user_account("bob", "locked"), "BTC", D(-1))])


def test_applied_decisions_conserve_money_in_every_account() -> None:
    commands: list[WalletCommand] = [
        make(CreditCommand, user_id="a", amount="2"),
        make(TransferCommand, user_id="a", to_user="b", amount="0.5"),
        make(LockCommand, user_id="b", amount="0.2"),
        make(TransferLockedCommand, user_id="b", to_user="a", amount="0.2", fee="0.01"),
    ]
    view = View()
    for command in commands:
        assert not isinstance(view.apply(command), Rejection)
    assert view.wallets[("a", "BTC")] == Balances(available=D("1.69"))
    assert view.wallets[("b", "BTC")] == Balances(available=D("0.3"))
    assert view.accounts == {
        ("external:nowpayments", "BTC"): D(-2),
        ("platform:fees", "BTC"): D("0.01"),
    }
    total = sum((b.available + b.locked + b.savings for b in view.wallets.values()), D(0))
    assert total + sum(view.accounts.values(), D(0)) == 0


def test_user_accounts_may_contain_colons() -> None:
    assert parse_user_account(user_account("tenant:42", "locked")) == ("tenant:42", "locked")
    assert parse_user_account("platform:fees") is None
    with pytest.raises(ValueError, match="not a user account"):
        parse_user_account("user:alice:wallet")


@pytest.mark.parametrize(
    "command",
    [
        make(UnlockCommand, user_id="alice", amount="0.1", reference_id="other-trade"),
        make(ReleaseLockedCommand, user_id="alice", amount="0.1", reference_id="wd-9"),
        make(
            TransferLockedCommand, user_id="alice", to_user="bob", amount="0.1", reference_id="t-2"
        ),
        make(UnlockCommand, user_id="alice", amount="0.1", hold_id="order-7"),
    ],
)
def test_locked_money_is_spent_only_from_its_own_hold(command: WalletCommand) -> None:
    # alice has 0.5 BTC locked, all of it for ref-1: another trade cannot take any of it.
    decision = rejection_of(command)
    assert decision.reason == "insufficient_funds"
    assert f"under {command.hold} is 0" in decision.detail  # type: ignore[union-attr]


def test_a_hold_cannot_be_overspent_even_when_more_is_locked() -> None:
    view = alice_view()
    view.holds = {(("alice", "BTC"), "ref-1"): D("0.2"), (("alice", "BTC"), "other"): D("0.3")}
    rejection_of(make(UnlockCommand, user_id="alice", amount="0.25"), view)
    entries_of(make(UnlockCommand, user_id="alice", amount="0.2"), view)


def test_a_named_hold_is_spent_in_several_steps_each_its_own_reference() -> None:
    view = View(wallets={("alice", "BTC"): Balances(available=D(1))})
    lock = make(LockCommand, user_id="alice", amount="0.6", hold_id="order-1", reference_id="l")
    assert hold_changes(lock) == ((("alice", "BTC"), "order-1", D("0.6")),)
    view.apply(lock)
    for step in ("refund-1", "refund-2", "refund-3"):
        unlock = make(
            UnlockCommand, user_id="alice", amount="0.2", hold_id="order-1", reference_id=step
        )
        assert not isinstance(view.apply(unlock), Rejection), step
    assert view.holds[(("alice", "BTC"), "order-1")] == 0
    assert view.wallets[("alice", "BTC")] == Balances(available=D(1))
    last = make(UnlockCommand, user_id="alice", amount="0.1", hold_id="order-1", reference_id="x")
    assert rejection_of(last, view).reason == "insufficient_funds"


def test_holds_change_with_lock_and_spend_and_vanish_at_zero() -> None:
    lock = make(LockCommand, user_id="alice", amount="0.3")
    unlock = make(UnlockCommand, user_id="alice", amount="0.1")
    assert hold_changes(lock) == ((("alice", "BTC"), "ref-1", D("0.3")),)
    assert hold_changes(unlock) == ((("alice", "BTC"), "ref-1", D("-0.1")),)
    assert hold_changes(make(CreditCommand, user_id="alice", amount="1")) == ()
    holds_now = with_hold((("b-ref", D(1)),), "a-ref", D("0.3"))
    assert holds_now == (("a-ref", D("0.3")), ("b-ref", D(1)))
    assert with_hold(holds_now, "a-ref", D("-0.3")) == (("b-ref", D(1)),)
    with pytest.raises(ValueError, match="negative"):
        with_hold(holds_now, "b-ref", D("-1.1"))


# Settlement of a spot fill -------------------------------------------------------------------


def trade_view() -> View:
    # buyer holds 1000 USDT for order buy-1; seller holds 0.02 BTC for order sell-1.
    return View(
        wallets={
            ("buyer", "USDT"): Balances(locked=D(1000)),
            ("seller", "BTC"): Balances(locked=D("0.02")),
        },
        holds={(("buyer", "USDT"), "buy-1"): D(1000), (("seller", "BTC"), "sell-1"): D("0.02")},
    )


def settle(**fields: Any) -> SettleTradeCommand:
    spec: dict[str, Any] = {
        "user_id": "buyer",
        "to_user": "seller",
        "currency": "USDT",
        "amount": "500",
        "fee": "0.5",
        "hold_id": "buy-1",
        "receive_currency": "BTC",
        "receive_amount": "0.01",
        "receive_fee": "0.00001",
        "counter_hold_id": "sell-1",
        "reference_id": "fill-1",
    }
    command: SettleTradeCommand = make(SettleTradeCommand, **{**spec, **fields})
    return command


def test_settle_trade_moves_both_currencies_from_both_holds_with_both_fees() -> None:
    view = trade_view()
    entries = view.apply(settle())
    assert not isinstance(entries, Rejection)
    assert is_balanced(entries)
    assert moves(entries) == {
        ("user:buyer:locked", "USDT", "-500.000000"),
        ("user:seller:available", "USDT", "499.500000"),
        ("platform:fees", "USDT", "0.500000"),
        ("user:seller:locked", "BTC", "-0.01000000"),
        ("user:buyer:available", "BTC", "0.00999000"),
        ("platform:fees", "BTC", "0.00001000"),
    }
    assert view.holds[(("buyer", "USDT"), "buy-1")] == 500
    assert view.holds[(("seller", "BTC"), "sell-1")] == D("0.01")
    assert set(wallet_keys(settle())) == {
        ("buyer", "USDT"),
        ("buyer", "BTC"),
        ("seller", "USDT"),
        ("seller", "BTC"),
    }


@pytest.mark.parametrize(
    ("fields", "reason", "detail"),
    [
        ({"amount": "1000.000001"}, "insufficient_funds", "locked USDT of buyer is 1000"),
        ({"receive_amount": "0.03"}, "insufficient_funds", "locked BTC of seller is 0.02"),
        ({"hold_id": "buy-2"}, "insufficient_funds", "locked USDT of buyer under buy-2 is 0"),
        ({"counter_hold_id": "x"}, "insufficient_funds", "locked BTC of seller under x is 0"),
        ({"to_user": "buyer"}, "same_account", "a trade needs two different users"),
        ({"transaction_type": "swap"}, "unknown_transaction_type", "transaction_type 'swap'"),
    ],
)
def test_a_trade_either_side_cannot_pay_is_rejected_whole(
    fields: dict[str, Any], reason: str, detail: str
) -> None:
    decision = rejection_of(settle(**fields), trade_view())
    assert decision.reason == reason
    assert decision.detail.startswith(detail), decision.detail


# The registry and platform moves --------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        make(CreditCommand, user_id="alice", amount="1", transaction_type="deposit_printer"),
        make(CreditCommand, user_id="alice", amount="1", transaction_type="p2p_payment"),
        make(DebitCommand, user_id="alice", amount="0.1", transaction_type="deposit_nowpayments"),
        make(LockCommand, user_id="alice", amount="0.1", transaction_type="internal_transfer"),
        make(ReleaseLockedCommand, user_id="alice", amount="0.1", destination="my_pocket"),
    ],
)
def test_an_unregistered_type_or_command_is_rejected_and_moves_nothing(
    command: WalletCommand,
) -> None:
    view = alice_view()
    before = (dict(view.wallets), dict(view.accounts), dict(view.holds))
    decision = view.apply(command)
    assert isinstance(decision, Rejection)
    assert decision.reason == "unknown_transaction_type"
    assert (view.wallets, view.accounts, view.holds) == before


def test_every_registered_type_has_a_counterparty_where_its_commands_need_one() -> None:
    for spec in REGISTRY.values():
        if spec.command_types & {"credit", "debit", "release_locked", "exchange"}:
            assert spec.counterparty is not None, spec.name
    assert registered("deposit_bank_transfer", "credit") is not None
    assert registered("deposit_bank_transfer", "debit") is None


@pytest.mark.parametrize(
    ("transaction_type", "source", "target"),
    [
        ("deposit_bank_transfer", "external:bank", "user:alice:available"),
        ("savings_interest", "platform:interest", "user:alice:savings"),
        ("referral_commission", "platform:fees", "user:alice:available"),
        ("liquidity_funding", "external:treasury", "platform:liquidity"),
        ("legacy_migration", "external:legacy_migration", "user:alice:available"),
        ("legacy_migration_locked", "external:legacy_migration", "user:alice:locked"),
        ("legacy_migration_savings", "external:legacy_migration", "user:alice:savings"),
    ],
)
def test_credits_mint_only_from_their_registered_counterparty(
    transaction_type: str, source: str, target: str
) -> None:
    command = make(
        CreditCommand,
        user_id="alice",
        amount="0.05",
        transaction_type=transaction_type,
        currency="BTC",
    )
    assert moves(entries_of(command)) == {
        (source, "BTC", "-0.05000000"),
        (target, "BTC", "0.05000000"),
    }


def test_liquidity_funding_changes_no_user_wallet() -> None:
    view = View()
    funding = make(
        CreditCommand, user_id="admin-1", amount="3", transaction_type="liquidity_funding"
    )
    view.apply(funding)
    assert view.wallets == {}
    assert view.accounts == {("platform:liquidity", "BTC"): 3, ("external:treasury", "BTC"): -3}


def test_a_legacy_locked_balance_is_held_under_its_reference_and_released_by_legacy_unlock() -> (
    None
):
    view = View()
    view.apply(
        make(
            CreditCommand,
            user_id="alice",
            amount="0.4",
            transaction_type="legacy_migration_locked",
            reference_id="legacy-17",
        )
    )
    assert view.holds == {(("alice", "BTC"), "legacy-17"): D("0.4")}
    unlock = make(
        UnlockCommand,
        user_id="alice",
        amount="0.4",
        transaction_type="legacy_unlock",
        reference_id="legacy-17",
    )
    assert not isinstance(view.apply(unlock), Rejection)
    assert view.wallets[("alice", "BTC")] == Balances(available=D("0.4"))


def test_referral_commission_is_paid_out_of_fees_never_beyond_them() -> None:
    view = alice_view()  # fees hold 0.1 BTC
    commission = make(
        CreditCommand, user_id="bob", amount="0.1", transaction_type="referral_commission"
    )
    assert floored_accounts(commission) == (("platform:fees", "BTC"),)
    assert not isinstance(view.apply(commission), Rejection)
    more = make(
        CreditCommand,
        user_id="bob",
        amount="0.00000001",
        transaction_type="referral_commission",
        reference_id="ref-2",
    )
    refused = rejection_of(more, view)
    assert refused.reason == "insufficient_platform_funds"
    assert view.accounts[("platform:fees", "BTC")] == 0
