"""The trade state machine, cell by cell: every (status, action, actor) is a move, a repeat, a 403
(404 for an outsider) or a 409 with a stable code. The expectations are written out here as the
contract reads, independently of how the domain builds its table."""

from __future__ import annotations

import itertools

import pytest

from p2p.domain.trades import (
    TABLE,
    Action,
    Actor,
    Move,
    Refusal,
    Repeat,
    TradeStatus,
    Verdict,
    actor_of,
    decide,
    result_moves,
)

S, A, R = TradeStatus, Action, Actor

MOVES: dict[tuple[TradeStatus, Action, Actor], Move] = {
    (S.ESCROWED, A.MARK_PAID, R.BUYER): Move(S.PAID),
    (S.PAID, A.RELEASE, R.SELLER): Move(S.RELEASING, "transfer_locked"),
    (S.PAID, A.DISPUTE, R.BUYER): Move(S.DISPUTED),
    (S.PAID, A.DISPUTE, R.SELLER): Move(S.DISPUTED),
    (S.DISPUTED, A.RESOLVE_BUYER, R.ADMIN): Move(S.RELEASING, "transfer_locked"),
    (S.DISPUTED, A.RESOLVE_SELLER, R.ADMIN): Move(S.CANCELLING, "unlock"),
    # Before the lock's result is known nothing is unlocked yet: the unlock waits for it.
    (S.PENDING_ESCROW, A.CANCEL, R.BUYER): Move(S.CANCELLING, None),
    (S.ESCROWED, A.CANCEL, R.BUYER): Move(S.CANCELLING, "unlock"),
    (S.PAID, A.CANCEL, R.BUYER): Move(S.CANCELLING, "unlock"),
    (S.PENDING_ESCROW, A.EXPIRE, R.CLOCK): Move(S.CANCELLING, None),
    (S.ESCROWED, A.EXPIRE, R.CLOCK): Move(S.CANCELLING, "unlock"),
}

REPEATS: set[tuple[TradeStatus, Action, Actor]] = {
    (S.PAID, A.MARK_PAID, R.BUYER),
    (S.RELEASING, A.RELEASE, R.SELLER),
    (S.COMPLETED, A.RELEASE, R.SELLER),
    (S.CANCELLING, A.CANCEL, R.BUYER),
    (S.CANCELLED, A.CANCEL, R.BUYER),
    (S.DISPUTED, A.DISPUTE, R.BUYER),
    (S.DISPUTED, A.DISPUTE, R.SELLER),
    (S.RELEASING, A.RESOLVE_BUYER, R.ADMIN),
    (S.COMPLETED, A.RESOLVE_BUYER, R.ADMIN),
    (S.CANCELLING, A.RESOLVE_SELLER, R.ADMIN),
    (S.CANCELLED, A.RESOLVE_SELLER, R.ADMIN),
    (S.CANCELLING, A.EXPIRE, R.CLOCK),
    (S.CANCELLED, A.EXPIRE, R.CLOCK),
}

# Not the action's owner: refused whatever the status.
FORBIDDEN: dict[Action, dict[Actor, str]] = {
    A.MARK_PAID: {R.SELLER: "not_the_buyer", R.ADMIN: "not_a_party", R.CLOCK: "not_a_party"},
    A.RELEASE: {R.BUYER: "not_the_seller", R.ADMIN: "not_a_party", R.CLOCK: "not_a_party"},
    A.CANCEL: {R.SELLER: "seller_cannot_cancel", R.ADMIN: "not_a_party", R.CLOCK: "not_a_party"},
    A.DISPUTE: {R.ADMIN: "not_a_party", R.CLOCK: "not_a_party"},
    A.RESOLVE_BUYER: {
        R.BUYER: "party_cannot_resolve",
        R.SELLER: "party_cannot_resolve",
        R.CLOCK: "admin_required",
        R.OUTSIDER: "admin_required",
    },
    A.RESOLVE_SELLER: {
        R.BUYER: "party_cannot_resolve",
        R.SELLER: "party_cannot_resolve",
        R.CLOCK: "admin_required",
        R.OUTSIDER: "admin_required",
    },
    A.EXPIRE: {R.BUYER: "clock_only", R.SELLER: "clock_only", R.ADMIN: "clock_only"},
}

# The owner acting in a status that does not allow it: 409.
BY_STATUS = {
    S.PENDING_ESCROW: "escrow_pending",
    S.DISPUTED: "trade_disputed",
    S.RELEASING: "trade_releasing",
    S.COMPLETED: "trade_completed",
    S.CANCELLING: "trade_cancelling",
    S.CANCELLED: "trade_cancelled",
    S.FAILED: "trade_failed",
}
CONFLICT_CODE = {
    A.MARK_PAID: BY_STATUS.__getitem__,
    A.CANCEL: BY_STATUS.__getitem__,
    A.RELEASE: lambda _: "not_paid",  # the contract: "only when paid, else 409 not_paid"
    A.DISPUTE: lambda _: "not_paid",
    A.RESOLVE_BUYER: lambda _: "not_disputed",
    A.RESOLVE_SELLER: lambda _: "not_disputed",
    A.EXPIRE: lambda _: "not_expirable",  # marked paid: a timer never cancels it
}


def expected(status: TradeStatus, action: Action, actor: Actor) -> Verdict:
    cell = (status, action, actor)
    if cell in MOVES:
        return MOVES[cell]
    if cell in REPEATS:
        return Repeat()
    if actor in FORBIDDEN[action]:
        return Refusal("forbidden", FORBIDDEN[action][actor])
    if actor is R.OUTSIDER:
        return Refusal("not_found", "trade_not_found")
    return Refusal("conflict", CONFLICT_CODE[action](status))


CELLS = list(itertools.product(TradeStatus, Action, Actor))


def test_the_table_covers_every_cell() -> None:
    assert len(CELLS) == 9 * 7 * 5
    assert set(TABLE) == set(CELLS)


RESOLVED_AS = {A.RESOLVE_BUYER: "buyer", A.RESOLVE_SELLER: "seller"}


@pytest.mark.parametrize(("status", "action", "actor"), CELLS, ids=lambda v: str(v))
def test_cell(status: TradeStatus, action: Action, actor: Actor) -> None:
    # As on a trade that a resolve of this kind got to its status.
    assert decide(status, action, actor, RESOLVED_AS.get(action)) == expected(status, action, actor)


RESOLVE_REPEATS = [cell for cell in sorted(REPEATS) if cell[1] in RESOLVED_AS]


@pytest.mark.parametrize(("status", "action", "actor"), RESOLVE_REPEATS, ids=lambda v: str(v))
def test_a_resolve_repeats_only_the_resolution_that_was_made(
    status: TradeStatus, action: Action, actor: Actor
) -> None:
    # Released by the seller or cancelled by the buyer (no resolution), or resolved the other way.
    other = {"buyer": "seller", "seller": "buyer"}[RESOLVED_AS[action]]
    for resolution in (None, other):
        assert decide(status, action, actor, resolution) == Refusal("conflict", "not_disputed")
    assert decide(status, action, actor, RESOLVED_AS[action]) == Repeat()


def test_every_resolve_repeat_is_checked() -> None:
    assert len(RESOLVE_REPEATS) == 4


def test_finished_trades_never_move() -> None:
    for status in (S.COMPLETED, S.CANCELLED, S.FAILED):
        for action, actor in itertools.product(Action, Actor):
            assert not isinstance(decide(status, action, actor), Move)


def test_statuses_only_move_forward() -> None:
    order = [
        S.PENDING_ESCROW,
        S.ESCROWED,
        S.PAID,
        S.DISPUTED,
        S.RELEASING,
        S.CANCELLING,
        S.COMPLETED,
        S.CANCELLED,
        S.FAILED,
    ]
    for (status, _, _), verdict in TABLE.items():
        if isinstance(verdict, Move):
            assert order.index(verdict.to) > order.index(status)
    for kind in ("lock", "transfer_locked", "unlock"):
        for outcome in ("applied", "rejected"):
            for move in result_moves(kind, outcome):  # type: ignore[arg-type]
                assert order.index(move.to) >= order.index(move.from_status)


def test_release_and_cancel_never_both_leave_one_status() -> None:
    # From any status at most one of "pay the buyer" and "give the seller back" is possible,
    # and each leads to a status from which the other is refused.
    for status in TradeStatus:
        paying = [
            decide(status, a, r) for a, r in ((A.RELEASE, R.SELLER), (A.RESOLVE_BUYER, R.ADMIN))
        ]
        refunding = [
            decide(status, a, r)
            for a, r in ((A.CANCEL, R.BUYER), (A.RESOLVE_SELLER, R.ADMIN), (A.EXPIRE, R.CLOCK))
        ]
        for pay in (v for v in paying if isinstance(v, Move)):
            for a, r in ((A.CANCEL, R.BUYER), (A.RESOLVE_SELLER, R.ADMIN), (A.EXPIRE, R.CLOCK)):
                assert not isinstance(decide(pay.to, a, r), Move)
        for refund in (v for v in refunding if isinstance(v, Move)):
            for a, r in ((A.RELEASE, R.SELLER), (A.RESOLVE_BUYER, R.ADMIN)):
                assert not isinstance(decide(refund.to, a, r), Move)


def test_lock_results() -> None:
    [escrowed, late] = result_moves("lock", "applied")
    assert (escrowed.from_status, escrowed.to, escrowed.command) == (
        S.PENDING_ESCROW,
        S.ESCROWED,
        None,
    )
    # A cancel recorded while the lock was in flight sends its unlock only now.
    assert (late.from_status, late.escrow_locked, late.to, late.command) == (
        S.CANCELLING,
        False,
        S.CANCELLING,
        "unlock",
    )
    assert {m.to for m in result_moves("lock", "rejected")} == {S.FAILED}
    assert result_moves("unlock", "rejected") == ()
    assert result_moves("transfer_locked", "rejected") == ()


def test_actor_of() -> None:
    assert actor_of("b", False, "b", "s") is R.BUYER
    assert actor_of("s", True, "b", "s") is R.SELLER  # an admin who is a party acts as the party
    assert actor_of("ops", True, "b", "s") is R.ADMIN
    assert actor_of("eve", False, "b", "s") is R.OUTSIDER
