"""Hostile HTTP input for every service: broken object-level authorization, admin routes, writes
to read models, absurd numbers, and schema-driven fuzzing. Every answer is a 4xx with an error
code or a success; never a 5xx, never someone else's data."""

from __future__ import annotations

import base64
import contextlib
import json
import string
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any, Final

import httpx
import jwt
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from shared.messaging import InvalidCommand, parse_command
from shared.messaging.topics import Topics
from shared.testing.fixtures import unique_database_name
from tests.reliability.live_services import KEY, live_services
from tests.reliability.services import ADMIN, OTHER, OWNER, SERVICES, AmountRoute, Service
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.application.command_intake import CommandIntake, IncomingRecord
from wallet.application.ledger_service import LedgerService

# Built in-process at import; p2p and trading run on ports over Kafka and MongoDB (`live`).
BUILT: Final = {s.name: s for s in SERVICES}
LIVE_IDS: Final = ["p2p", "trading"]
# The live services' own threads draw from `random` (price feed, client jitter) while Hypothesis
# generates a case, which it takes for a strategy using `random`.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
WALLET: Final = next(s for s in SERVICES if s.name == "wallet")
GATEWAY: Final = next(s for s in SERVICES if s.name == "ipn-gateway")
# Absurd numbers, as text and as JSON numbers, with the refusal each must get.
AMOUNTS: Final[list[tuple[Any, str]]] = [
    ("NaN", "amount_not_a_number"),
    ("-nan", "amount_not_a_number"),
    ("sNaN", "amount_not_a_number"),
    ("Infinity", "amount_infinite"),
    ("-Infinity", "amount_infinite"),
    ("1e400", "amount_too_large"),
    ("9" * 5_000, "amount_too_long"),
    ("1" + "0" * 18, "amount_too_large"),
    ("-1", "amount_not_positive"),
    ("-0", "amount_not_positive"),
    ("0", "amount_not_positive"),
    ("0.000000001", "amount_too_precise"),  # BTC has 8 decimal places
    ("1e-9", "amount_too_precise"),
    # 64 characters, more significant digits than the ledger's precision: normalising it raised.
    ("1." + "0" * 61 + "1", "amount_too_precise"),
    ("1,5", "amount_malformed"),
    ("0x10", "amount_malformed"),
    ("١٢", "amount_malformed"),  # Arabic-Indic digits, which Decimal() would read
    ("", "amount_malformed"),
    (1, "amount_not_a_string"),
    (0.1, "amount_not_a_string"),
    (True, "amount_not_a_string"),
    (None, "amount_malformed"),
    ({"$numberDecimal": "1"}, "amount_malformed"),
]


@contextlib.asynccontextmanager
async def client_of(svc: Service) -> AsyncIterator[httpx.AsyncClient]:
    if svc.url:
        async with httpx.AsyncClient(base_url=svc.url, timeout=30.0) as client:
            yield client
        return
    transport = httpx.ASGITransport(app=svc.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{svc.name}") as client:
        yield client


@pytest.fixture(scope="module")
def live(
    kafka_bootstrap_servers: str, kafka_topics: Topics, mongodb_url: str
) -> Iterator[dict[str, Service]]:
    """P2P and trading with the real wallet, OWNER's objects created through them."""
    database = unique_database_name("battery")
    with live_services(kafka_bootstrap_servers, kafka_topics, mongodb_url, database) as running:
        yield running


@pytest.fixture(
    scope="module",
    params=[*BUILT, *(pytest.param(name, marks=pytest.mark.integration) for name in LIVE_IDS)],
)
def service_under_test(request: pytest.FixtureRequest) -> Service:
    if request.param in BUILT:
        return BUILT[request.param]
    running: dict[str, Service] = request.getfixturevalue("live")
    return running[request.param]


@pytest_asyncio.fixture(loop_scope="session")
async def service(
    service_under_test: Service,
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    async with client_of(service_under_test) as client:
        yield service_under_test, client


@pytest_asyncio.fixture(params=LIVE_IDS, loop_scope="session")
async def live_service(
    request: pytest.FixtureRequest, live: dict[str, Service]
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    svc = live[request.param]
    async with client_of(svc) as client:
        yield svc, client


def keyed(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Idempotency-Key": KEY}


def placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def code_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    return str(body["error"]["code"])


def forged(secret: str, claims: dict[str, Any], algorithm: str = "HS256") -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm=algorithm)}"}


def unsigned(claims: dict[str, Any]) -> dict[str, str]:
    """An `alg: none` token: a classic way to skip signature checks."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return {"Authorization": f"Bearer {part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."}


async def test_bola_matrix(service: tuple[Service, httpx.AsyncClient]) -> None:
    svc, http = service
    far_future = 4_102_444_800
    callers: list[tuple[str, dict[str, str], int]] = [
        ("owner", svc.token(OWNER), 200),
        ("other user", svc.token(OTHER), 403),
        ("other user, owner's id in another case", svc.token(OWNER.upper()), 403),
        ("admin", svc.token(ADMIN, "admin"), 200),
        ("role in another case", svc.token(OTHER, "ADMIN"), 403),
        ("no token", {}, 401),
        ("alg none", unsigned({"sub": OWNER, "roles": ["admin"], "exp": far_future}), 401),
        ("another key", forged("x" * 32, {"sub": OWNER, "exp": far_future}), 401),
        (
            "roles not a list",
            forged(svc.secret, {"sub": OTHER, "roles": "admin", "exp": far_future}),
            401,
        ),
        ("no expiry", forged(svc.secret, {"sub": OWNER}), 401),
        ("empty subject", forged(svc.secret, {"sub": "", "exp": far_future}), 401),
    ]
    assert svc.owned, f"{svc.name} has no owned routes: the matrix would assert nothing"
    ids = {"user_id": OWNER, "id": svc.owned_id, **svc.owned_ids}
    for template in svc.owned:
        (name,) = placeholders(template)
        mine = ids[name]
        assert mine, (template, "no owned object to read")
        path = template.format(**{name: mine})
        for who, headers, status in callers:
            expected = svc.foreign_status if status == 403 else status
            response = await http.get(path, headers=headers)
            assert response.status_code == expected, (path, who, response.text)
            if status == 200:
                assert mine in response.text, (path, who)
            else:
                assert code_of(response) in {"unauthorized", *svc.foreign_codes}, (path, who)
                assert OWNER not in response.text.replace(f"/{OWNER}", "")
        # Ids that only look like the owner's never reach the owner's data (422: not an id).
        for disguised in (f"{mine}%2F..%2F{OTHER}", f"{OTHER}%00", f"{mine}%20", f"..%2F{mine}"):
            response = await http.get(
                template.format(**{name: disguised}), headers=svc.token(OTHER)
            )
            assert response.status_code in {403, 404, 422}, (disguised, response.text)
            assert f'"{mine}"' not in response.text, (disguised, response.text)


async def test_other_users_cannot_act_on_owned_objects(
    live_service: tuple[Service, httpx.AsyncClient],
) -> None:
    """Another user's trade, order, quote, offer or savings: not in their lists, not replayed to
    them for the owner's Idempotency-Key, every action on it refused as the contract says, and the
    owner's objects stay as they were."""
    svc, http = live_service
    assert svc.owned_actions, f"{svc.name} has no owned actions: nothing would be tried"
    ids = {"id": svc.owned_id, **svc.owned_ids}
    owned = [t.format(**{n: ids[n] for n in placeholders(t)}) for t in svc.owned]

    async def owners_view() -> list[Any]:
        return [(await http.get(p, headers=svc.token(OWNER))).json() for p in owned]

    before = await owners_view()
    assert svc.owned_lists, f"{svc.name} has no lists of one's own"
    for path, mine in svc.owned_lists:
        assert mine in (await http.get(path, headers=svc.token(OWNER))).text, path
        for someone_else in (svc.token(OTHER), svc.token(OWNER.upper())):
            listed = await http.get(path, headers=someone_else)
            assert listed.status_code == 200, (path, listed.text)
            assert mine not in listed.text, (path, listed.text)
    assert svc.owned_keys, f"{svc.name} has no creations with an Idempotency-Key"
    for path, body, mine in svc.owned_keys:
        replayed = await http.post(path, json=body, headers=keyed(svc.token(OWNER)))
        assert mine in replayed.text, (path, replayed.text)
        for someone_else in (svc.token(OTHER), svc.token(OWNER.upper())):
            fresh = await http.post(path, json=body, headers=keyed(someone_else))
            assert fresh.status_code < 500, (path, fresh.text)
            assert mine not in fresh.text, (path, fresh.text)
    for method, path, body, status in svc.owned_actions:
        for headers in (svc.token(OTHER), svc.token(OWNER.upper())):
            response = await http.request(method, path, json=body, headers=headers)
            assert response.status_code == status, (method, path, response.text)
            assert code_of(response) != "validation_error", (method, path, response.text)
    assert await owners_view() == before


async def test_admin_routes_refuse_everyone_else(
    service: tuple[Service, httpx.AsyncClient],
) -> None:
    svc, http = service
    for method, path, body in svc.admin_only:
        as_admin = await http.request(method, path, json=body, headers=svc.token(ADMIN, "admin"))
        assert as_admin.status_code < 500, (path, as_admin.text)
        assert as_admin.status_code not in {401, 403}, (path, as_admin.text)
        for headers, status, code in [
            (svc.token(OWNER), 403, svc.admin_refusal_code),
            (svc.token(OWNER, "user", "administrator"), 403, svc.admin_refusal_code),
            ({}, 401, "unauthorized"),
            (
                unsigned({"sub": ADMIN, "roles": ["admin"], "exp": 4_102_444_800}),
                401,
                "unauthorized",
            ),
        ]:
            response = await http.request(method, path, json=body, headers=headers)
            assert (response.status_code, code_of(response)) == (status, code), path


async def test_read_models_cannot_be_written(service: tuple[Service, httpx.AsyncClient]) -> None:
    """Mass assignment: no route takes a balance or a status from a client."""
    svc, http = service
    before = (await http.get(svc.read_only[0], headers=svc.token(ADMIN, "admin"))).json()
    body = {
        "available_balance": "1000000",
        "locked_balance": "0",
        "status": "applied",
        "version": 0,
    }
    for path in svc.read_only:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = await http.request(
                method, path, json=body, headers=svc.token(ADMIN, "admin")
            )
            assert (response.status_code, code_of(response)) == (405, "method_not_allowed")
    after = (await http.get(svc.read_only[0], headers=svc.token(ADMIN, "admin"))).json()
    assert after == before


EXTRA_FIELDS: Final[list[dict[str, Any]]] = [
    {"user_id": OTHER},
    {"status": "approved"},
    {"fee": "0"},
    {"available_balance": "1000000"},
    {"withdrawal_id": "wd_chosen_by_client"},
]


def amount_routes_of(svc: Service) -> tuple[AmountRoute, ...]:
    """The routes taking amounts: none on the wallet (skipped, saying so), some on every other."""
    if svc.name == "wallet":
        pytest.skip("the wallet's HTTP side takes no request body")
    assert svc.amount_routes, svc.name
    return svc.amount_routes


async def test_bodies_with_extra_fields_are_refused(
    service: tuple[Service, httpx.AsyncClient],
) -> None:
    """Mass assignment: a field the route does not take is an error, never silently applied."""
    svc, http = service
    for route in amount_routes_of(svc):
        for extra in EXTRA_FIELDS:
            response = await http.post(
                route.path, json={**route.body, **extra}, headers=svc.token(OWNER)
            )
            assert (response.status_code, code_of(response)) == (422, "validation_error"), (
                route.path,
                extra,
                response.text,
            )


async def test_text_utf8_cannot_encode_is_refused_with_a_code(
    service: tuple[Service, httpx.AsyncClient],
) -> None:
    """A lone UTF-16 surrogate in any text of any body: no document, message or log line can be
    written with it. Before, a reason or an id holding one reached MongoDB and answered 500
    (p2p cancel and dispute, the gateway's withdrawal decisions)."""
    svc, http = service
    if svc.name == "wallet":
        pytest.skip("the wallet's HTTP side takes no request body")
    bodies = [
        *(("POST", route.path, route.body) for route in svc.amount_routes),
        *((method, path, body) for method, path, body in svc.admin_only if body),
        *((method, path, body) for method, path, body, _ in svc.owned_actions if body),
        *(("POST", path, body) for path, body, _ in svc.owned_keys),
    ]
    tried = 0
    for method, path, body in bodies:
        for name, value in body.items():
            if not isinstance(value, str):
                continue
            tried += 1
            # json.dumps writes the lone surrogate as the escape `\ud800`, as a client would.
            text = json.dumps({**body, name: value + "\ud800"})
            headers = {**svc.token(OWNER, "admin"), "content-type": "application/json"}
            response = await http.request(
                method, path.format(**svc.owned_ids), content=text, headers=headers
            )
            assert (response.status_code, code_of(response)) == (400, "invalid_text"), (
                path,
                name,
                response.text,
            )
    assert tried >= 2, svc.name  # each service's bodies have text to try


@pytest.mark.parametrize(("amount", "code"), AMOUNTS, ids=[str(a)[:20] for a, _ in AMOUNTS])
async def test_absurd_amounts_over_http_get_a_4xx_with_their_code(
    service: tuple[Service, httpx.AsyncClient], amount: Any, code: str
) -> None:
    svc, http = service
    wrong = []
    for route in amount_routes_of(svc):
        for name in route.fields:
            response = await http.post(
                route.path, json={**route.body, name: amount}, headers=svc.token(OWNER)
            )
            refused = 400 <= response.status_code < 500
            got = code_of(response) if refused else response.text[:300]
            if not refused or got != route.expected_code(amount, code):
                wrong.append((route.path, name, response.status_code, got))
    assert not wrong, (amount, wrong)


async def test_users_list_only_their_own_withdrawals() -> None:
    async with client_of(GATEWAY) as http:
        await own_withdrawals_only(GATEWAY, http)


async def own_withdrawals_only(svc: Service, http: httpx.AsyncClient) -> None:
    route = svc.amount_routes[0]
    created = await http.post(route.path, json=route.body, headers=svc.token(OWNER))
    assert created.status_code == 202, created.text
    mine = created.json()["withdrawal_id"]

    def ids(response: httpx.Response) -> set[str]:
        assert response.status_code == 200, response.text
        return {item["withdrawal_id"] for item in response.json()["items"]}

    assert mine in ids(await http.get("/api/withdrawals", headers=svc.token(OWNER)))
    assert mine not in ids(await http.get("/api/withdrawals", headers=svc.token(OTHER)))
    assert mine in ids(await http.get("/api/withdrawals", headers=svc.token(ADMIN, "admin")))
    # Nobody else may decide it, and its owner may not approve it even as an admin.
    for who in (svc.token(OTHER), svc.token(OWNER)):
        refused = await http.post(
            "/api/withdrawals/approve", json={"withdrawal_id": mine}, headers=who
        )
        assert refused.status_code == 403, refused.text
    own = await http.post(
        "/api/withdrawals/approve", json={"withdrawal_id": mine}, headers=svc.token(OWNER, "admin")
    )
    assert (own.status_code, code_of(own)) == (403, "self_approval_forbidden")


@pytest.mark.parametrize(
    "query",
    [
        "limit=NaN",
        "limit=Infinity",
        "limit=-Infinity",
        "limit=1e400",
        f"limit={'9' * 5_000}",
        "limit=-1",
        "limit=0",
        "limit=1.5",
        "currency=NaN",
        "currency=Infinity",
        f"currency={'B' * 5_000}",
        "currency=BTC%00",
        f"cursor={'A' * 5_000}",
        "cursor=NaN",
        "cursor=MTAwMDAwMDAwMDAwMDAwMDAwMDAwfHg=",  # a timestamp far beyond datetime's range
    ],
)
async def test_absurd_query_values_get_a_4xx_with_a_code(query: str) -> None:
    async with client_of(WALLET) as http:
        response = await http.get(
            f"/api/wallets/transactions/{OWNER}?{query}", headers=WALLET.token(OWNER)
        )
    assert 400 <= response.status_code < 500, (query, response.status_code, response.text[:200])
    code_of(response)


@pytest.mark.parametrize(("amount", "code"), AMOUNTS, ids=[str(a)[:20] for a, _ in AMOUNTS])
async def test_absurd_amounts_in_commands_are_refused_with_a_code(amount: Any, code: str) -> None:
    """The wallet takes amounts only from Kafka commands: each is refused with its reason, answered
    to the sender, dead-lettered, and moves nothing."""
    command = {
        "command_id": "c1",
        "type": "credit",
        "reference_id": "r1",
        "transaction_type": "deposit_nowpayments",
        "user_id": OWNER,
        "currency": "BTC",
        "amount": amount,
    }
    raw = json.dumps(command).encode()
    with pytest.raises(InvalidCommand) as refused:
        parse_command(raw)
    assert (refused.value.reason, refused.value.detail.split(":")[0]) == ("invalid_amount", code)

    store = InMemoryLedgerStore()
    sent: list[Any] = []

    class Publisher:
        async def publish(
            self, results: Any, events: Any, dead_letters: Any, producers: Any
        ) -> None:
            sent.append((list(results), list(events), list(dead_letters)))

    intake = CommandIntake(LedgerService(store), Publisher())
    await intake.process([IncomingRecord(raw, OWNER.encode(), "wallet.commands", 0, 7)])
    ((results, events, dead_letters),) = sent
    assert [(r.status, r.reason) for _, r in results] == [("rejected", "invalid_amount")]
    assert events == []
    assert [(d.reason, d.source_offset) for _, d in dead_letters] == [("invalid_amount", 7)]
    assert store.outcomes == {}
    assert store.wallets == {}


async def test_json_numbers_never_become_floats_or_infinity() -> None:
    # A bare 1e400 would be float('inf') to a careless parser; NaN is not JSON at all.
    # Each is a complete, well-formed credit but for its amount, so the refusal can only be that.
    well_formed = (
        '{"command_id": "c1", "type": "credit", "reference_id": "r1", '
        '"transaction_type": "deposit_nowpayments", "user_id": "alice", "currency": "BTC", '
        '"amount": %s}'
    )
    assert parse_command((well_formed % '"0.5"').encode()).amount == Decimal("0.5")
    for amount, reason, detail in [
        ("1e400", "invalid_field", "number out of range: 1E+400"),  # refused while parsing
        ('"1e400"', "invalid_amount", "amount_too_large"),
        ("1e-400", "invalid_amount", "amount_not_a_string"),
        ("NaN", "malformed_json", "NaN is not valid JSON"),
        ("-Infinity", "malformed_json", "-Infinity is not valid JSON"),
    ]:
        with pytest.raises(InvalidCommand) as refused:
            parse_command((well_formed % amount).encode())
        assert refused.value.reason == reason, (amount, refused.value.detail)
        assert refused.value.detail.startswith(detail), (amount, refused.value.detail)


# Schema-driven fuzzing, in process: each operation of each service's OpenAPI, as an admin (every
# route open) and as a plain user (most answers are 403). No 5xx, every answer as documented.
# positive_data_acceptance is left out: a currency accepts the registry's codes in any spelling
# and NOWPayments tickers, which the schema states as a bounded string, not an enumeration.
async def test_every_operation_documents_its_errors(
    service: tuple[Service, httpx.AsyncClient],
) -> None:
    """Clients see the error body they will get, not FastAPI's default validation schema."""
    svc, http = service
    spec = (await http.get("/openapi.json")).json()
    public = set()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            errors = {k: v for k, v in operation["responses"].items() if k.startswith(("4", "5"))}
            if "security" in operation:
                assert "401" in errors, (method, path)
            else:
                public.add(f"{method.upper()} {path}")
            for status, answer in errors.items():
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert public == svc.public


# derandomize: the same examples on every run, so CI never turns green or red by chance.
FUZZ_SETTINGS: Final = settings(
    max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


def fuzz(svc: Service, case: schemathesis.Case[Any], *also_excluded: Any) -> None:
    for headers in (svc.token(ADMIN, "admin"), svc.token(OWNER)):
        case.call_and_validate(
            headers=headers, excluded_checks=[positive_data_acceptance, *also_excluded]
        )


@schemathesis.openapi.from_asgi("/openapi.json", WALLET.app).parametrize()
@FUZZ_SETTINGS
def test_wallet_openapi_fuzz(case: schemathesis.Case[Any]) -> None:
    fuzz(WALLET, case)


@schemathesis.openapi.from_asgi("/openapi.json", GATEWAY.app).parametrize()
@FUZZ_SETTINGS
def test_gateway_openapi_fuzz(case: schemathesis.Case[Any]) -> None:
    fuzz(GATEWAY, case)


# P2P and trading are fuzzed over their ports (`live`), with the schema each serves.
@pytest.fixture(scope="module")
def p2p_schema(live: dict[str, Service]) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live['p2p'].url}/openapi.json")


@pytest.fixture(scope="module")
def trading_schema(live: dict[str, Service]) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live['trading'].url}/openapi.json")


@pytest.fixture
def fixture_schema_node(request: pytest.FixtureRequest) -> None:
    """schemathesis's fixture-loaded tests read and rename `node._nodeid`, which pytest 9 no longer
    has (its node ids live elsewhere): give them one to read."""
    request.node._nodeid = request.node.nodeid


@schemathesis.pytest.from_fixture("p2p_schema").parametrize()
@FUZZ_SETTINGS
def test_p2p_openapi_fuzz(
    case: schemathesis.Case[Any], live: dict[str, Service], fixture_schema_node: None
) -> None:
    fuzz(live["p2p"], case)


@schemathesis.pytest.from_fixture("trading_schema").parametrize()
@FUZZ_SETTINGS
def test_trading_openapi_fuzz(
    case: schemathesis.Case[Any], live: dict[str, Service], fixture_schema_node: None
) -> None:
    fuzz(live["trading"], case)
