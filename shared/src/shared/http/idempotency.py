"""The optional ``Idempotency-Key`` request header of the creating routes (an extension of the
contract, as in the IETF httpapi idempotency-key draft and Stripe's API).

A request with a key claims it, per (route scope, user), with ONE insert on a unique key BEFORE the
work runs; the answer (status and body) is then stored with a fingerprint of the request body.

- the same key and body again (also while racing): the stored answer, nothing new is created;
  still being worked on: 409 ``idempotency_key_in_use`` (retry later);
- the same key with another body: 422 ``idempotency_key_reused``;
- a malformed key (not 1..255 printable ASCII characters): 400 ``invalid_idempotency_key``;
- a refusal (a 4xx raised before anything was created) releases the claim, so that a retry is
  decided afresh (Stripe does the same for requests that fail validation);
- an unexpected error, or a crash, leaves the claim: it is taken over once older than
  ``stale_after`` without an answer. The work then runs again, so a route that creates a record
  stores it under ``named_id`` (derived from the route, user and key) and answers the record
  already there: a takeover, or the key used again after its 24 hours, never creates twice;
- keys last 24 hours (a TTL index deletes them; expired ones count as absent meanwhile).

Without the header nothing of this runs: the route behaves exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Protocol

from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.http.auth import User
from shared.http.errors import ApiError, ErrorBody

HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
MAX_KEY_LENGTH: Final = 255
KEY_LIFETIME: Final = timedelta(hours=24)
DEFAULT_STALE_AFTER: Final = timedelta(seconds=60)
COLLECTION: Final = "idempotency_keys"
_KEY_PATTERN: Final = re.compile(r"[\x20-\x7e]{1,255}")
# How often a claim is retried when the record it collided with vanished or changed meanwhile.
_CLAIM_ATTEMPTS: Final = 5

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str  # the JSON text as first sent, so that a replay is byte for byte the same


@dataclass(frozen=True)
class KeyRecord:
    scope: str
    user_id: str
    key: str
    fingerprint: str
    token: str  # who holds the claim: only they store the answer or release it
    claimed_at: datetime
    expires_at: datetime
    response: StoredResponse | None = None


class IdempotencyStore(Protocol):
    """Single-record operations only, each atomic on its own (no transactions)."""

    async def insert(self, record: KeyRecord) -> bool:
        """Add the record; False if one with its (scope, user_id, key) exists."""

    async def find(self, scope: str, user_id: str, key: str) -> KeyRecord | None: ...

    async def replace(self, old_token: str, record: KeyRecord) -> bool:
        """Replace the record of the same (scope, user_id, key) if it still has `old_token`."""

    async def store_response(
        self, scope: str, user_id: str, key: str, token: str, response: StoredResponse
    ) -> bool:
        """Record the answer if the claim is still `token`'s."""

    async def release(self, scope: str, user_id: str, key: str, token: str) -> bool:
        """Delete the record if the claim is still `token`'s."""


class MemoryIdempotencyStore:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str, str], KeyRecord] = {}

    async def insert(self, record: KeyRecord) -> bool:
        return self.records.setdefault(_id(record), record) is record

    async def find(self, scope: str, user_id: str, key: str) -> KeyRecord | None:
        return self.records.get((scope, user_id, key))

    async def replace(self, old_token: str, record: KeyRecord) -> bool:
        current = self.records.get(_id(record))
        if current is None or current.token != old_token:
            return False
        self.records[_id(record)] = record
        return True

    async def store_response(
        self, scope: str, user_id: str, key: str, token: str, response: StoredResponse
    ) -> bool:
        current = self.records.get((scope, user_id, key))
        if current is None or current.token != token:
            return False
        self.records[(scope, user_id, key)] = replace(current, response=response)
        return True

    async def release(self, scope: str, user_id: str, key: str, token: str) -> bool:
        current = self.records.get((scope, user_id, key))
        if current is None or current.token != token:
            return False
        del self.records[(scope, user_id, key)]
        return True


def _id(record: KeyRecord) -> tuple[str, str, str]:
    return record.scope, record.user_id, record.key


class MongoIdempotencyStore:
    def __init__(self, database: AsyncDatabase[dict[str, Any]], collection: str = COLLECTION):
        self._keys = database[collection]

    async def ensure_indexes(self) -> None:
        await self._keys.create_index(
            [("scope", ASCENDING), ("user_id", ASCENDING), ("key", ASCENDING)],
            unique=True,
            name="scope_user_key",
        )
        # Deletion by the server is a tidy-up only: expired keys already count as absent.
        await self._keys.create_index("expires_at", expireAfterSeconds=0, name="expiry")

    async def insert(self, record: KeyRecord) -> bool:
        try:
            await self._keys.insert_one(_document(record))
        except DuplicateKeyError:
            return False
        return True

    async def find(self, scope: str, user_id: str, key: str) -> KeyRecord | None:
        found = await self._keys.find_one({"scope": scope, "user_id": user_id, "key": key})
        return None if found is None else _record(found)

    async def replace(self, old_token: str, record: KeyRecord) -> bool:
        where = {"scope": record.scope, "user_id": record.user_id, "key": record.key}
        replaced = await self._keys.replace_one({**where, "token": old_token}, _document(record))
        return replaced.modified_count == 1

    async def store_response(
        self, scope: str, user_id: str, key: str, token: str, response: StoredResponse
    ) -> bool:
        updated = await self._keys.update_one(
            {"scope": scope, "user_id": user_id, "key": key, "token": token},
            {"$set": {"response_status": response.status, "response_body": response.body}},
        )
        return updated.modified_count == 1

    async def release(self, scope: str, user_id: str, key: str, token: str) -> bool:
        deleted = await self._keys.delete_one(
            {"scope": scope, "user_id": user_id, "key": key, "token": token}
        )
        return deleted.deleted_count == 1


def _document(record: KeyRecord) -> dict[str, Any]:
    response = record.response
    return {
        "scope": record.scope,
        "user_id": record.user_id,
        "key": record.key,
        "fingerprint": record.fingerprint,
        "token": record.token,
        "claimed_at": record.claimed_at,
        "expires_at": record.expires_at,
        "response_status": None if response is None else response.status,
        "response_body": None if response is None else response.body,
    }


def _record(document: dict[str, Any]) -> KeyRecord:
    status = document.get("response_status")
    return KeyRecord(
        scope=document["scope"],
        user_id=document["user_id"],
        key=document["key"],
        fingerprint=document["fingerprint"],
        token=document["token"],
        claimed_at=_aware(document["claimed_at"]),
        expires_at=_aware(document["expires_at"]),
        response=None if status is None else StoredResponse(status, document["response_body"]),
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# The request side: the header, checked, and the body's fingerprint.


@dataclass(frozen=True)
class IdempotentRequest:
    key: str
    fingerprint: str


def fingerprint_of(body: bytes) -> str:
    """SHA-256 of the JSON body in a canonical form (key order and spacing do not matter), or of
    the bytes as sent when they are not JSON."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode()
    except (ValueError, RecursionError):  # nested deeper than Python parses: not JSON to us
        canonical = b"raw:" + body
    return hashlib.sha256(canonical).hexdigest()


def check_key(raw: str) -> str:
    if not _KEY_PATTERN.fullmatch(raw):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"{HEADER} is 1 to {MAX_KEY_LENGTH} printable ASCII characters",
        )
    return raw


async def idempotent_request(
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description=(
                f"Optional. 1 to {MAX_KEY_LENGTH} printable ASCII characters, chosen by the client "
                "and unique per request it means; a repeat with the same key and body gets the "
                "first answer and creates nothing (24 hours, per user and route)."
            ),
        ),
    ] = None,
) -> IdempotentRequest | None:
    if idempotency_key is None:
        return None
    return IdempotentRequest(check_key(idempotency_key), fingerprint_of(await request.body()))


IdempotencyKey = Annotated[IdempotentRequest | None, Depends(idempotent_request)]


def idempotency_responses() -> dict[int | str, dict[str, Any]]:
    """OpenAPI answers a route with the header adds (merge after the route's own)."""
    return {
        400: {"model": ErrorBody, "description": "Bad Request (also invalid_idempotency_key)"},
        409: {
            "model": ErrorBody,
            "description": "Conflict (also idempotency_key_in_use: the first request with this "
            "key is still being worked on; retry)",
        },
        422: {
            "model": ErrorBody,
            "description": "Unprocessable Content (also idempotency_key_reused: the key was "
            "used with another body)",
        },
    }


# The route side: claim, work, store or replay.


@dataclass
class Idempotency:
    """One per route: ``return await idempotency.run(user, key, work, status_code=...)``."""

    store: IdempotencyStore
    scope: str
    # Refusals raised before anything is created; they release the claim (ApiError always does).
    refusals: tuple[type[Exception], ...] = ()
    stale_after: timedelta = DEFAULT_STALE_AFTER
    clock: Clock = _utc_now

    async def run[T](
        self,
        user: User,
        request: IdempotentRequest | None,
        work: Callable[[], Awaitable[T]],
        *,
        status_code: int = 200,
    ) -> T | JSONResponse:
        if request is None:
            return await work()
        claim = await self.claim(user.user_id, request)
        if isinstance(claim, StoredResponse):
            return _replay(claim)
        refusals: tuple[type[Exception], ...] = (ApiError, *self.refusals)
        try:
            result = await work()
        except refusals:
            await self.store.release(self.scope, user.user_id, request.key, claim.token)
            raise
        answer = _answer_of(result, status_code)
        await self.store.store_response(self.scope, user.user_id, request.key, claim.token, answer)
        return JSONResponse(json.loads(answer.body), status_code=answer.status)

    def named_id(self, user: User, request: IdempotentRequest | None) -> str | None:
        """The id of what this route creates for the user's key (None without a key): 32 hex
        digits, the same for the same route, user and key. A route whose work creates a record
        stores it under this id, so a run that takes a stale claim over (its first run stopped,
        or stalls, after creating it) finds that record instead of creating a second one."""
        if request is None:
            return None
        named = f"{self.scope}\0{user.user_id}\0{request.key}".encode()
        return hashlib.sha256(named).hexdigest()[:32]

    async def claim(self, user_id: str, request: IdempotentRequest) -> KeyRecord | StoredResponse:
        """Our claim on the key, or the answer stored for it; ApiError when neither."""
        for _ in range(_CLAIM_ATTEMPTS):
            now = self.clock()
            mine = KeyRecord(
                scope=self.scope,
                user_id=user_id,
                key=request.key,
                fingerprint=request.fingerprint,
                token=secrets.token_hex(16),
                claimed_at=now,
                expires_at=now + KEY_LIFETIME,
            )
            if await self.store.insert(mine):
                return mine
            found = await self.store.find(self.scope, user_id, request.key)
            if found is None:
                continue  # released or deleted meanwhile: claim again
            if found.expires_at <= now:
                if await self.store.replace(found.token, mine):
                    return mine
                continue
            if found.fingerprint != request.fingerprint:
                raise ApiError(
                    422,
                    "idempotency_key_reused",
                    f"this {HEADER} was used with another request body",
                )
            if found.response is not None:
                return found.response
            if found.claimed_at > now - self.stale_after:
                raise _in_use()
            # The first request stopped without an answer (a crash): take the key over.
            if await self.store.replace(found.token, mine):
                return mine
        raise _in_use()


def _in_use() -> ApiError:
    return ApiError(
        409,
        "idempotency_key_in_use",
        f"a request with this {HEADER} is still being worked on; retry",
        headers={"Retry-After": "1"},
    )


def _answer_of(result: object, status_code: int) -> StoredResponse:
    if isinstance(result, Response):
        return StoredResponse(result.status_code, bytes(result.body).decode())
    content = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    body = json.dumps(
        jsonable_encoder(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )
    return StoredResponse(status_code, body)


def _replay(stored: StoredResponse) -> JSONResponse:
    return JSONResponse(
        json.loads(stored.body), status_code=stored.status, headers={REPLAYED_HEADER: "true"}
    )
