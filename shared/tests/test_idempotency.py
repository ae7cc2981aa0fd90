"""The Idempotency-Key extension: one store contract run against memory AND MongoDB, the claim
rules over both, and a route using it over HTTP (replay, race, reuse, malformed, release)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pymongo.asynchronous.database import AsyncDatabase

from shared.http import ApiError, CurrentUser, User, create_app, make_token
from shared.http.idempotency import (
    KEY_LIFETIME,
    Idempotency,
    IdempotencyKey,
    IdempotencyStore,
    IdempotentRequest,
    KeyRecord,
    MemoryIdempotencyStore,
    MongoIdempotencyStore,
    StoredResponse,
    check_key,
    fingerprint_of,
    idempotency_responses,
)

# Relative to now: the expiry index lets the server delete keys whose expires_at has passed, so a
# fixed date went stale the day after it and the MongoDB half of the contract saw no stored keys.
T0 = datetime.now(UTC).replace(microsecond=0)
SECRET = "idempotency-tests-jwt-secret-of-32-bytes!"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest_asyncio.fixture(params=["memory", "mongo"], loop_scope="session")
async def store(
    request: pytest.FixtureRequest, mongo_database: AsyncDatabase[dict[str, Any]]
) -> AsyncIterator[IdempotencyStore]:
    if request.param == "memory":
        yield MemoryIdempotencyStore()
        return
    mongo = MongoIdempotencyStore(mongo_database)
    await mongo.ensure_indexes()
    await mongo_database["idempotency_keys"].delete_many({})
    yield mongo


def _record(key: str = "k1", token: str = "t1", user: str = "amy", **changes: Any) -> KeyRecord:  # noqa: S107
    fields: dict[str, Any] = {
        "scope": "svc:POST /things",
        "user_id": user,
        "key": key,
        "fingerprint": "f1",
        "token": token,
        "claimed_at": T0,
        "expires_at": T0 + KEY_LIFETIME,
        **changes,
    }
    return KeyRecord(**fields)


# The store contract.


async def test_one_insert_per_key_user_and_scope(store: IdempotencyStore) -> None:
    assert await store.insert(_record())
    assert not await store.insert(_record(token="t2"))
    assert (await store.find("svc:POST /things", "amy", "k1")) == _record()
    # The same key of another user, or on another route, is another key.
    assert await store.insert(_record(user="bob"))
    assert await store.insert(_record(scope="svc:POST /other"))
    assert await store.find("svc:POST /things", "cid", "k1") is None


async def test_only_the_claim_holder_stores_or_releases(store: IdempotencyStore) -> None:
    await store.insert(_record())
    answer = StoredResponse(201, '{"id":"x1","amount":"1.50"}')
    assert not await store.store_response("svc:POST /things", "amy", "k1", "t2", answer)
    assert not await store.release("svc:POST /things", "amy", "k1", "t2")
    assert await store.store_response("svc:POST /things", "amy", "k1", "t1", answer)
    found = await store.find("svc:POST /things", "amy", "k1")
    assert found is not None
    assert found.response == answer
    assert await store.release("svc:POST /things", "amy", "k1", "t1")
    assert await store.find("svc:POST /things", "amy", "k1") is None


async def test_replace_is_conditional_on_the_old_token(store: IdempotencyStore) -> None:
    await store.insert(_record())
    assert not await store.replace("t9", _record(token="t2", fingerprint="f2"))
    assert await store.replace("t1", _record(token="t2", fingerprint="f2"))
    found = await store.find("svc:POST /things", "amy", "k1")
    assert found is not None
    assert (found.token, found.fingerprint) == ("t2", "f2")
    assert not await store.replace("t1", _record(token="t3"))


async def test_concurrent_inserts_let_exactly_one_win(store: IdempotencyStore) -> None:
    wins = await asyncio.gather(*(store.insert(_record(token=f"t{i}")) for i in range(5)))
    assert sorted(wins) == [False] * 4 + [True]


# The claim rules.


def _request(body: bytes = b'{"amount":"1"}', key: str = "k1") -> IdempotentRequest:
    return IdempotentRequest(key, fingerprint_of(body))


async def test_claims_replays_reuse_in_use_and_takeover(store: IdempotencyStore) -> None:
    clock = Clock()
    idempotency = Idempotency(store, "svc:POST /things", clock=clock)
    first = await idempotency.claim("amy", _request())
    assert isinstance(first, KeyRecord)
    with pytest.raises(ApiError) as in_use:
        await idempotency.claim("amy", _request(b'{ "amount" : "1" }'))  # same JSON, spaced
    assert (in_use.value.status, in_use.value.code) == (409, "idempotency_key_in_use")
    with pytest.raises(ApiError) as reused:
        await idempotency.claim("amy", _request(b'{"amount":"2"}'))
    assert (reused.value.status, reused.value.code) == (422, "idempotency_key_reused")

    # A claim left without an answer (a crash) is taken over once stale, by one taker only.
    clock.now += idempotency.stale_after + timedelta(seconds=1)
    takeovers = await asyncio.gather(
        *(idempotency.claim("amy", _request()) for _ in range(3)), return_exceptions=True
    )
    taken = [t for t in takeovers if isinstance(t, KeyRecord)]
    assert len(taken) == 1
    assert taken[0].token != first.token
    assert all(
        isinstance(t, ApiError) and t.code == "idempotency_key_in_use"
        for t in takeovers
        if t not in taken
    )

    answer = StoredResponse(202, '{"id":"x"}')
    assert not await store.store_response("svc:POST /things", "amy", "k1", first.token, answer)
    assert await store.store_response("svc:POST /things", "amy", "k1", taken[0].token, answer)
    assert await idempotency.claim("amy", _request()) == answer

    # After 24 hours the key is free again, whatever the database did about it.
    clock.now += KEY_LIFETIME
    again = await idempotency.claim("amy", _request(b'{"amount":"3"}'))
    assert isinstance(again, KeyRecord)
    assert again.response is None


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        ("a", True),
        ("x" * 255, True),
        ("order 7 ~!@#$%^&*()", True),
        ("", False),
        ("x" * 256, False),
        ("tab\there", False),
        ("caf\u00e9", False),
    ],
)
def test_key_shape(raw: str, valid: bool) -> None:
    if valid:
        assert check_key(raw) == raw
    else:
        with pytest.raises(ApiError) as refused:
            check_key(raw)
        assert (refused.value.status, refused.value.code) == (400, "invalid_idempotency_key")


def test_a_key_names_one_id_per_route_and_user() -> None:
    """What a route creates under a key is stored under `named_id`: the same route, user and key
    always name the same id (so a takeover finds the first run's record), anything else another."""
    once = Idempotency(MemoryIdempotencyStore(), "svc:POST /things")
    amy, bob = User("amy", frozenset()), User("bob", frozenset())
    named = once.named_id(amy, IdempotentRequest("save-100", "fingerprint"))
    assert named is not None
    assert re.fullmatch(r"[0-9a-f]{32}", named)  # the shape of a random id (uuid4 hex)
    assert once.named_id(amy, IdempotentRequest("save-100", "another body")) == named
    assert once.named_id(amy, None) is None
    elsewhere = Idempotency(MemoryIdempotencyStore(), "svc:POST /others")
    assert named not in {
        once.named_id(amy, IdempotentRequest("save-101", "fingerprint")),
        once.named_id(bob, IdempotentRequest("save-100", "fingerprint")),
        once.named_id(User("amy\x00save", frozenset()), IdempotentRequest("100", "fingerprint")),
        once.named_id(amy, IdempotentRequest("save-100 ", "fingerprint")),
        elsewhere.named_id(amy, IdempotentRequest("save-100", "fingerprint")),
    }


def test_fingerprint_ignores_key_order_and_spacing_only() -> None:
    assert fingerprint_of(b'{"a":"1","b":[1,2]}') == fingerprint_of(b'{ "b": [1, 2], "a": "1" }')
    assert fingerprint_of(b'{"a":"1"}') != fingerprint_of(b'{"a":"1.0"}')
    assert fingerprint_of(b"not json") != fingerprint_of(b"not json ")
    # Nested deeper than Python parses: fingerprinted as sent (it raised, a 500 on every keyed
    # route whose body is not read as JSON first).
    deep = b"[" * 100_000
    assert fingerprint_of(deep) == fingerprint_of(deep) != fingerprint_of(b"[" * 99_999)


# A route using it, over HTTP.


class ThingBody(BaseModel):
    amount: str


class Thing(BaseModel):
    thing_id: str
    amount: str
    created_at: datetime


class Things:
    def __init__(self, store: IdempotencyStore) -> None:
        self.created: list[Thing] = []
        self.gate: asyncio.Event | None = None
        self.idempotency = Idempotency(store, "test:POST /things")

    async def create(self, user: User, amount: str) -> Thing:
        if amount == "0":
            raise ApiError(400, "amount_not_positive", "amount must be positive")
        if self.gate is not None:
            await self.gate.wait()
        thing = Thing(thing_id=f"t{len(self.created) + 1}", amount=amount, created_at=T0)
        self.created.append(thing)
        return thing


@pytest_asyncio.fixture(loop_scope="session")
async def api(store: IdempotencyStore) -> AsyncIterator[tuple[httpx.AsyncClient, Things]]:
    things = Things(store)
    router = APIRouter()

    @router.post(
        "/things", status_code=201, response_model=Thing, responses=idempotency_responses()
    )
    async def create_thing(
        body: ThingBody, user: CurrentUser, key: IdempotencyKey
    ) -> Thing | JSONResponse:
        return await things.idempotency.run(
            user, key, lambda: things.create(user, body.amount), status_code=201
        )

    async def ready() -> bool:
        return True

    app = create_app(title="things", auth_secret=SECRET, ready=ready)
    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://things") as client:
        yield client, things


def _headers(user: str = "amy", key: str | None = "k-1") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {make_token(SECRET, user)}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


Post = Callable[..., Any]


async def test_the_same_key_twice_creates_once_and_answers_the_same(
    api: tuple[httpx.AsyncClient, Things],
) -> None:
    client, things = api
    first = await client.post("/things", json={"amount": "1.50"}, headers=_headers())
    again = await client.post("/things", json={"amount": "1.50"}, headers=_headers())
    assert (first.status_code, again.status_code) == (201, 201)
    assert (
        first.json()
        == again.json()
        == {
            "thing_id": "t1",
            "amount": "1.50",
            "created_at": T0.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(things.created) == 1
    # Another user's same key, and no key at all, are other requests.
    other = await client.post("/things", json={"amount": "1.50"}, headers=_headers("bob"))
    plain = await client.post("/things", json={"amount": "1.50"}, headers=_headers(key=None))
    assert (other.json()["thing_id"], plain.json()["thing_id"]) == ("t2", "t3")
    assert plain.json() == {**first.json(), "thing_id": "t3"}  # the same shape without a key


async def test_racing_requests_with_one_key_create_once(
    api: tuple[httpx.AsyncClient, Things],
) -> None:
    client, things = api
    things.gate = asyncio.Event()
    first = asyncio.create_task(client.post("/things", json={"amount": "2"}, headers=_headers()))
    while not things.gate._waiters:  # the first one holds the claim and is working
        await asyncio.sleep(0.01)
    racing = await client.post("/things", json={"amount": "2"}, headers=_headers())
    assert (racing.status_code, racing.json()["error"]["code"]) == (409, "idempotency_key_in_use")
    assert racing.headers["Retry-After"] == "1"
    things.gate.set()
    assert (await first).status_code == 201
    replay = await client.post("/things", json={"amount": "2"}, headers=_headers())
    assert replay.json() == (await first).json()
    assert len(things.created) == 1


async def test_many_racing_requests_create_once(api: tuple[httpx.AsyncClient, Things]) -> None:
    client, things = api
    answers = await asyncio.gather(
        *(client.post("/things", json={"amount": "3"}, headers=_headers()) for _ in range(4))
    )
    assert len(things.created) == 1
    assert {a.status_code for a in answers} <= {201, 409}
    assert [a.json()["thing_id"] for a in answers if a.status_code == 201] != []


async def test_another_body_malformed_keys_and_refusals(
    api: tuple[httpx.AsyncClient, Things],
) -> None:
    client, things = api
    await client.post("/things", json={"amount": "1"}, headers=_headers())
    reused = await client.post("/things", json={"amount": "9"}, headers=_headers())
    assert (reused.status_code, reused.json()["error"]["code"]) == (422, "idempotency_key_reused")
    bad = await client.post("/things", json={"amount": "1"}, headers=_headers(key="x" * 256))
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_idempotency_key")
    # A refusal releases the key: the retry is decided afresh, and the key stays usable.
    refused = await client.post("/things", json={"amount": "0"}, headers=_headers(key="k-2"))
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "amount_not_positive")
    retried = await client.post("/things", json={"amount": "0"}, headers=_headers(key="k-2"))
    assert retried.status_code == 400
    later = await client.post("/things", json={"amount": "5"}, headers=_headers(key="k-2"))
    assert (later.status_code, later.json()["amount"]) == (201, "5")
    assert [t.amount for t in things.created] == ["1", "5"]


async def test_openapi_documents_the_header_and_its_errors(
    api: tuple[httpx.AsyncClient, Things],
) -> None:
    client, _ = api
    operation = (await client.get("/openapi.json")).json()["paths"]["/things"]["post"]
    [header] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert (header["in"], header["required"]) == ("header", False)
    for status in ("400", "409", "422"):
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/ErrorBody")
