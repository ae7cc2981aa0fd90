"""The gateway as deployed: HTTP on a real port, the NOWPayments simulator on another, Kafka and
MongoDB (embedded unless configured), and a fake wallet answering commands over Kafka."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from ipn_gateway.bootstrap import Gateway, build_gateway, create_gateway_app
from ipn_gateway.settings import GatewaySettings
from ipn_gateway.simulator import SimulatorSettings, create_simulator_app
from shared.http import make_token
from shared.infra.net import free_port
from shared.messaging import CreditCommand
from shared.messaging.topics import Topics

JWT_SECRET = "integration-jwt-secret-of-at-least-32-bytes"
IPN_SECRET = "integration-ipn-secret"
API_KEY = "integration-api-key"
BTC_ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"


@dataclass
class Stack:
    gateway_url: str
    simulator_url: str
    gateway: Gateway
    wallet: Any  # the fake wallet of conftest.py
    until: Callable[..., Awaitable[None]]
    http: httpx.AsyncClient

    def token(self, user: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(JWT_SECRET, user, roles)}"}

    async def deposit(
        self, user: str, currency: str = "btc", amount: str = "100"
    ) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.gateway_url}/api/nowpayments/create-deposit",
            json={"currency": currency, "amount": amount, "price_currency": "usd"},
            headers=self.token(user),
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def fire(self, payment_id: str, status: str, **fields: Any) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.simulator_url}/simulator/payments/{payment_id}/ipn",
            json={"status": status, **fields},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def credits_for(self, payment_id: str) -> list[CreditCommand]:
        return [
            c
            for c in self.wallet.wallet.commands
            if isinstance(c, CreditCommand)
            and c.reference_id.startswith(f"nowpayments:{payment_id}")
        ]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
    kafka_fake_wallet: Any,
    serve_app: Callable[[Any, int], AbstractAsyncContextManager[str]],
    until: Callable[..., Awaitable[None]],
) -> AsyncIterator[Stack]:
    gateway_port, simulator_port = free_port(), free_port()
    simulator = create_simulator_app(
        SimulatorSettings(nowpayments_ipn_secret=IPN_SECRET, nowpayments_api_key=API_KEY)
    )
    settings = GatewaySettings(
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_topic_prefix=kafka_topics.prefix,
        mongodb_url=mongodb_url,
        ipn_gateway_mongodb_database=mongo_database.name,
        auth_jwt_secret=JWT_SECRET,
        ipn_gateway_http_port=gateway_port,
        nowpayments_ipn_secret=IPN_SECRET,
        nowpayments_api_key=API_KEY,
        nowpayments_api_url=f"http://127.0.0.1:{simulator_port}",
        nowpayments_credit_at={"eth": "confirmed"},
        withdrawal_daily_limit={"BTC": "5"},
        IPN_GATEWAY_RESULTS_CONSUMER_GROUP=f"ipn-gateway-test-{gateway_port}",
        IPN_GATEWAY_RESULTS_SESSION_TIMEOUT_MS=3000,
        IPN_GATEWAY_RESULTS_HEARTBEAT_INTERVAL_MS=500,
    )
    gateway = build_gateway(settings)
    assert not await gateway.ready()  # nothing started yet: /healthz must say 503
    async with (
        serve_app(simulator, simulator_port) as simulator_url,
        serve_app(create_gateway_app(gateway), gateway_port) as gateway_url,
        httpx.AsyncClient(timeout=20.0) as http,
    ):
        stack = Stack(gateway_url, simulator_url, gateway, kafka_fake_wallet, until, http)

        async def healthy() -> bool:
            return (await http.get(f"{gateway_url}/healthz")).status_code == 200

        await until(healthy, within=30)
        yield stack


async def test_healthz_reports_ready(stack: Stack) -> None:
    response = await stack.http.get(f"{stack.gateway_url}/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_deposit_life_credits_exactly_once_despite_replays(stack: Stack) -> None:
    deposit = await stack.deposit("alice")
    assert set(deposit) == {"order_id", "payment_id", "pay_address", "pay_currency", "pay_amount"}
    assert deposit["pay_currency"] == "btc"
    payment_id = deposit["payment_id"]
    answers = [
        (await stack.fire(payment_id, s))["response"] for s in ("waiting", "confirming", "finished")
    ]
    assert answers == [{"status": "pending"}, {"status": "pending"}, {"status": "credited"}]

    async def credited() -> bool:
        return stack.wallet.wallet.balance("alice", "BTC")[0] == Decimal(deposit["pay_amount"])

    await stack.until(credited)
    for _ in range(10):
        for status in ("waiting", "confirming", "finished"):
            assert (await stack.fire(payment_id, status))["response"] == {"status": "duplicate"}
    for status in ("finished", "confirming", "waiting"):
        assert (await stack.fire(payment_id, status))["response"] == {"status": "duplicate"}
    [credit] = stack.credits_for(payment_id)
    assert credit.amount == Decimal(deposit["pay_amount"])
    assert credit.user_id == "alice"
    assert credit.metadata["order_id"] == deposit["order_id"]
    assert stack.wallet.wallet.balance("alice", "BTC")[0] == Decimal(deposit["pay_amount"])
    log = await stack.gateway.ipn_log.find({"payment_id": str(payment_id)})
    assert len(log) == 3 + 30 + 3
    assert all(entry["trusted"] for entry in log)


async def test_tampered_ipn_is_refused_and_credits_nothing(stack: Stack) -> None:
    deposit = await stack.deposit("bob")
    answer = await stack.fire(deposit["payment_id"], "finished", tamper=True)
    assert answer["status_code"] == 401
    assert answer["response"]["error"]["code"] == "invalid_signature"
    assert stack.credits_for(deposit["payment_id"]) == []
    [entry] = await stack.gateway.ipn_log.find({"raw_body": answer["ipn"]})
    assert (entry["trusted"], entry["verdict"]) == (False, "invalid_signature")


async def test_partially_paid_is_not_credited_by_default(stack: Stack) -> None:
    deposit = await stack.deposit("carol", "usdttrc20", "50")
    answer = await stack.fire(
        deposit["payment_id"], "partially_paid", actually_paid="30", outcome_amount="30"
    )
    assert answer["response"] == {"status": "ignored"}
    assert stack.credits_for(deposit["payment_id"]) == []


async def test_unmatched_order_credits_nothing(stack: Stack) -> None:
    created = await stack.http.post(
        f"{stack.simulator_url}/v1/payment",
        json={
            "price_amount": 10,
            "price_currency": "usd",
            "pay_currency": "btc",
            "order_id": "dep_unknown",
            "ipn_callback_url": f"{stack.gateway_url}/api/nowpayments/ipn",
        },
        headers={"x-api-key": API_KEY},
    )
    payment_id = created.json()["payment_id"]
    answer = await stack.fire(payment_id, "finished")
    assert answer["response"] == {"status": "unmatched"}
    assert stack.credits_for(payment_id) == []


async def test_larger_later_outcome_credits_the_difference_once(stack: Stack) -> None:
    deposit = await stack.deposit("dave", "eth", "320")  # ETH is credited at confirmed here
    payment_id = deposit["payment_id"]
    assert (await stack.fire(payment_id, "confirmed", outcome_amount="0.09"))["response"] == {
        "status": "credited"
    }
    for _ in range(3):
        await stack.fire(payment_id, "finished", outcome_amount="0.1")

    async def both() -> bool:
        return stack.wallet.wallet.balance("dave", "ETH")[0] == Decimal("0.1")

    await stack.until(both)
    assert [(c.reference_id, c.amount) for c in stack.credits_for(payment_id)] == [
        (f"nowpayments:{payment_id}", Decimal("0.09")),
        (f"nowpayments:{payment_id}:topup:0.1", Decimal("0.01")),
    ]


async def test_unpublished_credit_is_published_by_the_relay(stack: Stack) -> None:
    deposit = await stack.deposit("erin")
    payment_id = str(deposit["payment_id"])
    publisher = stack.gateway.handlers.ipn.publisher
    stack.gateway.handlers.ipn.publisher = _Failing()  # the broker is away when the IPN comes
    try:
        assert (await stack.fire(payment_id, "finished"))["response"] == {"status": "credited"}
    finally:
        stack.gateway.handlers.ipn.publisher = publisher
    assert stack.credits_for(payment_id) == []
    assert await stack.gateway.relay.run_once(grace=timedelta(0)) >= 1

    async def credited() -> bool:
        return len(stack.credits_for(payment_id)) == 1

    await stack.until(credited)
    assert await stack.gateway.relay.run_once(grace=timedelta(0)) == 0


async def test_a_credit_the_wallet_failed_on_is_sent_again_and_credited_once(stack: Stack) -> None:
    """The wallet answers the credit `rejected / processing_failed` (it failed on it and
    recorded nothing): the gateway takes that as no answer, and its ask-again pass sends the
    credit again, which the wallet applies. Before, the refusal was recorded and the deposit
    stayed uncredited."""
    deposit = await stack.deposit("frank")
    payment_id = str(deposit["payment_id"])
    stack.wallet.wallet.fail_next.add(f"nowpayments:{payment_id}")
    assert (await stack.fire(payment_id, "finished"))["response"] == {"status": "credited"}

    async def answered_once() -> bool:
        return len(stack.credits_for(payment_id)) == 1

    await stack.until(answered_once)
    assert await stack.gateway.results.caught_up(within=10)
    payments = stack.gateway.credits.payments
    [entry] = (await payments.get(payment_id)).outbox  # type: ignore[union-attr]
    assert (entry.published, entry.result_status) == (True, None)  # no answer yet
    assert stack.wallet.wallet.balance("frank", "BTC")[0] == 0

    credits = stack.gateway.credits
    period, credits.ask_again_after = credits.ask_again_after, timedelta(0)
    try:
        assert await credits.ask_again() >= 1
    finally:
        credits.ask_again_after = period

    async def credited() -> bool:
        stored = await payments.get(payment_id)
        return stored is not None and stored.outbox[0].result_status == "applied"

    await stack.until(credited)
    assert stack.wallet.wallet.balance("frank", "BTC")[0] == Decimal(deposit["pay_amount"])
    assert [c.command_id for c in stack.credits_for(payment_id)] == [entry.command_id] * 2
    stored = await payments.get(payment_id)
    assert stored is not None
    assert stored.reviews == ()


class _Failing:
    async def publish(self, command: Any) -> None:
        raise ConnectionError("broker unavailable")

    async def publish_and_wait(self, command: Any, wait_seconds: float) -> None:
        raise ConnectionError("broker unavailable")


async def _status(stack: Stack, user: str, withdrawal_id: str) -> dict[str, Any]:
    response = await stack.http.get(
        f"{stack.gateway_url}/api/withdrawals", headers=stack.token(user)
    )
    assert response.status_code == 200
    [item] = [w for w in response.json()["items"] if w["withdrawal_id"] == withdrawal_id]
    return dict(item)


async def _request(stack: Stack, user: str, amount: str) -> dict[str, Any]:
    response = await stack.http.post(
        f"{stack.gateway_url}/api/withdrawals/request",
        json={"currency": "BTC", "amount": amount, "address": BTC_ADDRESS},
        headers=stack.token(user),
    )
    assert response.status_code == 202, response.text
    body = dict(response.json())
    assert (body["status"], body["amount"], body["fee"]) == ("pending", amount, "0.0001")
    return body


async def _until_status(stack: Stack, user: str, withdrawal_id: str, status: str) -> dict[str, Any]:
    async def reached() -> bool:
        return (await _status(stack, user, withdrawal_id))["status"] == status

    await stack.until(reached)
    return await _status(stack, user, withdrawal_id)


async def test_withdrawal_request_lock_approve_release(stack: Stack) -> None:
    stack.wallet.wallet.fund("wanda", "BTC", "1")
    requested = await _request(stack, "wanda", "0.004")
    withdrawal_id = requested["withdrawal_id"]
    await _until_status(stack, "wanda", withdrawal_id, "locked")
    assert stack.wallet.wallet.balance("wanda", "BTC") == (Decimal("0.9959"), Decimal("0.0041"))

    url = f"{stack.gateway_url}/api/withdrawals/approve"
    not_admin = await stack.http.post(
        url, json={"withdrawal_id": withdrawal_id}, headers=stack.token("mallory")
    )
    assert (not_admin.status_code, not_admin.json()["error"]["code"]) == (403, "forbidden")
    approved = await stack.http.post(
        url, json={"withdrawal_id": withdrawal_id}, headers=stack.token("root", "admin")
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert stack.wallet.wallet.balance("wanda", "BTC") == (Decimal("0.9959"), Decimal(0))
    release = stack.wallet.wallet.commands[-1]
    assert (release.type, release.amount, release.fee) == (
        "release_locked",
        Decimal("0.0041"),
        Decimal("0.0001"),
    )
    again = await stack.http.post(
        url, json={"withdrawal_id": withdrawal_id}, headers=stack.token("root", "admin")
    )
    assert (again.status_code, again.json()["error"]["code"]) == (409, "not_locked")


async def test_withdrawal_reject_unlocks(stack: Stack) -> None:
    stack.wallet.wallet.fund("xena", "BTC", "1")
    withdrawal_id = (await _request(stack, "xena", "0.5"))["withdrawal_id"]
    await _until_status(stack, "xena", withdrawal_id, "locked")
    rejected = await stack.http.post(
        f"{stack.gateway_url}/api/withdrawals/reject",
        json={"withdrawal_id": withdrawal_id, "reason": "address failed screening"},
        headers=stack.token("root", "admin"),
    )
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["status"], rejected.json()["reason"]) == (
        "rejected",
        "address failed screening",
    )
    assert stack.wallet.wallet.balance("xena", "BTC") == (Decimal("1"), Decimal(0))


async def test_admin_cannot_approve_own_withdrawal(stack: Stack) -> None:
    stack.wallet.wallet.fund("root", "BTC", "1")
    withdrawal_id = (await _request(stack, "root", "0.1"))["withdrawal_id"]
    await _until_status(stack, "root", withdrawal_id, "locked")
    response = await stack.http.post(
        f"{stack.gateway_url}/api/withdrawals/approve",
        json={"withdrawal_id": withdrawal_id},
        headers=stack.token("root", "admin"),
    )
    assert (response.status_code, response.json()["error"]["code"]) == (
        403,
        "self_approval_forbidden",
    )


async def test_insufficient_funds_fails_the_withdrawal(stack: Stack) -> None:
    withdrawal_id = (await _request(stack, "yuri", "0.5"))["withdrawal_id"]  # yuri has nothing
    failed = await _until_status(stack, "yuri", withdrawal_id, "failed")
    assert failed["reason"] == "insufficient_funds"


async def test_users_see_their_own_withdrawals_and_admins_all(stack: Stack) -> None:
    stack.wallet.wallet.fund("zoe", "BTC", "1")
    await _request(stack, "zoe", "0.01")
    own = (
        await stack.http.get(f"{stack.gateway_url}/api/withdrawals", headers=stack.token("zoe"))
    ).json()
    assert {w["user_id"] for w in own["items"]} == {"zoe"}
    every = (
        await stack.http.get(
            f"{stack.gateway_url}/api/withdrawals", headers=stack.token("root", "admin")
        )
    ).json()
    assert {"zoe", "wanda"} <= {w["user_id"] for w in every["items"]}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"currency": "BTC", "amount": 0.004, "address": BTC_ADDRESS}, 400, "amount_not_a_string"),
        ({"currency": "BTC", "amount": "NaN", "address": BTC_ADDRESS}, 400, "amount_not_a_number"),
        ({"currency": "BTC", "amount": "Infinity", "address": BTC_ADDRESS}, 400, "amount_infinite"),
        ({"currency": "BTC", "amount": "1e400", "address": BTC_ADDRESS}, 400, "amount_too_large"),
        ({"currency": "BTC", "amount": "-1", "address": BTC_ADDRESS}, 400, "amount_not_positive"),
        ({"currency": "BTC", "amount": "0", "address": BTC_ADDRESS}, 400, "amount_not_positive"),
        (
            {"currency": "BTC", "amount": "0.123456789", "address": BTC_ADDRESS},
            400,
            "amount_too_precise",
        ),
        ({"currency": "XYZ", "amount": "1", "address": BTC_ADDRESS}, 400, "unknown_currency"),
        ({"currency": "BTC", "amount": "0.1", "address": "x"}, 400, "invalid_address"),
        (
            {"currency": "BTC", "amount": "0.1", "address": BTC_ADDRESS, "status": "approved"},
            422,
            "validation_error",
        ),
        ({"currency": "BTC", "amount": "0.1"}, 422, "validation_error"),
    ],
)
async def test_bad_withdrawal_requests_get_a_4xx_with_a_code(
    stack: Stack, body: dict[str, Any], status: int, code: str
) -> None:
    response = await stack.http.post(
        f"{stack.gateway_url}/api/withdrawals/request", json=body, headers=stack.token("vic")
    )
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (
            b'{"currency":"BTC","amount":NaN,"address":"' + BTC_ADDRESS.encode() + b'"}',
            400,
            "amount_not_a_string",
        ),
        (
            b'{"currency":"BTC","amount":1e400,"address":"' + BTC_ADDRESS.encode() + b'"}',
            400,
            "amount_not_a_string",
        ),
        (b"{not json", 400, "malformed_json"),
    ],
)
async def test_raw_json_oddities_are_4xx(stack: Stack, raw: bytes, status: int, code: str) -> None:
    response = await stack.http.post(
        f"{stack.gateway_url}/api/withdrawals/request",
        content=raw,
        headers={**stack.token("vic"), "content-type": "application/json"},
    )
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


async def test_bad_deposits_and_ipns(stack: Stack) -> None:
    url = f"{stack.gateway_url}/api/nowpayments"
    no_token = await stack.http.post(
        f"{url}/create-deposit", json={"currency": "btc", "amount": "100"}
    )
    assert no_token.status_code == 401
    cases = [
        ({"currency": "btc", "amount": 100}, 400, "amount_not_a_string"),
        ({"currency": "doge", "amount": "100"}, 400, "unknown_currency"),
        ({"currency": "gbp", "amount": "100"}, 400, "currency_not_depositable"),
        ({"currency": "btc", "amount": "100.001"}, 400, "amount_too_precise"),
        ({"currency": "btc", "amount": "100", "user_id": "someone_else"}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        response = await stack.http.post(
            f"{url}/create-deposit", json=body, headers=stack.token("vic")
        )
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
    ipn_cases = [
        (b'{"payment_id":1}', {}, 401, "invalid_signature"),
        (b"not json", {"x-nowpayments-sig": "0" * 128}, 401, "invalid_signature"),
        (b"{" + b" " * (64 * 1024) + b"}", {"x-nowpayments-sig": "0" * 128}, 413, "body_too_large"),
    ]
    for raw, headers, status, code in ipn_cases:
        response = await stack.http.post(f"{url}/ipn", content=raw, headers=headers)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code)


async def test_concurrent_ipns_of_one_payment_credit_once(stack: Stack) -> None:
    deposit = await stack.deposit("fred")
    payment_id = deposit["payment_id"]
    answers = await asyncio.gather(*(stack.fire(payment_id, "finished") for _ in range(8)))
    verdicts = sorted(a["response"]["status"] for a in answers)
    assert verdicts == ["credited"] + ["duplicate"] * 7

    async def credited() -> bool:
        return stack.wallet.wallet.balance("fred", "BTC")[0] == Decimal(deposit["pay_amount"])

    await stack.until(credited)
    assert len(stack.credits_for(payment_id)) == 1


async def test_racing_admin_decisions_take_effect_once(stack: Stack) -> None:
    stack.wallet.wallet.fund("gina", "BTC", "1")
    withdrawal_id = (await _request(stack, "gina", "0.2"))["withdrawal_id"]
    await _until_status(stack, "gina", withdrawal_id, "locked")
    admin = stack.token("root", "admin")
    approve = stack.http.post(
        f"{stack.gateway_url}/api/withdrawals/approve",
        json={"withdrawal_id": withdrawal_id},
        headers=admin,
    )
    reject = stack.http.post(
        f"{stack.gateway_url}/api/withdrawals/reject",
        json={"withdrawal_id": withdrawal_id, "reason": "race"},
        headers=admin,
    )
    responses = await asyncio.gather(approve, reject)
    assert sorted(r.status_code for r in responses) == [200, 409]
    final = await _status(stack, "gina", withdrawal_id)
    assert final["status"] in {"approved", "rejected"}
    decisions = [
        c for c in stack.wallet.wallet.commands if c.reference_id == f"withdrawal:{withdrawal_id}"
    ]
    # The lock, then exactly one of release or unlock.
    assert [c.type for c in decisions] in (["lock", "release_locked"], ["lock", "unlock"])


async def test_a_missed_webhook_is_found_by_polling_nowpayments(stack: Stack) -> None:
    deposit = await stack.deposit("mia")
    payment_id = str(deposit["payment_id"])
    lost = await stack.fire(payment_id, "finished", outcome_amount="0.0021", deliver=False)
    assert lost["delivered"] is False
    poller = stack.gateway.poller
    assert poller is not None
    poller.older_than = timedelta(0)  # the deposit counts as "open too long" right away
    assert await poller.run_once() >= 1

    async def credited() -> bool:
        return stack.wallet.wallet.balance("mia", "BTC")[0] == Decimal("0.0021")

    await stack.until(credited)
    assert [c.reference_id for c in stack.credits_for(payment_id)] == [f"nowpayments:{payment_id}"]
    # Closed: the next round does not ask about it again; the late IPN is a duplicate.
    assert payment_id not in {
        o.payment.payment_id
        for o in await poller.orders.open_older_than(
            stack.gateway.handlers.ipn.clock(), stack.gateway.handlers.ipn.clock(), 500
        )
        if o.payment
    }
    late = await stack.fire(payment_id, "finished", outcome_amount="0.0021")
    assert late["response"] == {"status": "duplicate"}
    assert len(stack.credits_for(payment_id)) == 1


async def test_admins_work_the_review_queue_over_http(stack: Stack) -> None:
    deposit = await stack.deposit("noa")
    payment_id = str(deposit["payment_id"])
    held = await stack.fire(payment_id, "partially_paid", actually_paid="0.0007")
    assert held["response"] == {"status": "ignored"}
    url = f"{stack.gateway_url}/api/nowpayments/reviews"
    refused = await stack.http.get(url, headers=stack.token("noa"))
    assert refused.status_code == 403
    listed = await stack.http.get(f"{url}?status=open", headers=stack.token("ops", "admin"))
    assert listed.status_code == 200, listed.text
    [item] = [i for i in listed.json()["items"] if i["payment_id"] == payment_id]
    assert (item["reason"], item["amount"], item["user_id"]) == (
        "partially_paid_not_credited",
        "0.0007",
        "noa",
    )
    approve = f"{url}/{item['review_id']}/approve"
    approved = await stack.http.post(approve, headers=stack.token("ops", "admin"))
    assert (approved.status_code, approved.json()["status"]) == (200, "approved")
    again = await stack.http.post(approve, headers=stack.token("ops2", "admin"))
    assert (again.status_code, again.json()["error"]["code"]) == (409, "review_closed")
    dismiss = f"{url}/{item['review_id']}/dismiss"
    late = await stack.http.post(
        dismiss, json={"reason": "x"}, headers=stack.token("ops2", "admin")
    )
    assert (late.status_code, late.json()["error"]["code"]) == (409, "review_closed")
    for status, expected in (("approving", []), ("approved", [item["review_id"]])):
        listed = await stack.http.get(f"{url}?status={status}", headers=stack.token("ops", "admin"))
        assert listed.status_code == 200, listed.text
        ids = [i["review_id"] for i in listed.json()["items"] if i["payment_id"] == payment_id]
        assert ids == expected

    async def credited() -> bool:
        return stack.wallet.wallet.balance("noa", "BTC")[0] == Decimal("0.0007")

    await stack.until(credited)
    missing = await stack.http.post(
        f"{url}/rv_missing/dismiss", json={"reason": "x"}, headers=stack.token("ops", "admin")
    )
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "review_not_found")


async def test_withdrawals_are_read_one_by_one_and_paged(stack: Stack) -> None:
    stack.wallet.wallet.fund("pia", "BTC", "1")
    ids = []
    for amount in ("0.001", "0.002", "0.003"):
        response = await stack.http.post(
            f"{stack.gateway_url}/api/withdrawals/request",
            json={"currency": "BTC", "amount": amount, "address": BTC_ADDRESS},
            headers=stack.token("pia"),
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["withdrawal_id"])
    one = await stack.http.get(
        f"{stack.gateway_url}/api/withdrawals/{ids[0]}", headers=stack.token("pia")
    )
    assert (one.status_code, one.json()["amount"]) == (200, "0.001")
    other = await stack.http.get(
        f"{stack.gateway_url}/api/withdrawals/{ids[0]}", headers=stack.token("quin")
    )
    assert (other.status_code, other.json()["error"]["code"]) == (404, "withdrawal_not_found")
    seen: list[str] = []
    cursor = ""
    for _ in range(5):
        page = await stack.http.get(
            f"{stack.gateway_url}/api/withdrawals?limit=2{cursor}", headers=stack.token("pia")
        )
        assert page.status_code == 200, page.text
        seen.extend(w["withdrawal_id"] for w in page.json()["items"])
        if page.json()["next_cursor"] is None:
            break
        cursor = f"&cursor={page.json()['next_cursor']}"
    assert seen == ids[::-1]
    bad = await stack.http.get(
        f"{stack.gateway_url}/api/withdrawals?cursor=nope", headers=stack.token("pia")
    )
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_cursor")
    mistyped = await stack.http.post(
        f"{stack.gateway_url}/api/withdrawals/request",
        json={"currency": "BTC", "amount": "0.001", "address": BTC_ADDRESS[:-1] + "p"},
        headers=stack.token("pia"),
    )
    assert (mistyped.status_code, mistyped.json()["error"]["code"]) == (400, "invalid_address")


async def test_healthz_reports_a_stuck_results_consumer(stack: Stack) -> None:
    results = stack.gateway.results
    # One result has been failing (the database away) for longer than allowed.
    results._failing_since = (
        time.monotonic() - stack.gateway.settings.results_stuck_after_seconds - 1
    )
    try:
        stuck = await stack.http.get(f"{stack.gateway_url}/healthz")
        assert stuck.status_code == 503
    finally:
        results._failing_since = None
    healthy = await stack.http.get(f"{stack.gateway_url}/healthz")
    assert healthy.status_code == 200


async def _withdrawals_of(stack: Stack, user: str) -> list[dict[str, Any]]:
    response = await stack.http.get(
        f"{stack.gateway_url}/api/withdrawals", headers=stack.token(user)
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def test_a_repeated_idempotency_key_requests_one_withdrawal(stack: Stack) -> None:
    stack.wallet.wallet.fund("ida", "BTC", "1")
    body = {"currency": "BTC", "amount": "0.002", "address": BTC_ADDRESS}
    headers = {**stack.token("ida"), "Idempotency-Key": "ida-withdrawal-1"}
    url = f"{stack.gateway_url}/api/withdrawals/request"
    first = await stack.http.post(url, json=body, headers=headers)
    again = await stack.http.post(url, json=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202), first.text
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    [withdrawal] = await _withdrawals_of(stack, "ida")
    assert withdrawal["withdrawal_id"] == first.json()["withdrawal_id"]
    await _until_status(stack, "ida", withdrawal["withdrawal_id"], "locked")
    assert stack.wallet.wallet.balance("ida", "BTC") == (Decimal("0.9979"), Decimal("0.0021"))

    reused = await stack.http.post(url, json={**body, "amount": "0.003"}, headers=headers)
    assert (reused.status_code, reused.json()["error"]["code"]) == (422, "idempotency_key_reused")
    malformed = await stack.http.post(
        url, json=body, headers={**stack.token("ida"), "Idempotency-Key": "k" * 256}
    )
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (
        400,
        "invalid_idempotency_key",
    )
    assert len(await _withdrawals_of(stack, "ida")) == 1


async def test_racing_requests_with_one_idempotency_key_lock_once(stack: Stack) -> None:
    stack.wallet.wallet.fund("ray", "BTC", "1")
    body = {"currency": "BTC", "amount": "0.002", "address": BTC_ADDRESS}
    headers = {**stack.token("ray"), "Idempotency-Key": "ray-double-click"}
    url = f"{stack.gateway_url}/api/withdrawals/request"
    answers = await asyncio.gather(
        *(stack.http.post(url, json=body, headers=headers) for _ in range(2))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses in ([202, 202], [202, 409]), [a.text for a in answers]
    # Not the per-user guard's withdrawal_in_progress: the key was claimed before any work.
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 409} <= {
        "idempotency_key_in_use"
    }
    [withdrawal] = await _withdrawals_of(stack, "ray")
    await _until_status(stack, "ray", withdrawal["withdrawal_id"], "locked")
    assert stack.wallet.wallet.balance("ray", "BTC") == (Decimal("0.9979"), Decimal("0.0021"))


async def test_openapi_documents_the_idempotency_key(stack: Stack) -> None:
    schema = (await stack.http.get(f"{stack.gateway_url}/openapi.json")).json()
    operation = schema["paths"]["/api/withdrawals/request"]["post"]
    assert {p["name"] for p in operation["parameters"]} == {"Idempotency-Key"}
    assert {"202", "400", "409", "422"} <= set(operation["responses"])
    assert "idempotency_key_reused" in operation["responses"]["422"]["description"]
