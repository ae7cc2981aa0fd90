"""The trade state machine: which (state, action, actor) is allowed, refused 403, or refused 409.

    pending_escrow ──lock applied──▶ escrowed ──mark_paid──▶ paid ──release──▶ releasing ──▶ completed
         │  └─lock rejected──▶ failed   │                    │  └dispute▶ disputed ─resolve buyer─┘
         │                              │                    │              └──resolve seller──┐
         └──cancel/expire──▶ cancelling ◀──cancel/expire─────┴──cancel (buyer)──────────────────┘
                                 └──unlock applied──▶ cancelled

Statuses only move forward. A status that follows the wallet (`escrowed`, `completed`,
`cancelled`, `failed`) is set only by the wallet's result. A cancel before the lock's result is
known is recorded (`cancelling` with the escrow not yet locked) and its unlock is sent once the
lock applied, so an unlock is never decided before its lock.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

ESCROW_TRANSACTION_TYPE: Final = "p2p_escrow"
RELEASE_TRANSACTION_TYPE: Final = "p2p_completed"
CANCEL_TRANSACTION_TYPE: Final = "p2p_cancelled"
TRANSACTION_TYPES: Final = frozenset(
    {ESCROW_TRANSACTION_TYPE, RELEASE_TRANSACTION_TYPE, CANCEL_TRANSACTION_TYPE}
)
TRADE_ID_PREFIX: Final = "p2p_"


class TradeStatus(StrEnum):
    PENDING_ESCROW = "pending_escrow"
    ESCROWED = "escrowed"
    PAID = "paid"
    DISPUTED = "disputed"
    RELEASING = "releasing"
    COMPLETED = "completed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"


# Statuses in which the wallet still has to answer: an action route answers 202 with them.
IN_FLIGHT: Final = frozenset(
    {TradeStatus.PENDING_ESCROW, TradeStatus.RELEASING, TradeStatus.CANCELLING}
)
FINISHED: Final = frozenset({TradeStatus.COMPLETED, TradeStatus.CANCELLED, TradeStatus.FAILED})
# Statuses the payment deadline applies to (not yet marked paid).
UNPAID: Final = frozenset({TradeStatus.PENDING_ESCROW, TradeStatus.ESCROWED})


class Action(StrEnum):
    MARK_PAID = "mark_paid"
    RELEASE = "release"
    CANCEL = "cancel"
    DISPUTE = "dispute"
    RESOLVE_BUYER = "resolve_buyer"
    RESOLVE_SELLER = "resolve_seller"
    EXPIRE = "expire"  # the payment deadline passed (only the service's clock does this)


class Actor(StrEnum):
    BUYER = "buyer"
    SELLER = "seller"
    ADMIN = "admin"  # an admin who is not a party of the trade
    OUTSIDER = "outsider"
    CLOCK = "clock"


def actor_of(user_id: str, is_admin: bool, buyer_id: str, seller_id: str) -> Actor:
    """A party acts as that party even when they are an admin (no admin resolves their own trade)."""
    if user_id == buyer_id:
        return Actor.BUYER
    if user_id == seller_id:
        return Actor.SELLER
    return Actor.ADMIN if is_admin else Actor.OUTSIDER


Command = Literal["transfer_locked", "unlock"]


@dataclass(frozen=True, slots=True)
class Move:
    """Allowed: one conditional update from the current status to `to`, recording `command`
    (None: nothing to send now; an early cancel's unlock waits for the lock's result)."""

    to: TradeStatus
    command: Command | None = None


@dataclass(frozen=True, slots=True)
class Repeat:
    """The action was already done (a double click): answer with the trade, change nothing."""


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: Literal["forbidden", "not_found", "conflict"]
    code: str


Verdict = Move | Repeat | Refusal

S = TradeStatus
A = Action

# Who each action belongs to.
_OWNERS: Final[Mapping[Action, frozenset[Actor]]] = {
    A.MARK_PAID: frozenset({Actor.BUYER}),
    A.RELEASE: frozenset({Actor.SELLER}),
    A.CANCEL: frozenset({Actor.BUYER}),
    A.DISPUTE: frozenset({Actor.BUYER, Actor.SELLER}),
    A.RESOLVE_BUYER: frozenset({Actor.ADMIN}),
    A.RESOLVE_SELLER: frozenset({Actor.ADMIN}),
    A.EXPIRE: frozenset({Actor.CLOCK}),
}

# The moves, by (status, action), for the action's owner.
_MOVES: Final[Mapping[tuple[TradeStatus, Action], Move]] = {
    (S.ESCROWED, A.MARK_PAID): Move(S.PAID),
    (S.PAID, A.RELEASE): Move(S.RELEASING, "transfer_locked"),
    (S.PAID, A.DISPUTE): Move(S.DISPUTED),
    (S.DISPUTED, A.RESOLVE_BUYER): Move(S.RELEASING, "transfer_locked"),
    (S.DISPUTED, A.RESOLVE_SELLER): Move(S.CANCELLING, "unlock"),
    (S.PENDING_ESCROW, A.CANCEL): Move(S.CANCELLING),
    (S.ESCROWED, A.CANCEL): Move(S.CANCELLING, "unlock"),
    (S.PAID, A.CANCEL): Move(S.CANCELLING, "unlock"),
    (S.PENDING_ESCROW, A.EXPIRE): Move(S.CANCELLING),
    (S.ESCROWED, A.EXPIRE): Move(S.CANCELLING, "unlock"),
}

# Where an action has already got the trade to (the same request again is a repeat).
_DONE: Final[Mapping[Action, frozenset[TradeStatus]]] = {
    A.MARK_PAID: frozenset({S.PAID}),
    A.RELEASE: frozenset({S.RELEASING, S.COMPLETED}),
    A.CANCEL: frozenset({S.CANCELLING, S.CANCELLED}),
    A.DISPUTE: frozenset({S.DISPUTED}),
    A.RESOLVE_BUYER: frozenset({S.RELEASING, S.COMPLETED}),
    A.RESOLVE_SELLER: frozenset({S.CANCELLING, S.CANCELLED}),
    A.EXPIRE: frozenset({S.CANCELLING, S.CANCELLED}),
}

# The 409 code of an owner's action the status does not allow.
_STATE_CODES: Final[Mapping[TradeStatus, str]] = {
    S.PENDING_ESCROW: "escrow_pending",
    S.ESCROWED: "not_paid",
    S.PAID: "already_paid",
    S.DISPUTED: "trade_disputed",
    S.RELEASING: "trade_releasing",
    S.COMPLETED: "trade_completed",
    S.CANCELLING: "trade_cancelling",
    S.CANCELLED: "trade_cancelled",
    S.FAILED: "trade_failed",
}
# Actions whose refusal code is fixed by the contract whatever the status.
_ACTION_CODES: Final[Mapping[Action, str]] = {
    A.RELEASE: "not_paid",
    A.DISPUTE: "not_paid",
    A.RESOLVE_BUYER: "not_disputed",
    A.RESOLVE_SELLER: "not_disputed",
}


def _not_owner(action: Action, actor: Actor) -> Refusal:
    if action in (A.RESOLVE_BUYER, A.RESOLVE_SELLER):
        if actor in (Actor.BUYER, Actor.SELLER):
            return Refusal("forbidden", "party_cannot_resolve")
        return Refusal("forbidden", "admin_required")  # an admin route: 403 for non-admins
    if actor is Actor.OUTSIDER:
        # An outsider does not learn that the trade exists.
        return Refusal("not_found", "trade_not_found")
    if action is A.EXPIRE:
        return Refusal("forbidden", "clock_only")
    if action is A.CANCEL and actor is Actor.SELLER:
        return Refusal("forbidden", "seller_cannot_cancel")
    if actor in (Actor.ADMIN, Actor.CLOCK):
        return Refusal("forbidden", "not_a_party")
    return Refusal("forbidden", "not_the_buyer" if actor is Actor.SELLER else "not_the_seller")


def _decide(status: TradeStatus, action: Action, actor: Actor) -> Verdict:
    if actor not in _OWNERS[action]:
        return _not_owner(action, actor)
    move = _MOVES.get((status, action))
    if move is not None:
        return move
    if status in _DONE[action]:
        return Repeat()
    if action is A.EXPIRE:
        # Marked paid (or further): a timer never cancels it.
        return Refusal("conflict", "not_expirable")
    return Refusal("conflict", _ACTION_CODES.get(action, _STATE_CODES[status]))


# Every (status, action, actor) and its verdict: the whole state machine, tested cell by cell.
TABLE: Final[Mapping[tuple[TradeStatus, Action, Actor], Verdict]] = {
    (status, action, actor): _decide(status, action, actor)
    for status, action, actor in itertools.product(TradeStatus, Action, Actor)
}


# What a resolve records on the trade (`resolution`): the repeat of a resolve is only a repeat when
# the trade was resolved that way.
RESOLUTIONS: Final[Mapping[Action, str]] = {A.RESOLVE_BUYER: "buyer", A.RESOLVE_SELLER: "seller"}


def decide(
    status: TradeStatus, action: Action, actor: Actor, resolution: str | None = None
) -> Verdict:
    """The table's verdict; `resolution` is the trade's recorded dispute resolution, if any."""
    verdict = TABLE[(status, action, actor)]
    if isinstance(verdict, Repeat) and action in RESOLUTIONS and resolution != RESOLUTIONS[action]:
        # Released by its seller or cancelled by its buyer, never disputed: "resolved" would be a
        # 200 for a decision nobody made.
        return Refusal("conflict", "not_disputed")
    return verdict


# --- the wallet's results ------------------------------------------------------------------------

ResultKind = Literal["lock", "transfer_locked", "unlock"]
Outcome = Literal["applied", "rejected"]


@dataclass(frozen=True, slots=True)
class ResultMove:
    """How a wallet result moves a trade: required status (and whether the escrow was known
    locked), the status after, whether the escrow is now locked, and a command to send."""

    from_status: TradeStatus
    escrow_locked: bool
    to: TradeStatus
    locks_escrow: bool = False
    command: Command | None = None


# (the command a result answers, its outcome) → the moves it may make (the first that matches).
RESULT_MOVES: Final[Mapping[tuple[ResultKind, Outcome], tuple[ResultMove, ...]]] = {
    ("lock", "applied"): (
        ResultMove(S.PENDING_ESCROW, False, S.ESCROWED, locks_escrow=True),
        # Cancelled while the lock was in flight: now that it applied, send the unlock.
        ResultMove(S.CANCELLING, False, S.CANCELLING, locks_escrow=True, command="unlock"),
    ),
    ("lock", "rejected"): (
        ResultMove(S.PENDING_ESCROW, False, S.FAILED),
        ResultMove(S.CANCELLING, False, S.FAILED),
    ),
    ("transfer_locked", "applied"): (ResultMove(S.RELEASING, True, S.COMPLETED),),
    ("unlock", "applied"): (ResultMove(S.CANCELLING, True, S.CANCELLED),),
}


def result_moves(kind: ResultKind, outcome: Outcome) -> tuple[ResultMove, ...]:
    """The moves a result may make; empty for a refused release or unlock (ops must look)."""
    return RESULT_MOVES.get((kind, outcome), ())


def outcome_of(status: str, reason: str | None, original_status: str | None = None) -> Outcome:
    """A wallet result as applied or rejected; a duplicate repeats its first outcome."""
    if status == "duplicate":
        if original_status is not None:
            return "rejected" if original_status == "rejected" else "applied"
        return "rejected" if reason else "applied"
    return "rejected" if status == "rejected" else "applied"
