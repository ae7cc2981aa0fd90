"""An embedded outbox's relay (p2p's trades; the gateway's payments, reviews and withdrawals):
wallet commands recorded inside their owner's document and not yet marked published are sent
again, owners oldest first (by `created_at`, then id) a page per pass, each pass going on after
the last and back to the oldest after a short page. A command that cannot be built from what is
stored (a value the command model refuses) is logged as `outbox.command_unsendable` and left
unpublished, and the others still go: one bad record holds back no other, nor a service's start."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol, Self

from shared.logging import get_logger
from shared.messaging import WalletCommand, parse_command, unsendable_reason
from shared.paging import PageCursor, Position

log = get_logger(__name__)

# Owners a relay pass takes (the next pass goes on after them).
OUTBOX_PAGE: Final = 500


@dataclass(frozen=True, slots=True)
class Unpublished:
    """A command not yet marked published, as stored (its JSON form), with its owner and the
    owner's place in the relay's order."""

    owner_id: str
    owner_created_at: datetime
    command: Mapping[str, Any]

    def build(self) -> WalletCommand:
        """The command, or `ValueError` when the command model refuses what is stored."""
        return build_command(self.command)


@dataclass(frozen=True, slots=True)
class RecordedCommand:
    """A wallet command recorded in its owner's document before it is published; `published`
    once the broker has it. `command` is None when what is stored is a command the command model
    now refuses (an earlier version's): `stored` keeps it as stored, so the record is read all
    the same, and sending it fails (`build`) for the sender to report and go on."""

    command: WalletCommand | None
    created_at: datetime
    published: bool = False
    stored: Mapping[str, Any] | None = None

    @classmethod
    def read(cls, stored: Mapping[str, Any], **fields: Any) -> Self:
        """An entry as a store reads it: its command built from what is stored, or kept as
        stored when the command model refuses it."""
        command = read_command(stored)
        return cls(command, stored=None if command is not None else stored, **fields)

    @property
    def command_id(self) -> str:
        if self.command is not None:
            return self.command.command_id
        return str((self.stored or {}).get("command_id"))

    @property
    def type(self) -> str | None:
        """The command's type, as stored."""
        kind = self.as_stored().get("type")
        return kind if isinstance(kind, str) else None

    def as_stored(self) -> Mapping[str, Any]:
        """The command as stored (its JSON form)."""
        if self.command is None:
            return self.stored or {}
        return self.command.model_dump(mode="json")

    def build(self) -> WalletCommand:
        """The command to send, or `ValueError` when the command model refuses what is stored
        (built from its stored form, as a resend from a read record would be)."""
        return build_command(self.as_stored())


def sendable(entry: RecordedCommand, event: str, **owner: str) -> WalletCommand | None:
    """The entry's command to send, or None when the command model refuses what is stored: then
    it is logged as `event` (an error) with `owner`, the command id and the reason, for the
    sender to leave the record as it is and go on with the others."""
    try:
        return entry.build()
    except ValueError as error:
        log.error(event, **owner, command_id=entry.command_id, reason=unsendable_reason(error))
        return None


def build_command(stored: Mapping[str, Any]) -> WalletCommand:
    """A stored command (its JSON form) as the command model takes it, or `ValueError` when the
    model refuses what is stored."""
    return parse_command(json.dumps(stored))


def read_command(stored: Mapping[str, Any]) -> WalletCommand | None:
    """A stored command as a record read holds it: None when the command model refuses what is
    stored (an earlier version's), for the record to keep it as stored and be read all the same;
    the places that send it report it (`build_command`)."""
    try:
        return build_command(stored)
    except ValueError:
        return None


class Entry(Protocol):
    """An outbox entry as a memory store holds it."""

    def as_stored(self) -> Mapping[str, Any]:
        """The command as stored (its JSON form)."""
        ...

    @property
    def created_at(self) -> datetime: ...
    @property
    def published(self) -> bool: ...


def unpublished_page(
    owners: Iterable[tuple[str, datetime, Iterable[Entry]]],
    older_than: datetime,
    limit: int,
    after: Position | None,
) -> list[Unpublished]:
    """A memory store's page: the entries not published and older than `older_than` of at most
    `limit` owners `(id, created_at, outbox)`, oldest first by (created_at, id), only owners
    after `after` when given (what the MongoDB stores answer with `shared.mongo.unpublished`)."""
    pending = sorted(
        (
            (created_at, owner_id, waiting)
            for owner_id, created_at, outbox in owners
            if (waiting := [e for e in outbox if not e.published and e.created_at < older_than])
            and (after is None or (created_at, owner_id) > after)
        ),
        key=lambda row: (row[0], row[1]),
    )
    return [
        Unpublished(owner_id, created_at, entry.as_stored())
        for created_at, owner_id, waiting in pending[:limit]
        for entry in waiting
    ]


class Outbox(Protocol):
    async def unpublished(
        self, older_than: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Unpublished]:
        """Commands not marked published and recorded before `older_than`, of at most `limit`
        owners, oldest owner first (by `created_at`, then id), only owners after `after` (the
        `(owner_created_at, owner_id)` of one this returned) when given."""
        ...

    async def mark_published(self, owner_id: str, command_id: str) -> None: ...


class Publisher(Protocol):
    async def publish(self, command: WalletCommand) -> None: ...


@dataclass
class OutboxRelayPass:
    """The passes over one outbox. Resending is safe: the wallet applies each (type,
    transaction_type, reference) once and answers a resend with the first outcome."""

    outbox: Outbox
    # The log field naming an owner (`trade_id`, `owner`).
    owner_field: str = "owner"
    page: int = OUTBOX_PAGE
    # Where the next pass goes on, by owner (created_at, id).
    _cursor: PageCursor[Position] = field(
        default_factory=lambda: PageCursor(lambda owner: owner), init=False
    )

    async def run(self, publisher: Publisher, older_than: datetime) -> int:
        """One pass: the number of commands sent."""
        found = await self.outbox.unpublished(older_than, self.page, after=self._cursor.after)
        # A page holds every waiting command of each owner: the owners, oldest first.
        owners = sorted({(u.owner_created_at, u.owner_id) for u in found})
        self._cursor.advance(owners, self.page)
        sent = 0
        for entry in found:
            owner = {self.owner_field: entry.owner_id}
            try:
                command = entry.build()
            except ValueError as error:
                log.error(
                    "outbox.command_unsendable",
                    **owner,
                    command_id=entry.command.get("command_id"),
                    reason=unsendable_reason(error),
                )
                continue
            await publisher.publish(command)
            await self.outbox.mark_published(entry.owner_id, command.command_id)
            log.info(
                "outbox.republished", **owner, type=command.type, reference=command.reference_id
            )
            sent += 1
        return sent
