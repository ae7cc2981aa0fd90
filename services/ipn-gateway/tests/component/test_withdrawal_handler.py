"""Withdrawals over in-memory adapters, with a fake wallet answering the commands."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from ipn_gateway.adapters.memory import MemoryWithdrawals, RecordingPublisher
from ipn_gateway.application.withdrawals import WithdrawalHandler
from ipn_gateway.domain.errors import Conflict, Forbidden, NotFound, WithdrawalRefused
from ipn_gateway.domain.withdrawals import WithdrawalPolicy, WithdrawalStatus
from ipn_gateway.entrypoints.http import include_routes
from shared.http import create_app, make_token
from shared.http.idempotency import MemoryIdempotencyStore
from shared.messaging import LockCommand, ReleaseLockedCommand, UnlockCommand, WalletCommand

BTC_ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
JWT_SECRET = "component-jwt-secret-of-at-least-32-bytes"
NOW = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
POLICY = WithdrawalPolicy(
    fees={"BTC": Decimal("0.0001"), "USDT": Decimal("1")},
    max_per_request={"BTC": Decimal("2")},
    daily_limit={"BTC": Decimal("3")},
    max_open_per_user=3,
)


@pytest.fixture
def setup(fake_wallet: Any) -> tuple[WithdrawalHandler, RecordingPublisher, Any]:
    publisher = RecordingPublisher(answer=fake_wallet.apply)
    handler = WithdrawalHandler(MemoryWithdrawals(), publisher, POLICY, clock=lambda: NOW)
    fake_wallet.fund("alice", "BTC", "1")
    return handler, publisher, fake_wallet


async def settle(handler: WithdrawalHandler, publisher: RecordingPublisher, wallet: Any) -> None:
    """Deliver the wallet's results of what was published with wait=False (as the consumer would)."""
    for command in publisher.published:
        await handler.apply_result(wallet.apply(command))


def refuse_releases(publisher: RecordingPublisher, wallet: Any) -> Callable[[WalletCommand], Any]:
    """From now on the wallet refuses every release (its hold emptied behind our back, say) and
    answers the other commands as before; returns how it answered before, to put it back."""
    real_apply: Callable[[WalletCommand], Any] = wallet.apply
    publisher.answer = lambda command: (
        wallet._result(command, "rejected", "insufficient_locked_funds")
        if isinstance(command, ReleaseLockedCommand)
        else real_apply(command)
    )
    return real_apply


async def test_request_locks_amount_plus_fee(setup: Any) -> None:
    handler, publisher, wallet = setup
    withdrawal = await handler.request("alice", "btc", "0.004", BTC_ADDRESS)
    assert withdrawal.status is WithdrawalStatus.PENDING
    assert (withdrawal.amount, withdrawal.fee) == (Decimal("0.004"), Decimal("0.0001"))
    [lock] = publisher.published
    assert isinstance(lock, LockCommand)
    assert (lock.amount, lock.reference_id, lock.transaction_type) == (
        Decimal("0.0041"),
        f"withdrawal:{withdrawal.withdrawal_id}",
        "withdrawal_lock",
    )
    await settle(handler, publisher, wallet)
    await settle(handler, publisher, wallet)  # redelivered results change nothing
    assert (await handler._get(withdrawal.withdrawal_id)).status is WithdrawalStatus.LOCKED
    assert wallet.balance("alice", "BTC") == (Decimal("0.9959"), Decimal("0.0041"))


async def test_approve_releases_with_fee_and_reject_unlocks(setup: Any) -> None:
    handler, publisher, wallet = setup
    first = await handler.request("alice", "BTC", "0.004", BTC_ADDRESS)
    second = await handler.request("alice", "BTC", "0.5", BTC_ADDRESS)
    await settle(handler, publisher, wallet)
    approved = await handler.approve("admin", first.withdrawal_id)
    assert (approved.status, approved.decision, approved.decided_by) == (
        WithdrawalStatus.APPROVED,
        "approve",
        "admin",
    )
    release = publisher.published[-1]
    assert isinstance(release, ReleaseLockedCommand)
    assert (release.amount, release.fee, release.transaction_type) == (
        Decimal("0.0041"),
        Decimal("0.0001"),
        "withdrawal_release",
    )
    rejected = await handler.reject("admin", second.withdrawal_id, "address on a sanctions list")
    assert (rejected.status, rejected.reason) == (
        WithdrawalStatus.REJECTED,
        "address on a sanctions list",
    )
    assert isinstance(publisher.published[-1], UnlockCommand)
    assert publisher.published[-1].amount == Decimal("0.5001")
    assert wallet.balance("alice", "BTC") == (Decimal("0.9959"), Decimal(0))
    with pytest.raises(Conflict) as again:
        await handler.reject("admin", first.withdrawal_id, "too late")
    assert again.value.code == "not_locked"


async def test_admin_cannot_approve_own_withdrawal(setup: Any) -> None:
    handler, publisher, wallet = setup
    wallet.fund("boss", "BTC", "1")
    mine = await handler.request("boss", "BTC", "0.1", BTC_ADDRESS)
    await settle(handler, publisher, wallet)
    with pytest.raises(Forbidden) as refused:
        await handler.approve("boss", mine.withdrawal_id)
    assert refused.value.code == "self_approval_forbidden"


async def test_insufficient_funds_fails_with_the_reason(setup: Any) -> None:
    handler, publisher, wallet = setup
    withdrawal = await handler.request("alice", "BTC", "1", BTC_ADDRESS)  # 1 + fee > 1
    await settle(handler, publisher, wallet)
    failed = await handler._get(withdrawal.withdrawal_id)
    assert (failed.status, failed.reason) == (WithdrawalStatus.FAILED, "insufficient_funds")
    with pytest.raises(Conflict):
        await handler.approve("admin", withdrawal.withdrawal_id)


async def test_one_decision_only_when_admins_race(setup: Any) -> None:
    handler, publisher, wallet = setup
    withdrawal = await handler.request("alice", "BTC", "0.1", BTC_ADDRESS)
    await settle(handler, publisher, wallet)
    publisher.answer = None  # the wallet is slow: both decisions arrive while it is locked
    await handler.approve("admin1", withdrawal.withdrawal_id)
    with pytest.raises(Conflict) as second:
        await handler.reject("admin2", withdrawal.withdrawal_id, "no")
    assert second.value.code == "already_decided"
    assert [type(c).__name__ for c in publisher.published] == [
        "LockCommand",
        "ReleaseLockedCommand",
    ]


@pytest.mark.parametrize(
    ("currency", "amount", "address", "code"),
    [
        ("BTC", "0", BTC_ADDRESS, "amount_not_positive"),
        ("BTC", "-1", BTC_ADDRESS, "amount_not_positive"),
        ("BTC", "0.000000001", BTC_ADDRESS, "amount_too_precise"),
        ("BTC", "NaN", BTC_ADDRESS, "amount_not_a_number"),
        ("BTC", "Infinity", BTC_ADDRESS, "amount_infinite"),
        ("BTC", "1e400", BTC_ADDRESS, "amount_too_large"),
        ("BTC", 0.1, BTC_ADDRESS, "amount_not_a_string"),
        ("BTC", "3", BTC_ADDRESS, "amount_above_limit"),
        ("DOGE", "1", BTC_ADDRESS, "unknown_currency"),
        ("GBP", "1", BTC_ADDRESS, "currency_not_withdrawable"),
        ("BTC", "0.1", "not an address", "invalid_address"),
        ("BTC", "0.1", BTC_ADDRESS + "\n", "invalid_address"),
        ("USDT", "5", BTC_ADDRESS, "invalid_address"),
    ],
)
async def test_bad_requests_are_refused_with_a_code(
    setup: Any, currency: str, amount: object, address: str, code: str
) -> None:
    handler, publisher, _ = setup
    with pytest.raises(WithdrawalRefused) as refused:
        await handler.request("alice", currency, amount, address)
    assert refused.value.code == code
    assert publisher.published == []


async def test_per_user_limits(setup: Any) -> None:
    handler, _, _ = setup
    for _ in range(3):
        await handler.request("alice", "BTC", "0.9", BTC_ADDRESS)
    with pytest.raises(WithdrawalRefused) as too_many:
        await handler.request("alice", "BTC", "0.1", BTC_ADDRESS)
    assert too_many.value.code == "too_many_open_withdrawals"
    with pytest.raises(WithdrawalRefused) as per_request:
        await handler.request("bob", "BTC", "2", BTC_ADDRESS)  # 2.0001 with the fee
    assert per_request.value.code == "amount_above_limit"
    await handler.request("bob", "BTC", "1.9999", BTC_ADDRESS)  # 2 with the fee
    # The fees count: 2 + 1 + 0.0001 is over the daily 3; 2 + 0.9999 + 0.0001 is not.
    with pytest.raises(WithdrawalRefused) as daily:
        await handler.request("bob", "BTC", "1", BTC_ADDRESS)
    assert daily.value.code == "daily_limit_exceeded"
    await handler.request("bob", "BTC", "0.9999", BTC_ADDRESS)


@pytest.mark.parametrize(
    ("currency", "good", "mistyped"),
    [
        # one character changed: the pattern still fits, the checksum does not
        ("BTC", BTC_ADDRESS, BTC_ADDRESS[:-1] + "p"),
        ("BTC", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3"),
        (
            "BTC",
            "bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297",
            "bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3296",
        ),
        ("USDT", "TJRabPrwbZy45sbavfcjinPJC18kjpRTv8", "TJRabPrwbZy45sbavfcjinPJC18kjpRTv9"),
        (
            "USDT",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
        ),
    ],
)
async def test_a_mistyped_address_is_refused_before_anything_is_locked(
    setup: Any, currency: str, good: str, mistyped: str
) -> None:
    handler, publisher, wallet = setup
    wallet.fund("alice", "USDT", "100")
    with pytest.raises(WithdrawalRefused) as refused:
        await handler.request("alice", currency, "0.1", mistyped)
    assert refused.value.code == "invalid_address"
    assert publisher.published == []
    accepted = await handler.request("alice", currency, "0.1", good)
    assert accepted.address == good


async def test_a_release_the_wallet_refuses_leaves_the_withdrawal_actionable(setup: Any) -> None:
    handler, publisher, wallet = setup
    withdrawal = await handler.request("alice", "BTC", "0.1", BTC_ADDRESS)
    await settle(handler, publisher, wallet)
    # The wallet refuses the release once (its hold was emptied behind our back, say).
    real_apply = refuse_releases(publisher, wallet)
    refused = await handler.approve("admin", withdrawal.withdrawal_id)
    assert (refused.status, refused.decision) == (WithdrawalStatus.LOCKED, None)
    assert refused.reason == "release_locked_rejected: insufficient_locked_funds"
    # An admin can act on it again: a new decision, under a reference of its own, on the same hold.
    publisher.answer = real_apply
    rejected = await handler.reject("admin", withdrawal.withdrawal_id, "address under review")
    assert rejected.status is WithdrawalStatus.REJECTED
    release, unlock = publisher.published[-2:]
    assert isinstance(unlock, UnlockCommand)
    assert (release.reference_id, unlock.reference_id, unlock.hold_id) == (
        f"withdrawal:{withdrawal.withdrawal_id}",
        f"withdrawal:{withdrawal.withdrawal_id}:attempt:2",
        f"withdrawal:{withdrawal.withdrawal_id}",
    )
    assert wallet.balance("alice", "BTC") == (Decimal("1"), Decimal("0"))
    # The refused release's result redelivered late reopens nothing.
    stale = wallet._result(release, "rejected", "insufficient_locked_funds")
    assert (await handler.apply_result(stale)).status is WithdrawalStatus.REJECTED  # type: ignore[union-attr]


async def test_an_approval_after_a_refused_release_does_not_keep_the_refusal(setup: Any) -> None:
    """The refusal the withdrawal was reopened with was its reason once approved, and stayed."""
    handler, publisher, wallet = setup
    withdrawal = await handler.request("alice", "BTC", "0.1", BTC_ADDRESS)
    await settle(handler, publisher, wallet)
    real_apply = refuse_releases(publisher, wallet)
    refused = await handler.approve("admin", withdrawal.withdrawal_id)
    assert refused.reason == "release_locked_rejected: insufficient_locked_funds"
    publisher.answer = real_apply
    approved = await handler.approve("admin", withdrawal.withdrawal_id)
    assert (approved.status, approved.decision, approved.reason) == (
        WithdrawalStatus.APPROVED,
        "approve",
        None,
    )
    assert wallet.balance("alice", "BTC") == (Decimal("0.8999"), Decimal("0"))


async def test_admins_page_through_withdrawals_by_status(setup: Any) -> None:
    handler, publisher, wallet = setup
    wallet.fund("bob", "BTC", "1")
    made = []
    for user in ("alice", "bob", "alice"):
        made.append(await handler.request(user, "BTC", "0.01", BTC_ADDRESS))
    await settle(handler, publisher, wallet)
    await handler.reject("admin", made[1].withdrawal_id, "no")
    first = await handler.page("admin", True, status="locked", limit=1)
    second = await handler.page("admin", True, status="locked", limit=1, cursor=first.next_cursor)
    assert second.next_cursor is None
    assert {w.withdrawal_id for w in (*first.items, *second.items)} == {
        made[0].withdrawal_id,
        made[2].withdrawal_id,
    }
    rejected = await handler.page("admin", True, status="rejected")
    assert [w.withdrawal_id for w in rejected.items] == [made[1].withdrawal_id]
    own = await handler.page("bob", False)
    assert [w.user_id for w in own.items] == ["bob"]
    for bad in ({"status": "nope"}, {"cursor": "not-a-cursor"}, {"limit": 0}):
        with pytest.raises(WithdrawalRefused):
            await handler.page("admin", True, **bad)  # type: ignore[arg-type]


async def test_the_list_takes_its_query_parameters_as_the_other_lists_do(setup: Any) -> None:
    """Left empty (`?status=&limit=&cursor=`, as the API's description writes it) a parameter is
    absent, and an unknown one is 422 validation_error, as on the wallet's, spot and P2P lists
    (empty ones answered 422, unknown ones were ignored)."""
    handler, publisher, wallet = setup
    made = [await handler.request("alice", "BTC", "0.01", BTC_ADDRESS) for _ in range(2)]
    await settle(handler, publisher, wallet)
    app = create_app(title="ipn-gateway", auth_secret=JWT_SECRET, ready=_ready)
    handlers = SimpleNamespace(
        withdrawals=handler, idempotency=MemoryIdempotencyStore(), trusted_proxies=()
    )
    include_routes(app, handlers)  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {make_token(JWT_SECRET, 'alice', ())}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:

        async def listed(query: str) -> tuple[int, Any]:
            answer = await client.get(f"/api/withdrawals{query}", headers=headers)
            return answer.status_code, answer.json()

        everything = {w.withdrawal_id for w in made}
        for query in ("?status=&limit=&cursor=", "?status=", "?limit=", "?cursor=", ""):
            status, page = await listed(query)
            assert status == 200, (query, page)
            assert ({w["withdrawal_id"] for w in page["items"]}, page["next_cursor"]) == (
                everything,
                None,
            )
        for query in ("?page=2", "?status=locked&user_id=bob", "?sort=", "?limit=1&offset=1"):
            status, refused = await listed(query)
            assert (status, refused["error"]["code"]) == (422, "validation_error"), query
        # The parameters given still do what they did.
        status, first = await listed("?status=locked&limit=1&cursor=")
        assert (status, len(first["items"])) == (200, 1)
        assert first["next_cursor"] is not None
        for query, code in (
            ("?status=nope", (400, "invalid_status")),
            ("?cursor=nope", (400, "invalid_cursor")),
            ("?limit=0", (422, "validation_error")),
            ("?limit=201", (422, "validation_error")),
            ("?limit=two", (422, "validation_error")),
            (f"?cursor={'c' * 201}", (422, "validation_error")),
        ):
            status, refused = await listed(query)
            assert (status, refused["error"]["code"]) == code, query


async def _ready() -> bool:
    return True


async def test_unknown_withdrawal(setup: Any) -> None:
    handler, _, _ = setup
    with pytest.raises(NotFound):
        await handler.approve("admin", "wd_missing")


async def test_a_decision_on_a_withdrawal_whose_lock_is_in_flight_waits_for_it(
    setup: Any,
) -> None:
    """The wallet may show the lock before its result reaches the gateway: an admin approving
    then is answered once the lock lands, not refused not_locked."""
    handler, publisher, wallet = setup
    withdrawal = await handler.request("alice", "BTC", "0.004", BTC_ADDRESS)
    approving = asyncio.create_task(handler.approve("admin", withdrawal.withdrawal_id))
    await asyncio.sleep(0.2)
    assert not approving.done(), "the decision did not wait for the lock in flight"
    await settle(handler, publisher, wallet)  # the lock's result arrives
    approved = await asyncio.wait_for(approving, 5)
    assert approved.status is WithdrawalStatus.APPROVED
    assert wallet.balance("alice", "BTC") == (Decimal("0.9959"), Decimal(0))


async def test_a_decision_on_a_lock_that_never_lands_is_refused_after_the_wait(
    fake_wallet: Any,
) -> None:
    publisher = RecordingPublisher(answer=fake_wallet.apply)
    handler = WithdrawalHandler(
        MemoryWithdrawals(), publisher, POLICY, clock=lambda: NOW, decision_wait_seconds=0.3
    )
    fake_wallet.fund("alice", "BTC", "1")
    withdrawal = await handler.request("alice", "BTC", "0.004", BTC_ADDRESS)
    with pytest.raises(Conflict) as refused:
        await handler.approve("admin", withdrawal.withdrawal_id)
    assert refused.value.code == "not_locked"
    assert fake_wallet.balance("alice", "BTC") == (Decimal("1"), Decimal(0))


async def test_a_result_that_only_names_the_withdrawal_changes_nothing(setup: Any) -> None:
    """Identity comes from the withdrawal's own outbox: a refusal under its reference of a command
    it never sent (another producer's, or a refusal echoing a malformed message) neither fails
    the withdrawal nor strands the amount its real lock then locks."""
    handler, publisher, wallet = setup
    withdrawal = await handler.request("alice", "BTC", "0.004", BTC_ADDRESS)
    [lock] = publisher.published
    refusal = wallet._result(lock, "rejected", "insufficient_funds")
    for forged in (
        refusal.model_copy(update={"command_id": "another-producers-command"}),
        refusal.model_copy(update={"user_id": "mallory"}),
        refusal.model_copy(update={"type": "unlock"}),
    ):
        after = await handler.apply_result(forged)
        assert after is not None
        assert after.status is WithdrawalStatus.PENDING, forged
    await settle(handler, publisher, wallet)
    assert (await handler._get(withdrawal.withdrawal_id)).status is WithdrawalStatus.LOCKED
    assert wallet.balance("alice", "BTC") == (Decimal("0.9959"), Decimal("0.0041"))


async def test_a_withdrawal_named_by_a_key_locks_once(setup: Any) -> None:
    """A request that runs again under its Idempotency-Key's name (a retry that took a stale claim
    over, or the key used after its 24 hours) answers the withdrawal made the first time, even
    with the user's open withdrawals at the limit, and locks nothing more; another amount under
    the name is refused."""
    handler, publisher, wallet = setup
    first = await handler.request("alice", "BTC", "0.004", BTC_ADDRESS, "named-1")
    for _ in range(POLICY.max_open_per_user - 1):
        await handler.request("alice", "BTC", "0.001", BTC_ADDRESS)
    again = await handler.request("alice", "btc", "0.0040", BTC_ADDRESS, "named-1")
    assert again.withdrawal_id == first.withdrawal_id
    with pytest.raises(Conflict) as refused:
        await handler.request("alice", "BTC", "0.005", BTC_ADDRESS, "named-1")
    assert refused.value.code == "idempotency_conflict"
    with pytest.raises(WithdrawalRefused):  # the limit still holds for a new withdrawal
        await handler.request("alice", "BTC", "0.004", BTC_ADDRESS, "named-2")
    await settle(handler, publisher, wallet)
    locks = [c for c in publisher.published if isinstance(c, LockCommand)]
    assert len(locks) == POLICY.max_open_per_user
    # 0.004 + 0.0001 fee, and twice 0.001 + 0.0001
    assert wallet.balance("alice", "BTC") == (Decimal("0.9937"), Decimal("0.0063"))


class Clock:
    """A clock the test moves on."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def asking(fake_wallet: Any) -> tuple[WithdrawalHandler, RecordingPublisher, Any, Clock]:
    """As `setup`, with a clock the test moves on."""
    clock = Clock()
    publisher = RecordingPublisher(answer=fake_wallet.apply)
    handler = WithdrawalHandler(MemoryWithdrawals(), publisher, POLICY, clock=clock)
    fake_wallet.fund("alice", "BTC", "1")
    return handler, publisher, fake_wallet, clock


async def answer_again(handler: WithdrawalHandler, wallet: Any, command: WalletCommand) -> Any:
    """The wallet's answer to a command sent again, delivered: a duplicate with the first outcome."""
    answer = wallet.apply(command)
    assert answer.status == "duplicate"
    return await handler.apply_result(answer)


async def test_a_withdrawal_whose_lock_result_was_lost_is_asked_about_again(asking: Any) -> None:
    """The wallet applied the lock but its result never reached the gateway (lost, or
    dead-lettered after failing here): once the withdrawal has waited `ask_again_after` without
    moving, the same lock is sent again, the wallet answers with its first outcome, and the
    withdrawal moves on as that outcome says. Nothing is locked twice."""
    handler, publisher, wallet, clock = asking
    withdrawal = await handler.request("alice", "BTC", "0.004", BTC_ADDRESS)
    [lock] = publisher.published
    wallet.apply(lock)  # applied; its result is lost on the way back

    clock.advance(handler.ask_again_after - timedelta(seconds=1))
    assert await handler.ask_again() == 0  # not yet: the answer may still be on its way
    clock.advance(timedelta(seconds=2))
    assert await handler.ask_again() == 1
    resent = publisher.published[-1]
    assert (resent.command_id, resent) == (lock.command_id, lock)

    moved = await answer_again(handler, wallet, resent)
    assert moved.status is WithdrawalStatus.LOCKED
    assert wallet.balance("alice", "BTC") == (Decimal("0.9959"), Decimal("0.0041"))
    clock.advance(handler.ask_again_after * 2)
    assert await handler.ask_again() == 0  # locked and undecided: it waits on an admin
    approved = await handler.approve("admin", withdrawal.withdrawal_id)
    assert approved.status is WithdrawalStatus.APPROVED


async def test_a_withdrawal_is_asked_again_at_most_once_per_period(asking: Any) -> None:
    handler, publisher, _, clock = asking
    withdrawal = await handler.request("alice", "BTC", "0.004", BTC_ADDRESS)
    [lock] = publisher.published  # the wallet's answer never comes
    clock.advance(handler.ask_again_after + timedelta(seconds=1))
    assert await handler.ask_again() == 1
    assert await handler.ask_again() == 0  # asked just now
    clock.advance(handler.ask_again_after - timedelta(seconds=1))
    assert await handler.ask_again() == 0
    clock.advance(timedelta(seconds=2))
    assert await handler.ask_again() == 1
    assert publisher.published == [lock, lock, lock]
    # Asking is not a move: the withdrawal is as it was.
    assert await handler._get(withdrawal.withdrawal_id) == replace(
        withdrawal, outbox=(replace(withdrawal.outbox[0], published=True),), asked_at=clock.now
    )


async def test_a_command_the_wallet_refused_is_not_asked_about_again(asking: Any) -> None:
    """A refused lock failed the withdrawal; a refused release was undone for an admin to decide
    again: nothing waits on the wallet, and asking would only repeat the refusal."""
    handler, publisher, wallet, clock = asking
    failed = await handler.request("alice", "BTC", "1", BTC_ADDRESS)  # 1 + fee > 1
    refused = await handler.request("alice", "BTC", "0.1", BTC_ADDRESS)
    await settle(handler, publisher, wallet)
    assert (await handler._get(failed.withdrawal_id)).status is WithdrawalStatus.FAILED
    refuse_releases(publisher, wallet)
    reopened = await handler.approve("admin", refused.withdrawal_id)
    assert (reopened.status, reopened.decision) == (WithdrawalStatus.LOCKED, None)
    sent = list(publisher.published)

    clock.advance(handler.ask_again_after * 2)
    assert await handler.ask_again() == 0
    assert publisher.published == sent


async def test_a_decision_taken_again_after_a_refusal_is_asked_about_when_its_result_is_lost(
    asking: Any,
) -> None:
    """An admin's second approval, after the wallet refused the first release, waits on the
    wallet (the refusal no longer its reason): it is that approval's release (its own reference)
    that is sent again, and the wallet's duplicate answer approves the withdrawal."""
    handler, publisher, wallet, clock = asking
    withdrawal = await handler.request("alice", "BTC", "0.1", BTC_ADDRESS)
    await settle(handler, publisher, wallet)
    real_apply = refuse_releases(publisher, wallet)
    await handler.approve("admin", withdrawal.withdrawal_id)
    publisher.answer = None  # the second release applies, its result is lost on the way back
    deciding = await handler.approve("admin", withdrawal.withdrawal_id)
    assert (deciding.status, deciding.decision, deciding.attempt) == (
        WithdrawalStatus.LOCKED,
        "approve",
        2,
    )
    assert deciding.reason is None
    release = publisher.published[-1]
    real_apply(release)

    clock.advance(handler.ask_again_after + timedelta(seconds=1))
    assert await handler.ask_again() == 1
    resent = publisher.published[-1]
    assert (resent.command_id, resent.reference_id) == (
        release.command_id,
        f"withdrawal:{withdrawal.withdrawal_id}:attempt:2",
    )
    approved = await answer_again(handler, wallet, resent)
    assert (approved.status, approved.reason) == (WithdrawalStatus.APPROVED, None)
    assert wallet.balance("alice", "BTC") == (Decimal("0.8999"), Decimal(0))


async def test_withdrawals_the_wallet_never_answers_do_not_keep_a_lost_result_from_being_asked(
    asking: Any,
) -> None:
    """Withdrawals whose answer never comes stay pending, unmoved ahead of every newer one, and
    each is eligible again once its period passed: a pass took the same page of them every time,
    and a withdrawal behind them whose lock result was lost was never asked about and stayed
    pending. A pass now goes on after the last one's page."""
    handler, publisher, wallet, clock = asking
    handler.ask_again_page = 2
    for user in ("ann", "ben"):
        await handler.request(user, "BTC", "0.004", BTC_ADDRESS)  # never answered
    clock.advance(timedelta(seconds=1))
    withdrawal = await handler.request("alice", "BTC", "0.004", BTC_ADDRESS)
    lock = publisher.published[-1]
    wallet.apply(lock)  # applied; its result is lost on the way back

    clock.advance(handler.ask_again_after + timedelta(seconds=1))
    assert await handler.ask_again() == 2  # a full page of the two never answered
    clock.advance(handler.ask_again_after + timedelta(seconds=1))
    assert await handler.ask_again() == 1  # on after it: the lost result
    assert publisher.published[-1] == lock
    moved = await answer_again(handler, wallet, lock)
    assert (moved.withdrawal_id, moved.status) == (
        withdrawal.withdrawal_id,
        WithdrawalStatus.LOCKED,
    )
    clock.advance(handler.ask_again_after + timedelta(seconds=1))
    assert await handler.ask_again() == 2  # back to the start: the two again, no other
