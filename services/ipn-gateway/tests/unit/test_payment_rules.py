"""The IPN status machine and the crediting decision, without I/O."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ipn_gateway.domain.payments import (
    ConfirmationPolicy,
    Ipn,
    PaymentState,
    PaymentStatus,
    approve_review,
    decide,
)

S = PaymentStatus
FINISHED_ONLY = ConfirmationPolicy()


def ipn(status: PaymentStatus, outcome: str | None = "0.0015321", currency: str = "btc") -> Ipn:
    return Ipn(
        payment_id="5077125051",
        payment_status=status,
        status_text=status.value,
        order_id="dep_1",
        pay_currency=currency,
        outcome_currency=currency,
        outcome_amount=outcome,
        actually_paid=outcome,
    )


def run(
    statuses: list[Ipn], policy: ConfirmationPolicy = FINISHED_ONLY
) -> tuple[list[str], PaymentState, list[tuple[str, Decimal]]]:
    state = PaymentState(payment_id="5077125051")
    verdicts, credits = [], []
    for item in statuses:
        decision = decide(state, item, policy)
        verdicts.append(decision.verdict)
        if decision.state is not None:
            state = decision.state
        if decision.credit is not None:
            credits.append((decision.credit.reference_id, decision.credit.amount))
    return verdicts, state, credits


def test_normal_life_credits_once_at_finished() -> None:
    verdicts, state, credits = run(
        [ipn(S.WAITING), ipn(S.CONFIRMING), ipn(S.CONFIRMED), ipn(S.SENDING), ipn(S.FINISHED)]
    )
    assert verdicts == ["pending", "pending", "pending", "pending", "credited"]
    assert credits == [("nowpayments:5077125051", Decimal("0.0015321"))]
    assert state.credited == Decimal("0.0015321")
    assert state.status is S.FINISHED


def test_replays_and_reverse_order_change_nothing() -> None:
    life = [ipn(S.WAITING), ipn(S.CONFIRMING), ipn(S.FINISHED)]
    verdicts, _, credits = run(life + life * 10 + life[::-1])
    assert verdicts[:3] == ["pending", "pending", "credited"]
    assert set(verdicts[3:]) == {"duplicate"}
    assert len(credits) == 1
    verdicts, _, credits = run(life[::-1])
    assert verdicts == ["credited", "ignored", "ignored"]
    assert len(credits) == 1


def test_coin_policy_credits_at_confirmed_and_tops_up_a_larger_final_outcome() -> None:
    policy = ConfirmationPolicy(credit_at={"btc": S.CONFIRMED})
    verdicts, state, credits = run(
        [
            ipn(S.CONFIRMING, "0.001"),
            ipn(S.CONFIRMED, "0.001"),
            ipn(S.SENDING, "0.001"),
            ipn(S.FINISHED, "0.0015"),
        ],
        policy,
    )
    assert verdicts == ["pending", "credited", "duplicate", "credited"]
    assert credits == [
        ("nowpayments:5077125051", Decimal("0.001")),
        ("nowpayments:5077125051:topup:0.0015", Decimal("0.0005")),
    ]
    assert state.credited == Decimal("0.0015")


def test_policy_by_registry_code_covers_network_tickers() -> None:
    policy = ConfirmationPolicy(credit_at={"USDT": S.CONFIRMED})
    assert policy.credits(S.CONFIRMED, "usdttrc20")
    assert not policy.credits(S.CONFIRMED, "btc")


@pytest.mark.parametrize(
    ("credit_partial", "verdict", "credited"), [(False, "ignored", 0), (True, "credited", 1)]
)
def test_partially_paid_follows_policy(credit_partial: bool, verdict: str, credited: int) -> None:
    policy = ConfirmationPolicy(credit_partially_paid=credit_partial)
    decision = decide(
        PaymentState(payment_id="1"), ipn(S.PARTIALLY_PAID, "30", "usdttrc20"), policy
    )
    assert decision.verdict == verdict
    assert (decision.credit is not None) == bool(credited)
    if not credit_partial:
        assert decision.review_code == "partially_paid_not_credited"
    else:
        assert decision.credit is not None
        assert decision.credit.currency == "USDT"
        assert decision.credit.amount == Decimal("30")


def test_partially_paid_then_finished_credits_only_the_rest() -> None:
    policy = ConfirmationPolicy(credit_partially_paid=True)
    verdicts, _, credits = run([ipn(S.PARTIALLY_PAID, "0.001"), ipn(S.FINISHED, "0.0015")], policy)
    assert verdicts == ["credited", "credited"]
    assert [amount for _, amount in credits] == [Decimal("0.001"), Decimal("0.0005")]


@pytest.mark.parametrize("outcome", ["1.234e-7", "0.000000001"])
def test_over_precise_outcome_is_reviewed_not_rounded(outcome: str) -> None:
    decision = decide(PaymentState(payment_id="1"), ipn(S.FINISHED, outcome), FINISHED_ONLY)
    assert decision.verdict == "ignored"
    assert decision.credit is None
    assert decision.review_code == "amount_too_precise"
    assert decision.state is not None
    assert decision.state.status is S.FINISHED


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        (None, "missing_outcome"),
        ("0", "amount_not_positive"),
        ("-1", "amount_not_positive"),
        ("1e400", "amount_too_large"),
    ],
)
def test_unusable_outcomes_are_reviewed(outcome: str | None, code: str) -> None:
    decision = decide(PaymentState(payment_id="1"), ipn(S.FINISHED, outcome), FINISHED_ONLY)
    assert decision.credit is None
    assert decision.review_code == code


def test_unknown_outcome_currency_is_reviewed() -> None:
    decision = decide(PaymentState(payment_id="1"), ipn(S.FINISHED, "1", "doge"), FINISHED_ONLY)
    assert decision.credit is None
    assert decision.review_code == "unknown_currency"


def test_smaller_later_outcome_credits_nothing_and_is_reviewed() -> None:
    policy = ConfirmationPolicy(credit_at={"btc": S.CONFIRMED})
    verdicts, state, credits = run([ipn(S.CONFIRMED, "0.002"), ipn(S.FINISHED, "0.0015")], policy)
    assert verdicts == ["credited", "duplicate"]
    assert len(credits) == 1
    assert state.credited == Decimal("0.002")


@pytest.mark.parametrize("terminal", [S.FAILED, S.REFUNDED, S.EXPIRED])
def test_terminal_statuses_never_credit(terminal: PaymentStatus) -> None:
    verdicts, state, credits = run([ipn(S.WAITING), ipn(terminal), ipn(S.FINISHED)])
    assert verdicts == ["pending", "ignored", "ignored"]
    assert credits == []
    assert state.status is terminal


def test_refund_after_credit_is_flagged() -> None:
    state = run([ipn(S.FINISHED)])[1]
    decision = decide(state, ipn(S.REFUNDED), FINISHED_ONLY)
    assert decision.verdict == "ignored"
    assert decision.review_code == "status_after_credit"
    assert decision.credit is None


def test_policy_refuses_crediting_before_confirmation() -> None:
    with pytest.raises(ValueError, match="credited at"):
        ConfirmationPolicy(default_credit_at=S.WAITING)


def test_unknown_status_is_reviewed_and_changes_nothing() -> None:
    strange = Ipn("1", None, "wrong_asset_confirmed", "dep_1", "btc", "btc", "1", "1")
    decision = decide(PaymentState(payment_id="1"), strange, FINISHED_ONLY)
    assert (decision.verdict, decision.state, decision.credit) == ("ignored", None, None)
    assert decision.review_code == "unknown_status"


def test_approvals_of_a_payment_not_tied_to_its_order_credit_it_in_total_once() -> None:
    state = PaymentState(payment_id="77")
    first = approve_review(state, "rv_1", "BTC", Decimal("0.001"), bound=False)
    assert first.credit is not None
    assert first.state is not None
    assert (first.credit.reference_id, first.credit.amount) == ("nowpayments:77", Decimal("0.001"))
    assert approve_review(first.state, "rv_1", "BTC", Decimal("0.001"), bound=False).state is None
    later = approve_review(first.state, "rv_2", "BTC", Decimal("0.0015"), bound=False)
    assert later.credit is not None
    assert later.state is not None
    assert (later.credit.reference_id, later.credit.amount) == (
        "nowpayments:77:topup:0.0015",
        Decimal("0.0005"),
    )
    assert (later.state.credited, later.state.approved_reviews) == (
        Decimal("0.0015"),
        frozenset({"rv_1", "rv_2"}),
    )
    covered = approve_review(later.state, "rv_3", "BTC", Decimal("0.0015"), bound=False)
    assert (covered.verdict, covered.state, covered.review_code) == (
        "ignored",
        None,
        "already_credited",
    )
    other_coin = approve_review(later.state, "rv_4", "USDT", Decimal("100"), bound=False)
    assert (other_coin.verdict, other_coin.review_code) == ("ignored", "outcome_currency_changed")
    # An item of a payment tied to its order whose amount was credited is approved for nothing.
    bound = approve_review(later.state, "rv_5", "BTC", Decimal("0.0015"), bound=True)
    assert (bound.verdict, bound.credit) == ("duplicate", None)
