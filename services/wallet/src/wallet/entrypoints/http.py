"""The wallet's read API: balances and history for dashboards (CONTRACT.md, "Wallet HTTP")."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    Field,
    JsonValue,
    PlainSerializer,
)
from pydantic_core import PydanticCustomError
from starlette.convertors import Convertor, register_url_convertor

from shared.http import (
    AdminUser,
    ApiError,
    CurrentUser,
    QueryParameters,
    TextCheckedRoute,
    ensure_can_read,
    error_responses,
)
from shared.money import MoneyError, format_amount, get_currency
from shared.paging import MAX_CURSOR_LENGTH
from wallet.application.balance_queries import BalancesAsOf, balances_at
from wallet.application.ports import LedgerStore
from wallet.domain.records import HistoryRow, WalletRecord

MAX_PAGE = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)

# What the ledger stored, written out as a decimal string. Output only: the input limits
# (WireDecimal's range check) are for what clients send; a balance summed from many accepted
# amounts may exceed them and must still be served, never turned into a 500.
StoredDecimal = Annotated[Decimal, PlainSerializer(format_amount, return_type=str)]


class BalanceView(BaseModel):
    currency: str
    available_balance: StoredDecimal
    locked_balance: StoredDecimal
    savings_balance: StoredDecimal
    total_balance: StoredDecimal
    last_updated: AwareDatetime


class BalancesView(BaseModel):
    user_id: str
    balances: list[BalanceView]


class TransactionView(BaseModel):
    """A `wallet_transactions` document in the seed's shape, amounts as strings."""

    transaction_id: str
    ledger_transaction_id: str
    user_id: str
    currency: str
    amount: StoredDecimal
    transaction_type: str
    direction: str
    reference_id: str
    balance_after: StoredDecimal
    locked_balance_after: StoredDecimal
    savings_balance_after: StoredDecimal
    metadata: dict[str, JsonValue]
    timestamp: AwareDatetime


class TransactionsQuery(QueryParameters):
    """The history's query parameters."""

    currency: str | None = Field(default=None, max_length=20)
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(default=None, max_length=MAX_CURSOR_LENGTH)
    reference_id: str | None = Field(default=None, min_length=1, max_length=200)


def _iso_instant(raw: object) -> object:
    # ISO 8601 text only: pydantic would also read "0.5" as seconds since the epoch.
    if isinstance(raw, str):
        try:
            instant = datetime.fromisoformat(raw)
            # In UTC, as stored: an offset taking it past year 1 or 9999 failed only later, when
            # compared or encoded for MongoDB, as a 500.
            return instant.astimezone(UTC) if instant.tzinfo is not None else instant
        except (ValueError, OverflowError):
            raise PydanticCustomError("iso_instant", "an ISO 8601 instant with offset") from None
    return raw


IsoInstant = Annotated[AwareDatetime, BeforeValidator(_iso_instant)]


class BalancesQuery(QueryParameters):
    at: IsoInstant | None = Field(
        default=None,
        description="An instant with its offset: the balances as the wallet had committed them then.",
    )


class TransactionsPage(BaseModel):
    items: list[TransactionView]
    next_cursor: str | None


class AccountBalanceView(BaseModel):
    account: str
    currency: str
    balance: StoredDecimal


class PlatformBalancesView(BaseModel):
    accounts: list[AccountBalanceView]


def store_of(request: Request) -> LedgerStore:
    store: LedgerStore = request.app.state.store
    return store


def _balance_view(wallet: WalletRecord | BalancesAsOf) -> BalanceView:
    b = wallet.balances
    return BalanceView(
        currency=wallet.currency,
        available_balance=b.available,
        locked_balance=b.locked,
        savings_balance=b.savings,
        total_balance=b.total,
        last_updated=wallet.last_updated,
    )


def _transaction_view(row: HistoryRow) -> TransactionView:
    return TransactionView(
        transaction_id=row.transaction_id,
        ledger_transaction_id=row.ledger_transaction_id,
        user_id=row.user_id,
        currency=row.currency,
        amount=row.amount,
        transaction_type=row.transaction_type,
        direction=row.direction,
        reference_id=row.reference_id,
        balance_after=row.balance_after,
        locked_balance_after=row.locked_balance_after,
        savings_balance_after=row.savings_balance_after,
        metadata=row.metadata,
        timestamp=row.timestamp,
    )


def balances_view(
    user_id: str, wallets: Sequence[WalletRecord] | Sequence[BalancesAsOf]
) -> BalancesView:
    return BalancesView(user_id=user_id, balances=[_balance_view(w) for w in wallets])


async def transactions_page(
    store: LedgerStore,
    user_id: str,
    *,
    limit: int,
    cursor: str | None,
    currency: str | None = None,
    reference_id: str | None = None,
) -> TransactionsPage:
    """One page of history, newest first (the API's and the pages' one way to read it)."""
    before = decode_cursor(cursor) if cursor else None
    rows = await store.history_of(
        user_id, currency=currency, limit=limit + 1, before=before, reference_id=reference_id
    )
    page, more = rows[:limit], len(rows) > limit
    return TransactionsPage(
        items=[_transaction_view(r) for r in page],
        next_cursor=encode_cursor(page[-1]) if more else None,
    )


def encode_cursor(row: HistoryRow) -> str:
    # Integer arithmetic: a float of seconds times 1000 loses the last millisecond for some instants.
    millis = (row.timestamp - _EPOCH) // _MILLISECOND
    return base64.urlsafe_b64encode(f"{millis}|{row.transaction_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    # The API's query refuses a longer one; the pages pass theirs here unchecked.
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned")
    try:
        millis, transaction_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        timestamp = _EPOCH + int(millis) * _MILLISECOND
    except (ValueError, UnicodeDecodeError, binascii.Error, OverflowError, OSError):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned") from None
    if not transaction_id:
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned")
    return timestamp, transaction_id


# Every route answers 401 without a valid token, 403 for someone else's data and 422 for a
# malformed query; documented so that clients and schema-driven tests know the error body.
router = APIRouter(
    route_class=TextCheckedRoute,
    prefix="/api/wallets",
    tags=["wallets"],
    responses=error_responses(401, 403, 422),
)


class _UserIdConvertor(Convertor[str]):
    """A user id is the token's subject, which may hold a "/" (`acme/alice`): the rest of the
    path, percent-encoded or not, not one segment (such a user's routes answered 404), and any
    character the subject may (`:path` stops at a line break)."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("user_id", _UserIdConvertor())


@router.get("/balances/{user_id:user_id}", response_model=BalancesView)
async def get_balances(
    user_id: str,
    user: CurrentUser,
    request: Request,
    query: Annotated[BalancesQuery, Query()],
) -> BalancesView:
    """A user's balances in every currency they hold (an empty list for a user with none); with
    `at`, as they were at that instant of the wallet's commit clock."""
    ensure_can_read(user, user_id)
    if query.at is not None:
        return balances_view(user_id, await balances_at(store_of(request), user_id, query.at))
    return balances_view(user_id, await store_of(request).wallets_of(user_id))


@router.get(
    "/transactions/{user_id:user_id}",
    response_model=TransactionsPage,
    responses=error_responses(400),  # unknown currency, a cursor this API did not issue
)
async def get_transactions(
    user_id: str,
    user: CurrentUser,
    request: Request,
    query: Annotated[TransactionsQuery, Query()],
) -> TransactionsPage:
    """A user's transaction history, newest first, a page at a time."""
    ensure_can_read(user, user_id)
    code = None
    if query.currency is not None:
        try:
            code = get_currency(query.currency).code
        except MoneyError as error:
            raise ApiError(400, error.code, error.message) from None
    return await transactions_page(
        store_of(request),
        user_id,
        limit=query.limit,
        cursor=query.cursor,
        currency=code,
        reference_id=query.reference_id,
    )


@router.get("/platform-balances", response_model=PlatformBalancesView)
async def get_platform_balances(admin: AdminUser, request: Request) -> PlatformBalancesView:
    """Balances of platform and external accounts (fees, liquidity, counterparties): admins only."""
    balances = await store_of(request).account_balances()
    return PlatformBalancesView(
        accounts=[
            AccountBalanceView(account=account, currency=currency, balance=balance)
            for (account, currency), balance in sorted(balances.items())
        ]
    )
