"""The NOWPayments simulator refuses an IPN amount it could not send, before the payment changes
(stored, `abc` or `1e400` made every later `GET /v1/payment/{id}` a 500 and the poller blind)."""

from __future__ import annotations

import httpx
import pytest

from ipn_gateway.simulator.app import create_simulator_app

KEY = {"x-api-key": "dev-only-api-key"}


@pytest.mark.parametrize(
    "fired",
    [
        {"status": "finished", "actually_paid": "abc"},
        {"status": "finished", "outcome_amount": "1e400"},
        {"status": "finished", "outcome_amount": "NaN"},
    ],
)
async def test_a_bad_amount_is_refused_and_the_payment_stays_readable(
    fired: dict[str, str],
) -> None:
    app = create_simulator_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://simulator") as http:
        created = await http.post(
            "/v1/payment",
            json={"price_amount": "100", "price_currency": "usd", "pay_currency": "btc"},
            headers=KEY,
        )
        assert created.status_code == 201, created.text
        payment_id = created.json()["payment_id"]
        refused = await http.post(f"/simulator/payments/{payment_id}/ipn", json=fired)
        assert refused.status_code == 422, refused.text
        read = await http.get(f"/v1/payment/{payment_id}", headers=KEY)
        assert read.status_code == 200, read.text
        assert (read.json()["payment_status"], read.json()["actually_paid"]) == ("waiting", 0)
