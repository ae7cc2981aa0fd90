"""Daily interest: how much, for whom, under which key, from which balance.

    interest(user, currency, day) = floor(savings balance at the end of day × apr ÷ 365)

to the currency's scale. The contract divides by 365 in every year: a leap year has 366 accrual
days, so it pays 366/365 of the APR. The balance is the user's savings bucket as the ledger had it
at 00:00 UTC of the next day (the wallet's own clock, `occurred_at`), or at the moment of the run
when an operator accrues the current day. Each (currency, day, user) is paid at most once: the
wallet command's reference is derived from exactly that key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Final

from shared.messaging import LedgerTransaction
from shared.messaging.commands import IDENTIFIER_MAX_LENGTH
from shared.money import Currency, add, get_currency
from trading.rounding import floor_to_scale
from trading.savings.domain.errors import SavingsRefused

DAYS_PER_YEAR: Final = 365
INTEREST_TRANSACTION_TYPE: Final = "savings_interest"
INTEREST_REFERENCE_PREFIX: Final = "interest:"
SAVINGS_ACCOUNT_SUFFIX: Final = ":savings"
USER_ACCOUNT_PREFIX: Final = "user:"
ZERO: Final = Decimal(0)
_CALENDAR_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def daily_interest(balance: Decimal, apr: Decimal, currency: Currency) -> Decimal:
    """floor(balance × apr ÷ 365) to the currency's scale, computed exactly (no rounding on the way)."""
    if balance <= 0 or apr <= 0:
        return ZERO
    return floor_to_scale(Fraction(balance) * Fraction(apr) / DAYS_PER_YEAR, currency)


def accrual_reference(currency: str, day: date, user_id: str) -> str:
    """The wallet reference of one accrual: the same key always names the same payment.

    A user id may have up to 200 characters, as a reference may: when the plain key would be
    longer than a reference can be, the user id is replaced by its SHA-256 and the currency is
    preceded by `sha256`, which no currency code is, so no plain key can be a hashed one.
    """
    plain = f"{INTEREST_REFERENCE_PREFIX}{currency}:{day.isoformat()}:{user_id}"
    if len(plain) <= IDENTIFIER_MAX_LENGTH:
        return plain
    digest = hashlib.sha256(user_id.encode()).hexdigest()
    return f"{INTEREST_REFERENCE_PREFIX}sha256:{currency}:{day.isoformat()}:{digest}"


def end_of_day(day: date) -> datetime:
    """00:00 UTC of the next day: what happened before this instant belongs to `day`."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def accrual_cutoff(day: date, now: datetime) -> datetime:
    """The instant whose balance `day` pays on: its end, or now for the day still running.

    A day that has not begun is refused: there is no balance to pay on yet.
    """
    today = now.astimezone(UTC).date()
    if day > today:
        raise SavingsRefused(
            "date_in_future", f"{day.isoformat()} has not begun (today is {today})"
        )
    return now if day == today else end_of_day(day)


def parse_accrual_date(raw: object) -> date:
    """A calendar date written YYYY-MM-DD, and only so: a date parser also reads ISO week dates
    ("2026-W48-1") and compact forms, which would name a day the text does not show."""
    if not isinstance(raw, str):
        raise SavingsRefused("invalid_date", "date must be a string YYYY-MM-DD")
    if _CALENDAR_DATE.fullmatch(raw) is None:
        raise SavingsRefused("invalid_date", f"not a date YYYY-MM-DD: {raw[:40]!r}")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise SavingsRefused("invalid_date", f"not a date YYYY-MM-DD: {raw[:40]!r}") from None


def days_to_catch_up(
    today: date, lookback_days: int, newest_completed: Iterable[date | None] = ()
) -> list[date]:
    """The ended days before `today` a (re)started scheduler makes sure are accrued, oldest
    first: the last `lookback_days` (their payments still pending are sent again), and every day
    after each currency's newest completed run (`newest_completed`, None for a currency that has
    none), so that an outage longer than the lookback skips no day."""
    first = today - timedelta(days=lookback_days)
    for newest in newest_completed:
        if newest is not None:
            first = min(first, newest + timedelta(days=1))
    return [first + timedelta(days=n) for n in range((today - first).days)]


def last_day_due(now: datetime, delay: timedelta) -> date:
    """The newest day whose run time (00:00 UTC of the next day plus `delay`) has come by `now`."""
    return (now.astimezone(UTC) - delay).date() - timedelta(days=1)


def days_due(last: date, now: datetime, delay: timedelta) -> list[date]:
    """The days after `last` whose run time has come by `now`, oldest first: one day in steady
    state, several when a run went on past one or more midnights, none when `last` is current."""
    newest = last_day_due(now, delay)
    return [last + timedelta(days=n) for n in range(1, (newest - last).days + 1)]


def next_run_at(now: datetime, delay: timedelta) -> datetime:
    """The next 00:00 UTC (plus a small delay for in-flight events) strictly after `now`."""
    candidate = datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC) + delay
    while candidate <= now:
        candidate += timedelta(days=1)
    return candidate


@dataclass(frozen=True, slots=True)
class SavingsMovement:
    """One change of a user's savings bucket in one currency, as the ledger recorded it."""

    transaction_id: str
    transaction_type: str
    user_id: str
    currency: str
    amount: Decimal  # signed: into savings > 0, out of savings < 0
    occurred_at: datetime

    @property
    def key(self) -> str:
        # One transaction may touch several users' savings (a migration batch): key per account.
        return f"{self.transaction_id}:{self.user_id}:{self.currency}"


def savings_movements(transaction: LedgerTransaction) -> list[SavingsMovement]:
    """The postings of a ledger transaction on `user:<id>:savings` accounts, summed per account."""
    totals: dict[tuple[str, str], Decimal] = {}
    for posting in transaction.postings:
        account = posting.account
        if not (
            account.startswith(USER_ACCOUNT_PREFIX) and account.endswith(SAVINGS_ACCOUNT_SUFFIX)
        ):
            continue
        user_id = account[len(USER_ACCOUNT_PREFIX) : -len(SAVINGS_ACCOUNT_SUFFIX)]
        key = (user_id, posting.currency)
        totals[key] = add(totals.get(key, ZERO), posting.amount)
    return [
        SavingsMovement(
            transaction_id=transaction.transaction_id,
            transaction_type=transaction.transaction_type,
            user_id=user_id,
            currency=currency,
            amount=amount,
            occurred_at=transaction.occurred_at,
        )
        for (user_id, currency), amount in totals.items()
        if amount != 0
    ]


def balances_at(movements: Iterable[SavingsMovement], cutoff: datetime) -> dict[str, Decimal]:
    """Each user's savings balance at `cutoff`: the sum of the movements that occurred before it."""
    balances: dict[str, Decimal] = {}
    for movement in movements:
        if movement.occurred_at < cutoff:
            balances[movement.user_id] = add(balances.get(movement.user_id, ZERO), movement.amount)
    return balances


@dataclass(frozen=True, slots=True)
class AccrualDue:
    """The interest one user is owed for one day in one currency (zero: nothing to send)."""

    reference_id: str
    user_id: str
    currency: str
    day: date
    balance: Decimal
    apr: Decimal
    amount: Decimal


def accruals_due(
    currency: str, day: date, apr: Decimal, balances: Mapping[str, Decimal]
) -> list[AccrualDue]:
    """Every positive payment owed for `day`, in a stable order (users sorted)."""
    scale = get_currency(currency)
    due = []
    for user_id in sorted(balances):
        amount = daily_interest(balances[user_id], apr, scale)
        if amount > 0:
            due.append(
                AccrualDue(
                    reference_id=accrual_reference(scale.code, day, user_id),
                    user_id=user_id,
                    currency=scale.code,
                    day=day,
                    balance=balances[user_id],
                    apr=apr,
                    amount=amount,
                )
            )
    return due
