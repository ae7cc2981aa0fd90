"""`encode` writes a result or an event directly: exactly what `model_dump_json().encode()` writes.

Every comparison is of the whole behaviour: the bytes, or the same error, and the same warnings.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, JsonValue
from pydantic_core import TzInfo

from shared.messaging import (
    COMMAND_TYPES,
    BalanceSnapshot,
    CommandResult,
    LedgerTransaction,
    Posting,
    ResultStatus,
    encode,
)
from shared.messaging.commands import FAST_ENCODERS, CommandType

STATUSES: tuple[ResultStatus, ...] = ("applied", "duplicate", "rejected")


def behaviour(write: Callable[[], bytes]) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            written: object = write()
        except Exception as error:
            written = (type(error), str(error))
    return written, [str(warning.message) for warning in caught]


def assert_written_as_pydantic_writes(message: BaseModel) -> None:
    assert behaviour(lambda: encode(message)) == behaviour(
        lambda: message.model_dump_json().encode()
    )


# Any Unicode: quotes, backslashes, control characters, non-ASCII (pydantic writes it unescaped),
# astral characters, and lone surrogates (which cannot be written as UTF-8 at all).
texts = st.text(
    st.one_of(
        st.characters(exclude_categories=()),
        st.sampled_from('"\\\x00\x1f\x7f\u2028\u00e9\U0001f600\ud800\udfff'),
    ),
    max_size=12,
)
plain_ids = st.text(alphabet="abc-_:0123456789", min_size=1, max_size=40)
# Every kind of amount: ledger-shaped (trailing zeros, negative), tiny and huge exponents, more
# digits than the ledger's context, NaN, sNaN, infinities, negative zero.
amounts = st.one_of(
    st.builds(
        lambda units, places: Decimal(f"{units}E-{places}"),
        st.integers(-(10**30), 10**30),
        st.integers(0, 18),
    ),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.builds(
        lambda sign, digits, exponent: Decimal((sign, digits, exponent)),
        st.integers(0, 1),
        st.lists(st.integers(0, 9), min_size=1, max_size=70).map(tuple),
        st.integers(-40, 40),
    ),
)
instants = st.datetimes(
    timezones=st.sampled_from(
        [
            UTC,
            TzInfo(0),
            timezone(timedelta(hours=5, minutes=30)),
            timezone(timedelta(hours=-1)),
            timezone(timedelta(seconds=37)),
            None,
        ]
    )
)
utc_instants = st.datetimes(timezones=st.just(UTC))


def json_values(texts: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.floats(allow_nan=True, allow_infinity=True),
            texts,
        ),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)
        ),
        max_leaves=8,
    )


def snapshots(
    amount: st.SearchStrategy[Any], texts: st.SearchStrategy[str]
) -> st.SearchStrategy[BalanceSnapshot]:
    ids = st.one_of(plain_ids, texts)
    return st.builds(
        lambda user, currency, a, b, c, d: BalanceSnapshot.model_construct(
            user_id=user,
            currency=currency,
            available_balance=a,
            locked_balance=b,
            savings_balance=c,
            total_balance=d,
        ),
        ids,
        st.one_of(st.sampled_from(["BTC", "ETH", "USDT", "GBP"]), texts),
        amount,
        amount,
        amount,
        amount,
    )


def postings(
    amount: st.SearchStrategy[Any], texts: st.SearchStrategy[str]
) -> st.SearchStrategy[Posting]:
    ids = st.one_of(plain_ids, texts)
    return st.builds(
        lambda account, currency, value: Posting.model_construct(
            account=account, currency=currency, amount=value
        ),
        st.one_of(ids.map(lambda user: f"user:{user}:available"), texts),
        st.one_of(st.sampled_from(["BTC", "ETH"]), texts),
        amount,
    )


def results(
    amount: st.SearchStrategy[Any],
    instant: st.SearchStrategy[datetime],
    texts: st.SearchStrategy[str] = texts,
) -> st.SearchStrategy[CommandResult]:
    ids = st.one_of(plain_ids, texts)
    optional_texts = st.one_of(st.none(), texts)
    return st.builds(
        lambda *values: CommandResult.model_construct(
            **dict(zip(CommandResult.__pydantic_fields__, values, strict=True))
        ),
        ids,
        st.one_of(st.sampled_from(COMMAND_TYPES), texts),
        st.one_of(st.just("deposit_nowpayments"), texts),
        ids,
        ids,
        st.one_of(st.sampled_from(STATUSES), texts),
        optional_texts,
        optional_texts,
        st.one_of(st.none(), st.sampled_from(STATUSES)),
        st.one_of(st.none(), ids),
        st.lists(snapshots(amount, texts), max_size=3),
        instant,
    )


def events(
    amount: st.SearchStrategy[Any],
    instant: st.SearchStrategy[datetime],
    texts: st.SearchStrategy[str] = texts,
) -> st.SearchStrategy[LedgerTransaction]:
    ids = st.one_of(plain_ids, texts)
    return st.builds(
        lambda *values: LedgerTransaction.model_construct(
            **dict(zip(LedgerTransaction.__pydantic_fields__, values, strict=True))
        ),
        ids,
        ids,
        st.one_of(st.sampled_from(COMMAND_TYPES), texts),
        st.one_of(st.just("p2p_payment"), texts),
        ids,
        ids,
        st.one_of(st.none(), ids),
        st.lists(postings(amount, texts), max_size=4),
        st.one_of(st.just({}), st.dictionaries(texts, json_values(texts), max_size=4)),
        instant,
    )


@given(results(amounts, instants))
def test_any_result_is_written_as_pydantic_writes_it(result: CommandResult) -> None:
    assert_written_as_pydantic_writes(result)


@given(events(amounts, instants))
def test_any_event_is_written_as_pydantic_writes_it(event: LedgerTransaction) -> None:
    assert_written_as_pydantic_writes(event)


# The wallet's own messages (finite amounts, strings without lone surrogates, instants in UTC)
# take the direct path: were it never taken, the tests above would prove nothing.
ledger_amounts = st.builds(
    lambda units, places: Decimal(f"{units}E-{places}"),
    st.integers(-(10**20), 10**20),
    st.integers(0, 18),
)
# Any Unicode that UTF-8 can write (no lone surrogates).
writable_texts = st.text(
    st.one_of(
        st.characters(codec="utf-8"), st.sampled_from('"\\\x00\x1f\x7f\u2028\u00e9\U0001f600')
    ),
    max_size=12,
)


@given(results(ledger_amounts, utc_instants, writable_texts))
def test_a_wallet_result_takes_the_direct_path(result: CommandResult) -> None:
    written = FAST_ENCODERS[CommandResult](result)
    assert written is not None
    assert written == result.model_dump_json().encode()


@given(events(ledger_amounts, utc_instants, writable_texts))
def test_a_wallet_event_takes_the_direct_path(event: LedgerTransaction) -> None:
    written = FAST_ENCODERS[LedgerTransaction](event)
    assert written is not None
    assert written == event.model_dump_json().encode()


def test_the_direct_path_is_taken_for_every_command_type_and_status() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    snapshot = BalanceSnapshot.model_construct(
        user_id="u\u00e9",
        currency="BTC",
        available_balance=Decimal("1.50000000"),
        locked_balance=Decimal("0E-8"),
        savings_balance=Decimal(0),
        total_balance=Decimal("-0.00000001"),
    )
    for command_type in COMMAND_TYPES:
        for status in STATUSES:
            result = CommandResult.model_construct(
                command_id="c",
                type=command_type,
                transaction_type="t",
                reference_id="r\n",
                user_id="u",
                status=status,
                reason=None if status == "applied" else "insufficient_funds",
                detail=None,
                original_status="applied" if status == "duplicate" else None,
                transaction_id="t",
                balances=[snapshot, snapshot],
                processed_at=now,
            )
            assert FAST_ENCODERS[CommandResult](result) == result.model_dump_json().encode()
        event = LedgerTransaction.model_construct(
            transaction_id="t",
            command_id="c",
            type=cast(CommandType, command_type),
            transaction_type="t",
            reference_id="r",
            user_id="u",
            to_user="\u65e5",
            postings=[
                Posting.model_construct(account="a", currency="BTC", amount=Decimal("-1.0")),
                Posting.model_construct(account="b", currency="BTC", amount=Decimal("1.0")),
            ],
            metadata={"trace": [1, 2.5, 1e-7, None, {"k": "\u00fc"}]},
            occurred_at=now.replace(microsecond=0),
        )
        assert FAST_ENCODERS[LedgerTransaction](event) == event.model_dump_json().encode()


def test_metadata_numbers_are_written_as_pydantic_writes_them() -> None:
    # msgspec and the standard library write some floats differently from pydantic (1e+20).
    numbers: list[JsonValue] = [
        1e20,
        1e-7,
        1.7976931348623157e308,
        5e-324,
        -0.0,
        float("nan"),
        float("inf"),
        2**70,
    ]
    event = LedgerTransaction.model_construct(
        transaction_id="t",
        command_id="c",
        type="credit",
        transaction_type="t",
        reference_id="r",
        user_id="u",
        to_user=None,
        postings=[],
        metadata={"numbers": numbers, "nested": {"n": 1e16}},
        occurred_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    assert FAST_ENCODERS[LedgerTransaction](event) == event.model_dump_json().encode()


def test_validated_messages_are_written_as_pydantic_writes_them() -> None:
    result = CommandResult.model_validate(
        {
            "command_id": "c",
            "type": "credit",
            "transaction_type": "deposit_nowpayments",
            "reference_id": "r",
            "user_id": "u",
            "status": "applied",
            "balances": [
                {
                    "user_id": "u",
                    "currency": "BTC",
                    "available_balance": "1.10",
                    "locked_balance": "0",
                    "savings_balance": "0",
                    "total_balance": "1.10",
                }
            ],
            "processed_at": "2026-01-02T03:04:05Z",
        }
    )
    # Its instant is in pydantic's own zero-offset time zone, not UTC's: left to pydantic.
    assert_written_as_pydantic_writes(result)


def _reordered[M: BaseModel](message: M, fields: dict[str, Any]) -> M:
    copy = message.model_copy()
    object.__setattr__(copy, "__dict__", fields)
    return copy


@given(results(ledger_amounts, utc_instants, writable_texts), st.randoms(use_true_random=False))
def test_a_reordered_missing_or_extra_field_is_written_as_pydantic_writes_it(
    result: CommandResult, random: Any
) -> None:
    names = list(result.__dict__)
    random.shuffle(names)
    shuffled = {name: result.__dict__[name] for name in names}
    assert_written_as_pydantic_writes(_reordered(result, shuffled))
    missing = dict(result.__dict__)
    del missing[random.choice(names)]
    assert_written_as_pydantic_writes(_reordered(result, missing))
    assert_written_as_pydantic_writes(_reordered(result, {**result.__dict__, "extra": 1}))


@given(events(ledger_amounts, utc_instants, writable_texts), st.randoms(use_true_random=False))
def test_a_reordered_or_missing_nested_field_is_written_as_pydantic_writes_it(
    event: LedgerTransaction, random: Any
) -> None:
    posting = Posting.model_construct(account="a", currency="BTC", amount=Decimal("1.5"))
    names = list(posting.__dict__)
    random.shuffle(names)
    nested = [
        _reordered(posting, {name: posting.__dict__[name] for name in names}),
        _reordered(posting, {name: posting.__dict__[name] for name in names[1:]}),
    ]
    for odd in nested:
        update = {"postings": [*event.postings, odd]}
        assert_written_as_pydantic_writes(event.model_copy(update=update))
    snapshot = BalanceSnapshot.model_construct(
        user_id="u",
        currency="BTC",
        available_balance=Decimal(1),
        locked_balance=Decimal(0),
        savings_balance=Decimal(0),
        total_balance=Decimal(1),
    )
    snapshot_names = list(snapshot.__dict__)
    random.shuffle(snapshot_names)
    shuffled = _reordered(snapshot, {name: snapshot.__dict__[name] for name in snapshot_names})
    result = CommandResult.model_construct(
        command_id="c",
        type="credit",
        transaction_type="t",
        reference_id="r",
        user_id="u",
        status="applied",
        reason=None,
        detail=None,
        original_status=None,
        transaction_id="t",
        balances=[snapshot, shuffled],
        processed_at=event.occurred_at,
    )
    assert_written_as_pydantic_writes(result)


@given(
    st.sampled_from(list(CommandResult.__pydantic_fields__)),
    st.one_of(
        st.integers(),
        st.floats(),
        st.binary(max_size=4),
        st.just(Decimal("1.5")),
        st.just(datetime(2026, 1, 1)),
        st.just(["x"]),
        st.just({"k": 1}),
        st.none(),
    ),
)
def test_a_value_of_another_type_is_written_as_pydantic_writes_it(name: str, value: Any) -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    posting = Posting.model_construct(account="a", currency="BTC", amount=Decimal("1.5"))
    fields: dict[str, Any] = {
        "command_id": "c",
        "type": "credit",
        "transaction_type": "t",
        "reference_id": "r",
        "user_id": "u",
        "status": "applied",
        "reason": None,
        "detail": None,
        "original_status": None,
        "transaction_id": "t",
        "balances": [],
        "processed_at": now,
    }
    assert_written_as_pydantic_writes(CommandResult.model_construct(**{**fields, name: value}))
    event_fields: dict[str, Any] = {
        "transaction_id": "t",
        "command_id": "c",
        "type": "credit",
        "transaction_type": "t",
        "reference_id": "r",
        "user_id": "u",
        "to_user": None,
        "postings": [posting],
        "metadata": {},
        "occurred_at": now,
    }
    event_name = list(LedgerTransaction.__pydantic_fields__)[
        list(CommandResult.__pydantic_fields__).index(name) % len(event_fields)
    ]
    assert_written_as_pydantic_writes(
        LedgerTransaction.model_construct(**{**event_fields, event_name: value})
    )
    # Inside the nested messages too.
    assert_written_as_pydantic_writes(
        LedgerTransaction.model_construct(
            **{**event_fields, "postings": [posting, posting.model_copy(update={"account": value})]}
        )
    )
    assert_written_as_pydantic_writes(
        CommandResult.model_construct(
            **{
                **fields,
                "balances": [
                    BalanceSnapshot.model_construct(
                        user_id="u",
                        currency=value,
                        available_balance=Decimal(1),
                        locked_balance=Decimal(0),
                        savings_balance=Decimal(0),
                        total_balance=Decimal(1),
                    )
                ],
            }
        )
    )


class _Subclass(CommandResult):
    pass


def test_a_subclass_is_left_to_pydantic() -> None:
    result = _Subclass.model_construct(
        command_id="c",
        type="credit",
        transaction_type="t",
        reference_id="r",
        user_id="u",
        status="applied",
        reason=None,
        detail=None,
        original_status=None,
        transaction_id=None,
        balances=[],
        processed_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    assert type(result) not in FAST_ENCODERS
    assert_written_as_pydantic_writes(result)
