"""What the wallet publishes: results (one per command delivery), ledger events and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Literal, Self

import msgspec
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

from shared.messaging.commands import FAST_ENCODERS, CommandType, WalletCommand, WireDecimal
from shared.money import LEDGER_CONTEXT, format_amount

ResultStatus = Literal["applied", "duplicate", "rejected"]


def _now() -> datetime:
    return datetime.now(UTC)


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def model_construct(  # type: ignore[override]  # the mypy plugin types it per model
        cls, _fields_set: set[str] | None = None, **values: Any
    ) -> Self:
        """pydantic's `model_construct`, faster when every field is given (as the wallet builds
        its results and events, from validated values): the same instance, without walking
        each field for aliases and defaults. That walk was a quarter of the wallet's time."""
        known = _CONSTRUCTION.get(cls)
        if known is None:
            names = tuple(cls.__pydantic_fields__)
            known = _CONSTRUCTION[cls] = (names, set(names), bool(cls.__pydantic_post_init__))
        order, every_field, post_init = known
        if _fields_set is not None or post_init:
            return super().model_construct(_fields_set, **values)
        # Every field, given in declaration order (as the wallet passes them) is the common case,
        # and one comparison: other orders are put in declaration order, as pydantic stores
        # them (serialisation follows this order); anything missing or extra goes to pydantic.
        if tuple(values) != order:
            if len(values) != len(order) or values.keys() != every_field:
                return super().model_construct(_fields_set, **values)
            values = {name: values[name] for name in order}
        message = _new(cls)  # what `cls.__new__` is for a model (pydantic defines none)
        _set(message, "__dict__", values)
        _set(message, "__pydantic_fields_set__", every_field.copy())
        _set(message, "__pydantic_extra__", None)
        _set(message, "__pydantic_private__", None)
        return message


def assemble[M: _Message](cls: type[M], values: dict[str, Any]) -> M:
    """What `cls.model_construct(**values)` builds, for `values` that hold every field of `cls`
    in declaration order (the caller's promise; the wallet builds its messages so): nothing is
    looked up or compared per message. Half the cost of `model_construct`, five messages a
    command."""
    message = _new(cls)
    _set(message, "__dict__", values)
    _set(message, "__pydantic_fields_set__", _FIELD_SETS[cls].copy())
    _set(message, "__pydantic_extra__", None)
    _set(message, "__pydantic_private__", None)
    return message


# Per class, what construction needs, looked up once: the field names in declaration order, as a
# set (each message gets a copy of it), and whether the class has a post-init hook.
_CONSTRUCTION: dict[type[BaseModel], tuple[tuple[str, ...], set[str], bool]] = {}
_new = object.__new__
_set = object.__setattr__  # the models are frozen: their own __setattr__ refuses


class BalanceSnapshot(_Message):
    """A user's balances of one currency after a command; total = available + locked (the seed's)."""

    user_id: str
    currency: str
    available_balance: WireDecimal
    locked_balance: WireDecimal
    savings_balance: WireDecimal
    total_balance: WireDecimal


# The one refusal the wallet does not record under the command's idempotency key.
UNRECORDED_REFUSAL: Final = "processing_failed"


class CommandResult(_Message):
    """The outcome of one command delivery on `wallet.results` (key: the command's key)."""

    command_id: str
    type: CommandType | str
    transaction_type: str
    reference_id: str
    user_id: str
    status: ResultStatus
    reason: str | None = None
    # Extensions of the contract: why exactly (e.g. amount_too_precise), what a duplicate's first
    # delivery came to (applied or rejected), and the ledger transaction.
    detail: str | None = None
    original_status: ResultStatus | None = None
    transaction_id: str | None = None
    balances: list[BalanceSnapshot] = Field(default_factory=list)
    processed_at: AwareDatetime = Field(default_factory=_now)

    @property
    def final(self) -> bool:
        """Whether this is the command's outcome for good. A `processing_failed` refusal is not:
        the wallet failed on the command (a bug, a database error it could not class as passing)
        and recorded no outcome for it, so the same command sent again may still be applied. A
        service takes such an answer as none (its record stays pending and is asked again), never
        as a refusal that a later `applied` would contradict."""
        return not (self.status == "rejected" and self.reason == UNRECORDED_REFUSAL)

    def answers(self, command: WalletCommand) -> bool:
        """Whether this is the answer to `command` (a WalletCommand a service recorded): its id,
        type and user. A service follows only the answers to its own recorded commands; a result
        that merely names one of its references (another producer's command, a refusal echoing
        a malformed message) is not one."""
        return (
            self.command_id == command.command_id
            and self.type == command.type
            and self.user_id == command.user_id
        )


class Posting(_Message):
    """One leg of a ledger transaction: `amount` (signed) moves into `account`.

    Accounts: `user:<user_id>:available|locked|savings`, `platform:fees`, `platform:liquidity`,
    `external:<counterparty>` (e.g. external:nowpayments, external:withdrawals).
    """

    account: str
    currency: str
    amount: WireDecimal


class LedgerTransaction(_Message):
    """What happened on `wallet.events` (key: the payer's user id): one balanced set of postings."""

    transaction_id: str
    command_id: str
    type: CommandType
    transaction_type: str
    reference_id: str
    user_id: str
    to_user: str | None = None
    postings: list[Posting]
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    occurred_at: AwareDatetime = Field(default_factory=_now)

    def is_balanced(self) -> bool:
        """Per currency, the postings sum to zero: summed in the ledger's 60-digit context (the
        default 28 digits would round an 18-decimal amount and could hide an imbalance)."""
        totals: dict[str, Decimal] = {}
        for posting in self.postings:
            previous = totals.get(posting.currency, Decimal(0))
            totals[posting.currency] = LEDGER_CONTEXT.add(previous, posting.amount)
        return all(total == 0 for total in totals.values())


class DeadLetter(_Message):
    """A message that is not a valid command, as received, with the reason (`wallet.commands.dlq`)."""

    reason: str
    detail: str
    raw_value: str  # the message as text (undecodable bytes escaped), so ops can read and fix it
    key: str | None = None
    source_topic: str
    source_partition: int
    source_offset: int
    failed_at: AwareDatetime = Field(default_factory=_now)


# The wire form of a result and of an event, written without pydantic: the bytes `model_dump_json`
# writes (proven on generated messages in shared/tests/test_outcome_encoding.py), in about two
# thirds of its time. msgspec writes a struct of the same field names, in declaration order, from the
# message's own values: strings escaped as pydantic escapes them (quotes, backslashes, control
# characters; anything else as it is, UTF-8), instants in UTC as pydantic writes them, amounts
# first through the field's own serialiser (`format_amount`). pydantic writes a message's own
# field dict in its order: any other order, a missing or extra field, a value of another type
# (pydantic would warn), another time zone, an unencodable string make the writer answer None,
# and pydantic decides as before.
_METADATA: Final = TypeAdapter(dict[str, JsonValue])
_SNAPSHOT_FIELDS: Final = tuple(BalanceSnapshot.__pydantic_fields__)
_POSTING_FIELDS: Final = tuple(Posting.__pydantic_fields__)
_RESULT_FIELDS: Final = tuple(CommandResult.__pydantic_fields__)
_EVENT_FIELDS: Final = tuple(LedgerTransaction.__pydantic_fields__)
# The field set of each message `assemble` builds (none of them has a post-init hook).
_FIELD_SETS: Final[dict[type[_Message], set[str]]] = {}
for _cls in (BalanceSnapshot, CommandResult, Posting, LedgerTransaction):
    assert not _cls.__pydantic_post_init__
    _FIELD_SETS[_cls] = set(_cls.__pydantic_fields__)
_SnapshotWire: Final = msgspec.defstruct("BalanceSnapshotWire", _SNAPSHOT_FIELDS)
_PostingWire: Final = msgspec.defstruct("PostingWire", _POSTING_FIELDS)
_ResultWire: Final = msgspec.defstruct("CommandResultWire", _RESULT_FIELDS)
_EventWire: Final = msgspec.defstruct("LedgerTransactionWire", _EVENT_FIELDS)
_JSON: Final = msgspec.json.Encoder()


class _NotCommon(Exception):
    """A message the direct writer leaves to pydantic."""


def _instant(value: Any) -> datetime:
    if type(value) is not datetime or value.tzinfo is not UTC:
        raise _NotCommon
    return value


def _snapshots(balances: Any) -> list[Any]:
    if type(balances) is not list:
        raise _NotCommon
    wire = []
    for snapshot in balances:
        if type(snapshot) is not BalanceSnapshot:
            raise _NotCommon
        fields = snapshot.__dict__
        if tuple(fields) != _SNAPSHOT_FIELDS:
            raise _NotCommon
        user_id, currency, available, locked, savings, total = fields.values()
        if type(user_id) is not str or type(currency) is not str:
            raise _NotCommon
        wire.append(
            _SnapshotWire(
                user_id,
                currency,
                format_amount(available),
                format_amount(locked),
                format_amount(savings),
                format_amount(total),
            )
        )
    return wire


def _postings(postings: Any) -> list[Any]:
    if type(postings) is not list:
        raise _NotCommon
    wire = []
    for posting in postings:
        if type(posting) is not Posting:
            raise _NotCommon
        fields = posting.__dict__
        if tuple(fields) != _POSTING_FIELDS:
            raise _NotCommon
        account, currency, amount = fields.values()
        if type(account) is not str or type(currency) is not str:
            raise _NotCommon
        wire.append(_PostingWire(account, currency, format_amount(amount)))
    return wire


def _result_json(result: CommandResult) -> bytes | None:
    try:
        fields = result.__dict__
        if type(result) is not CommandResult or tuple(fields) != _RESULT_FIELDS:
            return None
        (
            command_id,
            command_type,
            transaction_type,
            reference_id,
            user_id,
            status,
            reason,
            detail,
            original_status,
            transaction_id,
            balances,
            processed_at,
        ) = fields.values()
        if not (
            type(command_id) is str
            and type(command_type) is str
            and type(transaction_type) is str
            and type(reference_id) is str
            and type(user_id) is str
            and type(status) is str
            and (reason is None or type(reason) is str)
            and (detail is None or type(detail) is str)
            and (original_status is None or type(original_status) is str)
            and (transaction_id is None or type(transaction_id) is str)
        ):
            return None
        return _JSON.encode(
            _ResultWire(
                command_id,
                command_type,
                transaction_type,
                reference_id,
                user_id,
                status,
                reason,
                detail,
                original_status,
                transaction_id,
                _snapshots(balances),
                _instant(processed_at),
            )
        )
    except Exception:  # not the common case (or not encodable): pydantic decides, as before
        return None


def _event_json(event: LedgerTransaction) -> bytes | None:
    try:
        fields = event.__dict__
        if type(event) is not LedgerTransaction or tuple(fields) != _EVENT_FIELDS:
            return None
        (
            transaction_id,
            command_id,
            command_type,
            transaction_type,
            reference_id,
            user_id,
            to_user,
            postings,
            metadata,
            occurred_at,
        ) = fields.values()
        if not (
            type(transaction_id) is str
            and type(command_id) is str
            and type(command_type) is str
            and type(transaction_type) is str
            and type(reference_id) is str
            and type(user_id) is str
            and (to_user is None or type(to_user) is str)
            and type(metadata) is dict
        ):
            return None
        return _JSON.encode(
            _EventWire(
                transaction_id,
                command_id,
                command_type,
                transaction_type,
                reference_id,
                user_id,
                to_user,
                _postings(postings),
                # Metadata is any JSON, floats included, which pydantic writes its own way: its
                # field's own serialiser writes it, when there is any.
                msgspec.Raw(_METADATA.dump_json(metadata)) if metadata else metadata,
                _instant(occurred_at),
            )
        )
    except Exception:  # not the common case (or not encodable): pydantic decides, as before
        return None


FAST_ENCODERS[CommandResult] = _result_json
FAST_ENCODERS[LedgerTransaction] = _event_json
