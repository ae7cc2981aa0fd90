"""Wallet commands: what other services ask the wallet to do (CONTRACT.md, "A command").

Every amount is a decimal string on the wire and a `Decimal` here. A command that parses is
well-formed: its currency is registered, every amount is positive and fits the currency's scale.
Whether it can be applied (enough funds, no idempotency conflict) is the ledger's decision.
"""

from __future__ import annotations

import functools
import json
import math
import re
import typing
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from json.encoder import encode_basestring_ascii
from typing import Annotated, Any, Final, Literal, Self, TypeIs

import msgspec
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared.money import (
    Currency,
    MoneyError,
    format_amount,
    get_currency,
    parse_amount,
    parse_decimal,
)
from shared.text import utf8_encodable


def _decimal_from_wire(raw: object) -> Decimal:
    try:
        return parse_decimal(raw)
    except MoneyError as error:
        raise PydanticCustomError(error.code, error.message) from None


def _currency_code(raw: object) -> str:
    try:
        return get_currency(raw).code
    except MoneyError as error:
        raise PydanticCustomError(error.code, error.message) from None


# A decimal that arrives as a string, is finite and in range; serialised back as a plain string.
WireDecimal = Annotated[
    Decimal,
    BeforeValidator(_decimal_from_wire),
    PlainSerializer(format_amount, return_type=str, when_used="always"),
]
CurrencyCode = Annotated[str, BeforeValidator(_currency_code)]
# Ids (user, command, reference, hold): 1 to 200 characters, no whitespace or control character.
IDENTIFIER_PATTERN: Final = r"^[^\s\x00-\x1f]+$"
IDENTIFIER_MAX_LENGTH: Final = 200
Identifier = Annotated[
    str, Field(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN)
]
TransactionType = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.:-]+$")]

CommandType = Literal[
    "credit",
    "debit",
    "lock",
    "unlock",
    "release_locked",
    "transfer",
    "transfer_locked",
    "exchange",
    "savings_in",
    "savings_out",
    "settle_trade",
]
COMMAND_TYPES: Final[tuple[str, ...]] = typing.get_args(CommandType)


def _check_amount(
    value: Decimal, currency: Currency, field: str, *, allow_zero: bool = False
) -> Decimal:
    try:
        return parse_amount(value, currency, allow_zero=allow_zero)
    except MoneyError as error:
        raise PydanticCustomError(error.code, f"{field}: {error.message}") from None


MAX_METADATA_BYTES: Final = 8 * 1024
_MAX_METADATA_DEPTH: Final = 8
_INT64: Final = 2**63


def _check_storable(value: JsonValue, depth: int) -> None:
    if depth > _MAX_METADATA_DEPTH:
        raise PydanticCustomError("metadata_too_deep", "metadata nests too deeply")
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        raise PydanticCustomError(
            "metadata_number_out_of_range", "metadata integers must fit 64 bits"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("metadata_number_out_of_range", "metadata numbers must be finite")
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                # No BSON document can hold such a name: the store would refuse the whole batch.
                raise PydanticCustomError(
                    "metadata_key_not_storable",
                    "metadata field names must not hold a NUL character",
                )
            _check_storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item, depth + 1)


class CommandBase(BaseModel):
    """Fields every command has. `user_id` is the payer: the user whose money leaves or is locked."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    command_id: Identifier = Field(default_factory=lambda: uuid.uuid4().hex)
    reference_id: Identifier
    transaction_type: TransactionType
    user_id: Identifier
    currency: CurrencyCode
    amount: WireDecimal
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    issued_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("metadata")
    @classmethod
    def _metadata_is_storable(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        if not value:
            return value  # most commands carry none: nothing to measure or walk
        # Metadata is stored with the event; what MongoDB cannot store would block the partition.
        if len(json.dumps(value, separators=(",", ":"))) > MAX_METADATA_BYTES:
            raise PydanticCustomError(
                "metadata_too_large", f"metadata over {MAX_METADATA_BYTES} bytes"
            )
        _check_storable(value, depth=0)
        return value

    @model_validator(mode="after")
    def _amount_fits_currency(self) -> Self:
        currency = get_currency(self.currency)
        object.__setattr__(self, "amount", _check_amount(self.amount, currency, "amount"))
        return self

    @property
    def idempotency_key(self) -> tuple[str, str, str]:
        """(type, transaction_type, reference_id): the seed reuses one reference for lock and release."""
        return (self.type, self.transaction_type, self.reference_id)  # type: ignore[attr-defined]

    def fingerprint(self) -> str:
        """What makes two commands with one idempotency key the same request: the canonical form
        of the money fields (`canonical_fingerprint`).

        command_id, issued_at and metadata are left out: a resend is a new message (new id, new
        time, maybe a new trace in metadata) asking for the same money movement.
        """
        # The model's own field dict, not a copy: canonical_fingerprint only reads the money
        # fields of this command's type from it (a copy per command was a tenth of the ledger).
        return canonical_fingerprint(self.__dict__)


# The fields that say which money moves (CONTRACT.md, "Idempotency payload"). Anything else a later
# version adds is not compared, so an older producer's resend stays a duplicate.
MONEY_FIELDS: Final[tuple[str, ...]] = (
    "type",
    "transaction_type",
    "reference_id",
    "user_id",
    "currency",
    "amount",
    "to_user",
    "fee",
    "destination",
    "receive_currency",
    "receive_amount",
    "receive_fee",
    "hold_id",
    "counter_hold_id",
)
_AMOUNT_FIELDS: Final = frozenset({"amount", "fee", "receive_amount", "receive_fee"})
# An absent optional field counts as its default; hold_id's default is the reference_id.
_DEFAULTS: Final[dict[str, str]] = {"fee": "0", "receive_fee": "0", "destination": "withdrawals"}


def canonical_fingerprint(fields: str | dict[str, Any]) -> str:
    """The canonical JSON of a command's money fields: the ones its command type has, absent
    optional ones as their defaults (fee 0, hold_id = reference_id, destination "withdrawals"),
    amounts without trailing zeros, nothing else. Takes the fields, or a fingerprint stored by any
    earlier version (which spelled out every field it had, defaults as null): canonical forms are
    equal exactly when the requests are the same.
    """
    document = json.loads(fields) if isinstance(fields, str) else fields
    command_type = _COMMAND_CLASSES.get(str(document.get("type")))
    # What json.dumps(canonical, sort_keys=True, separators=(",", ":")) wrote, built directly
    # (a fingerprint per command; the encoder's machinery was half its cost): the names in sorted
    # order, each value a JSON string escaped by the standard library's own (ASCII) string encoder.
    parts: list[str] = []
    for name, prefix in _sorted_money_fields_of(command_type):
        value = document.get(name)
        if value is None:
            value = document.get("reference_id") if name == "hold_id" else _DEFAULTS.get(name)
        if value is None:
            continue
        if name in _AMOUNT_FIELDS:
            value = format_amount(value if isinstance(value, Decimal) else parse_decimal(value))
        parts.append(prefix + encode_basestring_ascii(str(value)))
    return "{" + ",".join(parts) + "}"


@functools.cache
def _money_fields_of(command_type: type[BaseModel]) -> tuple[str, ...]:
    return tuple(name for name in MONEY_FIELDS if name in command_type.model_fields)


@functools.cache
def _sorted_money_fields_of(command_type: type[BaseModel] | None) -> tuple[tuple[str, str], ...]:
    """The money fields of a command type (all of them for an unknown type), sorted as
    `sort_keys` sorts them, each with its JSON key prefix (`"name":`)."""
    names = _money_fields_of(command_type) if command_type else MONEY_FIELDS
    return tuple((name, encode_basestring_ascii(name) + ":") for name in sorted(names))


class CreditCommand(CommandBase):
    """External money arrives in the user's available balance (deposit, commission, bonus)."""

    type: Literal["credit"] = "credit"


class DebitCommand(CommandBase):
    """Money leaves the user's available balance to the outside."""

    type: Literal["debit"] = "debit"


class _WithHold(CommandBase):
    # Locked money is held per hold. Without `hold_id` the hold is the command's reference_id (the
    # seed's one reference per trade); a service that spends one hold in several idempotent steps
    # (an order's fills, refunds and cancel) names it explicitly and gives each step its own reference.
    hold_id: Identifier | None = None

    @property
    def hold(self) -> str:
        return self.hold_id if self.hold_id is not None else self.reference_id


class LockCommand(_WithHold):
    """Available → locked under `hold` (P2P escrow, pending withdrawal, an open order)."""

    type: Literal["lock"] = "lock"


class UnlockCommand(_WithHold):
    """Locked → available, from `hold` only (cancelled trade, rejected withdrawal, order refund)."""

    type: Literal["unlock"] = "unlock"


class _WithFee(CommandBase):
    # The fee is carved out of `amount`: `amount` leaves the payer, `fee` of it goes to platform:fees.
    fee: WireDecimal | None = None

    @model_validator(mode="after")
    def _fee_within_amount(self) -> Self:
        if self.fee is not None:
            fee = _check_amount(self.fee, get_currency(self.currency), "fee", allow_zero=True)
            if fee >= self.amount:
                raise PydanticCustomError("fee_not_below_amount", "fee must be less than amount")
            object.__setattr__(self, "fee", fee)
        return self

    @property
    def fee_amount(self) -> Decimal:
        return self.fee if self.fee is not None else Decimal(0)


class ReleaseLockedCommand(_WithFee, _WithHold):
    """Locked → outside (approved withdrawal): `amount` leaves locked, `fee` of it to platform:fees."""

    type: Literal["release_locked"] = "release_locked"
    destination: Identifier = "withdrawals"


class TransferCommand(CommandBase):
    """The payer's available → another user's available, all or nothing."""

    type: Literal["transfer"] = "transfer"
    to_user: Identifier


class TransferLockedCommand(_WithFee, _WithHold):
    """The seller's locked → the buyer's available, `fee` of it to platform:fees (P2P release)."""

    type: Literal["transfer_locked"] = "transfer_locked"
    to_user: Identifier


class ExchangeCommand(_WithFee):
    """The user pays `amount` of `currency` (its `fee` to platform:fees, the rest to
    platform:liquidity) and receives `receive_amount` of `receive_currency` from platform:liquidity:
    swaps, spot trades and express buy in one atomic transaction."""

    type: Literal["exchange"] = "exchange"
    receive_currency: CurrencyCode
    receive_amount: WireDecimal

    @model_validator(mode="after")
    def _receive_side(self) -> Self:
        currency = get_currency(self.receive_currency)
        if currency.code == self.currency:
            raise PydanticCustomError("same_currency", "an exchange needs two different currencies")
        received = _check_amount(self.receive_amount, currency, "receive_amount")
        object.__setattr__(self, "receive_amount", received)
        return self


class SavingsInCommand(CommandBase):
    """Available → savings."""

    type: Literal["savings_in"] = "savings_in"


class SavingsOutCommand(CommandBase):
    """Savings → available."""

    type: Literal["savings_out"] = "savings_out"


class SettleTradeCommand(_WithFee, _WithHold):
    """One spot fill, all or nothing, between two users in two currencies (key: the buyer).

    The buyer (`user_id`) pays `amount` of `currency` (the quote) from their hold `hold_id` (the buy
    order); the seller (`to_user`) delivers `receive_amount` of `receive_currency` (the base) from
    their hold `counter_hold_id` (the sell order). Each side's fee is carved out of what it
    receives: the seller gets `amount - fee` of the quote, the buyer `receive_amount - receive_fee`
    of the base; both fees go to platform:fees.
    """

    type: Literal["settle_trade"] = "settle_trade"
    to_user: Identifier
    counter_hold_id: Identifier
    receive_currency: CurrencyCode
    receive_amount: WireDecimal
    receive_fee: WireDecimal | None = None

    @model_validator(mode="after")
    def _counter_side(self) -> Self:
        currency = get_currency(self.receive_currency)
        if currency.code == self.currency:
            raise PydanticCustomError("same_currency", "a trade needs two different currencies")
        received = _check_amount(self.receive_amount, currency, "receive_amount")
        object.__setattr__(self, "receive_amount", received)
        if self.receive_fee is not None:
            fee = _check_amount(self.receive_fee, currency, "receive_fee", allow_zero=True)
            if fee >= received:
                raise PydanticCustomError(
                    "fee_not_below_amount", "receive_fee must be less than receive_amount"
                )
            object.__setattr__(self, "receive_fee", fee)
        return self

    @property
    def receive_fee_amount(self) -> Decimal:
        return self.receive_fee if self.receive_fee is not None else Decimal(0)


WalletCommand = Annotated[
    CreditCommand
    | DebitCommand
    | LockCommand
    | UnlockCommand
    | ReleaseLockedCommand
    | TransferCommand
    | TransferLockedCommand
    | ExchangeCommand
    | SavingsInCommand
    | SavingsOutCommand
    | SettleTradeCommand,
    Field(discriminator="type"),
]
WALLET_COMMAND: Final[TypeAdapter[WalletCommand]] = TypeAdapter(WalletCommand)
_COMMAND_CLASSES: Final[dict[str, type[BaseModel]]] = {
    cls.model_fields["type"].default: cls
    for cls in typing.get_args(typing.get_args(WalletCommand)[0])
}

MAX_COMMAND_BYTES: Final = 64 * 1024


class InvalidCommand(ValueError):
    """A message that is not a valid command: it goes to the dead-letter topic with this reason.

    `envelope` keeps whatever identifying fields could be read, so the sender can still be told.
    """

    def __init__(self, reason: str, detail: str, envelope: dict[str, str] | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.envelope = envelope or {}


# Field-level error codes that stand for themselves; anything else is reported by its kind.
_MONEY_CODES: Final = frozenset(
    {
        "unknown_currency",
        "amount_not_a_string",
        "amount_malformed",
        "amount_not_a_number",
        "amount_infinite",
        "amount_too_large",
        "amount_too_long",
        "amount_too_precise",
        "amount_not_positive",
        "fee_not_below_amount",
        "same_currency",
    }
)


def reason_for(error: ValidationError) -> tuple[str, str]:
    """The (reason, detail) of the first validation error: `unknown_currency`, `invalid_amount`,
    `missing_field`, `unknown_field`, `unknown_type`, `unknown_transaction_type` or
    `invalid_field`; detail says which and why."""
    first = error.errors(include_url=False)[0]
    kind = first["type"]
    where = ".".join(str(part) for part in first["loc"][1:] or first["loc"]) or "message"
    detail = f"{where}: {first['msg']}"
    if kind == "unknown_currency":
        return "unknown_currency", detail
    if kind in _MONEY_CODES:
        return "invalid_amount", f"{kind}: {detail}"
    if kind == "missing":
        return "missing_field", detail
    if kind == "extra_forbidden":
        return "unknown_field", detail
    if kind in {"union_tag_invalid", "union_tag_not_found"}:
        return "unknown_type", detail
    if first["loc"][-1:] == ("transaction_type",) and kind in _TEXT_OUT_OF_SHAPE:
        # Text, but not as any registered type is written (short lowercase): one the registry
        # does not have, as the contract names it (`Bonus`, `DEPOSIT_NOWPAYMENTS`).
        return "unknown_transaction_type", detail
    return "invalid_field", detail


_TEXT_OUT_OF_SHAPE: Final = frozenset(
    {"string_pattern_mismatch", "string_too_long", "string_too_short"}
)


def _envelope(document: dict[str, Any]) -> dict[str, str]:
    # Only what the refusal can carry back: text UTF-8 can encode (never a lone surrogate).
    keys = ("command_id", "type", "transaction_type", "reference_id", "user_id")
    return {
        k: v
        for k in keys
        if isinstance(v := document.get(k), str) and 0 < len(v) <= 200 and utf8_encodable(v)
    }


_IDENTIFIER: Final = re.compile(IDENTIFIER_PATTERN)


def unsendable_reason(error: ValueError) -> str:
    """Why a wallet command could not be built from a stored record (a value the command model
    refuses), in one line: the model's reason and detail (`invalid_amount: amount_too_precise:
    amount: …`), else the error's own text. The relays that send stored commands again log it
    and go on with the others."""
    if isinstance(error, ValidationError):
        reason, detail = reason_for(error)
        return f"{reason}: {detail}"
    return str(error) or type(error).__name__


def is_identifier(text: object) -> TypeIs[str]:
    """Whether `text` can be an id (a user's, a reference) in a wallet command: 1 to 200
    characters, no whitespace or control character, and text UTF-8 can encode."""
    return (
        isinstance(text, str)
        and 0 < len(text) <= IDENTIFIER_MAX_LENGTH
        and _IDENTIFIER.fullmatch(text) is not None
        and utf8_encodable(text)
    )


def _refuse_unencodable(value: Any, where: str = "") -> None:
    """Refuse a document holding a string or a field name that UTF-8 cannot encode, naming the
    field (`invalid_field`).

    Accepted, such a command could be neither stored nor answered; refused by validation, its
    refusal could not be published either, the text echoed back. Only the standard path needs
    this: the fast decoder refuses every lone surrogate (escaped, in the bytes, or in a str).
    """
    if isinstance(value, str):
        if not utf8_encodable(value):
            raise InvalidCommand("invalid_field", f"{where or 'message'}: {_UNENCODABLE}")
    elif isinstance(value, dict):
        for key, item in value.items():
            name = (f"{where}.{_printable(key)}" if where else _printable(key))[:200]
            if not utf8_encodable(key):
                raise InvalidCommand("invalid_field", f"{name}: the name holds {_UNENCODABLE}")
            _refuse_unencodable(item, name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_unencodable(item, f"{where}.{index}"[:200])


_UNENCODABLE: Final = "a lone UTF-16 surrogate, which UTF-8 cannot encode"


def _printable(name: str) -> str:
    # A field's name as a refusal can show it: a lone surrogate as its escape (\ud800).
    return name.encode("utf-8", "backslashreplace").decode()


def parse_command(raw: bytes | str) -> WalletCommand:
    """Decode one Kafka message value into a command, or raise `InvalidCommand` with the reason."""
    if len(raw) > MAX_COMMAND_BYTES:
        raise InvalidCommand("message_too_large", f"more than {MAX_COMMAND_BYTES} bytes")
    try:
        # The fast decoder gives the same document the standard one does, numbers converted as
        # `_numbers_as_numbers` would. It refuses more than it must (a BOM, lone surrogates,
        # UTF-16, out-of-range numbers): then the standard path decides, with its own reasons
        # (a lone surrogate anywhere: `invalid_field`, as nothing could store or echo it).
        document = _FAST_JSON.decode(raw)
    except Exception:
        document = _decode_standard(raw)
    if not isinstance(document, dict):
        raise InvalidCommand("not_an_object", "a command is a JSON object")
    try:
        return WALLET_COMMAND.validate_python(document)
    except InvalidCommand as error:
        error.envelope = _envelope(document)
        raise
    except ValidationError as error:
        reason, detail = reason_for(error)
        raise InvalidCommand(reason, detail, _envelope(document)) from None


def _decode_standard(raw: bytes | str) -> Any:
    try:
        # parse_float/parse_constant keep JSON numbers from turning into floats or NaN silently.
        document = json.loads(raw, parse_float=Decimal, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidCommand("malformed_json", str(error)[:200]) from None
    except RecursionError:
        raise InvalidCommand("malformed_json", "nested deeper than a command can be") from None
    if not isinstance(document, dict):
        return document
    try:
        _refuse_unencodable(document)
        return _numbers_as_numbers(document)
    except RecursionError:
        too_deep = InvalidCommand("malformed_json", "nested deeper than a command can be")
        too_deep.envelope = _envelope(document)
        raise too_deep from None
    except InvalidCommand as error:
        error.envelope = _envelope(document)
        raise


def _finite_float(text: str) -> float:
    # Read as a Decimal first, as the standard path does, so that 1e400 is refused, not inf.
    as_float = float(Decimal(text))
    if as_float in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return as_float


_FAST_JSON: Final = msgspec.json.Decoder(float_hook=_finite_float)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _numbers_as_numbers(value: Any) -> Any:
    # JSON numbers were read as Decimal so that 1e400 cannot become inf unnoticed. Amount fields
    # refuse every number by type; elsewhere (metadata) a number must be a finite float.
    if isinstance(value, dict):
        return {k: _numbers_as_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_numbers(v) for v in value]
    if isinstance(value, Decimal):
        as_float = float(value)
        if as_float in (float("inf"), float("-inf")):
            raise InvalidCommand("invalid_field", f"number out of range: {str(value)[:40]}")
        return as_float
    return value


# Writers of the exact bytes `model_dump_json` writes, by message class (the wallet's two
# messages per command, `shared.messaging.outcomes`): pydantic's JSON encoding was a tenth of the
# wallet's time. A writer answers None for anything but the common case, and pydantic decides.
FAST_ENCODERS: Final[dict[type[BaseModel], Callable[[Any], bytes | None]]] = {}


def encode(message: BaseModel) -> bytes:
    """JSON bytes of a contract message; amounts come out as strings."""
    fast = FAST_ENCODERS.get(type(message))
    if fast is not None and (encoded := fast(message)) is not None:
        return encoded
    return message.model_dump_json().encode()
