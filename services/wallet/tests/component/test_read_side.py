"""The read API's wave-2 additions over the in-memory store: balances as of an instant, history by
reference, stored values that no input limit can turn into a 500, and cursors past 2038."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio

from shared.http import make_token
from shared.messaging import CreditCommand, DebitCommand, LockCommand, WalletCommand
from wallet.application.ledger_service import LedgerService
from wallet.bootstrap import WalletRuntime, build_http_app
from wallet.domain.records import HistoryRow
from wallet.entrypoints.http import decode_cursor, encode_cursor

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def _credit(user: str, currency: str, amount: str, reference: str) -> CreditCommand:
    return CreditCommand(
        user_id=user,
        currency=currency,
        amount=amount,
        transaction_type="deposit_nowpayments",
        reference_id=reference,
    )


class SteppingClock:
    """The wallet's commit clock, moved by the test: one batch per instant."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http(runtime: WalletRuntime) -> AsyncIterator[httpx.AsyncClient]:
    clock = SteppingClock()
    ledger = LedgerService(runtime.store, clock=clock)
    steps: list[list[WalletCommand]] = [
        [_credit("carol", "BTC", "1", "c1"), _credit("carol", "ETH", "5", "c2")],  # T0
        [
            LockCommand(
                user_id="carol",
                currency="BTC",
                amount="0.25",
                transaction_type="p2p_escrow",
                reference_id="trade-9",
            )
        ],  # T0 + 1 min
        [
            DebitCommand(
                user_id="carol",
                currency="ETH",
                amount="2",
                transaction_type="withdrawal",
                reference_id="w1",
            )
        ],  # T0 + 2 min
        # Two credits whose sum is beyond any input limit: stored values must still be readable.
        [_credit("whale", "BTC", "999999999999999999", f"big{i}") for i in range(2)],
        [_credit("acme/alice", "USDT", "1", "slash1")],  # a token subject with a "/"
    ]
    for minutes, batch in enumerate(steps):
        clock.now = T0 + timedelta(minutes=minutes)
        await ledger.handle_batch(batch)
    transport = httpx.ASGITransport(app=build_http_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://wallet") as client:
        yield client


def auth(runtime: WalletRuntime, user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(runtime.settings.auth_jwt_secret, user, roles)}"}


def _figures(body: dict[str, object]) -> dict[str, tuple[str, str, str]]:
    balances = body["balances"]
    assert isinstance(balances, list)
    return {
        b["currency"]: (b["available_balance"], b["locked_balance"], b["total_balance"])
        for b in balances
    }


async def test_stored_sums_beyond_the_input_limits_are_served_not_500(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    balances = await http.get("/api/wallets/balances/whale", headers=auth(runtime, "whale"))
    assert balances.status_code == 200, balances.text
    assert _figures(balances.json()) == {"BTC": ("1999999999999999998", "0", "1999999999999999998")}
    platform = await http.get(
        "/api/wallets/platform-balances", headers=auth(runtime, "ops", "admin")
    )
    assert platform.status_code == 200, platform.text
    accounts = {(a["account"], a["currency"]): a["balance"] for a in platform.json()["accounts"]}
    assert accounts[("external:nowpayments", "BTC")] == "-1999999999999999999"
    history = await http.get("/api/wallets/transactions/whale", headers=auth(runtime, "whale"))
    assert history.status_code == 200, history.text
    assert history.json()["items"][0]["balance_after"] == "1999999999999999998"


@pytest.mark.parametrize("spelled", ["acme/alice", "acme%2Falice"])
async def test_a_user_id_with_a_slash_reaches_its_routes(
    http: httpx.AsyncClient, runtime: WalletRuntime, spelled: str
) -> None:
    """Its pages showed its money while these routes answered 404: `{user_id}` stopped at "/"."""
    headers = auth(runtime, "acme/alice")
    balances = await http.get(f"/api/wallets/balances/{spelled}", headers=headers)
    assert (balances.status_code, balances.json()["user_id"]) == (200, "acme/alice")
    assert _figures(balances.json()) == {"USDT": ("1", "0", "1")}
    history = await http.get(f"/api/wallets/transactions/{spelled}", headers=headers)
    assert [i["reference_id"] for i in history.json()["items"]] == ["slash1"]
    portfolio = await http.get(f"/api/wallets/portfolio/{spelled}", headers=headers)
    assert portfolio.status_code == 200, portfolio.text
    other = await http.get(f"/api/wallets/balances/{spelled}", headers=auth(runtime, "acme"))
    assert other.status_code == 403
    nobody = await http.get("/api/wallets/balances/", headers=headers)
    assert nobody.status_code == 404


async def test_a_user_without_wallets_has_an_empty_list(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    response = await http.get("/api/wallets/balances/nobody", headers=auth(runtime, "nobody"))
    assert (response.status_code, response.json()) == (200, {"user_id": "nobody", "balances": []})


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2026-11-30T11:59:59.999Z", {}),
        ("2026-11-30T12:00:00Z", {"BTC": ("1", "0", "1"), "ETH": ("5", "0", "5")}),
        ("2026-11-30T12:00:59.999+00:00", {"BTC": ("1", "0", "1"), "ETH": ("5", "0", "5")}),
        ("2026-11-30T13:01:00+01:00", {"BTC": ("0.75", "0.25", "1"), "ETH": ("5", "0", "5")}),
        ("2026-11-30T12:02:00.000001Z", {"BTC": ("0.75", "0.25", "1"), "ETH": ("3", "0", "3")}),
        ("2030-01-01T00:00:00Z", {"BTC": ("0.75", "0.25", "1"), "ETH": ("3", "0", "3")}),
    ],
)
async def test_balances_at_an_instant_of_the_commit_clock(
    http: httpx.AsyncClient,
    runtime: WalletRuntime,
    at: str,
    expected: dict[str, tuple[str, str, str]],
) -> None:
    response = await http.get(
        "/api/wallets/balances/carol", params={"at": at}, headers=auth(runtime, "carol")
    )
    assert response.status_code == 200, response.text
    assert _figures(response.json()) == expected


async def test_balances_at_show_when_each_wallet_last_changed(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    response = await http.get(
        "/api/wallets/balances/carol",
        params={"at": "2026-11-30T12:01:30Z"},
        headers=auth(runtime, "carol"),
    )
    updated = {b["currency"]: b["last_updated"] for b in response.json()["balances"]}
    assert updated == {"BTC": "2026-11-30T12:01:00Z", "ETH": "2026-11-30T12:00:00Z"}


@pytest.mark.parametrize(
    "query",
    [
        "?at=yesterday",
        "?at=2026-11-30T12:00:00",
        "?at=2026-11-30",
        "?at=0.5",
        "?at=1764504000",
        "?when=2026-11-30T12:00:00Z",
        # Past year 1 or 9999 in UTC: no store can compare or encode it (a 500 before).
        "?at=0001-01-01T00:00:00%2B14:00",
        "?at=9999-12-31T23:59:59-14:00",
    ],
)
async def test_a_bad_instant_is_a_422_with_the_error_body(
    http: httpx.AsyncClient, runtime: WalletRuntime, query: str
) -> None:
    response = await http.get(f"/api/wallets/balances/carol{query}", headers=auth(runtime, "carol"))
    assert (response.status_code, response.json()["error"]["code"]) == (422, "validation_error")


async def test_balances_at_are_private_like_balances(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    response = await http.get(
        "/api/wallets/balances/carol?at=2030-01-01T00:00:00Z", headers=auth(runtime, "whale")
    )
    assert response.status_code == 403


async def test_history_of_one_reference(http: httpx.AsyncClient, runtime: WalletRuntime) -> None:
    response = await http.get(
        "/api/wallets/transactions/carol?reference_id=trade-9", headers=auth(runtime, "carol")
    )
    assert response.status_code == 200
    items = response.json()["items"]
    assert [(i["reference_id"], i["direction"], i["amount"]) for i in items] == [
        ("trade-9", "lock", "0.25")
    ]
    none = await http.get(
        "/api/wallets/transactions/carol?reference_id=no-such", headers=auth(runtime, "carol")
    )
    assert none.json() == {"items": [], "next_cursor": None}


def _row_at(timestamp: datetime) -> HistoryRow:
    return HistoryRow(
        transaction_id="0000000000000000000000000000abcd",
        ledger_transaction_id="l",
        user_id="u",
        currency="BTC",
        amount=Decimal(1),
        transaction_type="deposit_nowpayments",
        direction="credit",
        reference_id="r",
        balance_after=Decimal(1),
        locked_balance_after=Decimal(0),
        savings_balance_after=Decimal(0),
        metadata={},
        timestamp=timestamp,
    )


def _instants_past_2038() -> Iterator[datetime]:
    start = datetime(2038, 1, 19, 3, 14, 7, tzinfo=UTC)
    for step in range(0, 5000, 7):
        yield start + timedelta(days=step * 13, milliseconds=step % 1000)


def test_the_cursor_keeps_exact_milliseconds_after_2038() -> None:
    for instant in _instants_past_2038():
        timestamp, transaction_id = decode_cursor(encode_cursor(_row_at(instant)))
        assert (timestamp, transaction_id) == (instant, "0000000000000000000000000000abcd")
