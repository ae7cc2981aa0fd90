"""Quote, execute, follow the wallet: the conversion use cases over their ports."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final, Protocol

import structlog

from shared.messaging import (
    CommandResult,
    CreditCommand,
    ExchangeCommand,
    WalletCommand,
    unsendable_reason,
)
from shared.money import Currency, MoneyError, get_currency, parse_amount
from shared.paging import PageCursor, Position
from trading.conversions.domain import (
    ConversionKind,
    Quote,
    Status,
    Terms,
    make_quote,
    outcome_of,
    refusal_to_execute,
    refuse_same_currency,
)
from trading.errors import Conflict, Invalid, NotFound
from trading.prices.domain import VALUATION_CURRENCY, PriceBook

log = structlog.get_logger(__name__)

LIQUIDITY_FUNDING = "liquidity_funding"


# Quotes a relay pass takes (the next pass goes on after them).
RELAY_PAGE: Final = 100


class QuoteExists(Exception):
    """A quote was added under an id that is stored already (nothing was changed)."""


class Quotes(Protocol):
    """Quotes and, once executed, the conversions they became: one record per quote, keyed by
    `quote_id`, never deleted. Two adapters keep them, MongoDB (`adapters.mongo`) and memory
    (`adapters.memory`); one contract suite runs on both.

    What is kept is what MongoDB keeps: instants in UTC to the millisecond (rounded down) and
    compared at that precision; `pay_amount`, `fee` and `receive_amount` exact as decimal128 holds
    them (more than 34 significant digits: `decimal.Inexact`, nothing stored); rates, prices, fee
    rate and spread exact at any number of digits, as plain decimal strings (so without trailing
    zeros: "1.50" comes back 1.5); the TTL as float seconds. Quotes are immutable values, so
    nothing a caller holds changes what is stored. Besides the quote, a record knows when its
    command was first sent (published) and last sent (asked).
    """

    async def add(self, quote: Quote) -> None:
        """Stores a new quote as given (its status, execution fields and reason too), neither
        published nor asked; `QuoteExists` if its id is stored already (that one is kept)."""
        ...

    async def get(self, quote_id: str) -> Quote | None: ...

    async def by_execution(self, kind: ConversionKind, execution_id: str) -> Quote | None:
        """The quote of `kind` claimed with `execution_id` (None for another kind's)."""
        ...

    async def claim(
        self, quote_id: str, kind: ConversionKind, user_id: str, execution_id: str, now: datetime
    ) -> Quote | None:
        """quoted → pending, with `execution_id` and `executed_at` = `now`: only if it is this
        user's quote of this kind, still quoted and unexpired at `now` (`Quote.expired`:
        `expires_at` > `now`, at millisecond precision, and made no further than
        FUTURE_TOLERANCE ahead of `now`). The claimed quote as now stored, else None and nothing
        changes. One conditional update: of racing claims of a quote exactly one gets it; a second claim
        gets None and leaves the first one's execution as it was."""
        ...

    async def mark_published(self, quote_id: str, at: datetime) -> None:
        """The first send went out at `at`: published, and last asked, at `at`. Only the first
        call counts (a later one changes nothing); an unknown quote is no error."""
        ...

    async def unpublished(
        self, older_than: datetime, limit: int = 100, after: Position | None = None
    ) -> Sequence[Quote]:
        """Pending quotes never published whose `executed_at` is before `older_than`, oldest
        first (by `created_at`, then `quote_id`), only those after `after` (the `(created_at,
        quote_id)` of a quote this returned) when given, at most `limit` (0: no limit)."""
        ...

    async def awaiting_wallet(
        self, asked_before: datetime, limit: int = 100, after: Position | None = None
    ) -> Sequence[Quote]:
        """Pending quotes published and last asked before `asked_before` (never-published ones are
        `unpublished`'s), in the order and from the place `unpublished` takes them, at most
        `limit` (0: no limit)."""
        ...

    async def mark_asked(self, quote_id: str, at: datetime) -> None:
        """The command was sent again at `at`: last asked at `at`, whatever the quote's status
        (the caller asks about pending ones); an unknown quote is no error."""
        ...

    async def settle(
        self,
        kind: ConversionKind,
        execution_id: str,
        user_id: str,
        status: Status,
        reason: str | None,
        at: datetime,
    ) -> bool:
        """pending → `status` (completed | failed) with `reason`, for the quote of `kind` claimed
        with `execution_id` by `user_id` only; True if this call settled it. Once: a replayed
        result, a racing one, or a result of another user's command under this reference changes
        nothing and answers False."""
        ...


class CommandSender(Protocol):
    async def send(self, command: WalletCommand) -> None: ...


def _currency(code: str, field_name: str) -> Currency:
    try:
        return get_currency(code)
    except MoneyError as error:
        raise Invalid(error.code, f"{field_name}: {error.message}") from None


def _amount(raw: str, currency: Currency, field_name: str) -> Decimal:
    try:
        return parse_amount(raw, currency)
    except MoneyError as error:
        raise Invalid(error.code, f"{field_name}: {error.message}") from None


@dataclass
class Conversions:
    """Swaps and express buys: quote, execute once, follow the wallet's result."""

    quotes: Quotes
    wallet: CommandSender
    prices: PriceBook
    terms: dict[ConversionKind, Terms]
    clock: Callable[[], datetime]
    new_id: Callable[[], str] = field(default=lambda: uuid.uuid4().hex)
    # Where the next pass of each relay goes on, by (created_at, quote_id).
    _resend_cursor: PageCursor[Quote] = field(
        default_factory=lambda: PageCursor(_quote_position), init=False
    )
    _ask_cursor: PageCursor[Quote] = field(
        default_factory=lambda: PageCursor(_quote_position), init=False
    )

    async def quote_swap(
        self, user_id: str, from_code: str, to_code: str, raw_amount: str
    ) -> Quote:
        pay = _currency(from_code, "from_currency")
        receive = _currency(to_code, "to_currency")
        if pay.kind != "crypto" or receive.kind != "crypto":
            raise Invalid("not_crypto", "a swap exchanges one crypto currency for another")
        # Before the prices are looked up: without a fresh one this answered 503, which a client
        # retries, for a request that can never succeed.
        refuse_same_currency(pay, receive)
        amount = _amount(raw_amount, pay, "from_amount")
        return await self._quote(ConversionKind.SWAP, user_id, pay, amount, receive)

    async def quote_express_buy(
        self, user_id: str, fiat_code: str, raw_amount: str, crypto_code: str
    ) -> Quote:
        fiat = _currency(fiat_code, "fiat_currency")
        crypto = _currency(crypto_code, "crypto_currency")
        if fiat.kind != "fiat":
            raise Invalid("not_fiat", f"{fiat.code} is not a fiat currency")
        if fiat.code != VALUATION_CURRENCY:
            # Liquidity is priced in GBP only: no source prices another fiat, so a quote in it
            # could never be made (it answered 503, which a client retries for ever).
            raise Invalid("unsupported_fiat", f"express buy pays in {VALUATION_CURRENCY}")
        if crypto.kind != "crypto":
            raise Invalid("not_crypto", f"{crypto.code} is not a crypto currency")
        amount = _amount(raw_amount, fiat, "fiat_amount")
        return await self._quote(ConversionKind.EXPRESS_BUY, user_id, fiat, amount, crypto)

    async def _quote(
        self, kind: ConversionKind, user_id: str, pay: Currency, amount: Decimal, receive: Currency
    ) -> Quote:
        # MongoDB keeps milliseconds: the expiry it compares is the one the client is shown.
        now = self.clock()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        quote = make_quote(
            quote_id=self.new_id(),
            kind=kind,
            user_id=user_id,
            pay=pay,
            pay_amount=amount,
            receive=receive,
            pay_price=self.prices.current(pay.code, now),
            receive_price=self.prices.current(receive.code, now),
            terms=self.terms[kind],
            now=now,
        )
        await self.quotes.add(quote)
        return quote

    async def execute(self, kind: ConversionKind, user_id: str, quote_id: str) -> Quote:
        """Claim the quote (once), then send its one wallet command; state follows the result."""
        now = self.clock()
        claimed = await self.quotes.claim(quote_id, kind, user_id, self.new_id(), now)
        if claimed is None:
            raise refusal_to_execute(await self.quotes.get(quote_id), kind, user_id, now)
        try:
            await self._send(claimed)
        except Exception:
            # Claimed and recorded: the relay sends it (same reference) once the broker is back,
            # so the answer is still "pending" with the id the client follows.
            log.exception("conversion.send_failed", quote=quote_id)
        return claimed

    async def _send(self, quote: Quote) -> None:
        command = exchange_command(quote)
        await self.wallet.send(command)
        await self.quotes.mark_published(quote.quote_id, self.clock())
        log.info("conversion.sent", kind=quote.kind.value, reference=command.reference_id)

    async def get(
        self, kind: ConversionKind, execution_id: str, user_id: str, *, admin: bool
    ) -> Quote:
        quote = await self.quotes.by_execution(kind, execution_id)
        if quote is None or (quote.user_id != user_id and not admin):
            raise NotFound(f"{kind.value}_not_found", f"no such {kind.value.replace('_', ' ')}")
        return quote

    async def apply_result(self, result: CommandResult) -> None:
        kind = ConversionKind(result.transaction_type)
        prefix = f"{kind.value}:"
        if result.type != "exchange" or not result.reference_id.startswith(prefix):
            return
        status, reason = outcome_of(result.status, result.original_status, result.reason)
        if status is Status.PENDING:
            return
        execution_id = result.reference_id.removeprefix(prefix)
        # The result's user is the command's: a result under this reference for another user's
        # command (another producer's) is not this quote's answer.
        settled = await self.quotes.settle(
            kind, execution_id, result.user_id, status, reason, self.clock()
        )
        if settled:
            log.info("conversion.settled", reference=result.reference_id, status=status.value)

    async def ask_again(self, after: timedelta) -> int:
        """Send again the command of each conversion still pending `after` it was last sent: the
        wallet answers with the first outcome (a `duplicate` carrying it), so a result lost or
        dead-lettered on its way back settles the conversion after all; at most once per `after`.
        The number sent; a quote whose command cannot be built is skipped as in
        `resend_unpublished`, and a pass goes on after the last as there."""
        page = await self.quotes.awaiting_wallet(
            self.clock() - after, limit=RELAY_PAGE, after=self._ask_cursor.after
        )
        self._ask_cursor.advance(page, RELAY_PAGE)
        sent = 0
        for quote in page:
            try:
                await self.wallet.send(exchange_command(quote))
            except ValueError as error:
                _unsendable(quote, error)
                continue
            await self.quotes.mark_asked(quote.quote_id, self.clock())
            log.warning("conversion.asked_again", reference=quote.wallet_reference)
            sent += 1
        return sent

    async def resend_unpublished(self, grace: timedelta) -> int:
        """Send again what was claimed but never confirmed published (the process stopped, the
        broker was away); the number sent. Safe: the wallet applies each reference once. A quote
        whose command cannot be built (a stored value the wallet's command refuses) is logged as
        `conversions.command_unsendable` and left pending, and the others still go: one bad
        quote holds back no other conversion (nor the service's start, which runs this first).
        A pass takes at most RELAY_PAGE quotes, oldest first, and the next pass goes on after
        them: however many pending quotes cannot be sent, every other one gets its turn."""
        page = await self.quotes.unpublished(
            self.clock() - grace, limit=RELAY_PAGE, after=self._resend_cursor.after
        )
        self._resend_cursor.advance(page, RELAY_PAGE)
        sent = 0
        for quote in page:
            try:
                await self._send(quote)
            except ValueError as error:
                _unsendable(quote, error)
                continue
            sent += 1
        return sent


def _quote_position(quote: Quote) -> Position:
    return (quote.created_at, quote.quote_id)


def _unsendable(quote: Quote, error: ValueError) -> None:
    log.error(
        "conversions.command_unsendable",
        quote_id=quote.quote_id,
        kind=quote.kind.value,
        execution_id=quote.execution_id,
        reason=unsendable_reason(error),
    )


def exchange_command(quote: Quote) -> ExchangeCommand:
    """The one wallet command of an executed quote (same reference on every resend)."""
    return ExchangeCommand(
        user_id=quote.user_id,
        currency=quote.pay_currency,
        amount=quote.pay_amount,
        fee=quote.fee,
        receive_currency=quote.receive_currency,
        receive_amount=quote.receive_amount,
        transaction_type=quote.kind.value,
        reference_id=quote.wallet_reference,
        metadata={"quote_id": quote.quote_id, "rate": str(quote.rate)},
    )


@dataclass(frozen=True, slots=True)
class Funding:
    reference_id: str
    currency: str
    amount: Decimal
    admin_id: str
    status: Status
    reason: str | None
    created_at: datetime


class Fundings(Protocol):
    """Liquidity fundings, one record per `reference_id`, never deleted; kept as `Quotes` keeps
    its values (instants in UTC to the millisecond, amounts as decimal128 holds them). Besides the
    funding, a record knows when its command was first sent (published) and last sent (asked)."""

    async def add(self, funding: Funding) -> Funding | None:
        """Stores a new funding and answers it as given (not read back); None when the
        reference_id is stored already (then `get` it: the first one is kept, whatever this one
        says). Of racing adds of one reference exactly one stores it."""
        ...

    async def get(self, reference_id: str) -> Funding | None: ...

    async def settle(
        self, reference_id: str, admin_id: str, status: Status, reason: str | None, at: datetime
    ) -> bool:
        """pending → `status` (completed | failed) with `reason`, for the funding `admin_id` asked
        for only; True if this call settled it. Once: a later or racing settle answers False."""
        ...

    async def mark_published(self, reference_id: str, at: datetime) -> None:
        """The first send went out at `at`: published, and last asked, at `at`. Only the first
        call counts (a later one changes nothing); an unknown funding is no error."""
        ...

    async def unpublished(
        self, older_than: datetime, limit: int = 100, after: Position | None = None
    ) -> Sequence[Funding]:
        """Pending fundings never published that were stored before `older_than`, oldest first
        (by `created_at`, then `reference_id`), only those after `after` (the `(created_at,
        reference_id)` of a funding this returned) when given, at most `limit` (0: no limit)."""
        ...

    async def awaiting_wallet(
        self, asked_before: datetime, limit: int = 100, after: Position | None = None
    ) -> Sequence[Funding]:
        """Pending fundings published and last asked before `asked_before` (never-published ones
        are `unpublished`'s), in the order and from the place `unpublished` takes them, at most
        `limit` (0: no limit)."""
        ...

    async def mark_asked(self, reference_id: str, at: datetime) -> None:
        """The command was sent again at `at`: last asked at `at`, whatever the funding's status;
        an unknown funding is no error."""
        ...


@dataclass
class Liquidity:
    """Admin funding of platform:liquidity from external:treasury, idempotent by reference_id;
    its command is relayed and asked about again as a conversion's is."""

    fundings: Fundings
    wallet: CommandSender
    clock: Callable[[], datetime]
    # Where the next pass of each relay goes on, by (created_at, reference_id).
    _resend_cursor: PageCursor[Funding] = field(
        default_factory=lambda: PageCursor(_funding_position), init=False
    )
    _ask_cursor: PageCursor[Funding] = field(
        default_factory=lambda: PageCursor(_funding_position), init=False
    )

    async def fund(self, admin_id: str, code: str, raw_amount: str, reference_id: str) -> Funding:
        currency = _currency(code, "currency")
        amount = _amount(raw_amount, currency, "amount")
        funding = Funding(
            reference_id, currency.code, amount, admin_id, Status.PENDING, None, self.clock()
        )
        if await self.fundings.add(funding) is None:
            existing = await self.fundings.get(reference_id)
            if existing is None:  # removed in between: nothing to compare with
                raise Conflict("idempotency_conflict", "reference_id is being reused")
            if (existing.currency, existing.amount) != (funding.currency, funding.amount):
                raise Conflict(
                    "idempotency_conflict",
                    "this reference_id already funded a different currency or amount",
                )
            funding = existing
        # Sent again on a repeat too: if the first send was lost this one counts, otherwise the
        # wallet answers duplicate and nothing moves twice.
        try:
            await self._send(funding)
        except Exception:
            # Stored: the relay sends it (same reference) once the broker is back, so the answer
            # is still "pending".
            log.exception("liquidity.send_failed", reference=reference_id)
        return funding

    async def _send(self, funding: Funding) -> None:
        await self.wallet.send(funding_command(funding))
        await self.fundings.mark_published(funding.reference_id, self.clock())

    async def get(self, reference_id: str) -> Funding:
        funding = await self.fundings.get(reference_id)
        if funding is None:
            raise NotFound("funding_not_found", "no liquidity funding with this reference_id")
        return funding

    async def apply_result(self, result: CommandResult) -> None:
        if result.type != "credit":
            return
        status, reason = outcome_of(result.status, result.original_status, result.reason)
        if status is not Status.PENDING:
            await self.fundings.settle(
                result.reference_id, result.user_id, status, reason, self.clock()
            )

    async def resend_unpublished(self, grace: timedelta) -> int:
        """Send what was stored but never confirmed published (the broker was away, the process
        stopped); the number sent. As `Conversions.resend_unpublished`: the wallet applies each
        reference once, an unsendable funding is logged and skipped, a pass goes on after the
        last one."""
        page = await self.fundings.unpublished(
            self.clock() - grace, limit=RELAY_PAGE, after=self._resend_cursor.after
        )
        self._resend_cursor.advance(page, RELAY_PAGE)
        sent = 0
        for funding in page:
            try:
                await self._send(funding)
            except ValueError as error:
                _unsendable_funding(funding, error)
                continue
            sent += 1
        return sent

    async def ask_again(self, after: timedelta) -> int:
        """Send again the command of each funding still pending `after` it was last sent, as
        `Conversions.ask_again` does: the wallet's `duplicate` carries the first outcome, so a
        lost result settles the funding after all; at most once per `after`. The number sent."""
        page = await self.fundings.awaiting_wallet(
            self.clock() - after, limit=RELAY_PAGE, after=self._ask_cursor.after
        )
        self._ask_cursor.advance(page, RELAY_PAGE)
        sent = 0
        for funding in page:
            try:
                await self.wallet.send(funding_command(funding))
            except ValueError as error:
                _unsendable_funding(funding, error)
                continue
            await self.fundings.mark_asked(funding.reference_id, self.clock())
            log.warning("liquidity.asked_again", reference=funding.reference_id)
            sent += 1
        return sent


def _funding_position(funding: Funding) -> Position:
    return (funding.created_at, funding.reference_id)


def _unsendable_funding(funding: Funding, error: ValueError) -> None:
    log.error(
        "liquidity.command_unsendable",
        reference_id=funding.reference_id,
        reason=unsendable_reason(error),
    )


def funding_command(funding: Funding) -> CreditCommand:
    return CreditCommand(
        user_id=funding.admin_id,
        currency=funding.currency,
        amount=funding.amount,
        transaction_type=LIQUIDITY_FUNDING,
        reference_id=funding.reference_id,
    )
